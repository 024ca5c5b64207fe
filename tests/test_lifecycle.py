"""The VM lifecycle against the real engine: create, limits, exec, resize, apply, rm."""

import json
import os
import signal
import subprocess
import time

import pytest

from cvm import api
from cvm.cgroups import Cgroup
from cvm.errors import Conflict, NotFound, SpecError
from cvm.spec import parse_spec

from .conftest import BUSYBOX, CVM, NetdProcess, enter_session, residue, wait_for

pytestmark = pytest.mark.engine


def busybox_spec(name, **fields):
    raw = {"name": name, "image": BUSYBOX, "init": "none", "command": ["sleep", "100000"]}
    raw.update(fields)
    return parse_spec(raw)


def cgroup_file(vm, controller, filename):
    with open(os.path.join(Cgroup.of_container(vm.container_id).dirs[controller], filename)) as f:
        return f.read().strip()


def test_create_applies_limits_and_identity(ctx, images, name):
    vm = api.create(busybox_spec(name, cpus=0.5, memory="64m", pids=100, cpuset="0",
                                 hostname="box.example.com", env={"ROLE": "web"},
                                 labels={"team": "ops"}), ctx=ctx)
    assert vm.status == "running"
    info = ctx.engine.inspect(vm.container_id)
    assert info["HostConfig"]["NetworkMode"] == "none"
    assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert info["Config"]["Labels"]["team"] == "ops"
    assert info["Config"]["Labels"]["io.cvm.vm"] == name
    assert cgroup_file(vm, "memory", "memory.limit_in_bytes") == str(64 << 20)
    # Swap is off by default: memory+swap equals memory.
    if os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"):
        assert cgroup_file(vm, "memory", "memory.memsw.limit_in_bytes") == str(64 << 20)
    assert cgroup_file(vm, "memory", "memory.swappiness") == "0"
    assert cgroup_file(vm, "cpu", "cpu.cfs_quota_us") == "50000"
    assert cgroup_file(vm, "pids", "pids.max") == "100"
    assert cgroup_file(vm, "cpuset", "cpuset.cpus") == "0"
    code, out, _ = vm.exec(["sh", "-c", "hostname; echo $ROLE; ip -o link | wc -l"])
    assert code == 0
    hostname, role, links = out.decode().split()
    assert (hostname, role, links) == ("box", "web", "1")  # --net=none: only lo
    stored = ctx.store.read_vm(name)
    assert stored["phase"] == "ready" and stored["spec"]["memory"] == "64m"
    assert os.stat(ctx.store.root).st_mode & 0o777 == 0o700


def test_the_vm_owns_its_hosts_and_resolv_conf(ctx, images, name):
    """Docker makes no network sandbox for a VM, not even "none"'s: the VM's namespace has
    lo up, its /etc/hosts and /etc/resolv.conf are cvm's, from its spec, and the VM's own
    edits to them outlive a restart, as on any machine."""
    vm = api.create(busybox_spec(name, hostname="box.example.com", dns=["198.51.100.53"],
                                 search=["example.com"]), ctx=ctx)
    info = ctx.engine.inspect(vm.container_id)
    assert info["Config"]["NetworkDisabled"] is True
    assert info["NetworkSettings"]["SandboxKey"] == ""
    code, out, _ = vm.exec(["sh", "-c", "cat /etc/resolv.conf /etc/hosts; ip -o link show lo"])
    assert code == 0
    out = out.decode()
    assert "\nnameserver 198.51.100.53\nsearch example.com\n" in out
    assert "127.0.1.1\tbox.example.com box\n" in out and "<LOOPBACK,UP," in out
    edit = "echo nameserver 198.51.100.54 >> /etc/resolv.conf; echo '198.51.100.9 db' >> " \
        "/etc/hosts"
    assert vm.exec(["sh", "-c", edit])[0] == 0
    vm.restart(timeout=1)
    out = vm.exec(["sh", "-c", "cat /etc/resolv.conf /etc/hosts"])[1].decode()
    assert "nameserver 198.51.100.53\n" in out and "nameserver 198.51.100.54\n" in out
    assert "198.51.100.9 db\n" in out


