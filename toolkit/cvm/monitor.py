"""Host-side monitoring of every VM from its cgroup files and network counters.

A sweep reads files only: no Docker API call per VM, nor per sweep. VMs are found
from the state store (the records name each VM's container), whose directory is
re-listed only when it changes; each VM's cgroup comes from its init process, found
once and found again only when the VM restarts. A VM that stops or goes away during a
sweep is reported as gone; a file that cannot be read is counted (collector_errors)
and named, and never stops the sweep.

The cgroup readers are cvm.cgroups', the same ones the in-VM tools use.
"""

import copy
import errno
import fcntl
import functools
import itertools
import os
import select
import threading
import time

from .cgroups import Cgroup, CgroupError, docker_container_dir, read_text

# Limits change only on resize (which rewrites the VM's record, and so refreshes them at
# once) or by hand (`docker update`): read them again after this many seconds. Reading
# them walks the cgroup's ancestors, which is most of a sweep's cost.
LIMITS_TTL = 10.0

# A VM whose CPU time and memory usage read the same as at the last sweep is idle: it
# did not run, and no memory was charged to it or taken from it. The files that cannot
# move then (CPU time by user and system, memory by kind, OOM kills; on v1 disk IO,
# which v1 charges to the flusher, not to the VM, and throttling) are kept from their
# last read for up to IDLE_STEADY_TTL seconds, as cAdvisor stretches its housekeeping
# for idle containers; only slow drifts (pages aging between the LRU lists) wait for it.
# memory.stat is the costliest file a sweep reads (10-30 us, more than the others
# together). v1 counts a VM's CFS periods (its cpu.stat) for up to two periods after the
# VM last ran: they are kept only once read later than that (see Target.settling).
# What moves without the VM running (its task count: reaped from outside; v2's disk IO:
# writeback; NICs: traffic in) is read at every sweep.
IDLE_STEADY_TTL = 10.0
CPU_TIME_FILE = {1: "cpuacct.usage", 2: "cpu.stat"}
USAGE_FILES = {1: ("cpuacct.usage", "memory.usage_in_bytes"), 2: ("cpu.stat", "memory.current")}
IDLE_STEADY_FILES = {1: ("cpuacct.stat", "memory.stat", "memory.oom_control",
                         "blkio.throttle.io_service_bytes", "blkio.throttle.io_serviced",
                         "cpu.stat"),
                     2: ("memory.stat", "memory.events")}

# What a sweep reads from a VM's files each time (its limits are read less often).
COUNTERS = ("cpu_seconds", "cpu_user_seconds", "cpu_system_seconds", "cpu_periods",
            "cpu_throttled_periods", "cpu_throttled_seconds", "memory_usage",
            "memory_working_set", "memory_rss", "memory_cache", "memory_shmem",
            "memory_swap", "memory_mapped", "oom_kills", "pids", "block", "nics")

# Each VM's counters and limits as last read are one revision of them: numbered from
# one sequence, so that no two (of any VMs) share a number.
_REVISIONS = itertools.count(1)

NET_FIELDS = ("rx_bytes", "rx_packets", "rx_errors", "rx_dropped", "tx_bytes", "tx_packets",
              "tx_errors", "tx_dropped")


class VMStats:
    """One VM at one sweep. Counters are cumulative; see rates() for per-second values."""

    def __init__(self, name, container_id):
        self.name = name
        self.container_id = container_id
        self.status = "running"
        self.when = time.time()
        self.cpu_seconds = self.cpu_user_seconds = self.cpu_system_seconds = 0.0
        self.cpu_periods = self.cpu_throttled_periods = 0
        self.cpu_throttled_seconds = 0.0
        self.cpu_quota = None          # CPUs the quota allows (1.5), None: no quota
        self.cpu_period_us = None
        self.cpu_quota_us = None
        self.memory_usage = self.memory_working_set = self.memory_rss = 0
        self.memory_cache = self.memory_shmem = self.memory_swap = self.memory_mapped = 0
        self.memory_limit = None
        self.swap_limit = None
        self.oom_kills = 0
        self.pids = 0
        self.pids_limit = None
        self.block = {}                # 'MAJ:MIN' -> {rbytes, wbytes, rios, wios}
        self.nics = {}                 # ifname -> {rx_bytes, ...}
        self.started_at = None         # epoch seconds of the VM's init
        self.limits = {}               # what was asked: cpus, memory, pids
        self.image = None
        self.errors = []               # (file, problem) that could not be read
        self.revision = None           # the same for two sweeps whose values are the same

    @property
    def uptime(self):
        return max(0.0, self.when - self.started_at) if self.started_at else None

    def to_dict(self):
        data = dict(self.__dict__)
        data["uptime"] = self.uptime
        return data

    def at_start(self):
        """This VM as it was when its init started: its counters zero, as its cgroup and
        NICs were then (each start makes them anew)."""
        start = copy.copy(self)
        start.when = self.started_at
        start.cpu_seconds = start.cpu_user_seconds = start.cpu_system_seconds = 0.0
        start.cpu_periods = start.cpu_throttled_periods = 0
        start.cpu_throttled_seconds = 0.0
        start.oom_kills = 0
        start.nics, start.block = {}, {}
        return start

    @classmethod
    def from_dict(cls, data):
        stats = cls.__new__(cls)
        stats.__dict__.update((k, v) for k, v in data.items() if k != "uptime")
        return stats


