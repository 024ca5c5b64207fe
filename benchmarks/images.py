"""Issue 4 benchmark: the offline Debian 12 image and how VMs of it boot and pack.

- build time cold (no cached root filesystem, no base image) and with the cache;
- image size; boot time to `running` (median of 10); idle memory of one booted VM;
- density: 50 and 100 idle systemd VMs, each with a static IP, then every one asked
  over ssh and through cvm exec: worst answer time (target: within 1 s).
Set BENCH_COLD=0 to skip the cold build (it fetches ~70 MB of packages).
"""

import glob
import os
import statistics
import subprocess
import time

from common import DEBIAN, bridge, header, remove_link, realm

BOOTS = int(os.environ.get("BENCH_BOOTS", "10"))
DENSITY = [int(n) for n in os.environ.get("BENCH_DENSITY", "50,100").split(",") if n]
BRIDGE = "cvbimg0"


def build_times():
    from cvm import api, images
    ctx = api.Context()
    times = {}
    if os.environ.get("BENCH_COLD", "1") == "1":
        for path in glob.glob(os.path.join(images.CACHE_DIR, "debian12-*.tar")):
            os.unlink(path)
        for image in ctx.engine.images():
            for tag in image.get("RepoTags") or []:
                if tag.startswith("cvm-base/debian12:"):
                    ctx.engine.remove_image(tag, force=True)
        started = time.monotonic()
        images.build("debian12", rootfs="debootstrap", ctx=ctx, tag="cvm-bench/debian12:cold")
        times["cold"] = time.monotonic() - started
        ctx.engine.remove_image("cvm-bench/debian12:cold", force=True)
    started = time.monotonic()
    images.build("debian12", rootfs="debootstrap", ctx=ctx, tag="cvm-bench/debian12:warm")
    times["cached"] = time.monotonic() - started
    ctx.engine.remove_image("cvm-bench/debian12:warm", force=True)
    images.ensure(["debian12"], ctx=ctx)
    size = ctx.engine.image(DEBIAN)["Size"]
    return times, size


def wait_running(vm, limit=120):
    started = time.monotonic()
    while time.monotonic() - started < limit:
        code, out, _ = vm.exec(["systemctl", "is-system-running"])
        if out.strip() in (b"running", b"degraded"):
            return
        time.sleep(0.05)
    raise SystemExit("bench: %s never reached running" % vm.name)


def boot_times(ctx):
    from cvm import api
    from cvm.spec import parse_spec
    times, memory = [], None
    for i in range(BOOTS):
        spec = parse_spec({"name": "bb%d" % i, "image": DEBIAN, "init": "systemd"})
        started = time.monotonic()
        vm = api.create(spec, ctx=ctx)
        wait_running(vm)
        times.append(time.monotonic() - started)
        if memory is None:
            time.sleep(5)
            memory = vm.cgroup().memory_usage()
            stat = vm.cgroup().memory_stat()
            memory = (memory, memory - stat.get("inactive_file", 0))
        vm.remove(force=True)
    return times, memory


def density(ctx, count, key):
    from cvm import api
    from cvm.spec import parse_spec
    with open(key + ".pub") as handle:
        public = handle.read()
    vms = []
    started = time.monotonic()
    for i in range(count):
        vms.append(api.create(parse_spec({
            "name": "bd%d" % i, "image": DEBIAN, "init": "systemd", "memory": "256m",
            "ssh_keys": [public],
            "nics": [{"mode": "bridge", "link": BRIDGE, "ip": "198.51.100.%d/24" % (2 + i)}]}),
            ctx=ctx))
    for vm in vms:
        wait_running(vm, limit=300)
    created = time.monotonic() - started
    time.sleep(10)  # settle: idle is what is measured
    exec_times, ssh_times = [], []
    for i, vm in enumerate(vms):
        t0 = time.monotonic()
        subprocess.run([os.path.join(os.path.dirname(os.sys.executable), "cvm"), "exec",
                        vm.name, "--", "true"], check=True,
                       env=dict(os.environ, CVM_STATE_DIR=ctx.store.root))
        exec_times.append(time.monotonic() - t0)
        t0 = time.monotonic()
        result = subprocess.run(["ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o",
                                 "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o",
                                 "BatchMode=yes", "root@198.51.100.%d" % (2 + i), "true"])
        ssh_times.append(time.monotonic() - t0 if result.returncode == 0 else float("inf"))
    used = sum(vm.cgroup().memory_usage() for vm in vms)
    for vm in vms:
        vm.remove(force=True)
    return created, exec_times, ssh_times, used


def main():
    header("images: offline Debian 12 (debootstrap), boots and density")
    times, size = build_times()
    for key, value in times.items():
        print("build %-8s %6.1f s" % (key, value))
    print("image size   %6.0f MB" % (size / 1e6))
    remove_link(BRIDGE)
    bridge(BRIDGE, "198.51.100.1/24")
    key = "/tmp/cvm-bench-key"
    if not os.path.exists(key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    try:
        with realm() as (ctx, env):
            boots, memory = boot_times(ctx)
            print("boot to running: median %.2f s, worst %.2f s (%d boots)" % (
                statistics.median(boots), max(boots), len(boots)))
            print("idle VM memory: %.1f MiB in its cgroup (%.1f MiB working set)" % (
                memory[0] / 2 ** 20, memory[1] / 2 ** 20))
            for count in DENSITY:
                created, exec_times, ssh_times, used = density(ctx, count, key)
                print("%3d idle VMs: created and running in %.0f s, %.2f GiB in their cgroups;"
                      " exec worst %.2f s (median %.2f), ssh worst %.2f s (median %.2f)" % (
                          count, created, used / 2 ** 30, max(exec_times),
                          statistics.median(exec_times), max(ssh_times),
                          statistics.median(ssh_times)))
    finally:
        remove_link(BRIDGE)


if __name__ == "__main__":
    main()