def test_volumes_are_created_and_survive_rm(ctx, images, name, scratch):
    host_dir = os.path.join(scratch, "deep", "data")
    vm = api.create(busybox_spec(name, volumes=["%s:/data" % host_dir,
                                               "%s:/ro:ro" % host_dir]), ctx=ctx)
    assert os.path.isdir(host_dir)
    assert vm.exec(["sh", "-c", "echo hi > /data/file"])[0] == 0
    assert vm.exec(["sh", "-c", "echo no > /ro/file"])[0] != 0
    vm.remove(force=True)
    with open(os.path.join(host_dir, "file")) as handle:
        assert handle.read() == "hi\n"  # rm never deletes volume data


def test_lifecycle_commands(cvm, ctx, images, name):
    cvm("create", name, "--image", BUSYBOX, "--init", "none", "--memory", "32m", "--",
        "sleep", "100000", check=True)
    listing = json.loads(cvm("ls", "--json", check=True).stdout)
    assert [(e["name"], e["status"], e["memory"]) for e in listing] == [(name, "running",
                                                                         32 << 20)]
    table = cvm("ls", check=True).stdout.splitlines()
    assert table[0].split() == ["NAME", "STATUS", "IMAGE", "CPUS", "MEMORY", "IPS", "UPTIME"]
    assert table[1].split()[:5] == [name, "running", BUSYBOX, "-", "32m"]
    assert cvm("stop", name, "-t", "1", check=True).stdout.strip() == name
    assert api.get(name, ctx).status == "exited"
    assert ctx.store.read_vm(name)["desired"] == "stopped"
    cvm("start", name, check=True)
    assert api.get(name, ctx).status == "running"
    before = api.get(name, ctx).container["State"]["StartedAt"]
    cvm("restart", name, "-t", "1", check=True)
    assert api.get(name, ctx).container["State"]["StartedAt"] != before
    inspected = json.loads(cvm("inspect", name, "--json", check=True).stdout)
    assert inspected["init"] == "none" and inspected["spec"]["memory"] == "32m"
    refused = cvm("rm", name)
    assert refused.returncode != 0 and "is running; stop it first or use -f" in refused.stderr
    cvm("rm", "-f", name, check=True)
    assert residue(ctx, name) == []
    missing = cvm("inspect", name)
    assert missing.returncode == 2 and missing.stderr == "cvm: no VM named %r (see `cvm ls`)\n" \
        % name


def test_exec_passes_stdio_and_exit_code(cvm, ctx, images, name):
    api.create(busybox_spec(name), ctx=ctx)
    result = cvm("exec", name, "--", "sh", "-c", "cat; echo err >&2; exit 7", input="in\n")
    assert (result.returncode, result.stdout, result.stderr) == (7, "in\n", "err\n")


def _host_cgroup_of(pid, controller="memory"):
    with open("/proc/%d/cgroup" % pid) as handle:
        for line in handle:
            _, controllers, path = line.strip().split(":", 2)
            if controller in controllers.split(","):
                return path
    return None


def test_exec_and_enter_count_against_the_vm(cvm, ctx, images, name):
    vm = api.create(busybox_spec(name, memory="48m"), ctx=ctx)
    vm_cgroup = _host_cgroup_of(vm.pid)
    # cvm exec: the command is in the VM's memory cgroup (a 64 MiB allocation is refused).
    shown = cvm("exec", name, "--", "cat", "/proc/self/cgroup", check=True).stdout
    assert ":memory:%s\n" % vm_cgroup in shown
    # Plain nsenter, by contrast, leaves the process in the host's cgroup: what we fix.
    plain = subprocess.run(["nsenter", "-t", str(vm.pid), "-a", "-r", "-w", "cat",
                            "/proc/self/cgroup"], capture_output=True, text=True).stdout
    assert ":memory:%s\n" % vm_cgroup not in plain
    # The VM's limit applies: 64 MiB in a 48 MiB VM is OOM-killed.
    result = cvm("exec", name, "--", "sh", "-c", "head -c 67108864 /dev/zero | tail > /dev/null")
    assert result.returncode != 0
    # cvm enter, through a pseudo-terminal: a login shell in the VM's cgroup.
    text = enter_session(cvm, name, "echo MARK; cat /proc/self/cgroup; hostname; exit")
    assert "MARK" in text and (":memory:%s" % vm_cgroup) in text and name in text