class Sampler:
    """The last sweep of every VM, kept by a process that runs anyway (cvm netd), so that
    `cvm stats` gives CPU % over the last second at once instead of sampling twice. It
    sweeps every second while stats are asked for, every ten seconds otherwise."""

    ACTIVE_INTERVAL, IDLE_INTERVAL, ACTIVE_FOR = 1.0, 10.0, 300.0
    # A rate over a few milliseconds says little (a VM under a CPU quota may be throttled
    # through all of them): compare with the sweep before the last when the last is this new.
    SHORTEST_SPAN = 0.5

    def __init__(self, monitor):
        self.monitor = monitor
        self.latest = {}
        self.previous = {}
        self.asked = float("-inf")
        self.wake = threading.Event()  # asked while idle: sample every second from now

    def run(self, stopping):
        while not stopping.is_set():
            swept = {stats.name: stats for stats in self.monitor.sweep()}
            self.previous, self.latest = self.latest, swept
            active = time.monotonic() - self.asked < self.ACTIVE_FOR
            self.wake.wait(self.ACTIVE_INTERVAL if active else self.IDLE_INTERVAL)
            self.wake.clear()

    def pairs(self, names=None, interval=0.5):
        """[(now, before)]: a sweep now and the VM's last kept one; a VM started since
        the last kept sweep is compared with itself at its start; any other that has
        none is swept again `interval` later."""
        if time.monotonic() - self.asked >= self.ACTIVE_FOR:
            self.wake.set()
        self.asked = time.monotonic()
        latest, previous = self.latest, self.previous
        now = self.monitor.sweep(names)
        kept = {stats.name: self._before(stats, latest.get(stats.name),
                                         previous.get(stats.name)) for stats in now}
        for stats in now:
            before = kept[stats.name]
            if (before is None or before.started_at != stats.started_at) and \
                    self._started_lately(stats):
                kept[stats.name] = stats.at_start()
        new = [name for name, before in kept.items() if before is None]
        if new:
            kept.update((stats.name, stats) for stats in now if stats.name in new)
            time.sleep(interval)
            again = {stats.name: stats for stats in self.monitor.sweep(new)}
            now = [again.get(stats.name, stats) if stats.name in new else stats
                   for stats in now]
        return [(stats, kept[stats.name]) for stats in now]

    def _started_lately(self, stats):
        """Started since the sweeps kept could have seen it."""
        age = stats.uptime
        return stats.status == "running" and age is not None and \
            0 < age < self.IDLE_INTERVAL * 2

    def _before(self, now, latest, previous):
        if latest is not None and now.when - latest.when < self.SHORTEST_SPAN \
                and previous is not None:
            return previous
        return latest


def two_sweeps(monitor, names=None, interval=0.5):
    """[(now, before)] from two sweeps `interval` seconds apart: without a Sampler."""
    before = {stats.name: stats for stats in monitor.sweep(names)}
    time.sleep(interval)
    return [(stats, before.get(stats.name)) for stats in monitor.sweep(names)]


def rates(now, before):
    """Per-second rates between two sweeps of the same VM (None if not comparable)."""
    if before is None or before.status != "running" or now.status != "running" \
            or before.started_at != now.started_at:
        return None
    elapsed = now.when - before.when
    if elapsed <= 0:
        return None
    cpu = (now.cpu_seconds - before.cpu_seconds) / elapsed
    result = {"cpu_percent": 100.0 * cpu,  # of one host CPU, as docker stats shows it
              "cpu_quota_percent": 100.0 * cpu / now.cpu_quota if now.cpu_quota else None}
    for key in NET_FIELDS:
        result["net_" + key] = sum(n.get(key, 0) for n in now.nics.values()) - sum(
            n.get(key, 0) for n in before.nics.values())
        result["net_" + key] /= elapsed
    for key in ("rbytes", "wbytes", "rios", "wios"):
        result["block_" + key] = (sum(d.get(key, 0) for d in now.block.values()) - sum(
            d.get(key, 0) for d in before.block.values())) / elapsed
    return result


