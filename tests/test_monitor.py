"""Host-side monitoring: counters from cgroup files and the VMs' own network namespaces,
the Prometheus exposition with cAdvisor's names, the exporter under churn."""

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from cvm import api
from cvm.monitor import Monitor, Sampler, Target, VMStats, exposition, parse_listen, rates
from cvm.spec import parse_spec

from .cgroupfixtures import v2_tree
from .conftest import BUSYBOX, CVM, wait_for
from .nethelpers import SUBNET

pytestmark = pytest.mark.engine


def busy_spec(name, *nics, **fields):
    raw = {"name": name, "image": BUSYBOX, "init": "none", "memory": "128m", "cpus": 0.5,
           "pids": 64, "command": ["sh", "-c", "while :; do :; done"], "nics": list(nics)}
    raw.update(fields)
    return parse_spec(raw)


def test_sweep_reads_cpu_memory_pids_io_and_nics(ctx, images, lab, name, engine):
    bridge = lab.bridge("%s.1/24" % SUBNET)
    nic = {"mode": "bridge", "link": bridge, "ip": "%s.150/24" % SUBNET}
    vm = api.create(busy_spec(name, nic), ctx=ctx)
    vm.exec(["sh", "-c", "dd if=/dev/zero of=/tmp/blob bs=1M count=16 2>/dev/null; "
                         "sleep 1000 </dev/null >/dev/null 2>&1 &"])
    monitor = Monitor(ctx.store)
    first = {s.name: s for s in monitor.sweep()}[name]
    subprocess.run(["ping", "-c", "3", "-i", "0.2", "%s.150" % SUBNET], capture_output=True)
    time.sleep(1.0)
    second = {s.name: s for s in monitor.sweep()}[name]
    assert second.status == "running" and second.errors == []
    assert second.memory_limit == 128 << 20 and second.cpu_quota == 0.5
    assert second.pids_limit == 64 and second.pids >= 2
    assert 0 < second.memory_working_set <= second.memory_usage
    assert second.memory_cache >= 16 << 20 or second.memory_usage >= 16 << 20  # the blob
    assert second.nics["eth0"]["rx_packets"] >= first.nics["eth0"]["rx_packets"] + 3
    assert second.nics["eth0"]["tx_bytes"] > first.nics["eth0"]["tx_bytes"]
    assert second.uptime > 0 and second.limits["memory"] == "128m"
    rate = rates(second, first)
    # A busy loop under a 0.5 CPU quota: ~50% of a host CPU, ~100% of its quota.
    assert 30 < rate["cpu_percent"] < 65, rate
    assert 60 < rate["cpu_quota_percent"] < 130, rate
    assert second.cpu_throttled_periods > 0 and second.cpu_throttled_seconds > 0
    # The same numbers Docker reports for the container.
    docker = engine.api.stats(vm.container_id, stream=False)
    assert abs(docker["memory_stats"]["usage"] - second.memory_usage) < 8 << 20
    assert docker["memory_stats"]["limit"] == second.memory_limit


def test_sweep_follows_resize_restart_and_removal(ctx, images, name):
    """Limits are cached and files kept open between sweeps: a resize must show at the
    next sweep, a restart (new init, cgroup made again) must be followed, and a removed
    VM's files closed."""
    vm = api.create(busy_spec(name, command=["sleep", "100000"]), ctx=ctx)
    monitor = Monitor(ctx.store)
    first = {s.name: s for s in monitor.sweep()}[name]
    assert first.memory_limit == 128 << 20 and first.cpu_quota == 0.5
    vm.resize(memory="192m", cpus=0.25)
    resized = {s.name: s for s in monitor.sweep()}[name]
    assert resized.memory_limit == 192 << 20 and resized.cpu_quota == 0.25

    vm.restart()
    restarted = {s.name: s for s in monitor.sweep()}[name]
    assert restarted.status == "running" and restarted.errors == []
    assert restarted.started_at >= first.started_at and restarted.pids >= 1
    assert restarted.memory_limit == 192 << 20

    assert monitor.targets[name].files.fds, "the sweep kept no files open"
    container_id, pid = vm.container_id, monitor.targets[name].pid
    assert any(container_id in path for path in open_paths())
    vm.remove(force=True)
    assert [s for s in monitor.sweep() if s.name == name] == []
    leftovers = [p for p in open_paths()
                 if container_id in p or p.startswith("/proc/%d/" % pid)]
    assert leftovers == [], leftovers


