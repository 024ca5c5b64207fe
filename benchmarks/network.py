"""Issue 3 benchmark: wiring static IPs, against shell wiring and Docker's own networking.

(a) wiring time per NIC, bridge mode, over 50 VMs (median, p95), beside the same
    wiring done the pipework way (one `ip`/`nsenter` process per step) in this run;
(b) create-to-pingable: `docker run --network <user bridge> --ip` vs `cvm create
    --nic mode=bridge` (CLI, via netd), median of 10 each, interleaved;
(c) re-wire after `docker restart`: from the container's start to its IP answering,
    median and worst over 20 restarts (cvm netd does the wiring);
(d) adding a NIC to a running VM, whole process: `cvm net attach` (via netd) against
    pipework itself (../shared/baselines/pipework) wiring a `--net=none` container on
    the same bridge, interleaved, median of 10 each; cvm twice: on the bridge as it is
    (every port cvm's and filtered: no ARP probe is needed) and with a port that is not
    cvm's on it, as a LAN uplink would be (cvm then probes for 100 ms).

Addresses: cvm's bridge 198.51.100.0/25, Docker's network 198.51.100.128/25.
"""

import contextlib
import datetime
import os
import subprocess
import time

import docker

from common import (BUSYBOX, bridge, cvm, header, icmp_ping, median, ms, p95, realm,
                    remove_link, wait_pingable)

WIRE_COUNT = min(50, int(os.environ.get("BENCH_WIRE_COUNT", "50")))  # .10-.109
CREATE_COUNT = int(os.environ.get("BENCH_CREATE_COUNT", "10"))
RESTART_COUNT = int(os.environ.get("BENCH_RESTART_COUNT", "20"))
ATTACH_COUNT = int(os.environ.get("BENCH_ATTACH_COUNT", "10"))
PIPEWORK = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "shared", "baselines", "pipework", "pipework")
BRIDGE = "cvbench0"
LAN_PORT = "cvbenchlan"  # a port that is not cvm's: what an uplink is to the probe
SUBNET = "198.51.100"


def shell_wiring(pid, host_end, address, gateway):
    """What pipework runs for one bridge NIC: a process per step."""
    steps = [["ip", "link", "add", host_end, "type", "veth", "peer", "name", host_end + "g"],
             ["ip", "link", "set", host_end, "master", BRIDGE],
             ["ip", "link", "set", host_end, "up"],
             ["ip", "link", "set", host_end + "g", "netns", str(pid)],
             ["nsenter", "-t", str(pid), "-n", "ip", "link", "set", host_end + "g", "name",
              "eth1"],
             ["nsenter", "-t", str(pid), "-n", "ip", "addr", "add", address, "dev", "eth1"],
             ["nsenter", "-t", str(pid), "-n", "ip", "link", "set", "eth1", "up"],
             ["nsenter", "-t", str(pid), "-n", "ip", "route", "replace", "default", "via",
              gateway]]
    for step in steps:
        subprocess.run(step, check=True, capture_output=True)


def wiring(ctx):
    from cvm import api
    from cvm.net import wiring as net
    from cvm.spec import parse_spec
    header("(a) wiring one bridge NIC, %d VMs" % WIRE_COUNT)
    cvm_times, probe_times, shell_times = [], [], []
    for i in range(WIRE_COUNT):
        spec = parse_spec({"name": "bw%d" % i, "image": BUSYBOX, "init": "none",
                           "command": ["sleep", "100000"],
                           "nics": [{"mode": "bridge", "link": BRIDGE,
                                     "ip": "%s.%d/25" % (SUBNET, 10 + i),
                                     "gw": "%s.1" % SUBNET}]})
        vm = api.create(spec, start=False, ctx=ctx)
        ctx.engine.start(vm.container_id)
        pid = vm.pid
        with ctx.store.vm_lock(vm.name):
            started = time.perf_counter()
            net.wire_vm(ctx, vm.name, spec, pid, probe=False)
            cvm_times.append(time.perf_counter() - started)
            net.unwire_vm(ctx, vm.name, spec, pid)
            started = time.perf_counter()
            net.wire_vm(ctx, vm.name, spec, pid, probe=True)
            probe_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        shell_wiring(pid, "bsh%d" % i, "%s.%d/25" % (SUBNET, 60 + i), "%s.1" % SUBNET)
        shell_times.append(time.perf_counter() - started)
        remove_link("bsh%d" % i)
    print("%-44s %10s %10s %8s" % ("", "median", "p95", "ratio"))
    base = median(shell_times)
    for label, values in (("pipework-style shell wiring (8 processes)", shell_times),
                          ("cvm, in-process netlink", cvm_times),
                          ("cvm, with the ARP probe (create/attach)", probe_times)):
        print("%-44s %10s %10s %8.2f" % (label, ms(median(values)), ms(p95(values)),
                                         median(values) / base))