def allow_open_files():
    """Raise this process's open-files limit to its hard limit: a long-running sweeper
    keeps ~15 files open per VM (hundreds of VMs: thousands of files)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


FIRST_KEPT_FD = 1024


def keep_high(fd):
    """`fd`, moved to a number from 1024 up where the limit allows. Descriptors a sweeper
    keeps for long must leave the low numbers free: C code that waits with select(2) --
    libnftables does, in cvm netd -- aborts the process on any descriptor it gets
    numbered 1024 or more, and new descriptors take the lowest free number."""
    try:
        kept = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, FIRST_KEPT_FD)
    except OSError:  # the limit is 1024 or the high numbers are all taken
        return fd
    os.close(fd)
    return kept


class ProcessExits:
    """Which of the watched processes have ended, for all of them in one system call.
    Each is watched through a pidfd, which is bound to the process (not to its pid
    number, which another process may take) and polls readable once it has ended."""

    def __init__(self):
        self._epoll = select.epoll()
        self._watched = {}  # pidfd -> what the caller called it

    def watch(self, pid, key):
        """Watch process `pid` as `key`; its pidfd, or None where the kernel has no
        pidfds (before 5.3)."""
        try:
            pidfd = keep_high(os.pidfd_open(pid))
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                raise
            return None
        self._epoll.register(pidfd, select.EPOLLIN)
        self._watched[pidfd] = key
        return pidfd

    def forget(self, pidfd):
        if self._watched.pop(pidfd, None) is not None:
            os.close(pidfd)  # which takes it out of the epoll set

    def ended(self):
        """The keys of the processes that ended since the last call (forgotten since)."""
        ended = [pidfd for pidfd, _ in self._epoll.poll(0) if pidfd in self._watched]
        keys = [self._watched[pidfd] for pidfd in ended]
        for pidfd in ended:
            self.forget(pidfd)
        return keys

    def close(self):
        for pidfd in list(self._watched):
            self.forget(pidfd)
        self._epoll.close()


class OpenFiles:
    """The files a sweep reads again and again, kept open (see keep_high) and re-read
    from offset 0 (cgroup and /proc files are generated on each read): one pread per
    file and sweep instead of an open, a read and a close."""

    CHUNK = 65536
    # Kernel files are made by seq_file, whose buffer starts at a page and holds whole
    # records: a read ends before the file does (after 4 KB of a /proc/<pid>/net/dev of
    # 61 interfaces) only once it is past half a page, as long as each record is short.
    # The files read here have short records (a line of net/dev) or one record (a cgroup
    # file, however long): a shorter read is the whole file, one system call.
    WHOLE_BELOW = 2048

    def __init__(self):
        self.fds = {}

    def _open(self, path):
        return keep_high(os.open(path, os.O_RDONLY | os.O_CLOEXEC))

    def read(self, path):
        for attempt in (1, 2):
            fd = self.fds.get(path)
            try:
                if fd is None:
                    fd = self.fds[path] = self._open(path)
                data = chunk = os.pread(fd, self.CHUNK, 0)
                while len(chunk) >= self.WHOLE_BELOW:
                    chunk = os.pread(fd, self.CHUNK, len(data))
                    data += chunk
                return data.decode("utf-8", "replace")
            except OSError as exc:
                # A cgroup made again at the same path, or a process gone: open afresh once.
                self._forget(path)
                if attempt == 2:
                    raise CgroupError("cannot read %s: %s" % (path, exc.strerror or exc))

    def still_readable(self, path):
        """Does the file kept open at `path` still read? A /proc/<pid> file stays bound to
        the process it was opened for: once that process is gone it never reads again,
        even when its pid is another process's by now."""
        fd = self.fds.get(path)
        if fd is None:
            return False
        try:
            os.pread(fd, 1, 0)
            return True
        except OSError:
            return False

    def _forget(self, path):
        fd = self.fds.pop(path, None)
        if fd is not None:
            os.close(fd)

    def close(self):
        for path in list(self.fds):
            self._forget(path)


class Target:
    """What a sweep needs to know about one VM, found once per start of the VM."""

    def __init__(self, name, record, exits=None):
        self.name = name
        self.container_id = record.get("container_id")
        self.record = record
        self.spec = record.get("spec", {})
        self.cgroup = None
        self.pid = None
        self.pidfd = None       # watched by `exits`: the monitor closes us once it ends
        self.started_at = None
        self.limits = None      # {"cpu quota": ..., "memory limit": ..., ...}
        self.limits_read_at = 0.0
        self.files = OpenFiles()
        self.exits = exits
        self.last_texts = None  # {path: text} the last counters were parsed from
        self.last_groups = {}   # {group of counters: (the paths it read, its result)}
        self.last_counters = None
        self.read_each_sweep = ()  # the paths of last_texts but the idle-steady ones
        self.steady_paths = ()
        self.usage_paths = ()  # of those, the VM's CPU time and memory usage
        self.cpu_time_path = None
        self.steady_read_at = 0.0
        self.ran_by = 0.0       # the sweep that first read its CPU time as it is now
        self.revision = next(_REVISIONS)  # a new one whenever counters or limits change

    def locate(self):
        """Find the VM's init and cgroup, and watch for the init's end; False if it is not
        running."""
        from .ns import init_pid
        from .errors import NotFound
        if not self.container_id:
            return False
        from .procfs import process_start_time
        self.close()
        try:
            self.pid = init_pid(self.container_id)
            if self.exits is not None:
                self.pidfd = self.exits.watch(self.pid, self)
            if self.pidfd is None:
                self.files.read("/proc/%d/stat" % self.pid)  # kept open: alive() asks it
            self.cgroup = Cgroup.of_vm(self.pid)
            self.cgroup.read = self.files.read
            self.started_at = process_start_time(self.pid)
            self.limits = None
        except (NotFound, CgroupError, OSError, IndexError):
            self.close()
            return False
        return True

    def alive(self):
        """Is the init we found still the VM's (not gone, not replaced by a restart)?
        Watched, it is until the monitor hears of its end. Otherwise its /proc stat file,
        kept open since locate(), tells: it never reads again once that process ended."""
        if self.pid is None:
            return False
        return self.pidfd is not None or \
            self.files.still_readable("/proc/%d/stat" % self.pid)

    def remember(self, texts, groups, steady_read_at):
        """The texts a sweep parsed the last counters from, group by group."""
        if self.last_texts is None or texts.keys() != self.last_texts.keys():
            version = self.cgroup.version
            steady = IDLE_STEADY_FILES[version]
            self.read_each_sweep = [path for path in texts if os.path.basename(path) not in steady]
            self.steady_paths = [path for path in texts if os.path.basename(path) in steady]
            self.usage_paths = [path for path in texts
                                if os.path.basename(path) in USAGE_FILES[version]]
            self.cpu_time_path = next(path for path in self.usage_paths
                                      if os.path.basename(path) == CPU_TIME_FILE[version])
        self.last_texts, self.last_groups = texts, groups
        self.steady_read_at = steady_read_at

    def settling(self):
        """Seconds after the VM last ran in which its kept files may still move: on v1,
        CFS counts periods of a VM under a quota for up to two periods (as long as 2 s)
        after it last ran; with no quota it counts none."""
        if self.cgroup.version == 2:
            return 0.0
        if self.limits is None:
            return 2.0
        quota = self.limits["cpu quota"]
        return 2 * quota[1] / 1e6 if quota else 0.0

    def close(self):
        """Forget the init and its files: it ended, or the VM is gone or found again."""
        self.files.close()
        if self.pidfd is not None:
            self.exits.forget(self.pidfd)
        self.pid = self.pidfd = self.cgroup = self.last_texts = self.last_counters = None
        self.last_groups = {}