def open_paths():
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            paths.append(os.readlink("/proc/self/fd/" + fd))
        except OSError:
            pass
    return paths


def test_prometheus_names_and_labels(ctx, images, name, cvm):
    from prometheus_client.parser import text_string_to_metric_families
    api.create(busy_spec(name), ctx=ctx)
    text = cvm("stats", "--prometheus", check=True).stdout
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for metric in ("container_cpu_usage_seconds", "container_memory_working_set_bytes",
                   "container_spec_memory_limit_bytes", "container_cpu_cfs_throttled_periods",
                   "container_memory_usage_bytes", "container_threads",
                   "container_start_time_seconds", "cvm_collector_errors"):
        assert metric in families, sorted(families)
    (sample,) = [s for s in families["container_spec_memory_limit_bytes"].samples
                 if s.labels["name"] == name]
    assert sample.value == 128 << 20
    assert sample.labels["id"].startswith("/docker/") and sample.labels["image"] == BUSYBOX
    cpu = [s for s in families["container_cpu_usage_seconds"].samples
           if s.labels["name"] == name][0]
    assert cpu.labels["cpu"] == "total" and cpu.value > 0


def test_textfile_is_written_atomically(ctx, images, name, cvm, tmp_path):
    api.create(busy_spec(name), ctx=ctx)
    directory = tmp_path / "textfiles"
    directory.mkdir()
    target = directory / "cvm.prom"
    cvm("stats", "--textfile", target, check=True)
    assert 'name="%s"' % name in target.read_text()
    assert os.listdir(str(directory)) == ["cvm.prom"]  # no temporary file left


def test_stats_table_and_json(ctx, images, name, cvm):
    api.create(busy_spec(name), ctx=ctx)
    api.create(busy_spec(name + "s"), ctx=ctx).stop(timeout=1)
    table = cvm("stats", "--interval", "0.3", check=True).stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "CPU", "%"]
    running = [row for row in table if row.startswith(name + " ")][0]
    assert "/ 128MiB" in running and "%" in running
    assert [row for row in table if row.startswith(name + "s ")][0].split()[1] == "stopped"
    data = json.loads(cvm("stats", name, "--json", "--interval", "0.3", check=True).stdout)
    assert data[0]["name"] == name and data[0]["rates"]["cpu_percent"] > 10
    missing = cvm("stats", "nosuchvm")
    assert missing.returncode == 2 and "no VM named 'nosuchvm'" in missing.stderr


def test_stats_through_netd_give_the_last_seconds_rates_at_once(ctx, images, name, cvm,
                                                                netd):
    """netd keeps a sample of every VM: cvm stats compares a sweep now with it instead of
    sleeping between two (the sleep would show: --interval 5 is only for the fallback)."""
    api.create(busy_spec(name), ctx=ctx)
    cvm("stats", check=True)  # a VM new to netd is swept twice; netd samples every second
    time.sleep(1.5)
    started = time.monotonic()
    data = json.loads(cvm("stats", name, "--json", "--interval", "5", check=True).stdout)
    assert time.monotonic() - started < 4
    assert data[0]["name"] == name and data[0]["rates"]["cpu_percent"] > 10
    row = [r for r in cvm("stats", check=True).stdout.splitlines() if r.startswith(name)][0]
    assert row.split()[1].endswith("%") and row.split()[1] != "--"


def test_a_rate_spans_at_least_half_a_second(ctx, images, name):
    """Asked just after netd swept, stats compare with the sweep before: a VM held to half
    a CPU may be throttled through the few milliseconds since the last one."""
    api.create(busy_spec(name), ctx=ctx)
    sampler = Sampler(Monitor(ctx.store))
    for _ in range(2):
        swept = {stats.name: stats for stats in sampler.monitor.sweep([name])}
        sampler.previous, sampler.latest = sampler.latest, swept
        time.sleep(0.6)
    sampler.latest = {stats.name: stats for stats in sampler.monitor.sweep([name])}
    [(now, before)] = sampler.pairs([name])
    assert now.when - before.when >= Sampler.SHORTEST_SPAN
    assert rates(now, before)["cpu_percent"] > 10