def test_the_init_found_is_found_again_after_a_restart(ctx, images, name):
    """netd remembers each VM's init (ns.init_pid) and checks it by its start time: a
    restart behind its back gives the new init, never the old PID."""
    from cvm import ns
    vm = api.create(parse_spec({"name": name, "image": BUSYBOX, "init": "none",
                                "command": ["sleep", "100000"]}), ctx=ctx)
    first = ns.init_pid(vm.container_id)
    assert ns.init_pid(vm.container_id) == first
    subprocess.run(["docker", "restart", "-t", "0", vm.container_id], check=True,
                   capture_output=True)
    again = ns.init_pid(vm.container_id)
    assert again != first and os.path.exists("/proc/%d" % again)
    with open("/proc/%d/status" % again) as status:
        assert [line.split()[-1] for line in status if line.startswith("NSpid:")] == ["1"]
    vm.stop()
    with pytest.raises(NotFound):
        ns.init_pid(vm.container_id)


def test_nsrun_uses_a_host_binary_in_the_vm_namespaces(cvm, ctx, images, name):
    api.create(busybox_spec(name), ctx=ctx)
    # `ss` exists on the host only; in the VM's netns it sees only the VM's sockets.
    result = cvm("nsrun", name, "--net", "--", "ip", "-o", "link", check=True)
    assert [line.split(":")[1].strip() for line in result.stdout.splitlines()] == ["lo"]
    uts = cvm("nsrun", name, "--uts", "--", "hostname", check=True)
    assert uts.stdout.strip() == name


def test_resize_is_live(cvm, ctx, images, name):
    vm = api.create(busybox_spec(name, memory="64m", cpus=0.5), ctx=ctx)
    container_id = vm.container_id
    cvm("resize", name, "--memory", "128m", "--cpus", "1", "--pids", "200", check=True)
    vm = api.get(name, ctx)
    assert vm.container_id == container_id and vm.status == "running"
    assert cgroup_file(vm, "memory", "memory.limit_in_bytes") == str(128 << 20)
    if os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"):
        assert cgroup_file(vm, "memory", "memory.memsw.limit_in_bytes") == str(128 << 20)
    assert cgroup_file(vm, "cpu", "cpu.cfs_quota_us") == "100000"
    assert cgroup_file(vm, "pids", "pids.max") == "200"
    assert ctx.store.read_vm(name)["spec"]["memory"] == "128m"
    bad = cvm("resize", name, "--memory", "lots")
    assert bad.returncode == 2 and "memory: 'lots' is not a size" in bad.stderr


