"""What the tools read: the host's root (/proc) or a VM (its cgroup), behind one interface.

Standard library only, Python 3.6-compatible (this runs inside VMs).

    HostSource()                  the whole machine: /proc/meminfo, /proc/stat, all tasks
    VMSource.inside()             inside a VM: the cgroup of PID 1, this /proc
    VMSource.of_pid(pid)          from the host: the VM whose init is host PID `pid`

Units: memory in KiB (what the originals print by default), CPU time in seconds.
"""

import math
import os
import time

from .. import procfs
from ..cgroups import Cgroup, CgroupError, read_text

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest",
              "guest_nice")


class SourceError(Exception):
    """Data the tool needs is missing or unreadable; the message names the file."""


class Memory(object):
    """A free(1)-shaped view of memory, in KiB."""

    def __init__(self, total, free, shared, buffers, cache, available, swap_total, swap_free):
        self.total = total
        self.free = free
        self.shared = shared
        self.buffers = buffers
        self.cache = cache
        self.available = available
        self.swap_total = swap_total
        self.swap_free = swap_free

    @property
    def used(self):
        # procps-ng >= 4.0.1: used is what is not available.
        return max(0, self.total - self.available)

    @property
    def swap_used(self):
        return max(0, self.swap_total - self.swap_free)


class Task(object):
    """One process, as top shows it."""

    __slots__ = ("pid", "host_pid", "uid", "state", "priority", "nice", "vsize_kib", "rss_kib",
                 "shared_kib", "ticks", "comm", "cmdline", "threads", "start_ticks")


def _cpu_line(fields):
    values = [int(v) / float(CLK_TCK) for v in fields]
    values += [0.0] * (len(CPU_FIELDS) - len(values))
    return dict(zip(CPU_FIELDS, values))


def read_task(proc, pid, shown_pid=None):
    """A Task from /proc/<pid> (stat, statm, and the owner of the directory), or None
    when it is gone."""
    try:
        stat = procfs.process_stat(pid, proc)
        statm = procfs.read_record("%s/%s/statm" % (proc, pid)).split()
        uid = os.stat("%s/%s" % (proc, pid)).st_uid
    except (IOError, OSError, CgroupError, IndexError):
        return None
    task = Task()
    task.pid = shown_pid if shown_pid is not None else int(pid)
    task.host_pid = int(pid)
    task.uid = uid
    task.comm = stat[2]
    task.state = stat[3]
    task.ticks = int(stat[14]) + int(stat[15])
    task.priority = int(stat[18])
    task.nice = int(stat[19])
    task.threads = int(stat[20])
    task.start_ticks = int(stat[22])
    task.vsize_kib = int(stat[23]) // 1024
    task.rss_kib = int(statm[1]) * PAGE_KIB
    task.shared_kib = int(statm[2]) * PAGE_KIB
    task.cmdline = None
    return task


def task_ticks(proc, pids):
    """{pid: utime+stime ticks} for `pids`, reading only /proc/<pid>/stat."""
    ticks = {}
    for pid in pids:
        try:
            stat = procfs.process_stat(pid, proc)
            ticks[int(pid)] = int(stat[14]) + int(stat[15])
        except (IOError, OSError, IndexError, ValueError):
            continue
    return ticks


def thread_activity(proc, tids):
    """(running, blocked, context switches) of threads `tids`, from one file each: the
    status that holds both a thread's state and its own switch counts."""
    running = blocked = switches = 0
    for tid in tids:
        try:
            status = procfs.read_record("%s/%s/status" % (proc, tid))
        except (IOError, OSError):
            continue  # it ended
        state = procfs.status_field(status, "State")[:1]
        running += state == "R"
        blocked += state == "D"
        for key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
            switches += int(procfs.status_field(status, key) or 0)
    return running, blocked, switches


def ns_pid(proc, pid):
    """The PID as the VM sees it (last field of NSpid), or the host PID."""
    try:
        ids = procfs.status_field(procfs.read_record("%s/%s/status" % (proc, pid)),
                                  "NSpid").split()
    except (IOError, OSError):
        ids = []
    return int(ids[-1]) if ids else int(pid)