def test_a_vm_started_since_the_last_sweep_is_rated_from_its_start(ctx, images, name):
    """A VM new to the sampler is compared with itself at its start (its cgroup and NICs
    begin at zero), not swept twice: stats answer at once after a create."""
    sampler = Sampler(Monitor(ctx.store))
    sampler.latest = {stats.name: stats for stats in sampler.monitor.sweep()}  # before it
    api.create(busy_spec(name), ctx=ctx)
    time.sleep(1.0)
    started = time.monotonic()
    [(now, before)] = sampler.pairs([name], interval=5)
    assert time.monotonic() - started < 1
    assert before.when == now.started_at and before.cpu_seconds == 0
    assert 10 < rates(now, before)["cpu_percent"] < 110  # a busy loop, from its start


def test_gone_and_unreadable_are_reported_not_fatal(tmp_path, state_dir):
    """A VM whose cgroup vanished mid-sweep is gone; a missing file is counted and named."""
    from cvm.cgroups import Cgroup
    from cvm.state import Store
    base, proc = v2_tree(str(tmp_path))
    monitor = Monitor(Store(state_dir))
    ok = Target("ok", {"container_id": "c1", "spec": {}})
    ok.cgroup, ok.pid, ok.started_at = Cgroup.at(base, 2), os.getpid(), time.time() - 5
    os.unlink(os.path.join(base, "memory.stat"))
    stats = VMStats("ok", "c1")
    monitor._read(ok, stats)
    assert stats.status == "running" and stats.cpu_seconds == 90.0
    assert [what for what, _ in stats.errors] == ["memory.stat"]
    assert monitor.errors_total == {("ok", "memory.stat"): 1}
    gone = Target("gone", {"container_id": "c2", "spec": {}})
    gone.cgroup, gone.pid = Cgroup.at(str(tmp_path / "vanished"), 2), os.getpid()
    stats = VMStats("gone", "c2")
    monitor._read(gone, stats)
    assert stats.status == "gone" and stats.errors == []
    text = exposition(monitor).decode()
    assert 'cvm_collector_errors_total{file="memory.stat",name="ok"} 1.0' in text


def v1_fixture_cgroup(root):
    """The v1 fixture's VM, with disk IO: {controller: its directory}."""
    from .cgroupfixtures import v1_host_tree_bind, write
    base, _ = v1_host_tree_bind(root)
    dirs = {c: os.path.join(base, c, "docker", "abc123")
            for c in ("memory", "cpu", "cpuacct", "pids", "blkio")}
    write(os.path.join(dirs["pids"], "pids.current"), "42\n")
    write(os.path.join(dirs["memory"], "memory.oom_control"),
          "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    write(os.path.join(dirs["blkio"], "blkio.throttle.io_service_bytes"),
          "8:0 Read 1048576\n8:0 Write 2097152\nTotal 3145728\n")
    write(os.path.join(dirs["blkio"], "blkio.throttle.io_serviced"),
          "8:0 Read 10\n8:0 Write 20\nTotal 30\n")
    return dirs


@contextlib.contextmanager
def fixture_target(tmp_path, state_dir, version=2):
    """(cgroup directories, Target, sweep): a VM on a fixture tree, whose init is a child
    in a network namespace of its own (its /proc/<pid>/net/dev counts only its idle lo);
    sweep() reads it as a monitor's sweep does. v2: one directory; v1: by controller."""
    from cvm.cgroups import Cgroup
    from cvm.state import Store
    base = v2_tree(str(tmp_path))[0] if version == 2 else v1_fixture_cgroup(str(tmp_path))
    monitor = Monitor(Store(state_dir))
    child = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    target = Target("idle", {"container_id": "c1", "spec": {}})
    try:
        wait_for(lambda: os.readlink("/proc/%d/ns/net" % child.pid) !=
                 os.readlink("/proc/self/ns/net"), 5, what="the child's own netns")
        target.cgroup, target.pid, target.started_at = Cgroup.at(base, version), child.pid, 0.0
        target.cgroup.read = target.files.read

        def sweep():
            stats = VMStats("idle", "c1")
            monitor._read(target, stats)
            assert stats.status == "running" and stats.errors == []
            return stats
        yield base, target, sweep
    finally:
        child.kill()
        child.wait()
        target.close()