class Monitor:
    """Sweeps the VMs of one state store. Thread-safe: the exporter sweeps on scrapes."""

    def __init__(self, store):
        self.store = store
        self.targets = {}
        self.exits = ProcessExits()
        self._listing_mtime = None
        self.errors_total = {}  # (vm, file) -> count, for cvm_collector_errors_total
        self.lock = threading.Lock()

    def _refresh(self):
        directory = os.path.join(self.store.root, "vms")
        try:
            mtime = os.stat(directory).st_mtime_ns
        except OSError:
            self.targets = {}
            return
        if mtime == self._listing_mtime:
            return
        records = self.store.vm_records()
        for name in list(self.targets):
            if name not in records:
                self.targets.pop(name).close()
        for name, record in records.items():
            target = self.targets.get(name)
            if target is None or target.container_id != record.get("container_id"):
                if target is not None:
                    target.close()
                self.targets[name] = Target(name, record, self.exits)
            elif target.spec != record.get("spec", {}):
                target.spec = record.get("spec", {})
                target.limits = None  # resized: read the new limits now
            self.targets[name].record = record
        self._listing_mtime = mtime

    def _notice_exits(self):
        for target in self.exits.ended():
            target.close()

    def records(self):
        """{name: record} of every VM, as the sweeps keep them: listings need no file
        walk per VM."""
        with self.lock:
            self._refresh()
            return {name: target.record for name, target in self.targets.items()}

    def started_at(self, names):
        """{name: epoch its init started} of the running VMs among `names`."""
        with self.lock:
            self._notice_exits()
            return {name: self.targets[name].started_at for name in names
                    if name in self.targets and (self.targets[name].alive() or
                                                 self.targets[name].locate())}

    def sweep(self, names=None):
        """[VMStats] for every VM (or those named), from files only."""
        with self.lock:
            self._refresh()
            self._notice_exits()
            result = []
            limit_texts = {}  # read this sweep: most are the VMs' shared ancestors' limits
            for name in sorted(self.targets):
                if names and name not in names:
                    continue
                target = self.targets[name]
                stats = VMStats(name, target.container_id)
                stats.limits = {"cpus": target.spec.get("cpus"),
                                "memory": target.spec.get("memory"),
                                "pids": target.spec.get("pids", 4096)}
                stats.image = target.spec.get("image")
                if not target.alive() and not target.locate():
                    stats.status = "stopped" if target.container_id and os.path.isdir(
                        docker_container_dir(target.container_id)) else "missing"
                    result.append(stats)
                    continue
                self._read(target, stats, limit_texts)
                result.append(stats)
            return result

    def _read(self, target, stats, limit_texts=None):
        stats.started_at = target.started_at

        def attempt(what, func):
            try:
                return func()
            except (CgroupError, OSError, ValueError, IndexError, TypeError) as exc:
                stats.errors.append((what, str(exc)))
                key = (target.name, what)
                self.errors_total[key] = self.errors_total.get(key, 0) + 1
                return None

        if not self._counters(target, stats, attempt):
            return
        limits = self._limits(target, attempt, {} if limit_texts is None else limit_texts)
        quota = limits["cpu quota"]
        if quota:
            stats.cpu_quota_us, stats.cpu_period_us = quota
            stats.cpu_quota = quota[0] / float(quota[1])
        stats.memory_limit = limits["memory limit"]
        stats.swap_limit = limits["swap limit"]
        stats.pids_limit = limits["pids.max"]
        stats.revision = target.revision

    def _counters(self, target, stats, attempt):
        """Read the VM's counters into `stats`; False if the VM is gone. Each group of
        them is parsed again only when a file it comes from reads differently than at
        the last sweep: on an idle host most VMs' files read the same from one sweep to
        the next, and traffic on a segment moves its VMs' NIC counters alone. An idle
        VM's steady files are not even read (see IDLE_STEADY_TTL)."""
        files = target.files
        now = time.monotonic()
        last = target.last_texts or {}
        fresh = {}
        steady_kept = False
        if last:
            try:
                fresh = {path: files.read(path) for path in target.read_each_sweep}
            except CgroupError:
                fresh = {}
            cpu_time = target.cpu_time_path
            if not fresh or fresh[cpu_time] != last[cpu_time]:
                target.ran_by = now
            if fresh and now - target.steady_read_at < IDLE_STEADY_TTL and \
                    target.steady_read_at >= target.ran_by + target.settling() and \
                    all(fresh[path] == last[path] for path in target.usage_paths):
                if all(text == last[path] for path, text in fresh.items()):
                    stats.__dict__.update(target.last_counters)
                    return True
                steady_kept = True
                fresh.update((path, last[path]) for path in target.steady_paths)
        else:
            target.ran_by = now
        texts, groups, reading = {}, {}, []

        def read(path):
            text = fresh.get(path)
            if text is None:
                text = fresh[path] = files.read(path)
            texts[path] = text
            reading.append(path)
            return text

        def group(what, func):
            """What func gives; the last sweep's result if its files read the same."""
            kept = target.last_groups.get(what)
            if kept is not None:
                try:
                    if all(read(path) == last.get(path) for path in kept[0]):
                        groups[what] = kept
                        return kept[1]
                except CgroupError:
                    pass
            del reading[:]
            result = attempt(what, func)
            if reading:
                groups[what] = (tuple(reading), result)
            return result

        cg = target.cgroup
        cg.read = read
        try:
            self._parse_counters(target, stats, group, read)
        finally:
            cg.read = files.read
        if stats.status == "gone":
            target.close()
            return False
        counters = {key: stats.__dict__[key] for key in COUNTERS}
        if counters != target.last_counters:
            target.last_counters, target.revision = counters, next(_REVISIONS)
        if stats.errors:
            target.last_texts, target.last_groups = None, {}
        else:
            target.remember(texts, groups, target.steady_read_at if steady_kept else now)
        return True

    @staticmethod
    def _parse_counters(target, stats, group, read):
        cg = target.cgroup
        usage = group("cpu usage", cg.cpu_usage)
        if usage is None and not os.path.isdir(cg.dirs.get("cpuacct") or cg.dirs.get(
                "unified") or "/nonexistent"):
            stats.status = "gone"  # removed or stopped between finding it and reading it
            stats.errors = []
            return
        if usage:
            stats.cpu_seconds, stats.cpu_user_seconds, stats.cpu_system_seconds = usage
        throttling = group("cpu.stat", cg.cpu_throttling)
        if throttling:
            stats.cpu_periods, stats.cpu_throttled_periods, stats.cpu_throttled_seconds = \
                throttling
        stats.memory_usage = group("memory usage", cg.memory_usage) or 0
        memory = group("memory.stat", cg.memory_stat) or {}
        stats.memory_rss = memory.get("anon", 0)
        stats.memory_cache = memory.get("file", 0)
        stats.memory_shmem = memory.get("shmem", 0)
        stats.memory_mapped = memory.get("mapped_file", 0)
        stats.memory_working_set = max(0, stats.memory_usage - memory.get("inactive_file", 0))
        # v1's memory.stat has it exactly (0 without swap accounting): two reads fewer
        # than memsw.usage_in_bytes less usage_in_bytes. v2's has no swap line.
        stats.memory_swap = memory["swap"] if "swap" in memory else \
            group("swap usage", cg.swap_usage) or 0
        stats.oom_kills = group("oom kills", cg.oom_kills) or 0
        stats.pids = group("pids.current", cg.pids_current) or 0
        stats.block = group("block io", cg.blkio) or {}
        stats.nics = group("net/dev", lambda: net_dev(target.pid, read)) or {}

    @staticmethod
    def _limits(target, attempt, texts):
        """The VM's limits: the smallest on its cgroup's lineage. Its ancestors' files are
        read once a sweep for all the VMs, through `texts` ({path: text, or the error
        reading it gave})."""
        now = time.monotonic()
        if target.limits is None or now - target.limits_read_at > LIMITS_TTL:
            def read(path):
                text = texts.get(path)
                if text is None:
                    try:
                        text = target.files.read(path)
                    except CgroupError as exc:
                        text = exc
                    texts[path] = text
                if isinstance(text, CgroupError):
                    raise CgroupError(str(text))
                return text

            cg = target.cgroup
            cg.read = read
            try:
                limits = {"cpu quota": attempt("cpu quota", cg.cpu_quota),
                          "memory limit": attempt("memory limit", cg.memory_limit),
                          "swap limit": attempt("swap limit", cg.swap_limit),
                          "pids.max": attempt("pids.max", cg.pids_limit)}
            finally:
                cg.read = target.files.read
            if limits != target.limits:
                target.limits, target.revision = limits, next(_REVISIONS)
            target.limits_read_at = now
        return target.limits