class Source(object):
    """The interface every tool uses. Subclasses fill in the data."""

    proc = "/proc"
    etc_root = ""  # where the VM's /etc is (host-side: /proc/<pid>/root)

    def hostname(self):
        return os.uname()[1]

    def users(self):
        """Logged-in users, counted from utmp as uptime(1) does."""
        return count_utmp_users(self.etc_root + "/var/run/utmp")

    def user_names(self):
        names = {}
        try:
            with open(self.etc_root + "/etc/passwd") as handle:
                for line in handle:
                    parts = line.split(":")
                    if len(parts) > 2:
                        names.setdefault(int(parts[2]), parts[0])
        except (IOError, OSError, ValueError):
            pass
        return names

    def pid_width(self):
        try:
            return max(5, len(read_text("/proc/sys/kernel/pid_max").strip()))
        except CgroupError:
            return 5


class HostSource(Source):
    """The machine as the originals see it: this is what oracle tests compare against."""

    def __init__(self, proc="/proc"):
        self.proc = proc

    def memory(self):
        info = procfs.meminfo(self.proc)
        kib = dict((k, v // 1024) for k, v in info.items())
        cache = kib.get("Cached", 0) + kib.get("SReclaimable", 0)
        return Memory(kib["MemTotal"], kib["MemFree"], kib.get("Shmem", 0),
                      kib.get("Buffers", 0), cache,
                      kib.get("MemAvailable", kib["MemFree"]), kib.get("SwapTotal", 0),
                      kib.get("SwapFree", 0))

    def memory_active(self):
        """(inactive, active) KiB, for vmstat -a."""
        info = procfs.meminfo(self.proc)
        return info.get("Inactive", 0) // 1024, info.get("Active", 0) // 1024

    def start_time(self):
        return procfs.boot_time(self.proc)

    def cpu_count(self):
        return len(self.cpu_ids())

    def cpu_ids(self):
        ids = []
        for line in read_text(self.proc + "/stat").splitlines():
            if line.startswith("cpu") and line[3:4].isdigit():
                ids.append(int(line.split()[0][3:]))
        return ids

    def cpu_times(self):
        """(all, {cpu: times}) with times = {field: seconds}."""
        total, per_cpu = None, {}
        for line in read_text(self.proc + "/stat").splitlines():
            parts = line.split()
            if not parts or not parts[0].startswith("cpu"):
                continue
            times = _cpu_line(parts[1:])
            if parts[0] == "cpu":
                total = times
            else:
                per_cpu[int(parts[0][3:])] = times
        return total, per_cpu

    def uptime(self):
        return float(read_text(self.proc + "/uptime").split()[0])

    def loadavg(self):
        return tuple(float(v) for v in read_text(self.proc + "/loadavg").split()[:3])

    def host_pids(self):
        return [int(name) for name in os.listdir(self.proc) if name.isdigit()]

    def tasks(self):
        result = []
        for pid in self.host_pids():
            task = read_task(self.proc, pid)
            if task is not None:
                result.append(task)
        return result

    def stat_counters(self, *keys):
        """The values of /proc/stat's lines `keys` (0 for a line it lacks)."""
        values = dict.fromkeys(keys, 0)
        for line in read_text(self.proc + "/stat").splitlines():
            key, _, rest = line.partition(" ")
            if key in values:
                values[key] = int(rest.split(None, 1)[0])
        return [values[key] for key in keys]

    def interrupts(self):
        return self.stat_counters("intr")[0]

    def activity(self):
        return tuple(self.stat_counters("procs_running", "procs_blocked", "ctxt"))

    def disk_blocks(self):
        """(blocks read, blocks written) in KiB, as vmstat's bi/bo count them."""
        read = written = 0
        try:
            for line in read_text(self.proc + "/vmstat").splitlines():
                key, _, value = line.partition(" ")
                if key == "pgpgin":
                    read = int(value)
                elif key == "pgpgout":
                    written = int(value)
        except CgroupError:
            pass
        return read, written

    def swap_pages(self):
        swapped_in = swapped_out = 0
        for line in read_text(self.proc + "/vmstat").splitlines():
            key, _, value = line.partition(" ")
            if key == "pswpin":
                swapped_in = int(value)
            elif key == "pswpout":
                swapped_out = int(value)
        return swapped_in, swapped_out


class VMSource(Source):
    """A VM, from its cgroup: numbers as LXCFS defines them, processes in the cgroup."""

    def __init__(self, cgroup, init_pid, proc="/proc", etc_root="", host_side=False):
        self.cgroup = cgroup
        self.init_pid = init_pid
        self.proc = proc
        self.etc_root = etc_root
        self.host_side = host_side

    @classmethod
    def inside(cls):
        """Inside a VM: the VM is the cgroup of its PID 1 (without systemd's init.scope)."""
        try:
            return cls(Cgroup.of_vm(1), 1)
        except CgroupError as exc:
            raise SourceError(str(exc))

    @classmethod
    def of_pid(cls, host_pid, proc="/proc"):
        """From the host: the VM whose init is `host_pid`."""
        try:
            return cls(Cgroup.of_vm(host_pid, proc), host_pid, proc=proc,
                       etc_root="%s/%d/root" % (proc, host_pid), host_side=True)
        except CgroupError as exc:
            raise SourceError(str(exc))

    def hostname(self):
        if not self.host_side:
            return os.uname()[1]
        try:
            return read_text("/proc/%d/root/etc/hostname" % self.init_pid).strip() or \
                os.uname()[1]
        except CgroupError:
            return os.uname()[1]

    def _host(self):
        return HostSource(self.proc)

    # ---------------------------------------------------------- memory

    def memory(self):
        cg = self.cgroup
        try:
            limit = cg.memory_limit()
            usage = cg.memory_usage() or 0
            stat = cg.memory_stat()
        except CgroupError as exc:
            raise SourceError(str(exc))
        try:
            host = self._host().memory()
        except (IOError, OSError):
            if not limit:
                raise
            # LXCFS's /proc/meminfo with LXCFS dead (ENOTCONN): memory from the VM's limit
            # alone, and no swap shown.
            host = Memory(limit // 1024, 0, 0, 0, 0, 0, 0, 0)
        total = min(limit // 1024, host.total) if limit else host.total
        usage //= 1024
        cache = stat.get("file", 0) // 1024
        reclaimable = stat.get("slab_reclaimable", 0) // 1024
        free = max(0, total - usage)
        available = min(total, free + cache + reclaimable)
        swap_limit = cg.swap_limit()
        if swap_limit is None:
            swap_total = host.swap_total
        else:
            swap_total = min(swap_limit // 1024, host.swap_total)
        swap_used = min(swap_total, cg.swap_usage() // 1024)
        return Memory(total, free, stat.get("shmem", 0) // 1024, 0, cache + reclaimable,
                      available, swap_total, swap_total - swap_used)

    def memory_active(self):
        try:
            stat = self.cgroup.memory_stat()
        except CgroupError as exc:
            raise SourceError(str(exc))
        return ((stat.get("inactive_anon", 0) + stat.get("inactive_file", 0)) // 1024,
                (stat.get("active_anon", 0) + stat.get("active_file", 0)) // 1024)

    # ---------------------------------------------------------- CPUs

    def cpu_count(self):
        """min(CPUs in the effective cpuset, ceil(quota / period)) on the lineage."""
        cpus = self.cgroup.cpuset() or self._host().cpu_ids()
        count = len(cpus)
        quota = self.cgroup.cpu_quota()
        if quota:
            count = min(count, int(math.ceil(quota[0] / float(quota[1]))))
        return max(1, count)

    def cpu_ids(self):
        return list(range(self.cpu_count()))

    def cpu_times(self):
        """(all, {cpu: times}) since the VM started. Virtual CPUs 0..n-1 map to the
        cpuset's CPUs when there are as many; otherwise (a quota below the cpuset, or
        cgroup v2, which keeps no per-CPU data) the VM's total is spread evenly."""
        count = self.cpu_count()
        elapsed = self.uptime()
        try:
            total, user, system = self.cgroup.cpu_usage()
            _, _, throttled = self.cgroup.cpu_throttling()
            per_cpu = self.cgroup.cpu_usage_percpu()
        except CgroupError as exc:
            raise SourceError(str(exc))
        cpuset = self.cgroup.cpuset() or []
        # cpuacct splits user/system only in ticks; scale the precise total by that ratio.
        user_share = user / (user + system) if (user + system) > 0 else 1.0
        rows = {}
        if per_cpu is not None and len(cpuset) == count:
            for virtual, physical in enumerate(cpuset):
                busy_user, busy_system = per_cpu.get(physical, (0.0, 0.0))
                if busy_system == 0.0 and busy_user > 0:
                    busy_user, busy_system = busy_user * user_share, busy_user * (1 - user_share)
                rows[virtual] = (busy_user, busy_system)
        else:
            for virtual in range(count):
                rows[virtual] = (total * user_share / count, total * (1 - user_share) / count)
        result = {}
        for virtual, (busy_user, busy_system) in rows.items():
            steal = throttled / count
            idle = max(0.0, elapsed - busy_user - busy_system - steal)
            times = dict((f, 0.0) for f in CPU_FIELDS)
            times.update(user=busy_user, system=busy_system, idle=idle, steal=steal)
            result[virtual] = times
        summed = dict((f, sum(t[f] for t in result.values())) for f in CPU_FIELDS)
        return summed, result

    # ---------------------------------------------------------- time and load

    def start_time(self):
        try:
            return procfs.process_start_time(self.init_pid, self.proc)
        except (IOError, OSError, IndexError) as exc:
            raise SourceError("cannot read the VM's init (pid %s): %s" % (self.init_pid, exc))

    def uptime(self):
        return max(0.0, time.time() - self.start_time())

    def loadavg(self):
        from .loadavg import vm_loadavg
        return vm_loadavg(self)

    # ---------------------------------------------------------- tasks

    def host_pids(self):
        try:
            return self.cgroup.pids()
        except CgroupError as exc:
            raise SourceError(str(exc))

    def tasks(self):
        result = []
        for pid in self.host_pids():
            shown = ns_pid(self.proc, pid) if self.host_side else pid
            task = read_task(self.proc, pid, shown)
            if task is not None:
                result.append(task)
        return result

    def activity(self):
        """(runnable, blocked, context switches) of the VM's threads: its load, as the
        kernel counts it, and vmstat's cs."""
        try:
            tids = self.cgroup.pids(threads=True)
        except CgroupError as exc:
            raise SourceError(str(exc))
        return thread_activity(self.proc, tids)

    def interrupts(self):
        return 0  # interrupts belong to the host's CPUs, not to a cgroup

    def disk_blocks(self):
        read = written = 0
        try:
            for device in self.cgroup.blkio().values():
                read += device["rbytes"] // 1024
                written += device["wbytes"] // 1024
        except CgroupError:
            pass
        return read, written

    def swap_pages(self):
        return 0, 0


def count_utmp_users(path):
    """USER_PROCESS records with a name, from a glibc utmp file."""
    import struct
    record = 384
    users = 0
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except (IOError, OSError):
        return 0
    for offset in range(0, len(data) - record + 1, record):
        ut_type = struct.unpack_from("<h", data, offset)[0]
        name = data[offset + 44:offset + 76].split(b"\0")[0]
        if ut_type == 7 and name:
            users += 1
    return users


def default_source():
    """The VM this tool runs in, or the whole machine with CVM_PROCVIEW=host. (Any value
    of it, such as CVM_PROCVIEW=cgroup, also keeps `free` and `uptime` cvm's own where
    LXCFS would let procps' answer: see vmtools.NATIVE_UNDER_LXCFS.)"""
    if os.environ.get("CVM_PROCVIEW") == "host":
        return HostSource()
    return VMSource.inside()