def rewrite(directory, name, old, new):
    path = os.path.join(directory, name)
    with open(path) as handle:
        text = handle.read()
    assert old in text
    with open(path, "w") as handle:
        handle.write(text.replace(old, new))


def test_a_vm_whose_files_read_the_same_is_not_parsed_again(tmp_path, state_dir,
                                                             monkeypatch):
    """An idle VM's files read the same from one sweep to the next: its counters are
    kept, not parsed again. A file that changed is parsed at once."""
    parsed = []
    parse = Monitor._parse_counters
    monkeypatch.setattr(Monitor, "_parse_counters",
                        staticmethod(lambda *args: parsed.append(1) or parse(*args)))
    with fixture_target(tmp_path, state_dir) as (base, target, sweep):
        first, second = sweep(), sweep()
        assert len(parsed) == 1
        assert (second.cpu_seconds, second.memory_rss, second.pids, second.block) == \
            (first.cpu_seconds, first.memory_rss, first.pids, first.block) == \
            (90.0, 104857600, 42, {"8:0": {"rbytes": 1048576, "wbytes": 2097152,
                                           "rios": 10, "wios": 20}})
        with open(os.path.join(base, "pids.current"), "w") as handle:
            handle.write("43\n")
        third = sweep()
        assert len(parsed) == 2 and third.pids == 43 and third.cpu_seconds == 90.0


def test_an_idle_vm_keeps_the_files_only_its_running_moves(tmp_path, state_dir):
    """memory.stat, the costliest file, and the others that cannot move while the VM is
    idle are read again once its CPU time or memory usage moved, or IDLE_STEADY_TTL
    after their last read; the task count and the rest at every sweep."""
    from cvm import monitor
    with fixture_target(tmp_path, state_dir) as (base, target, sweep):
        assert sweep().memory_rss == 104857600
        rewrite(base, "memory.stat", "anon 104857600", "anon 209715200")
        rewrite(base, "pids.current", "42", "43")
        idle = sweep()
        assert (idle.memory_rss, idle.pids) == (104857600, 43)
        rewrite(base, "cpu.stat", "usage_usec 90000000", "usage_usec 91000000")
        ran = sweep()
        assert (ran.memory_rss, ran.cpu_seconds) == (209715200, 91.0)
        rewrite(base, "memory.stat", "anon 209715200", "anon 314572800")
        assert sweep().memory_rss == 209715200
        rewrite(base, "memory.current", "314572800", "419430400")
        charged = sweep()
        assert (charged.memory_rss, charged.memory_usage) == (314572800, 419430400)
        rewrite(base, "memory.stat", "anon 314572800", "anon 104857600")
        assert sweep().memory_rss == 314572800
        target.steady_read_at -= monitor.IDLE_STEADY_TTL
        assert sweep().memory_rss == 104857600


def test_each_group_of_counters_is_parsed_again_only_when_its_own_files_changed(
        tmp_path, state_dir, monkeypatch):
    """Traffic moves a VM's NIC counters alone, and a task more its task count alone:
    the other counters are kept as they were parsed, memory.stat's above all (its parse
    is most of a VM's). A VM that ran reads memory.stat again, but parses it only if it
    reads differently."""
    from cvm.cgroups import Cgroup
    parsed = []
    memory_stat = Cgroup.memory_stat
    monkeypatch.setattr(Cgroup, "memory_stat",
                        lambda cgroup: parsed.append(1) or memory_stat(cgroup))
    with fixture_target(tmp_path, state_dir) as (base, target, sweep):
        assert sweep().memory_rss == 104857600 and len(parsed) == 1
        rewrite(base, "pids.current", "42", "43")
        assert sweep().pids == 43 and len(parsed) == 1
        rewrite(base, "cpu.stat", "usage_usec 90000000", "usage_usec 91000000")
        ran = sweep()
        assert (ran.cpu_seconds, ran.memory_rss, ran.pids) == (91.0, 104857600, 43)
        assert len(parsed) == 1
        rewrite(base, "memory.stat", "anon 104857600", "anon 209715200")
        rewrite(base, "cpu.stat", "usage_usec 91000000", "usage_usec 92000000")
        assert sweep().memory_rss == 209715200 and len(parsed) == 2