def net_dev(pid, read=read_text):
    """Counters of the VM's interfaces, from its own network namespace (so macvlan and
    SR-IOV NICs count as well as veths), without entering it: /proc/<pid>/net/dev."""
    nics = {}
    for line in read("/proc/%d/net/dev" % pid).splitlines()[2:]:
        name, _, values = line.partition(":")
        name = name.strip()
        if name == "lo":
            continue
        numbers = [int(v) for v in values.split()]
        nics[name] = {"rx_bytes": numbers[0], "rx_packets": numbers[1],
                      "rx_errors": numbers[2], "rx_dropped": numbers[3],
                      "tx_bytes": numbers[8], "tx_packets": numbers[9],
                      "tx_errors": numbers[10], "tx_dropped": numbers[11]}
    return nics


# ---------------------------------------------------------------- Prometheus


# cAdvisor's metrics, by its names and labels (id, image, name): (type, name, help, the
# value in a VMStats, the sample's one further label or None).
VM_METRICS = (
    ("counter", "container_cpu_usage_seconds_total", "Cumulative cpu time consumed",
     lambda s: s.cpu_seconds, ("cpu", "total")),
    ("counter", "container_cpu_user_seconds_total", "Cumulative user cpu time consumed",
     lambda s: s.cpu_user_seconds, None),
    ("counter", "container_cpu_system_seconds_total", "Cumulative system cpu time consumed",
     lambda s: s.cpu_system_seconds, None),
    ("counter", "container_cpu_cfs_periods_total", "Number of elapsed enforcement period "
     "intervals", lambda s: s.cpu_periods, None),
    ("counter", "container_cpu_cfs_throttled_periods_total", "Number of throttled period "
     "intervals", lambda s: s.cpu_throttled_periods, None),
    ("counter", "container_cpu_cfs_throttled_seconds_total", "Total time duration the "
     "container has been throttled", lambda s: s.cpu_throttled_seconds, None),
    ("gauge", "container_memory_usage_bytes", "Current memory usage in bytes, including all "
     "memory regardless of when it was accessed", lambda s: s.memory_usage, None),
    ("gauge", "container_memory_working_set_bytes", "Current working set in bytes",
     lambda s: s.memory_working_set, None),
    ("gauge", "container_memory_rss", "Size of RSS in bytes", lambda s: s.memory_rss, None),
    ("gauge", "container_memory_cache", "Number of bytes of page cache memory",
     lambda s: s.memory_cache, None),
    ("gauge", "container_memory_mapped_file", "Size of memory mapped files in bytes",
     lambda s: s.memory_mapped, None),
    ("gauge", "container_memory_swap", "Container swap usage in bytes",
     lambda s: s.memory_swap, None),
    ("counter", "container_oom_events_total", "Count of out of memory events observed for "
     "the container", lambda s: s.oom_kills, None),
    ("gauge", "container_spec_memory_limit_bytes", "Memory limit for the container.",
     lambda s: s.memory_limit or 0, None),
    ("gauge", "container_spec_memory_swap_limit_bytes", "Memory swap limit for the "
     "container.", lambda s: (s.memory_limit or 0) + (s.swap_limit or 0), None),
    ("gauge", "container_spec_cpu_quota", "CPU quota of the container.",
     lambda s: s.cpu_quota_us, None),
    ("gauge", "container_spec_cpu_period", "CPU period of the container.",
     lambda s: s.cpu_period_us, None),
    ("gauge", "container_threads", "Number of threads running inside the container",
     lambda s: s.pids, None),
    ("gauge", "container_threads_max", "Maximum number of threads allowed inside the "
     "container, infinity if value is zero", lambda s: s.pids_limit or 0, None),
    ("gauge", "container_start_time_seconds", "Start time of the container since unix "
     "epoch in seconds.", lambda s: s.started_at, None),
    ("gauge", "container_last_seen", "Last time a container was seen by the exporter",
     lambda s: s.when, None),
)
# Per block device (label device) and per NIC (label interface): (name, help, key).
BLOCK_METRICS = (
    ("container_fs_reads_bytes_total", "Cumulative count of bytes read", "rbytes"),
    ("container_fs_writes_bytes_total", "Cumulative count of bytes written", "wbytes"),
    ("container_fs_reads_total", "Cumulative count of reads completed", "rios"),
    ("container_fs_writes_total", "Cumulative count of writes completed", "wios"),
)
NIC_METRICS = tuple(
    ("container_network_%s_total" % metric, "Cumulative count of " + text, field)
    for field, metric, text in (
        ("rx_bytes", "receive_bytes", "bytes received"),
        ("tx_bytes", "transmit_bytes", "bytes transmitted"),
        ("rx_packets", "receive_packets", "packets received"),
        ("tx_packets", "transmit_packets", "packets transmitted"),
        ("rx_errors", "receive_errors", "errors encountered while receiving"),
        ("tx_errors", "transmit_errors", "errors encountered while transmitting"),
        ("rx_dropped", "receive_packets_dropped", "packets dropped while receiving"),
        ("tx_dropped", "transmit_packets_dropped", "packets dropped while transmitting")))


