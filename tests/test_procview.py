"""free, top, mpstat, uptime and vmstat: the originals' layouts, the VM's numbers.

Oracle tests run each replacement against the host's root (CVM_PROCVIEW=host) beside
the real tool at the same moment: same lines, same columns and widths, numbers within
a small tolerance. VM tests boot real VMs with limits; cgroup v2 is checked against
fixture trees with values computed by hand.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from cvm import vmtools
from cvm.cgroups import Cgroup
from cvm.procview import free, top, uptime
from cvm.procview.sources import VMSource

from .cgroupfixtures import v1_host_tree_bind, v2_tree
from .conftest import BUSYBOX, DEBIAN

TOOLKIT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "toolkit")


def ours(tool, *args, env=None):
    environment = dict(os.environ, CVM_PROCVIEW="host", PYTHONPATH=TOOLKIT, **(env or {}))
    return subprocess.run([sys.executable, "-m", "cvm.procview." + tool] + list(args),
                          capture_output=True, text=True, env=environment)


def original(tool, *args):
    return subprocess.run([tool] + list(args), capture_output=True, text=True,
                          env=dict(os.environ, LC_ALL="C"))


def columns(line):
    """Where each field ends: identical for identical layouts with similar numbers."""
    return [m.end() for m in re.finditer(r"\S+", line)]


def close(a, b, tolerance):
    return abs(float(a) - float(b)) <= tolerance


# ---------------------------------------------------------------- oracles


@pytest.mark.parametrize("flags", [[], ["-m"], ["-g"], ["-b"], ["-k"], ["-h"], ["-w"],
                                   ["-t"], ["--si", "-h"], ["-h", "-w"], ["--kilo"],
                                   ["--mega"], ["--giga"], ["-l"], ["-t", "-m", "-w"]])
def test_free_matches_procps(flags):
    # The host's memory moves between the two runs (CI's daemons work meanwhile): a
    # mismatch is looked at again, twice, before it counts.
    for attempt in range(3):
        try:
            return compare_free(flags)
        except AssertionError:
            if attempt == 2:
                raise


def compare_free(flags):
    mine, theirs = ours("free", *flags).stdout, original("free", *flags).stdout
    mine_lines, their_lines = mine.splitlines(), theirs.splitlines()
    assert len(mine_lines) == len(their_lines)
    assert mine_lines[0] == their_lines[0]  # the header, byte for byte
    for a, b in zip(mine_lines[1:], their_lines[1:]):
        assert a.split()[0] == b.split()[0]
        assert len(a) == len(b) or "-h" in flags or "-b" in flags, (a, b)
        for x, y in zip(a.split()[1:], b.split()[1:]):
            if "-h" in flags:
                assert x[-2:] == y[-2:] or x[-1] == y[-1], (x, y)  # the same unit
            else:
                scale = {"-b": 1 << 20, "-k": 1024, "--kilo": 1024}.get(
                    next((f for f in flags if f in ("-b", "-k", "--kilo")), ""), 0)
                assert close(x, y, max(scale * 8, 8192 if not flags or flags == ["-l"] or
                                       "-w" in flags or "-t" in flags else 8)), (x, y)


def test_free_human_rules():
    # procps-ng's scale_size(): 4 characters with --si, 5 with the binary "i" suffix.
    assert free.scale(0, 0, False, True) == "0B"
    assert free.scale(9008, 0, False, True) == "8.8Mi"
    assert free.scale(534392, 0, False, True) == "521Mi"
    assert free.scale(24684084, 0, False, True) == "23Gi"
    assert free.scale(24684084, 0, True, True) == "25G"
    assert free.scale(9008, 0, True, True) == "9.2M"
    assert free.scale(3, 0, False, True) == "3.0Ki"
    assert free.scale(524288, 3, False, False) == "512"  # -m truncates
    assert free.scale(524287, 3, False, False) == "511"


def test_uptime_matches_procps():
    for flags in ([], ["-p"], ["-s"]):
        mine, theirs = ours("uptime", *flags).stdout, original("uptime", *flags).stdout
        if not flags:
            pattern = r"^ \d\d:\d\d:\d\d up (\d+ days?, )?( ?\d+:\d\d|\d+ min),\s+\d+ users?," \
                      r"  load average: \d+\.\d\d, \d+\.\d\d, \d+\.\d\d$"
            assert re.match(pattern, mine.strip("\n")) and re.match(pattern, theirs.strip("\n"))
            assert mine.split("load average:")[0][10:] == theirs.split("load average:")[0][10:]
            for x, y in zip(mine.split(":")[-1].split(","), theirs.split(":")[-1].split(",")):
                assert close(x, y, 0.5)
        else:
            assert mine == theirs


def test_uptime_durations():
    cases = {30: ("0 min", "0 minutes"), 61: ("1 min", "1 minute"),
             3600: (" 1:00", "1 hour"), 3725: (" 1:02", "1 hour, 2 minutes"),
             90061: ("1 day,  1:01", "1 day, 1 hour, 1 minute"),
             8 * 86400 + 120: ("8 days, 2 min", "1 week, 1 day, 2 minutes")}
    for seconds, (normal, pretty) in cases.items():
        assert uptime.duration(seconds, False) == normal
        assert uptime.duration(seconds, True) == pretty


def test_vmstat_matches_procps():
    for flags in ([], ["-a"], ["-w"], ["-S", "m"], ["-t"]):
        mine, theirs = ours("vmstat", *flags).stdout, original("vmstat", *flags).stdout
        mine_lines, their_lines = mine.splitlines(), theirs.splitlines()
        assert mine_lines[:2] == their_lines[:2], flags
        a, b = mine_lines[2].split(), their_lines[2].split()
        assert len(a) == len(b)
        cpu = slice(-7, -2) if "-t" in flags else slice(-5, None)
        for x, y in zip(a[cpu], b[cpu]):
            assert close(x, y, 2), (flags, a, b)
    mine = ours("vmstat", "1", "2").stdout.splitlines()
    assert len(mine) == 4 and mine[:2] == original("vmstat").stdout.splitlines()[:2]


def test_mpstat_matches_sysstat():
    for flags in ([], ["-P", "ALL"], ["-u", "-P", "0"], ["-P", "ALL", "1", "2"]):
        mine, theirs = ours("mpstat", *flags).stdout, original("mpstat", *flags).stdout
        mine_lines, their_lines = mine.splitlines(), theirs.splitlines()
        assert len(mine_lines) == len(their_lines), (flags, mine, theirs)
        assert mine_lines[0] == their_lines[0]
        for a, b in zip(mine_lines[1:], their_lines[1:]):
            assert columns(a) == columns(b) or (a.split()[1:2] == b.split()[1:2]), (a, b)
            if a.startswith("Average:") and "CPU" not in a:
                assert a.split()[:2] == b.split()[:2]


def test_top_matches_procps():
    mine = ours("top", "-bn1").stdout.splitlines()
    theirs = original("top", "-bn1").stdout.splitlines()
    assert mine[0].split(" up ")[0][:6] == "top - "
    assert re.sub(r"\d", "0", mine[0].split("load average")[0]) == re.sub(
        r"\d", "0", theirs[0].split("load average")[0])
    for index in (1, 2, 3, 4):
        # The same words at the same places; a number may be one digit wider or narrower.
        assert len(mine[index]) == len(theirs[index]), (mine[index], theirs[index])
        assert re.sub(r"\s*[\d.]+", " N", mine[index]) == re.sub(r"\s*[\d.]+", " N",
                                                                  theirs[index])
    assert mine[5] == theirs[5] == ""
    assert mine[6] == theirs[6]  # the task header, byte for byte
    row = re.compile(r"^ *\d+ \S+ +(-?\d+|rt) +-?\d+ +[\d.]+[mgt]? +[\d.]+[mgt]? +[\d.]+[mgt]? "
                     r"[RSDIZTt] +[\d.]+ +[\d.]+ +\d+:\d\d\.\d\d \S")
    assert all(row.match(line) for line in mine[7:] if line), mine[7:12]
    assert max(len(line) for line in mine[6:]) <= 79  # top leaves the last column free
    assert abs(len(mine) - len(theirs)) < 10  # the same processes, give or take a few


def test_top_formatting_helpers():
    assert top.scale_mem(999999, 6) == "999999"
    assert top.scale_mem(2097152, 6) == "2.0g"
    assert top.scale_mem(1048576 * 1500, 7) == "1500.0g"  # fits: top keeps g
    assert top.scale_mem(1048576 * 1500, 6) == "1.5t"
    assert top.scale_tics(13.79) == "0:13.79"
    assert top.scale_tics(3600 * 100) == "6000:00"
    assert top.scale_pcnt(6.66) == "6.7"
    assert top.scale_pcnt(1234.5) == "1234"
    # A host of 480 VMs runs thousands of tasks: procps pads each count to three digits
    # after its space, and longer ones push the line right.
    assert top.tasks_line(["S"] * 4393 + ["R", "Z"]) == (
        "Tasks: 4395 total,   1 running, 4393 sleeping,   0 stopped,   1 zombie")
    assert top.tasks_line(["S", "R", "t"]) == (
        "Tasks:   3 total,   1 running,   1 sleeping,   1 stopped,   0 zombie")


BAD_FLAGS = [("free", ["--bogus"], "free: unrecognized option '--bogus'"),
             ("free", ["-x"], "free: invalid option -- 'x'"),
             ("free", ["-m", "-g"], "free: Multiple unit options don't make sense."),
             ("free", ["-c", "0"], "free: failed to parse count argument: '0': Numerical result "
                                   "out of range"),
             ("free", ["-s"], "free: option requires an argument -- 's'"),
             ("uptime", ["-z"], "uptime: invalid option -- 'z'"),
             ("vmstat", ["-q"], "vmstat: invalid option -- 'q'"),
             ("top", ["-Q"], "top: invalid option -- 'Q'"),
             ("mpstat", ["-P", "99"], "Usage: mpstat [ options ] [ <interval> [ <count> ] ]")]


GETOPT_CASES = [["-m"], ["-ms", "2", "-c3"], ["--mega", "--count", "4", "--seconds=1"],
                ["--sec", "2"], ["--cou=5", "x", "-t", "y"], ["a", "--", "-m", "--bogus"],
                ["-", "-w"], ["--to"], ["-c", "-1"], ["--human", "b", "-hw"]]


@pytest.mark.parametrize("argv", GETOPT_CASES)
def test_option_parser_is_gnu_getopt(argv):
    import getopt
    from cvm.procview import common
    assert common._gnu_getopt(list(argv), free.SHORT, free.LONG) == \
        getopt.gnu_getopt(argv, free.SHORT, free.LONG)


@pytest.mark.parametrize("argv,message", [
    (["--t"], "option '--t' is ambiguous"),
    (["--human=yes"], "option '--human' doesn't allow an argument"),
    (["--count"], "option '--count' requires an argument"),
    (["-wx"], "invalid option -- 'x'")])
def test_option_errors_in_gnus_words(argv, message):
    from cvm.procview import common
    with pytest.raises(common._OptionError, match="^%s$" % re.escape(message)):
        common._gnu_getopt(list(argv), free.SHORT, free.LONG)


@pytest.mark.parametrize("tool,flags,message", BAD_FLAGS)
def test_bad_flags_as_the_originals(tool, flags, message):
    result = ours(tool, *flags)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == message
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- cgroup layouts


def test_cgroup_v2_fixture_by_hand(tmp_path):
    base, proc = v2_tree(str(tmp_path))
    source = VMSource(Cgroup.of_vm(1, proc), 1, proc=proc)
    assert source.cgroup.version == 2 and source.cgroup.dirs["unified"] == base
    memory = source.memory()
    # 768 MiB limit; 300 MiB used of which 160 MiB page cache and 20 MiB reclaimable slab.
    assert memory.total == 786432
    assert memory.free == 786432 - 307200
    assert memory.cache == 163840 + 20480 and memory.buffers == 0
    assert memory.available == 479232 + 184320
    assert memory.used == 122880  # total - available
    assert memory.shared == 4096
    assert (memory.swap_total, memory.swap_used) == (0, 0)  # memory.swap.max 0: swap off
    assert source.cpu_count() == 2  # cpuset 0-3, quota 1.5 -> ceil 2
    total, per_cpu = source.cpu_times()
    assert sorted(per_cpu) == [0, 1]
    assert abs(total["user"] - 60.0) < 1e-6 and abs(total["system"] - 30.0) < 1e-6
    assert abs(per_cpu[0]["user"] - per_cpu[1]["user"]) < 1e-9  # v2: spread evenly
    assert abs(total["steal"] - 4.0) < 1e-6  # throttled_usec
    assert source.cgroup.pids_current() == 42 and source.cgroup.pids_limit() == 4096
    assert source.cgroup.oom_kills() == 1
    assert source.cgroup.blkio() == {"8:0": {"rbytes": 1048576, "wbytes": 2097152,
                                             "rios": 10, "wios": 20}}
    text = free.render(memory, exponent=3)
    assert text.splitlines()[1].split() == ["Mem:", "768", "120", "468", "4", "180", "648"]


def test_v1_host_tree_bind_fixture(tmp_path):
    base, proc = v1_host_tree_bind(str(tmp_path))
    source = VMSource(Cgroup.of_vm(1, proc), 1, proc=proc)
    # init.scope is pruned: the VM is /docker/abc123, not systemd's own scope.
    assert source.cgroup.dirs["memory"] == os.path.join(base, "memory", "docker", "abc123")
    memory = source.memory()
    assert memory.total == 524288                       # its 512 MiB, not the host's
    assert memory.available == 524288 - 204800 + 102400
    assert memory.shared == 1024
    assert memory.swap_total == 0                        # memsw == memory: swap off
    assert source.cpu_count() == 1                       # cpuset 0 beats quota 1.5
    total, per_cpu = source.cpu_times()
    assert list(per_cpu) == [0] and abs(per_cpu[0]["user"] - 20.0) < 1e-6
    assert abs(total["steal"] - 2.0) < 1e-6


def test_unlimited_values_mean_the_host(tmp_path):
    base, proc = v1_host_tree_bind(str(tmp_path))
    with open(os.path.join(base, "memory", "docker", "abc123", "memory.limit_in_bytes"),
              "w") as handle:
        handle.write("9223372036854771712\n")
    source = VMSource(Cgroup.of_vm(1, proc), 1, proc=proc)
    assert source.memory().total == 16384000  # the fixture host's MemTotal


def test_free_without_a_readable_meminfo_uses_the_limit(tmp_path):
    """A VM bound to an LXCFS that died reads ENOTCONN from /proc/meminfo; its `free` then
    falls back to cvm's, which needs the host's total only to cap an unlimited VM."""
    base, proc = v1_host_tree_bind(str(tmp_path))
    os.remove(os.path.join(proc, "meminfo"))
    source = VMSource(Cgroup.of_vm(1, proc), 1, proc=proc)
    memory = source.memory()
    assert memory.total == 524288 and memory.available == 524288 - 204800 + 102400
    with open(os.path.join(base, "memory", "docker", "abc123", "memory.limit_in_bytes"),
              "w") as handle:
        handle.write("9223372036854771712\n")
    with pytest.raises(OSError):
        VMSource(Cgroup.of_vm(1, proc), 1, proc=proc).memory()


def test_vms_threads_and_context_switches(tmp_path):
    """vmstat's r, b and cs: each thread of the cgroup (cgroup.threads on v2, tasks on
    v1), its state and its own switches, from its status (a name is escaped there, so
    "\\nState:" in one is not a line)."""
    from .cgroupfixtures import write
    base, proc = v2_tree(str(tmp_path))
    write(os.path.join(base, "init.scope", "cgroup.threads"), "1\n7\n")
    write(os.path.join(base, "system.slice", "cgroup.threads"), "8\n9\n404\n")
    for tid, name, state, switches in ((7, "worker", "R", (3, 4)),
                                       (8, "odd\\nState:\\tR", "D", (100, 7)),
                                       (9, "sshd", "S", (20, 0))):
        write(os.path.join(proc, str(tid), "status"),
              "Name:\t%s\nUmask:\t0022\nState:\t%s (x)\nTgid:\t%d\n"
              "voluntary_ctxt_switches:\t%d\nnonvoluntary_ctxt_switches:\t%d\n"
              "x86_Thread_features:\t\n" % ((name, state, tid) + switches))
    source = VMSource(Cgroup.of_vm(1, proc), 1, proc=proc)
    # 7 runs, 8 waits on a disk, 404 has gone; pid 1's status is the fixture's own
    assert source.activity() == (1, 1, 10 + 5 + 3 + 4 + 100 + 7 + 20)


def test_a_one_record_file_is_read_whole_in_one_read(tmp_path, monkeypatch):
    """vmstat and top read a status, stat or statm per task: one read each, and never
    less than the whole file, however long."""
    from cvm import procfs
    reads = []
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, size: reads.append(size) or real_read(fd, size))
    status = procfs.read_record("/proc/self/status")
    assert len(reads) == 1 and status.startswith("Name:") and status.endswith("\n")
    assert "\nnonvoluntary_ctxt_switches:" in status
    long_record = tmp_path / "long"
    long_record.write_text("x" * (2 * procfs.CHUNK + 100) + "\n")
    assert procfs.read_record(str(long_record)) == long_record.read_text()


def test_missing_cgroup_file_is_one_line(tmp_path):
    base, proc = v2_tree(str(tmp_path))
    os.unlink(os.path.join(base, "memory.stat"))
    source = VMSource(Cgroup.of_vm(1, proc), 1, proc=proc)
    with pytest.raises(SystemExit) as exit_info:
        free.main([], source=source)
    assert exit_info.value.code == 1


def test_load_average_decays_like_the_kernel():
    from cvm.procview.loadavg import decay
    loads = (0.0, 0.0, 0.0)
    for _ in range(12):  # a minute of one busy task, sampled every 5 s
        loads = decay(loads, 1.0, 5.0)
    assert 0.6 < loads[0] < 0.65 and loads[0] > loads[1] > loads[2]
    assert decay((2.0, 2.0, 2.0), 2.0, 30.0) == pytest.approx((2.0, 2.0, 2.0))


def test_procview_runs_on_python_36():
    """vermin proves the syntax; the real 3.6 interpreter proves it runs (when present)."""
    vermin = subprocess.run([os.path.join(os.path.dirname(sys.executable), "vermin"),
                             "-t=3.6-", "--no-tips", "--violations",
                             os.path.join(TOOLKIT, "cvm", "procview"),
                             os.path.join(TOOLKIT, "cvm", "cgroups.py"),
                             os.path.join(TOOLKIT, "cvm", "procfs.py"),
                             os.path.join(TOOLKIT, "cvm", "sizes.py")],
                            capture_output=True, text=True)
    assert vermin.returncode == 0, vermin.stdout + vermin.stderr
    python36 = "/root/.pyenv/versions/3.6.15/bin/python3"
    if not os.path.exists(python36):
        print("skipped the run on 3.6: no Python 3.6 interpreter on this machine")
        return
    for tool in ("free", "uptime", "vmstat", "mpstat", "top"):
        args = ["-bn1"] if tool == "top" else []
        result = subprocess.run([python36, "-m", "cvm.procview." + tool] + args,
                                capture_output=True, text=True,
                                env=dict(os.environ, CVM_PROCVIEW="host", PYTHONPATH=TOOLKIT))
        assert result.returncode == 0 and result.stdout, (tool, result.stderr)


# ---------------------------------------------------------------- real VMs


@pytest.fixture
def limited_vm(ctx, images, name):
    from cvm import api
    from cvm.spec import parse_spec
    vm = api.create(parse_spec({"name": name, "image": DEBIAN, "memory": "512m", "cpus": 1.5,
                                "cpuset": "0", "lxcfs": False}), ctx=ctx)
    from .conftest import wait_booted
    wait_booted(vm, timeout=30)
    return vm


def in_vm(vm, script):
    code, out, err = vm.exec(["sh", "-c", script])
    assert code == 0, err
    return out.decode()


@pytest.mark.engine
def test_tools_inside_a_limited_vm(limited_vm):
    vm = limited_vm
    assert in_vm(vm, "for t in free top mpstat uptime vmstat; do command -v $t; done").split() == [
        "/usr/local/bin/" + t for t in ("free", "top", "mpstat", "uptime", "vmstat")]
    # The classic one-liners of ops scripts get the VM's numbers.
    assert in_vm(vm, "free -m | awk '/^Mem:/{print $2}'").strip() == "512"
    assert in_vm(vm, "free -b | awk '/^Mem:/{print $2}'").strip() == str(512 << 20)
    assert in_vm(vm, "free | awk '/^Swap:/{print $2}'").strip() == "0"
    cpu_line = in_vm(vm, "top -bn1 | grep 'Cpu(s)'")
    assert re.match(r"^%Cpu\(s\):[ \d.]+us,", cpu_line)
    assert "(1 CPU)" in in_vm(vm, "mpstat")  # cpuset 0 beats the 1.5 quota
    average = in_vm(vm, "mpstat 1 1 | awk '/Average/'").splitlines()
    assert len(average) == 2 and average[1].split()[1] == "all"
    assert re.match(r"^ \d\d:\d\d:\d\d up 0 min,", in_vm(vm, "uptime"))
    mem_line = in_vm(vm, "top -bn1 | grep 'MiB Mem'")
    assert mem_line.split()[3] == "512.0"
    processes = in_vm(vm, "top -bn1 | awk 'NR>7 && NF' | wc -l")
    counted = in_vm(vm, "ls -d /proc/[0-9]* | wc -l")
    assert abs(int(processes) - int(counted)) <= 3
    assert in_vm(vm, "/usr/bin/free -m | awk '/^Mem:/{print $2}'").strip() != "512"  # host's


@pytest.mark.engine
def test_host_side_tools(cvm, limited_vm, name):
    result = cvm("free", name, "-m", check=True)
    assert result.stdout.splitlines()[1].split()[1] == "512"
    assert "(1 CPU)" in cvm("mpstat", name, check=True).stdout
    top_out = cvm("top", name, "-bn1", check=True).stdout
    assert "MiB Mem :    512.0 total" in top_out and "systemd" in top_out
    pids = [int(line.split()[0]) for line in top_out.splitlines()[7:] if line.strip()]
    assert 1 in pids  # the VM's own PIDs, not the host's
    assert cvm("uptime", name, "-p", check=True).stdout.startswith("up ")
    assert len(cvm("vmstat", name, "1", "2", check=True).stdout.splitlines()) == 4
    missing = cvm("free", "nosuchvm")
    assert missing.returncode == 2 and missing.stderr == \
        "cvm: no VM named 'nosuchvm' (see `cvm ls`)\n"
    cvm("stop", name, "-t", "5", check=True)
    stopped = cvm("free", name)
    assert stopped.returncode == 2 and len(stopped.stderr.splitlines()) == 1
    assert "not running" in stopped.stderr


@pytest.mark.engine
def test_lxcfs_gives_unmodified_programs_the_vm(cvm, ctx, images, name):
    """Where LXCFS serves the VM's /proc, `free` and `uptime` are procps' own (at its speed,
    no Python start) and print the numbers cvm's print: cvm's from the host (which adds
    nothing to the VM's memory while it measures) and cvm's inside (CVM_PROCVIEW=cgroup)."""
    import datetime
    from cvm import api
    from cvm.engine import lxcfs_running
    from cvm.spec import parse_spec
    if not lxcfs_running():
        pytest.fail("lxcfs is not running; `./run tests` starts it")
    vm = api.create(parse_spec({"name": name, "image": DEBIAN, "memory": "768m",
                                "cpus": 1.5}), ctx=ctx)
    assert vm.record["lxcfs"] is True
    assert in_vm(vm, "awk '/^MemTotal/{print $2}' /proc/meminfo").strip() == str(768 * 1024)
    assert in_vm(vm, "/usr/bin/free -m | awk '/^Mem:/{print $2}'").strip() == "768"
    assert in_vm(vm, "nproc").strip() == "2"  # lxcfs --enable-cfs: ceil(1.5)
    assert in_vm(vm, "free -V").startswith("free from procps-ng")
    assert in_vm(vm, "uptime -V").startswith("uptime from procps-ng")
    assert in_vm(vm, "CVM_PROCVIEW=cgroup free -V").startswith("free from cvm procview")

    # 64 MiB in tmpfs: page cache that cannot be dropped, where formulas for "used" differ.
    in_vm(vm, "dd if=/dev/zero of=/dev/shm/fill bs=1M count=64 2>/dev/null")
    meminfo = dict((line.split(":")[0], int(line.split()[1])) for line in in_vm(
        vm, "cat /proc/meminfo").splitlines())
    assert meminfo["Shmem"] >= 64 * 1024
    # procps-ng before 4.0.1 (CentOS 7, EL 8 and 9, Ubuntu 22.04) prints used as total -
    # free - buffers - cache - SReclaimable, later ones as total - available: LXCFS's
    # /proc/meminfo makes the two the same, so every image's own free agrees with cvm's.
    assert meminfo["MemAvailable"] == meminfo["MemFree"] + meminfo["Buffers"] + \
        meminfo["Cached"] + meminfo["SReclaimable"]

    def memory_row(text):
        return [int(v) for v in text.splitlines()[1].split()[1:]]

    def sandwiched_reading():
        """cvm's reading between two of procps': a booting VM's shared memory (its /run)
        moves by pages between reads, so one reading each may rightly differ."""
        before = memory_row(in_vm(vm, "free -k"))
        cvms = memory_row(cvm("free", name, "-k", check=True).stdout)
        after = memory_row(in_vm(vm, "free -k"))
        return before, cvms, min(before[3], after[3]) <= cvms[3] <= max(before[3], after[3])

    for _ in range(5):
        procps, cvms, shared_agrees = sandwiched_reading()
        if shared_agrees:
            break
    assert shared_agrees, (procps, cvms)
    assert procps[0] == cvms[0] == 768 * 1024  # total
    for mine, theirs in zip(cvms[1:], procps[1:]):  # procps' own run is in the VM: ~1 MiB
        assert abs(mine - theirs) <= 2048, (cvms, procps)

    def since(text):
        return datetime.datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S")
    booted = since(in_vm(vm, "uptime -s"))
    assert abs((booted - since(cvm("uptime", name, "-s", check=True).stdout)).total_seconds()) <= 1
    assert abs((booted - since(in_vm(vm, "CVM_PROCVIEW=cgroup uptime -s"))).total_seconds()) <= 1
    loads = in_vm(vm, "uptime; CVM_PROCVIEW=cgroup uptime").splitlines()
    procps_load, cvms_load = (line.split("load average:")[1].split(",") for line in loads)
    assert all(abs(float(a) - float(b)) <= 0.05 for a, b in zip(procps_load, cvms_load)), loads


@pytest.mark.engine
def test_nproc_counts_the_vms_cpus(ctx, images, name):
    """coreutils' nproc counts the host's affinity mask (2 here for a VM of half a CPU):
    cvm's counts the VM's, as getconf does where LXCFS serves the CPUs online."""
    from cvm import api
    from cvm.spec import parse_spec
    vm = api.create(parse_spec({"name": name, "image": DEBIAN, "cpus": 0.5}), ctx=ctx)
    assert in_vm(vm, "/usr/bin/nproc").strip() == str(len(os.sched_getaffinity(0)))
    assert in_vm(vm, "nproc").strip() == in_vm(vm, "getconf _NPROCESSORS_ONLN").strip() == "1"
    assert in_vm(vm, "nproc --all").strip() == str(os.cpu_count())
    assert in_vm(vm, "nproc --ignore=3").strip() == "1"
    bad = api.get(name, ctx).exec(["nproc", "--ignore=x"])
    assert bad[0] == 1 and bad[2] == b"nproc: invalid number: 'x'\n"


UNCOMPILED = ("import importlib.util, json, pathlib; print(json.dumps(["
              "str(p) for p in pathlib.Path(%r).rglob('*.py') if not "
              "pathlib.Path(importlib.util.cache_from_source(str(p))).exists()]))"
              % vmtools.TOOLS_LIBRARY)


def in_container(engine, container, argv, user=""):
    exec_id = engine.api.exec_create(container, argv, user=user)
    output = engine.api.exec_start(exec_id).decode()
    return engine.api.exec_inspect(exec_id)["ExitCode"], output


@pytest.mark.engine
def test_tools_install_into_any_container(cvm, engine, images, name):
    container = engine.api.create_container(DEBIAN, ["sleep", "100000"], name=name,
                                            host_config=engine.api.create_host_config(
                                                mem_limit="300m", network_mode="none"))
    try:
        engine.start(container["Id"])
        for pycache in ("procview/__pycache__", "__pycache__"):  # the image's compiled ones
            in_container(engine, name, ["rm", "-r", vmtools.TOOLS_LIBRARY + "/cvm/"
                                        + pycache])
        assert json.loads(in_container(engine, name, ["python3", "-c", UNCOMPILED])[1])
        result = cvm("tools", "install", name, check=True)
        assert result.stdout == name + "\n" and result.stderr == ""
        assert in_container(engine, name, ["python3", "-c", UNCOMPILED]) == (0, "[]\n")
        code, output = in_container(engine, name, ["/usr/local/bin/free", "-m"], user="nobody")
        assert code == 0 and output.splitlines()[1].split()[1] == "300"
    finally:
        engine.remove(container["Id"], force=True)


@pytest.mark.engine
def test_the_image_holds_its_tools_compiled(engine, images):
    """A user who cannot write __pycache__ would otherwise compile them on every run."""
    output = engine.api.create_container(DEBIAN, ["python3", "-c", UNCOMPILED],
                                         network_disabled=True)
    try:
        engine.start(output["Id"])
        assert engine.api.wait(output["Id"], timeout=60)["StatusCode"] == 0
        assert engine.api.logs(output["Id"]).decode() == "[]\n"
    finally:
        engine.remove(output["Id"], force=True)


@pytest.mark.engine
def test_tools_install_refuses_a_container_without_python3(cvm, engine, images, name):
    container = engine.api.create_container(BUSYBOX, ["sleep", "100000"],
                                            name=name, host_config=engine.api.create_host_config(
                                                network_mode="none"))
    try:
        engine.start(container["Id"])
        result = cvm("tools", "install", name)
        assert result.returncode == 1 and result.stdout == ""
        assert re.fullmatch(r"cvm: %s has no python3 that runs \(.*executable file not found.*"
                            r"\), and cvm's tools need one; nothing was copied\n" % name,
                            result.stderr), result.stderr
        nothing_copied = ["sh", "-c", "! test -e /usr/lib/cvm && ! test -e /usr/local/bin/free"]
        assert in_container(engine, name, nothing_copied)[0] == 0
    finally:
        engine.remove(container["Id"], force=True)


def test_saved_samples_round_trip_and_trust_only_their_user(tmp_path, monkeypatch):
    from cvm.procview import state
    path = str(tmp_path / "procview-k.state")
    monkeypatch.setattr(state, "_candidates", lambda key: iter([path]))
    sample = {"time": 1.5, "loads": [0.5, 0.25, 0.0], "boot": 12.0, "pid": 7}
    assert state.save("k", sample) and state.load("k") == sample
    os.chown(path, 65534, 65534)  # planted by another user of a shared /tmp
    assert state.load("k") is None
    os.chown(path, os.getuid(), os.getgid())
    with open(path, "wb") as handle:
        handle.write(b"\xffnot a sample")
    assert state.load("k") is None