def test_the_exposition_follows_every_sweep_of_an_idle_vm(tmp_path, state_dir):
    """A VM's lines are kept from scrape to scrape while its values stay; each scrape is
    still what prometheus_client writes for that sweep's values: a moved counter, a
    limit read again, a new last-seen time."""
    from cvm import monitor
    from .test_exposition import library_text

    class OneVM:
        errors_total = {}

        def sweep(self, names=None):
            self.swept = [sweep()]
            return self.swept

    with fixture_target(tmp_path, state_dir) as (base, target, sweep):
        one = OneVM()
        texts = []
        for change in (None, None, ("pids.current", "42", "43"),
                       ("pids.max", "4096", "2048")):
            if change:
                rewrite(base, *change)
            if change and change[0] == "pids.max":
                target.limits_read_at -= monitor.LIMITS_TTL
            texts.append(exposition(one))
            assert texts[-1] == library_text(one.swept, {})
        seen = [[line for line in text.splitlines()
                 if line.startswith(b"container_last_seen{")] for text in texts]
        assert len(seen[0]) == 1 and seen[0] != seen[1]
        assert b'container_threads{id="/docker/c1",image="",name="idle"} 43.0' in texts[2]
        assert b'container_threads_max{id="/docker/c1",image="",name="idle"} 2048.0' in \
            texts[3]


@pytest.mark.parametrize("version, kept", [(1, True), (2, False)])
def test_an_idle_vms_disk_io_is_kept_on_cgroup_v1_only(tmp_path, state_dir, version, kept):
    """v1 charges writeback to the flusher, so a VM's disk IO moves only while it runs;
    v2 charges the VM, running or not: its io.stat is read at every sweep."""
    with fixture_target(tmp_path, state_dir, version) as (base, target, sweep):
        assert sweep().block["8:0"]["rbytes"] == 1048576
        target.ran_by -= 1.0  # it last ran long before: its throttling settled (see below)
        if version == 1:
            rewrite(base["blkio"], "blkio.throttle.io_service_bytes", "8:0 Read 1048576",
                    "8:0 Read 3145728")
        else:
            rewrite(base, "io.stat", "rbytes=1048576", "rbytes=3145728")
        assert sweep().block["8:0"]["rbytes"] == (1048576 if kept else 3145728)


@pytest.mark.parametrize("quota, settling", [("150000", 0.2), ("-1", 0.0)])
def test_an_idle_vms_throttling_is_kept_once_it_settled_on_cgroup_v1(
        tmp_path, state_dir, quota, settling):
    """v1 counts a VM's CFS periods for up to two periods after it last ran: an idle VM's
    cpu.stat is read again until a sweep has read it more than that after its CPU time
    last moved, and kept from then on until the VM runs again. A VM with no quota counts
    none: its cpu.stat is kept at once."""
    with fixture_target(tmp_path, state_dir, 1) as (base, target, sweep):
        rewrite(base["cpu"], "cpu.cfs_quota_us", "150000", quota)
        assert sweep().cpu_periods == 100 and target.settling() == settling
        rewrite(base["cpu"], "cpu.stat", "nr_periods 100", "nr_periods 101")
        assert sweep().cpu_periods == (101 if settling else 100)
        target.ran_by -= 1.0  # as if it last ran a second before those sweeps
        rewrite(base["cpu"], "cpu.stat", "nr_periods 101", "nr_periods 102")
        assert sweep().cpu_periods == (101 if settling else 100)
        rewrite(base["cpuacct"], "cpuacct.usage", "30000000000", "31000000000")
        ran = sweep()
        assert (ran.cpu_seconds, ran.cpu_periods) == (31.0, 102)