def test_apply_plans_creates_changes_and_refuses_recreates(cvm, ctx, images, name, tmp_path):
    spec_file = tmp_path / "vms.yml"
    other = name + "b"

    def write(memory, image=BUSYBOX, snapshots="daily", dns="[]"):
        spec_file.write_text(
            "defaults:\n  image: %s\n  init: none\n  command: [sleep, '100000']\n"
            "vms:\n  - name: %s\n    memory: %s\n    snapshots: %s\n    dns: %s\n"
            "  - name: %s\n" % (image, name, memory, snapshots, dns, other))

    write("64m")
    dry = cvm("apply", "-f", spec_file, "--dry-run", check=True)
    assert "+ %s  create" % name in dry.stdout and api.ls(ctx) == []
    first = cvm("apply", "-f", spec_file, check=True)
    assert "created 2, changed 0, recreated 0, unchanged 0" in first.stdout
    again = cvm("apply", "-f", spec_file, check=True)
    assert "created 0, changed 0, recreated 0, unchanged 2" in again.stdout
    container_id = api.get(name, ctx).container_id
    write("96m")
    changed = cvm("apply", "-f", spec_file, check=True)
    assert "memory: 64m -> 96m" in changed.stdout and "changed 1" in changed.stdout
    vm = api.get(name, ctx)
    assert vm.container_id == container_id
    assert cgroup_file(vm, "memory", "memory.limit_in_bytes") == str(96 << 20)
    write("96m", snapshots="'hourly:24'")  # cvm's own: a new record, nothing more
    rescheduled = cvm("apply", "-f", spec_file, check=True)
    assert "changed 1" in rescheduled.stdout
    assert api.get(name, ctx).spec.snapshots.to_dict() == {"schedule": "hourly", "keep": 24}
    assert api.get(name, ctx).container_id == container_id
    write("96m", snapshots="'hourly:24'", dns="[198.51.100.53]")  # the VM's resolv.conf
    cvm("apply", "-f", spec_file, check=True)
    vm = api.get(name, ctx)
    assert vm.container_id == container_id
    assert "\nnameserver 198.51.100.53\n" in vm.exec(["cat", "/etc/resolv.conf"])[1].decode()
    record = ctx.store.read_vm(name)  # a VM made when Docker wrote its resolv.conf
    ctx.store.write_vm(name, {k: v for k, v in record.items() if k != "resolver_files"})
    write("96m", snapshots="'hourly:24'", dns="[198.51.100.54]")
    legacy = cvm("apply", "-f", spec_file)
    assert legacy.returncode != 0 and "needs a recreate (dns changed)" in legacy.stderr
    ctx.store.write_vm(name, record)
    write("96m", image="cvm/debian12:latest")
    blocked = cvm("apply", "-f", spec_file)
    assert blocked.returncode != 0 and "needs a recreate (image changed); rerun with " \
        "--recreate" in blocked.stderr
    assert api.get(name, ctx).container_id == container_id
    recreated = cvm("apply", "-f", spec_file, "--recreate", check=True)
    assert "recreated 2" in recreated.stdout
    assert api.get(name, ctx).container_id != container_id


def test_duplicate_name_and_foreign_container(ctx, images, name, engine):
    api.create(busybox_spec(name), ctx=ctx)
    with pytest.raises(Conflict, match="name: a VM named %r already exists" % name):
        api.create(busybox_spec(name), ctx=ctx)
    foreign = name + "x"
    container = engine.api.create_container(BUSYBOX, ["sleep", "100"], name=foreign)
    try:
        with pytest.raises(Conflict, match="a container named %r already exists" % foreign):
            api.create(busybox_spec(foreign), ctx=ctx)
        assert ctx.store.read_vm(foreign) is None
        assert engine.inspect(foreign) is not None  # never touched
    finally:
        engine.remove(container["Id"], force=True)


def test_a_name_that_prefixes_another_containers_id_is_free(ctx, images, engine):
    """Docker resolves a reference by ID prefix too, and names like "ba2" are hex."""
    foreign = []
    try:
        while not foreign or foreign[-1][0] not in "abcdef":  # a VM name starts with a letter
            foreign.append(engine.api.create_container(BUSYBOX, ["true"])["Id"])
        hex_name = foreign[-1][:8]
        assert engine.inspect(hex_name)["Id"] == foreign[-1]
        assert engine.named(hex_name) is None
        vm = api.create(busybox_spec(hex_name), ctx=ctx)
        assert vm.container_id != foreign[-1]
        vm.remove(force=True)
        assert engine.inspect(foreign[-1]) is not None  # never touched
    finally:
        for container in foreign:
            engine.remove(container, force=True)