def _label_value(text):
    return str(text).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


# Every family of a VM's samples, in the order they are written: (type, name, help).
FAMILIES = tuple((kind, metric, help_text) for kind, metric, help_text, _, _ in VM_METRICS) + \
    tuple(("counter", metric, help_text) for metric, help_text, _ in BLOCK_METRICS + NIC_METRICS)
LAST_SEEN = [metric for _, metric, _ in FAMILIES].index("container_last_seen")


class _VMSeries:
    """A VM's time series: its label set, escaped once, each series' last sample line,
    written again only when its value changed, and the VM's lines family by family,
    made again only when a sweep may have changed its values (VMStats.revision). On an
    idle host most values stay: limits, start times, idle VMs' counters. Kept from scrape
    to scrape (see `_series_of`)."""

    def __init__(self, name, container_id, image):
        self.id_image = 'id="%s",image="%s"' % (_label_value("/docker/" + (
            container_id or "")), _label_value(image or ""))
        self.name = 'name="%s"' % _label_value(name)
        self._series = {}
        self.of_vm = [self.series(metric, label) for _, metric, _, _, label in VM_METRICS]
        self.revision = None
        self.by_family = None

    def series(self, metric, label=None):
        """[line prefix, last value, last line] of `metric` with one further `label`
        (key, value) placed in name order, as prometheus_client writes them."""
        series = self._series.get((metric, label))
        if series is None:
            parts = [self.id_image, self.name]
            if label is not None:
                key, value = label
                parts.insert(0 if key < "id" else 1 if key < "name" else 2,
                             '%s="%s"' % (key, _label_value(value)))
            series = self._series[metric, label] = [
                "%s{%s} " % (metric, ",".join(parts)), None, None]
        return series

    def lines(self, stats, sample_text):
        """The VM's sample lines, one string per family of FAMILIES ('' where it has
        none); the last-seen family's is left for the caller, as it moves every sweep."""
        if stats.revision is not None and stats.revision == self.revision:
            return self.by_family

        def line(series, value):
            if value is None:
                return ""
            if series[1] != value:
                series[1], series[2] = value, series[0] + sample_text(value) + "\n"
            return series[2]

        by_family = [line(series, value(stats)) if index != LAST_SEEN else ""
                     for index, (series, (_, _, _, value, _)) in
                     enumerate(zip(self.of_vm, VM_METRICS))]
        for metric, _, key in BLOCK_METRICS:
            by_family.append("".join(line(self.series(metric, ("device", device)),
                                          stats.block[device][key])
                                     for device in sorted(stats.block)))
        for metric, _, key in NIC_METRICS:
            by_family.append("".join(line(self.series(metric, ("interface", nic)),
                                          stats.nics[nic][key])
                                     for nic in sorted(stats.nics)))
        self.revision, self.by_family = stats.revision, by_family
        return by_family