def test_the_vms_shared_ancestors_limits_are_read_once_a_sweep(tmp_path, state_dir,
                                                                 monkeypatch):
    """Each limit is the smallest on a VM's lineage, and the VMs share their ancestors
    (docker's cgroup, the root): a sweep reads each ancestor's files once for all of
    them, a missing one (the root has no pids.max) included."""
    import shutil
    from collections import Counter
    from cvm.cgroups import Cgroup
    from cvm.monitor import OpenFiles
    from cvm.state import Store
    first = v1_fixture_cgroup(str(tmp_path))
    second = {}
    for controller, directory in first.items():
        second[controller] = directory.replace("abc123", "def456")
        shutil.copytree(directory, second[controller])
    rewrite(second["memory"], "memory.limit_in_bytes", "536870912", "268435456")
    reads = Counter()
    read = OpenFiles.read
    monkeypatch.setattr(OpenFiles, "read",
                        lambda files, path: reads.update([path]) or read(files, path))
    monitor, shared, limits = Monitor(Store(state_dir)), {}, {}
    for name, dirs in (("one", first), ("two", second)):
        target = Target(name, {"container_id": name, "spec": {}})
        target.cgroup, target.pid, target.started_at = Cgroup.at(dirs, 1), os.getpid(), 0.0
        target.cgroup.read = target.files.read
        stats = VMStats(name, name)
        monitor._read(target, stats, shared)
        target.close()
        limits[name] = (stats.memory_limit, stats.cpu_quota, stats.pids_limit)
    assert limits == {"one": (536870912, 1.5, None), "two": (268435456, 1.5, None)}
    ancestors = [path for path in reads if "/sys/fs/cgroup/" in path and
                 "abc123" not in path and "def456" not in path]
    assert any(path.endswith("/pids/pids.max") for path in ancestors)
    assert len(ancestors) >= 6 and all(reads[path] == 1 for path in ancestors), reads


def test_swap_is_read_from_v1_memory_stat_and_v2_swap_current(tmp_path, state_dir):
    """v1's memory.stat counts swap exactly (memsw.usage_in_bytes less usage_in_bytes is
    two reads and fuzzier); v2's memory.stat has no swap line: memory.swap.current."""
    from cvm.cgroups import Cgroup
    from cvm.state import Store
    from .cgroupfixtures import v1_host_tree_bind
    monitor = Monitor(Store(state_dir))
    v1_base, _ = v1_host_tree_bind(str(tmp_path / "v1"))
    memory = os.path.join(v1_base, "memory", "docker", "abc123")
    with open(os.path.join(memory, "memory.stat"), "a") as handle:
        handle.write("swap 0\ntotal_swap 8388608\n")
    os.unlink(os.path.join(memory, "memory.memsw.usage_in_bytes"))
    v2_base, _ = v2_tree(str(tmp_path / "v2"))
    with open(os.path.join(v2_base, "memory.swap.current"), "w") as handle:
        handle.write("4194304\n")
    v1 = {c: os.path.join(v1_base, c, "docker", "abc123")
          for c in ("memory", "cpu", "cpuacct", "pids", "blkio")}
    for name, cgroup, swap in (("v1", Cgroup.at(v1, 1), 8388608),
                               ("v2", Cgroup.at(v2_base, 2), 4194304)):
        target = Target(name, {"container_id": name, "spec": {}})
        target.cgroup, target.pid, target.started_at = cgroup, os.getpid(), time.time()
        stats = VMStats(name, name)
        monitor._read(target, stats)
        assert stats.memory_swap == swap, name
        assert "swap usage" not in [what for what, _ in stats.errors], name


def test_a_kept_proc_file_stops_reading_once_its_process_ended():
    """How a sweep knows a VM's init still runs: its /proc/<pid>/stat, kept open, reads
    until that process ends, and never again (the kernel binds it to the process, not to
    the pid number, which another process may take)."""
    from cvm.monitor import OpenFiles
    files = OpenFiles()
    child = subprocess.Popen(["sleep", "60"])
    path = "/proc/%d/stat" % child.pid
    try:
        files.read(path)
        assert files.still_readable(path)
        child.kill()
        child.wait()
        assert not files.still_readable(path)
        assert not files.still_readable("/proc/%d/stat" % os.getpid())  # never opened
    finally:
        files.close()


def test_a_vm_with_many_interfaces_has_all_of_them_counted():
    """A VM's /proc/<pid>/net/dev of 61 interfaces is 7.7 KB: the kernel's first read of
    it ends after 4 KB (a page of whole lines). Every interface must still be counted."""
    from cvm.monitor import OpenFiles, net_dev
    script = "for i in $(seq 30); do ip link add v$i type veth peer name p$i || exit 1; " \
             "done; exec sleep 60"
    child = subprocess.Popen(["unshare", "--net", "sh", "-c", script])
    files = OpenFiles()
    try:
        wait_for(lambda: len(net_dev(child.pid)) == 60, 10, what="60 interfaces")
        assert len(net_dev(child.pid, files.read)) == 60
        assert len(net_dev(child.pid, files.read)) == 60  # and again, from the kept file
    finally:
        child.kill()
        child.wait()
        files.close()