KILLED_BEFORE_ID_IS_RECORDED = """
import os, signal, sys
from cvm import api, engine
from cvm.spec import parse_spec
engine.Engine.start = lambda self, container: os.kill(os.getpid(), signal.SIGKILL)
spec = parse_spec({"name": sys.argv[2], "image": sys.argv[3], "init": "none",
                   "command": ["sleep", "100000"]})
api.create(spec, ctx=api.Context(state_root=sys.argv[1]))
"""


def test_create_killed_before_the_record_has_its_container(cvm, ctx, images, name):
    killed = subprocess.run([os.sys.executable, "-c", KILLED_BEFORE_ID_IS_RECORDED,
                             ctx.store.root, name, BUSYBOX])
    assert killed.returncode == -signal.SIGKILL
    record = ctx.store.read_vm(name)
    assert record["phase"] == "creating" and record["container_id"] is None
    assert ctx.engine.named(name)["Config"]["Labels"]["io.cvm.realm"] == ctx.realm
    assert "creating" in cvm("ls", check=True).stdout
    cvm("rm", name, check=True)
    assert residue(ctx, name) == []


def test_a_restart_killed_while_docker_stops_the_vm_is_finished_by_netd(cvm, ctx, images,
                                                                          name, state_dir):
    """cvm restart killed while Docker still waits for the VM to stop (its PID 1 ignores
    SIGTERM: Docker kills it after the timeout): netd finds the restart dead and the VM
    still on the boot it was stopping, so it stops and starts it. Without that, Docker's
    stop would end after netd's recovery and leave the VM stopped."""
    vm = api.create(parse_spec({"name": name, "image": BUSYBOX, "init": "none",
                                "command": ["sleep", "100000"]}), ctx=ctx)
    before = vm.boot
    restart = subprocess.Popen([CVM, "restart", name, "--timeout", "4"],
                               env=dict(cvm.env, CVM_NO_DAEMON="1"))
    wait_for(lambda: (ctx.store.read_vm(name).get("operation") or {}).get("kind") ==
             "restart", what="the restart to begin")
    restart.kill()
    restart.wait()
    assert api.get(name, ctx).boot == before  # Docker still stops it
    netd = NetdProcess(state_dir).start()
    try:
        wait_for(lambda: api.get(name, ctx).running and api.get(name, ctx).boot != before,
                 timeout=20, what="netd to finish the restart")
        time.sleep(5)  # past the stop timeout of the killed restart
        vm = api.get(name, ctx)
        assert vm.running and vm.record["desired"] == "running"
        assert "operation" not in vm.record
    finally:
        netd.stop()


BAD_CREATE = [
    (["--image", "nope/missing"], "image: 'nope/missing' is not on this host"),
    (["--image", "nope/missing", "--init", "auto"], "image: 'nope/missing' is not on this host"),
    (["--memory", "12x"], "memory: '12x' is not a size"),
    (["--memory", "1m"], "memory: 1m is below Docker's minimum of 6m"),
    (["--cpus", "0"], "cpus: 0 must be above 0"),
    (["--cpus", "-2"], "cpus: -2 must be above 0"),
    (["--cpus", "999"], "cpus: 999 is more than the host's"),
    (["--cpuset", "63"], "cpuset: CPU 63 does not exist on this host"),
    (["--hostname", "no_underscores"], "hostname: 'no_underscores' is not a valid hostname"),
    (["--volume", "relative:/data"], "volumes[1]: host path 'relative' is not absolute"),
    (["--volume", "/tmp/x:data"], "volumes[1]: guest path 'data' is not absolute"),
    (["--restart", "maybe"], "restart: 'maybe' is not a restart policy"),
    (["--nic", "mode=bridge,link=br0,ip=198.51.100.5/24,gw=203.0.113.1"],
     "nics[0].gw: gateway 203.0.113.1 is outside the NIC's subnet"),
]


@pytest.mark.parametrize("flags,message", BAD_CREATE, ids=[m.split(":")[0] + str(i) for i, (_, m)
                                                           in enumerate(BAD_CREATE)])