@functools.lru_cache(maxsize=4096)
def _series_of(name, container_id, image):
    return _VMSeries(name, container_id, image)


def exposition(monitor, names=None):
    """The Prometheus text format of one sweep (of every VM, or those named), as
    prometheus_client writes it. Written here rather than through its collector
    registry, which escapes and checks every label of every sample: at 480 VMs that was
    most of a scrape."""
    from prometheus_client.utils import floatToGoString
    running = [(stats, _series_of(stats.name, stats.container_id, stats.image))
               for stats in monitor.sweep(names) if stats.status == "running"]
    written = {}  # value -> its text: most samples are 0 or a limit many VMs share

    def sample_text(value):
        text = written.get(value)
        if text is None:
            text = written[value] = floatToGoString(value)
        return text

    by_family = zip(*[vm.lines(stats, sample_text) for stats, vm in running])
    out = []
    for index, ((kind, metric, help_text), lines) in enumerate(zip(FAMILIES, by_family)):
        if index == LAST_SEEN:
            text = "".join(["%s%s\n" % (vm.of_vm[index][0], sample_text(stats.when))
                            for stats, vm in running])
        else:
            text = "".join(lines)
        if text:
            out.append("# HELP %s %s\n# TYPE %s %s\n" % (metric, help_text, metric, kind))
            out.append(text)
    out.append("# HELP cvm_collector_errors_total cgroup or /proc files cvm could not read, "
               "per VM and file\n# TYPE cvm_collector_errors_total counter\n")
    out.extend('cvm_collector_errors_total{file="%s",name="%s"} %s\n' % (
        _label_value(what), _label_value(vm), sample_text(count))
        for (vm, what), count in sorted(monitor.errors_total.items()))
    return "".join(out).encode()


def write_textfile(monitor, path, names=None):
    """For node_exporter's textfile collector: written atomically."""
    data = exposition(monitor, names)
    temp = "%s.%d.tmp" % (path, os.getpid())
    with open(temp, "wb") as handle:
        handle.write(data)
    os.rename(temp, path)