def test_process_exits_names_the_ended_processes_in_one_call():
    """How a sweep knows which VMs' inits ended: one epoll over their pidfds names those
    that ended since it last asked, and only once; the others stay watched."""
    from cvm.monitor import ProcessExits
    exits = ProcessExits()
    ending, staying = subprocess.Popen(["sleep", "60"]), subprocess.Popen(["sleep", "60"])
    try:
        assert exits.watch(ending.pid, "ending") is not None
        exits.watch(staying.pid, "staying")
        assert exits.ended() == []
        ending.kill()
        ending.wait()
        assert exits.ended() == ["ending"]
        assert exits.ended() == []
    finally:
        for child in (ending, staying):
            child.kill()
            child.wait()
        exits.close()


def test_container_cgroups_are_found_without_rereading_mounts_until_one_is_missed(
        tmp_path, monkeypatch):
    """Listings look up every VM's cgroup: the mount table is read once, and again only
    when a lookup misses (a hierarchy mounted elsewhere since), at most once a second."""
    from cvm import cgroups
    from cvm.cgroups import Cgroup
    monkeypatch.setattr(cgroups, "REREAD_AFTER", 0)
    proc = str(tmp_path / "proc")
    mountinfo = os.path.join(proc, "self", "mountinfo")

    def mount_at(base, *containers):
        for container in containers:
            os.makedirs(os.path.join(base, "system.slice", "docker-%s.scope" % container))
        os.makedirs(os.path.dirname(mountinfo), exist_ok=True)
        with open(mountinfo, "w") as handle:
            handle.write("30 25 0:26 / %s rw,relatime shared:4 - cgroup2 cgroup2 rw\n" % base)
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    mount_at(first, "aaa", "bbb")
    assert Cgroup.of_container("aaa", proc).dirs["unified"].startswith(first)
    os.unlink(mountinfo)  # not read again while lookups hit
    assert Cgroup.of_container("bbb", proc).dirs["unified"].startswith(first)
    mount_at(second, "ccc")
    assert Cgroup.of_container("ccc", proc).dirs["unified"].startswith(second)
    with pytest.raises(Exception, match="no cgroup found for container ddd"):
        Cgroup.of_container("ddd", proc)
    # A VM's cgroup from its init (the monitor's way) shares the table read last.
    for pid, container in ((101, "ccc"), (102, "eee")):
        os.makedirs(os.path.join(proc, str(pid)))
        with open(os.path.join(proc, str(pid), "cgroup"), "w") as handle:
            handle.write("0::/system.slice/docker-%s.scope\n" % container)
    os.unlink(mountinfo)
    assert Cgroup.of_vm(101, proc).dirs["unified"].startswith(second)
    mount_at(str(tmp_path / "third"), "eee")
    assert Cgroup.of_vm(102, proc).dirs["unified"].startswith(str(tmp_path / "third"))
    # Stopped VMs miss every time: they do not make every lookup read the table again.
    monkeypatch.setattr(cgroups, "REREAD_AFTER", 60)
    reads = []
    monkeypatch.setattr(cgroups, "cgroup_mounts", lambda *a: reads.append(a) or {})
    for _ in range(3):
        with pytest.raises(Exception, match="no cgroup found for container fff"):
            Cgroup.of_container("fff", proc)
    assert reads == []


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_exporter_serves_through_churn(ctx, images, name, state_dir):
    port = free_port()
    server = subprocess.Popen([CVM, "exporter", "--listen", "127.0.0.1:%d" % port],
                              env=dict(os.environ, CVM_STATE_DIR=state_dir),
                              stderr=subprocess.PIPE)
    url = "http://127.0.0.1:%d/metrics" % port
    failures, scrapes = [], [0]
    stop = threading.Event()

    def scrape():
        while not stop.is_set():
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    if response.status != 200:
                        failures.append(response.status)
                    response.read()
                scrapes[0] += 1
            except Exception as exc:
                failures.append(repr(exc))
            time.sleep(0.05)

    try:
        wait_for(lambda: _answers(url), timeout=20, what="the exporter to listen")
        threads = [threading.Thread(target=scrape) for _ in range(3)]
        for thread in threads:
            thread.start()
        names = ["%s%d" % (name, i) for i in range(50)]
        for vm_name in names:
            api.create(busy_spec(vm_name, command=["sleep", "100000"], cpus=None), ctx=ctx)
        for vm_name in names:
            api.get(vm_name, ctx).remove(force=True)
        stop.set()
        for thread in threads:
            thread.join()
        assert failures == [] and scrapes[0] > 20, (failures[:5], scrapes)
    finally:
        stop.set()
        server.terminate()
        server.wait()