def test_bad_create_leaves_nothing(cvm, ctx, images, name, scratch, flags, message):
    volume_dir = os.path.join(scratch, "vol")
    args = ["create", name, "--image", BUSYBOX, "--init", "none", "-v",
            "%s:/vol" % volume_dir] + flags
    if "--image" in flags:
        args = ["create", name, "--init", "none", "-v", "%s:/vol" % volume_dir] + flags
    result = cvm(*args)
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert residue(ctx, name, [volume_dir]) == []


def test_bad_name_and_file_errors(cvm, ctx, images, tmp_path):
    long_name = cvm("create", "averyverylongname", "--image", BUSYBOX)
    assert long_name.returncode == 2 and "name: 'averyverylongname' is 17 characters" in \
        long_name.stderr
    bad_yaml = tmp_path / "bad.yml"
    bad_yaml.write_text("vms:\n  - name: a\n    image: [x\n")
    result = cvm("apply", "-f", bad_yaml)
    assert result.returncode == 2 and "bad.yml: malformed YAML at line" in result.stderr
    unknown = tmp_path / "unknown.yml"
    unknown.write_text("vms:\n  - name: a\n    image: %s\n    memroy: 1g\n" % BUSYBOX)
    result = cvm("apply", "-f", unknown)
    assert result.returncode == 2
    assert "unknown.yml: vms[0].memroy: unknown key (did you mean 'memory'?)" in result.stderr
    assert api.ls(ctx) == []


def test_failure_after_container_create_rolls_back(ctx, images, name, scratch, monkeypatch):
    volume_dir = os.path.join(scratch, "vol")
    spec = busybox_spec(name, volumes=["%s:/vol" % volume_dir])

    def broken_start(container):
        raise RuntimeError("injected start failure")

    monkeypatch.setattr(ctx.engine, "start", broken_start)
    with pytest.raises(RuntimeError, match="injected"):
        api.create(spec, ctx=ctx)
    assert residue(ctx, name, [volume_dir]) == []


def test_no_engine_is_one_clear_line(cvm, name):
    result = cvm("create", name, "--image", BUSYBOX, env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert result.returncode == 1
    assert result.stderr.startswith("cvm: no Docker engine answers at unix:///nonexistent.sock")
    assert "dockerd" in result.stderr and len(result.stderr.splitlines()) == 1


def test_not_root_is_one_clear_line(cvm, state_dir, name):
    os.makedirs(os.path.join(state_dir, "vms"), mode=0o700)  # as root made it
    expected = {
        ("create", name, "--image", BUSYBOX): "cvm: cvm create needs root (it enters another "
                                              "process's namespaces); run it as root or with sudo",
        # Not an empty table: the VMs are there, this user cannot see them.
        ("ls",): "cvm: cannot read %s/vms; run cvm as root" % state_dir,
        ("inspect", name): "cvm: cannot read %s/vms/%s.json; run cvm as root" % (state_dir, name)}
    for args, line in expected.items():
        result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                 cvm.program] + list(args), capture_output=True, text=True,
                                env=dict(cvm.env))
        assert (result.returncode, result.stderr) == (1, line + "\n"), args