class Exporter:
    """An HTTP /metrics endpoint. Scrapes within `cache_seconds` of a sweep share it, so
    concurrent scrapers do not multiply the cost. Once a scraper (a client address)
    comes at a steady interval, the sweep is made ahead of its next scrape (as long
    before it as the last sweep took, and a margin), so that the scrape is served at
    once with numbers at most that old, and the host sweeps once per scrape, as it would
    on scrape. Each scraper is followed on its own: a pair of Prometheus servers scraping
    the host in turn (the usual high-availability setup) are two steady scrapers."""

    MARGIN = 0.5  # seconds between a sweep made ahead and the scrape it is for
    STEADY = 0.2  # the last gaps between scrapes within this fraction of each other
    FORGET_AFTER = 600.0  # seconds without a scrape after which a scraper is gone

    def __init__(self, monitor, address, cache_seconds=1.0, render=None):
        self.monitor = monitor
        self.address = address
        self.cache_seconds = cache_seconds
        self.render = render or (lambda: exposition(self.monitor))
        self._cached = (0.0, b"")
        self._render_seconds = 0.0
        self._scrapes = {}  # scraper -> monotonic times of its last scrapes
        self._lock = threading.Lock()
        self._scraped = threading.Condition(self._lock)
        self.server = None

    def metrics(self, scraper=None):
        now = time.monotonic()  # when it came: a sweep may hold the lock for a while
        with self._lock:
            self._scrapes[scraper] = (self._scrapes.get(scraper, []) + [now])[-4:]
            for gone in [k for k, times in self._scrapes.items()
                         if now - times[-1] > self.FORGET_AFTER]:
                del self._scrapes[gone]
            self._scraped.notify()
            taken, data = self._cached
            if now - taken > max(self.cache_seconds, self._render_seconds + self.MARGIN):
                data = self._render_locked()
            return data

    def _render_locked(self):
        started = time.monotonic()
        data = self.render()
        self._render_seconds = time.monotonic() - started
        self._cached = (time.monotonic(), data)
        return data

    def _next_scrape(self, now):
        """When the next scrape of a steady scraper is due (at most a second ago)."""
        dues = [due for due in map(self._due, self._scrapes.values())
                if due is not None and due + 1.0 >= now]
        return min(dues) if dues else None

    def _due(self, scrapes):
        """When a scraper's next scrape is due, if it keeps a steady interval."""
        if len(scrapes) < 3:
            return None
        gaps = [b - a for a, b in zip(scrapes, scrapes[1:])]
        interval = sum(gaps) / len(gaps)
        if interval <= self._render_seconds + self.MARGIN or \
                max(gaps) - min(gaps) > self.STEADY * interval:
            return None  # sweeping on scrape costs the same then
        return scrapes[-1] + interval

    def prepare_ahead(self, stopping):
        """Make each sweep ahead of the scrape it is for, until `stopping` is set. The
        first one at once: the first sweep of a host is the slow one (it finds every
        VM's files)."""
        with self._lock:
            self._render_locked()
            while not stopping.is_set():
                due = self._next_scrape(time.monotonic())
                if due is None:
                    self._scraped.wait(1.0)  # not steady, or no scrapes any more
                    continue
                start_at = due - self._render_seconds - self.MARGIN
                if time.monotonic() < start_at:
                    self._scraped.wait(start_at - time.monotonic())
                    continue  # woken by a scrape, or it is time: look again
                if self._cached[0] < start_at:
                    self._render_locked()
                self._scraped.wait(max(0.0, due + 1.0 - time.monotonic()))

    def serve(self):
        import http.server
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics here")
                    return
                body = exporter.metrics(self.client_address[0])
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        host, port = parse_listen(self.address)
        server_class = http.server.ThreadingHTTPServer
        if ":" in host:
            import socket

            class Server6(server_class):
                address_family = socket.AF_INET6
            server_class = Server6
        self.server = server_class((host, port), Handler)
        self.server.daemon_threads = True
        return self.server


def parse_listen(text):
    from .errors import SpecError
    host, sep, port = str(text).rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise SpecError("listen", "%r is not ADDRESS:PORT (e.g. 127.0.0.1:9730 or [::]:9730)" %
                        text)
    return host.strip("[]") or "0.0.0.0", int(port)


# ---------------------------------------------------------------- `cvm stats` rows


def _docker_size(value, binary=False):
    """docker stats' sizes: binary for memory (512MiB, 1.5GiB), SI for IO (1.2kB, 3.4MB)."""
    base, units, number = (1024.0, ("B", "KiB", "MiB", "GiB", "TiB"), "%.4g%s") if binary \
        else (1000.0, ("B", "kB", "MB", "GB", "TB"), "%.3g%s")
    for unit in units:
        if abs(value) < base or unit == units[-1]:
            return ("%.0f%s" if unit == "B" else number) % (value, unit)
        value /= base


def stats_rows(now, before):
    from .table import human_duration
    rows = []
    for stats in now:
        rate = rates(stats, before.get(stats.name)) if before else None
        if stats.status != "running":
            rows.append({"name": stats.name, "status": stats.status, "sort": (0, 0, 0)})
            continue
        limit = stats.memory_limit
        memory_pct = 100.0 * stats.memory_working_set / limit if limit else None
        net_in = sum(n["rx_bytes"] for n in stats.nics.values())
        net_out = sum(n["tx_bytes"] for n in stats.nics.values())
        block_in = sum(d["rbytes"] for d in stats.block.values())
        block_out = sum(d["wbytes"] for d in stats.block.values())
        cpu = rate["cpu_percent"] if rate else None
        rows.append({
            "name": stats.name, "status": "running",
            "cpu": "%.2f%%" % cpu if cpu is not None else "--",
            "quota": "%.2f%%" % rate["cpu_quota_percent"] if rate and rate[
                "cpu_quota_percent"] is not None else "--",
            "memory": "%s / %s" % (_docker_size(stats.memory_working_set, binary=True),
                                   _docker_size(limit, binary=True) if limit else "unlimited"),
            "memory_pct": "%.2f%%" % memory_pct if memory_pct is not None else "--",
            "net": "%s / %s" % (_docker_size(net_in), _docker_size(net_out)),
            "block": "%s / %s" % (_docker_size(block_in), _docker_size(block_out)),
            "pids": "%d%s" % (stats.pids, " / %d" % stats.pids_limit if stats.pids_limit
                              else ""),
            "uptime": human_duration(stats.uptime),
            "sort": (cpu or 0.0, stats.memory_working_set, net_in + net_out)})
    return rows