def create_to_pingable(env):
    header("(b) create-to-pingable, %d each, interleaved" % CREATE_COUNT)
    client = docker.from_env()
    network = client.networks.create("cvmbench", driver="bridge", ipam=docker.types.IPAMConfig(
        pool_configs=[docker.types.IPAMPool(subnet=SUBNET + ".128/25",
                                            gateway=SUBNET + ".129")]))
    docker_times, cvm_times = [], []
    try:
        with lan_port():  # cvm probes each address
            for i in range(CREATE_COUNT):
                address = "%s.%d" % (SUBNET, 140 + i)
                started = time.perf_counter()
                subprocess.run(["docker", "run", "-d", "--network", "cvmbench", "--ip", address,
                                "--name", "bench-net-%d" % i, BUSYBOX, "sleep", "100000"],
                               check=True, capture_output=True)
                wait_pingable(address)
                docker_times.append(time.perf_counter() - started)

                address = "%s.%d" % (SUBNET, 110 + i % 10)
                started = time.perf_counter()
                cvm(env, "create", "bp%d" % i, "--image", BUSYBOX, "--init", "none", "--nic",
                    "mode=bridge,link=%s,ip=%s/25,gw=%s.1" % (BRIDGE, address, SUBNET), "--",
                    "sleep", "100000")
                wait_pingable(address)
                cvm_times.append(time.perf_counter() - started)
    finally:
        for i in range(CREATE_COUNT):
            try:
                client.containers.get("bench-net-%d" % i).remove(force=True)
            except docker.errors.NotFound:
                pass
        network.remove()
    base = median(docker_times)
    print("%-50s %10s %8s" % ("", "median", "ratio"))
    print("%-50s %10s %8s" % ("docker run --network <bridge> --ip (CLI)", ms(base), "1.00"))
    print("%-50s %10s %8.2f" % ("cvm create --nic mode=bridge (CLI, via netd)",
                                ms(median(cvm_times)), median(cvm_times) / base))
    print("(a port that is not cvm's is on the bridge, so cvm probes each address for 100 ms "
          "while Docker starts the container; Docker does not probe)")


def rewire_after_restart(ctx, env):
    from cvm import api
    header("(c) re-wire after docker restart, %d restarts" % RESTART_COUNT)
    address = "%s.120" % SUBNET
    cvm(env, "create", "br0x", "--image", BUSYBOX, "--init", "none", "--nic",
        "mode=bridge,link=%s,ip=%s/25" % (BRIDGE, address), "--", "sleep", "100000")
    container = api.get("br0x", ctx).container_id
    since_start = []
    for _ in range(RESTART_COUNT):
        ctx.engine.stop(container, timeout=0)
        while icmp_ping(address, 0.005):
            pass
        ctx.engine.start(container)
        wait_pingable(address)
        answered = time.time()
        started_at = ctx.engine.inspect(container)["State"]["StartedAt"]
        since_start.append(answered - _epoch(started_at))
    print("from container start to pingable: median %s, worst %s" % (
        ms(median(since_start)), ms(max(since_start))))


@contextlib.contextmanager
def lan_port():
    """A port on the bridge that is not cvm's, as a LAN uplink would be: cvm then probes
    each address it takes on the bridge."""
    subprocess.run(["ip", "link", "add", LAN_PORT, "master", BRIDGE, "up", "type", "veth",
                    "peer", "name", LAN_PORT + "p"], check=True)
    try:
        yield
    finally:
        remove_link(LAN_PORT)


def forget_neighbour(address):
    """Each side starts as for a new address: no neighbour entry left on the host with
    the last one's MAC (pipework announces with arping only where it is installed, and
    a stale entry costs seconds of probing)."""
    while icmp_ping(address, 0.005):
        pass
    subprocess.run(["ip", "neigh", "flush", "to", address], check=True)


def attach_against_pipework(env):
    header("(d) a NIC added to a running VM, whole process, %d each, interleaved" %
           ATTACH_COUNT)
    address = "%s.121" % SUBNET
    pipework_times, cvm_times, probed_times = [], [], []
    for i in range(ATTACH_COUNT):
        container = "bench-pw-%d" % i
        subprocess.run(["docker", "run", "-d", "--net=none", "--name", container, BUSYBOX,
                        "sleep", "100000"], check=True, capture_output=True)
        try:
            started = time.perf_counter()
            subprocess.run(["sh", PIPEWORK, BRIDGE, "-i", "eth1", container,
                            "%s/25@%s.1" % (address, SUBNET)], check=True, capture_output=True)
            wait_pingable(address)
            pipework_times.append(time.perf_counter() - started)
        finally:
            subprocess.run(["docker", "rm", "-f", container], capture_output=True)
        forget_neighbour(address)
        for times, segment in ((cvm_times, contextlib.nullcontext()),
                               (probed_times, lan_port())):
            with segment:
                cvm(env, "create", "ba%d" % i, "--image", BUSYBOX, "--init", "none", "--",
                    "sleep", "100000")
                started = time.perf_counter()
                cvm(env, "net", "attach", "ba%d" % i, "--nic", "mode=bridge,link=%s,ip=%s/25,"
                    "gw=%s.1,name=eth1" % (BRIDGE, address, SUBNET))
                wait_pingable(address)
                times.append(time.perf_counter() - started)
                cvm(env, "rm", "-f", "ba%d" % i)
            forget_neighbour(address)
    base = median(pipework_times)
    print("%-58s %10s %8s" % ("", "median", "ratio"))
    print("%-58s %10s %8s" % ("pipework BRIDGE -i eth1 C IP@GW, to pingable", ms(base),
                              "1.00"))
    print("%-58s %10s %8.2f" % ("cvm net attach, to pingable (ports all cvm's: no probe)",
                                ms(median(cvm_times)), median(cvm_times) / base))
    print("%-58s %10s %8.2f" % ("cvm net attach, to pingable (a LAN port: 100 ms probe)",
                                ms(median(probed_times)), median(probed_times) / base))


def _epoch(text):
    head, _, frac = text.rstrip("Z").partition(".")
    moment = datetime.datetime.fromisoformat(head).replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp() + float("0." + (frac or "0"))


def main():
    remove_link(BRIDGE)
    bridge(BRIDGE, "%s.1/25" % SUBNET)
    try:
        with realm() as (ctx, env):
            wiring(ctx)
            create_to_pingable(env)
            rewire_after_restart(ctx, env)
            attach_against_pipework(env)
    finally:
        remove_link(LAN_PORT)
        remove_link(BRIDGE)


if __name__ == "__main__":
    main()