@pytest.mark.parametrize("delay", [0.1, 0.2, 0.25, 0.3, 0.35, 0.5])
def test_killed_create_leaves_a_vm_that_rm_removes(cvm, ctx, images, name, scratch, delay):
    volume_dir = os.path.join(scratch, "vol")
    process = cvm.popen("create", name, "--image", BUSYBOX, "--init", "none", "-v",
                        "%s:/vol" % volume_dir, "--", "sleep", "100000",
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()
    record = ctx.store.read_vm(name)
    print("killed after %.2fs: %s" % (delay, record and record["phase"]))
    if record is not None and record["phase"] == "ready":
        assert api.get(name, ctx).status == "running"  # complete
    if record is not None:
        cvm("rm", "-f", name, check=True)
    assert residue(ctx, name, [] if record and record["phase"] == "ready" else [volume_dir]) == []


@pytest.mark.parametrize("step", ["recorded", "volumes", "files", "container"])
def test_rm_after_a_create_killed_at_a_step_leaves_nothing(cvm, ctx, images, name, scratch,
                                                            state_dir, step):
    """The volume directories a create makes are in its record before they exist, so
    `cvm rm` of a create killed anywhere removes them (while empty)."""
    volume_dir = os.path.join(scratch, "made", "vol")
    marker = os.path.join(state_dir, "paused")
    process = subprocess.Popen(
        [CVM, "create", name, "--image", BUSYBOX, "--init", "none", "-v", volume_dir + ":/vol",
         "--", "sleep", "100000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(cvm.env, CVM_NO_DAEMON="1", CVM_PAUSE_AT="create:" + step, CVM_PAUSED=marker))
    wait_for(lambda: os.path.exists(marker) or process.poll() is not None, timeout=30,
             what="the create to pause at %s" % step)
    assert process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert os.path.isdir(volume_dir) == (step != "recorded")
    cvm("rm", "-f", name, check=True)
    assert residue(ctx, name, [volume_dir, os.path.dirname(volume_dir)]) == []


def test_parallel_creates_do_not_interleave(ctx, images, name):
    from concurrent.futures import ThreadPoolExecutor
    names = ["%s%d" % (name, i) for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda n: api.create(busybox_spec(n), ctx=ctx), names))
    assert sorted(v.name for v in api.ls(ctx)) == sorted(names)
    assert all(v.status == "running" for v in api.ls(ctx))


def test_get_unknown_vm(ctx):
    with pytest.raises(NotFound, match="no VM named 'ghost'"):
        api.get("ghost", ctx)


def test_resize_needs_something(ctx, images, name):
    vm = api.create(busybox_spec(name), ctx=ctx)
    with pytest.raises(SpecError, match="nothing to resize"):
        vm.resize()


def test_host_tools_take_flags_on_either_side_and_show_their_help(cvm, ctx, images, name):
    api.create(busybox_spec(name, memory="64m"), ctx=ctx)
    before, after = cvm("free", "-m", name, check=True), cvm("free", name, "-m", check=True)
    assert before.stdout.splitlines()[1].split()[:2] == ["Mem:", "64"]
    assert before.stdout.splitlines()[1].split()[:2] == after.stdout.splitlines()[1].split()[:2]
    for tool in ("free", "top", "vmstat", "mpstat", "uptime"):
        shown = cvm(tool, "--help")
        original = subprocess.run([tool, "--help"], capture_output=True)  # mpstat's is 1
        assert shown.returncode == original.returncode, tool
        assert "Usage:" in shown.stdout + shown.stderr, tool
    nameless = cvm("free", "-m")
    assert nameless.returncode == 2 and nameless.stderr == \
        "cvm: name: give the VM: cvm free [OPTIONS] NAME\n"


def test_a_vm_whose_container_is_gone_says_so(cvm, ctx, engine, images, name):
    vm = api.create(busybox_spec(name), ctx=ctx)
    engine.remove(vm.container_id, force=True)  # behind cvm's back
    assert cvm("ls").stdout.split("\n")[1].split()[:2] == [name, "missing"]
    assert cvm("stats", name, "--json").returncode == 0
    assert json.loads(cvm("stats", name, "--json").stdout)[0]["status"] == "missing"
    again = cvm("create", name, "--image", BUSYBOX, "--init", "none", "--", "sleep", "1")
    assert again.returncode == 2 and again.stderr == (
        "cvm: name: VM %s exists, but its container is gone (removed behind cvm's back): "
        "`cvm start %s` makes it again from its spec, `cvm rm %s` forgets it\n" % (
            (name,) * 3))
    cvm("start", name, check=True)
    assert api.get(name, ctx).running