def _answers(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except Exception:
        return False


def test_exporter_listen_errors(cvm):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = cvm("exporter", "--listen", "127.0.0.1:%d" % port, timeout=20)
    assert result.returncode == 1
    assert result.stderr.strip() == "cvm: listen: cannot listen on 127.0.0.1:%d: Address already " \
        "in use" % port
    bad = cvm("exporter", "--listen", "nonsense", timeout=20)
    assert bad.returncode == 2 and "listen: 'nonsense' is not ADDRESS:PORT" in bad.stderr
    assert parse_listen("[::]:9730") == ("::", 9730)


def test_waiting_on_a_descriptor_above_1024_works():
    """netd keeps every VM's cgroup files open (the sampler): its sockets are numbered
    above 1024, where select(2) would abort the process (it did: "bit out of range")."""
    import resource
    import socket
    from cvm.monitor import allow_open_files
    from cvm.readiness import readable
    allow_open_files()
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1100:
        pytest.skip("this process may not open 1100 files")
    held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1030)]
    try:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            assert ours.fileno() > 1024
            assert readable([ours], 0.01) == []
            theirs.send(b"x")
            assert readable([ours], 1) == [ours]
    finally:
        for fd in held:
            os.close(fd)


@contextlib.contextmanager
def exporter_sweeping_ahead(sweep_seconds, margin=None):
    """(an Exporter whose sweeps take `sweep_seconds`, the times they ended), with its
    thread that sweeps ahead of steady scrapes running."""
    from cvm.monitor import Exporter
    sweeps = []

    def render():
        time.sleep(sweep_seconds)
        sweeps.append(time.monotonic())
        return b"metrics %d\n" % len(sweeps)

    exporter = Exporter(None, "127.0.0.1:0", cache_seconds=0.0, render=render)
    if margin is not None:
        exporter.MARGIN = margin
    stopping = threading.Event()
    threading.Thread(target=exporter.prepare_ahead, args=(stopping,), daemon=True).start()
    try:
        yield exporter, sweeps
    finally:
        stopping.set()


def test_the_exporter_sweeps_ahead_of_steady_scrapes():
    """A sweep of 0.3 s, scrapes every second: once they are steady (the third), each
    scrape is served at once from a sweep made just before it, one sweep per scrape."""
    with exporter_sweeping_ahead(0.3) as (exporter, sweeps):
        served, ages = [], []
        started = time.monotonic()
        for index in range(7):
            time.sleep(max(0.0, started + index - time.monotonic()))
            asked = time.monotonic()
            exporter.metrics()
            served.append(time.monotonic() - asked)
            ages.append(asked - sweeps[-1])
        assert max(served[4:]) < 0.05, served  # sweeps made ahead: served at once
        assert all(age < 1.0 for age in ages[4:]), ages  # and fresh
        assert len(sweeps) <= 8, len(sweeps)  # not more sweeps than scrapes (+ the first)


def test_the_exporter_sweeps_ahead_of_each_of_two_steady_scrapers():
    """Two Prometheus servers scraping the same host every second, 0.35 s apart (a
    high-availability pair): together their scrapes come unevenly, each on its own is
    steady. Each is served at once from a sweep made just before its scrape."""
    with exporter_sweeping_ahead(0.1, margin=0.2) as (exporter, sweeps):
        served = []
        started = time.monotonic() + 0.2
        for at, scraper in sorted((index + offset, scraper) for index in range(7)
                                  for offset, scraper in ((0.0, "a"), (0.35, "b"))):
            time.sleep(max(0.0, started + at - time.monotonic()))
            asked = time.monotonic()
            exporter.metrics(scraper)
            served.append((round(at, 2), scraper, time.monotonic() - asked,
                           asked - sweeps[-1]))
        later = served[8:]  # from each one's fifth scrape
        assert all(took < 0.05 for _, _, took, _ in later), served
        assert all(age < 0.5 for _, _, _, age in later), served
        assert len(sweeps) <= 15, len(sweeps)
