"""Fixture trees for cgroup layouts this machine cannot run: cgroup v2 (the kernel's
documented file formats, Documentation/admin-guide/cgroup-v2.rst) and the v1 layouts
a VM can see. A fake /proc holds mountinfo, the init's cgroup and stat, meminfo."""

import os
import textwrap

HOST_MEMINFO = """\
MemTotal:       16384000 kB
MemFree:        10000000 kB
MemAvailable:   14000000 kB
Buffers:          100000 kB
Cached:          2000000 kB
SwapTotal:       2097148 kB
SwapFree:        2097148 kB
Shmem:             50000 kB
SReclaimable:     200000 kB
"""


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(textwrap.dedent(text))


def fake_proc(root, mountinfo, init_cgroup, pid=1, start_ticks=1000, uptime=5000.0):
    proc = os.path.join(root, "proc")
    write(os.path.join(proc, "self", "mountinfo"), mountinfo)
    write(os.path.join(proc, str(pid), "cgroup"), init_cgroup)
    stat = "%d (systemd) S 0 1 1 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 %d 1000 100" % (
        pid, start_ticks)
    write(os.path.join(proc, str(pid), "stat"), stat + " 0" * 30 + "\n")
    write(os.path.join(proc, str(pid), "statm"), "1000 200 100 10 0 300 0\n")
    write(os.path.join(proc, str(pid), "status"), "Name:\tsystemd\nState:\tS (sleeping)\n"
          "Uid:\t0\t0\t0\t0\nvoluntary_ctxt_switches:\t10\nnonvoluntary_ctxt_switches:\t5\n")
    write(os.path.join(proc, "meminfo"), HOST_MEMINFO)
    write(os.path.join(proc, "stat"), "cpu  100 0 50 1000 0 0 0 0 0 0\ncpu0 25 0 12 250 0 0 "
          "0 0 0 0\ncpu1 25 0 13 250 0 0 0 0 0 0\ncpu2 25 0 12 250 0 0 0 0 0 0\ncpu3 25 0 13 "
          "250 0 0 0 0 0 0\nbtime %d\n" % 1700000000)
    write(os.path.join(proc, "uptime"), "%.2f 0.00\n" % uptime)
    return proc


def v2_tree(root):
    """A VM under cgroup v2 in a private cgroup namespace: the mount shows its subtree,
    with systemd's children inside. 768 MiB limit, 1.5 CPUs over cpuset 0-3."""
    base = os.path.join(root, "sys", "fs", "cgroup")
    files = {
        "cgroup.procs": "", "cgroup.controllers": "cpuset cpu io memory pids\n",
        "cgroup.subtree_control": "cpu io memory pids\n",
        "memory.max": "805306368\n", "memory.current": "314572800\n",
        "memory.swap.max": "0\n", "memory.swap.current": "0\n",
        "memory.stat": "anon 104857600\nfile 167772160\nkernel 10485760\nshmem 4194304\n"
                       "file_mapped 8388608\nactive_anon 52428800\ninactive_anon 52428800\n"
                       "active_file 83886080\ninactive_file 83886080\nslab_reclaimable "
                       "20971520\nslab_unreclaimable 5242880\npgfault 1000\npgmajfault 10\n",
        "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        "cpu.max": "150000 100000\n",
        "cpu.stat": "usage_usec 90000000\nuser_usec 60000000\nsystem_usec 30000000\n"
                    "nr_periods 5000\nnr_throttled 120\nthrottled_usec 4000000\n",
        "cpuset.cpus.effective": "0-3\n", "pids.current": "42\n", "pids.max": "4096\n",
        "io.stat": "8:0 rbytes=1048576 wbytes=2097152 rios=10 wios=20 dbytes=0 dios=0\n",
    }
    for name, text in files.items():
        write(os.path.join(base, name), text)
    write(os.path.join(base, "init.scope", "cgroup.procs"), "1\n")
    write(os.path.join(base, "system.slice", "cgroup.procs"), "")
    mountinfo = "30 25 0:26 / %s rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 " \
                "rw,nsdelegate\n" % base
    proc = fake_proc(root, mountinfo, "0::/init.scope\n")
    return base, proc


def v1_host_tree_bind(root):
    """A systemd VM on a v1 host that bind-mounted the host's whole tree: /proc/1/cgroup
    names /docker/<id>/init.scope and the mounts start at the host's root."""
    base = os.path.join(root, "sys", "fs", "cgroup")
    vm = "/docker/abc123"
    for controller in ("memory", "cpu", "cpuacct", "cpuset", "pids", "blkio"):
        write(os.path.join(base, controller, "cgroup.procs"), "")
        write(os.path.join(base, controller, vm.strip("/"), "cgroup.procs"), "1\n")
        write(os.path.join(base, controller, "docker", "cgroup.procs"), "")
    memory = os.path.join(base, "memory")
    write(os.path.join(memory, "memory.limit_in_bytes"), "9223372036854771712\n")
    write(os.path.join(memory, "docker", "memory.limit_in_bytes"), "9223372036854771712\n")
    vm_memory = os.path.join(memory, vm.strip("/"))
    write(os.path.join(vm_memory, "memory.limit_in_bytes"), "536870912\n")
    write(os.path.join(vm_memory, "memory.usage_in_bytes"), "209715200\n")
    write(os.path.join(vm_memory, "memory.memsw.limit_in_bytes"), "536870912\n")
    write(os.path.join(vm_memory, "memory.memsw.usage_in_bytes"), "209715200\n")
    write(os.path.join(vm_memory, "memory.stat"),
          "cache 104857600\nrss 52428800\nshmem 0\ntotal_cache 104857600\ntotal_rss 52428800\n"
          "total_shmem 1048576\ntotal_inactive_file 41943040\ntotal_active_file 62914560\n")
    write(os.path.join(vm_memory, "init.scope", "cgroup.procs"), "1\n")
    cpu = os.path.join(base, "cpu")
    for path, quota in ((cpu, "-1"), (os.path.join(cpu, "docker"), "-1"),
                        (os.path.join(cpu, vm.strip("/")), "150000")):
        write(os.path.join(path, "cpu.cfs_quota_us"), quota + "\n")
        write(os.path.join(path, "cpu.cfs_period_us"), "100000\n")
    write(os.path.join(cpu, vm.strip("/"), "cpu.stat"),
          "nr_periods 100\nnr_throttled 5\nthrottled_time 2000000000\n")
    cpuset = os.path.join(base, "cpuset", vm.strip("/"))
    write(os.path.join(cpuset, "cpuset.cpus"), "0\n")
    cpuacct = os.path.join(base, "cpuacct", vm.strip("/"))
    write(os.path.join(cpuacct, "cpuacct.usage"), "30000000000\n")
    write(os.path.join(cpuacct, "cpuacct.stat"), "user 2000\nsystem 1000\n")
    write(os.path.join(cpuacct, "cpuacct.usage_all"),
          "cpu user system\n0 20000000000 10000000000\n1 0 0\n")
    mountinfo = "".join(
        "%d 25 0:%d / %s/%s ro,nosuid - cgroup cgroup rw,%s\n" % (40 + i, 30 + i, base, c, c)
        for i, c in enumerate(("memory", "cpu", "cpuacct", "cpuset", "pids", "blkio")))
    init = "".join("%d:%s:%s/init.scope\n" % (i, c, vm) if c in ("memory", "pids") else
                   "%d:%s:%s\n" % (i, c, vm)
                   for i, c in enumerate(("memory", "cpu", "cpuacct", "cpuset", "pids",
                                          "blkio"), 1))
    proc = fake_proc(root, mountinfo, init)
    return base, proc
