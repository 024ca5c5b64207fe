"""Find and read a process's cgroups, v1 and v2, in every layout.

Standard library only and Python 3.6-compatible: this module is copied into VMs
together with procview, and the host-side tools and the monitor use it too.

Layouts handled: host view (cgroupfs under /sys/fs/cgroup), a private cgroup
namespace (v2 default), Docker's per-container read-only bind of each v1
controller, the host's whole tree bind-mounted into a VM, hybrid hosts, nested
paths. The rule is the same for all: the files of a cgroup path P of hierarchy H
live at mountpoint(H) + (P relative to the mount's root), both read from
/proc/<pid>/mountinfo and /proc/<pid>/cgroup.
"""

import os
import time

from . import procfs

UNLIMITED = 1 << 62  # anything at or above this is "no limit" (v1 prints 9223372036854771712)
V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "blkio")


class CgroupError(Exception):
    """A cgroup file or directory is missing or unreadable."""


def read_text(path):
    try:
        return procfs.read(path)
    except (IOError, OSError) as exc:
        raise CgroupError("cannot read %s: %s" % (path, exc.strerror or exc))


def read_int(path, default=None, read=read_text):
    """An integer file; 'max' and v1's huge sentinels mean unlimited (None)."""
    try:
        text = read(path).strip()
    except CgroupError:
        if default is not None:
            return default
        raise
    if text == "max" or text == "":
        return None
    value = int(text.split()[0])
    return None if value >= UNLIMITED else value


def read_keyed(path, read=read_text):
    """'key value' lines (memory.stat, cpu.stat) -> dict of ints."""
    text = read(path)
    words = text.split()
    try:  # every line a key and a number, as the kernel writes them: at once
        if len(words) == 2 * text.count("\n"):
            return dict(zip(words[::2], map(int, words[1::2])))
    except ValueError:
        pass
    result = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                result[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return result


def _unescape(path):
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") \
        .replace("\\134", "\\")


def cgroup_mounts(proc="/proc", pid="self"):
    """{hierarchy_key: [(mount_root, mount_point), ...]} from mountinfo.

    The key is 'unified' for cgroup2, else the controller list ('cpu', 'cpu,cpuacct',
    'name=systemd'). A hierarchy can be mounted several times (Docker binds
    name=systemd over its own read-only mount); the last mount wins, as in the kernel.
    """
    mounts = {}
    for line in read_text("%s/%s/mountinfo" % (proc, pid)).splitlines():
        if " - cgroup" not in line:  # most of a busy host's mounts: skipped cheaply
            continue
        left, _, right = line.partition(" - ")
        fields = left.split()
        rfields = right.split()
        if len(fields) < 5 or not rfields:
            continue
        fstype = rfields[0]
        root, mount_point = _unescape(fields[3]), _unescape(fields[4])
        if fstype == "cgroup2":
            key = "unified"
        elif fstype == "cgroup":
            options = rfields[2].split(",") if len(rfields) > 2 else []
            wanted = [o for o in options if o in V1_CONTROLLERS or o.startswith("name=")
                      or o in ("devices", "freezer", "net_cls", "net_prio", "perf_event",
                               "hugetlb", "rdma", "misc")]
            key = ",".join(sorted(wanted))
        else:
            continue
        mounts.setdefault(key, []).append((root, mount_point))
    return mounts


def process_cgroups(pid, proc="/proc"):
    """{hierarchy_key: path} from /proc/<pid>/cgroup, keys as in cgroup_mounts()."""
    paths = {}
    for line in read_text("%s/%s/cgroup" % (proc, pid)).splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            paths["unified"] = path
        else:
            paths[",".join(sorted(controllers.split(",")))] = path
    return paths


def _resolve(mounts, key, path):
    """The directory holding cgroup `path` of hierarchy `key`, or None."""
    for root, mount_point in reversed(mounts.get(key, [])):
        if root == "/":
            relative = path
        elif path == root or path.startswith(root.rstrip("/") + "/"):
            relative = path[len(root.rstrip("/")):]
        else:
            # A bind of a subtree we are not in: with a private cgroup namespace the
            # process's own path reads '/' and the mount root is where it lives.
            continue
        candidate = os.path.normpath(os.path.join(mount_point, relative.lstrip("/")))
        if os.path.isdir(candidate):
            return candidate
    # Private cgroup namespace: /proc/<pid>/cgroup is relative to the namespace root,
    # which is the root of a mount made inside it.
    for root, mount_point in reversed(mounts.get(key, [])):
        candidate = os.path.normpath(os.path.join(mount_point, path.lstrip("/")))
        if os.path.isdir(candidate):
            return candidate
    return None


_docker_settings = []


def docker_setting(key, config="/etc/docker/daemon.json"):
    """One setting of dockerd's daemon.json (read once), or None."""
    if not _docker_settings:
        settings = {}
        try:
            with open(config) as handle:
                import json  # only where there is a file: inside a VM there is none
                settings = json.load(handle) or {}
        except (IOError, OSError, ValueError):
            pass
        _docker_settings.append(settings if isinstance(settings, dict) else {})
    return _docker_settings[0].get(key)


def docker_cgroup_parent():
    """The cgroup parent dockerd puts containers below, when daemon.json sets one (a `cvm
    lab` host's does: its containers must not mix with the outer host's)."""
    parent = docker_setting("cgroup-parent")
    return parent.strip("/") if parent else None


def docker_container_dir(container_id):
    """Where dockerd keeps a container's files (gone with the container), from files only."""
    root = docker_setting("data-root") or "/var/lib/docker"
    return "%s/containers/%s" % (root.rstrip("/"), container_id)


# Reading mountinfo takes ~4 ms on a host with 480 VMs (an overlay mount each), and
# listings look up every VM's cgroup. So the cgroup mounts are read once, and again when
# a lookup misses, at most once a second: a stopped VM misses every time, and cgroup
# hierarchies are hardly ever mounted anew.
REREAD_AFTER = 1.0
_seen_cgroup_mounts = {}  # proc root -> (cgroup_mounts(proc, "self"), when it was read)


def _seen_mounts(proc):
    seen = _seen_cgroup_mounts.get(proc)
    return seen[0] if seen else None


def _mounts_again(proc):
    """The cgroup mounts read anew; None if they were read less than REREAD_AFTER ago."""
    seen = _seen_cgroup_mounts.get(proc)
    if seen is not None and time.monotonic() - seen[1] < REREAD_AFTER:
        return None
    mounts = cgroup_mounts(proc, "self")
    _seen_cgroup_mounts[proc] = (mounts, time.monotonic())
    return mounts


def _all_found(cgroup, mounts, paths):
    """Did every hierarchy of `paths` that `mounts` has resolve? If not, the mounts
    were read before a change and must be read again."""
    wanted = [key for key in paths if key in mounts and key != "unified"]
    if cgroup.version == 2:
        return "unified" in cgroup.dirs
    return all(key.split(",")[0] in cgroup.dirs for key in wanted)


class Cgroup(object):
    """The cgroup of one VM (or of the host root): controller -> directory, and readers.

    Readers return plain numbers; limits return None for "unlimited". `version` is 1 or 2.
    """

    def __init__(self, dirs, version, read=read_text):
        self.dirs = dirs  # {'memory': '/sys/fs/cgroup/memory/docker/<id>', ...} or {'unified': ...}
        self.version = version
        self.read = read  # path -> text; the monitor passes one that keeps files open
        self._paths = {}  # (controller, name) -> path: a sweep asks for ~13 per VM
        self._lineage = None

    def _int(self, path, default=None):
        return read_int(path, default, self.read)

    def _keyed(self, path):
        return read_keyed(path, self.read)

    def __repr__(self):
        return "Cgroup(v%d, %r)" % (self.version, self.dirs)

    # ---------------------------------------------------------- finding

    @classmethod
    def of_pid(cls, pid="self", proc="/proc", mounts_pid="self"):
        """The cgroup of process `pid`, resolved through the mounts visible to `mounts_pid`."""
        mounts = cgroup_mounts(proc, mounts_pid)
        paths = process_cgroups(pid, proc)
        return cls._from_paths(mounts, paths)

    @classmethod
    def of_vm(cls, pid=1, proc="/proc"):
        """The cgroup of the VM whose init is `pid`: the init's own cgroup, less the
        init.scope that systemd puts itself in (as LXCFS prunes it)."""
        paths = {}
        for key, path in process_cgroups(pid, proc).items():
            if path.endswith("/init.scope"):
                path = path[:-len("/init.scope")] or "/"
            paths[key] = path
        known = _seen_mounts(proc)
        if known is not None:
            try:
                cgroup = cls._from_paths(known, paths)
            except CgroupError:
                cgroup = None
            if cgroup is not None and _all_found(cgroup, known, paths):
                return cgroup
        return cls._from_paths(_mounts_again(proc) or known, paths)

    @classmethod
    def _from_paths(cls, mounts, paths):
        dirs = {}
        for key, path in paths.items():
            if key == "unified":
                continue
            directory = _resolve(mounts, key, path)
            if directory is None:
                continue
            for controller in key.split(","):
                dirs[controller] = directory
        if any(c in dirs for c in ("memory", "cpu", "cpuacct", "pids")):
            if "unified" in paths:
                unified = _resolve(mounts, "unified", paths["unified"])
                if unified:
                    dirs["unified"] = unified
            return cls(dirs, 1)
        if "unified" in paths:
            directory = _resolve(mounts, "unified", paths["unified"])
            if directory is not None:
                return cls({"unified": directory}, 2)
        raise CgroupError("no cgroup hierarchy of this process is mounted (see /proc/self/"
                          "mountinfo); mount /sys/fs/cgroup")

    @classmethod
    def of_container(cls, container_id, proc="/proc"):
        """A container's cgroup seen from the host, found from the cgroup of any of its
        processes is not possible when it is stopped; so look in the layouts Docker uses,
        under the cgroup mounts read last (see REREAD_AFTER)."""
        known = _seen_mounts(proc)
        cgroup = cls._container_in(known, container_id) if known is not None else None
        if cgroup is None:
            mounts = _mounts_again(proc)
            cgroup = cls._container_in(mounts, container_id) if mounts is not None else None
        if cgroup is None:
            raise CgroupError("no cgroup found for container %s (is it running?)" %
                              container_id[:12])
        return cgroup

    @classmethod
    def _container_in(cls, mounts, container_id):
        candidates = ["/docker/%s" % container_id,
                      "/system.slice/docker-%s.scope" % container_id]
        parent = docker_cgroup_parent()
        if parent:
            candidates.insert(0, "/%s/docker-%s.scope" % (parent, container_id) if
                              parent.endswith(".slice") else "/%s/%s" % (parent, container_id))
        keys = [k for k in mounts if k != "unified"]
        v1_keys = [k for k in keys if not k.startswith("name=")]
        for path in candidates:
            if v1_keys:
                paths = {k: path for k in keys}
                paths["unified"] = path
                try:
                    cgroup = cls._from_paths(mounts, paths)
                except CgroupError:
                    continue
                if "memory" in cgroup.dirs or "pids" in cgroup.dirs:
                    return cgroup
            elif "unified" in mounts:
                directory = _resolve(mounts, "unified", path)
                if directory:
                    return cls({"unified": directory}, 2)
        return None

    @classmethod
    def at(cls, root, version):
        """A cgroup at known directories (fixtures and tests). For v1, `root` maps
        controller -> directory; for v2 it is the unified directory."""
        if version == 2:
            return cls({"unified": root}, 2)
        return cls(dict(root), 1)

    def path(self, controller, name):
        path = self._paths.get((controller, name))
        if path is None:
            directory = self.dirs["unified"] if self.version == 2 else \
                self.dirs.get(controller)
            if directory is None:
                raise CgroupError("the %s controller is not mounted" % controller)
            path = self._paths[controller, name] = os.path.join(directory, name)
        return path

    _parents = {}  # (version, directories) -> Cgroup: /docker is every VM's parent

    def parent(self):
        """The parent cgroup, or None at the top of what is visible."""
        parents = dict((controller, os.path.dirname(directory.rstrip("/")))
                       for controller, directory in self.dirs.items())
        key = (self.version, tuple(sorted(parents.items())))
        if key not in Cgroup._parents:
            if not all(os.path.exists(os.path.join(up, "cgroup.procs"))
                       for up in set(parents.values())):
                return None
            Cgroup._parents[key] = Cgroup(parents, self.version)
        return Cgroup._parents[key]

    def lineage(self):
        """This cgroup and its visible ancestors, nearest first: found once, since a
        cgroup's ancestors never change, and shared with the cgroups beside it (each
        limit is the smallest on the lineage: walking it for each of the four a sweep
        reads, for every VM, was half of a first sweep)."""
        if self._lineage is None:
            parent = self.parent()
            self._lineage = [self] + (parent.lineage() if parent is not None else [])
        return self._lineage

    # ---------------------------------------------------------- processes

    def pids(self, recursive=True, threads=False):
        """PIDs (as seen by whoever reads the file) of every process in the cgroup, or
        with `threads` the IDs of every thread."""
        if self.version == 2:
            top = self.dirs["unified"]
            listing = "cgroup.threads" if threads else "cgroup.procs"
        else:
            top = self.dirs.get("pids") or self.dirs.get("memory") or self.dirs.get("cpu")
            listing = "tasks" if threads else "cgroup.procs"
        result = []
        for directory, _, _ in (os.walk(top) if recursive else [(top, None, None)]):
            try:
                text = self.read(os.path.join(directory, listing))
            except CgroupError:
                continue
            result.extend(int(p) for p in text.split())
        return result

    # ---------------------------------------------------------- memory

    def _lineage_min(self, controller, name):
        """The smallest limit in file `name` on this cgroup and its ancestors, or None."""
        limits = [self._int(node.path(controller, name), default=-1) for node in self.lineage()]
        limits = [limit for limit in limits if limit is not None and limit >= 0]
        return min(limits) if limits else None

    def memory_limit(self):
        """Smallest memory limit on this cgroup and its ancestors, None if none."""
        return self._lineage_min("memory", "memory.max" if self.version == 2 else
                                 "memory.limit_in_bytes")

    def swap_limit(self):
        """Swap the VM may use on top of memory, None if unlimited; 0 when swap is off."""
        if self.version == 2:
            return self._lineage_min("memory", "memory.swap.max")
        try:
            memsw = self._int(self.path("memory", "memory.memsw.limit_in_bytes"))
        except CgroupError:
            return 0  # kernel without swap accounting: swap cannot be limited or seen
        memory = self.memory_limit()
        if memsw is None or memory is None:
            return None
        return max(0, memsw - memory)

    def memory_usage(self):
        if self.version == 2:
            return self._int(self.path("memory", "memory.current"))
        return self._int(self.path("memory", "memory.usage_in_bytes"))

    def swap_usage(self):
        if self.version == 2:
            return self._int(self.path("memory", "memory.swap.current"), default=0) or 0
        try:
            memsw = self._int(self.path("memory", "memory.memsw.usage_in_bytes"))
        except CgroupError:
            return 0
        return max(0, (memsw or 0) - (self.memory_usage() or 0))

    def memory_stat(self):
        """memory.stat normalised to v2-like names (hierarchical totals on v1):
        anon, file, shmem, active_file, inactive_file, active_anon, inactive_anon,
        slab_reclaimable, mapped_file, pgfault, pgmajfault."""
        raw = self._keyed(self.path("memory", "memory.stat"))
        if self.version == 2:
            stat = dict(raw)
            stat.setdefault("mapped_file", raw.get("file_mapped", 0))
            return stat

        def total(key):
            return raw.get("total_" + key, raw.get(key, 0))

        return {
            "anon": total("rss") + total("rss_huge") if "total_rss_huge" not in raw
            else total("rss"),
            "file": total("cache"),
            "shmem": total("shmem"),
            "active_file": total("active_file"),
            "inactive_file": total("inactive_file"),
            "active_anon": total("active_anon"),
            "inactive_anon": total("inactive_anon"),
            "slab_reclaimable": 0,
            "mapped_file": total("mapped_file"),
            "pgfault": total("pgfault"),
            "pgmajfault": total("pgmajfault"),
            "swap": total("swap"),
            "unevictable": total("unevictable"),
        }

    def oom_kills(self):
        if self.version == 2:
            return self._keyed(self.path("memory", "memory.events")).get("oom_kill", 0)
        return self._keyed(self.path("memory", "memory.oom_control")).get("oom_kill", 0)

    # ---------------------------------------------------------- CPU

    def cpu_quota(self):
        """(quota_us, period_us) of the tightest quota on the lineage, or None."""
        best = None
        for node in self.lineage():
            if self.version == 2:
                try:
                    text = self.read(node.path("cpu", "cpu.max")).split()
                except CgroupError:
                    continue
                if not text or text[0] == "max":
                    continue
                quota, period = int(text[0]), int(text[1]) if len(text) > 1 else 100000
            else:
                try:
                    quota = int(self.read(node.path("cpu", "cpu.cfs_quota_us")).strip())
                    period = int(self.read(node.path("cpu", "cpu.cfs_period_us")).strip())
                except (CgroupError, ValueError):
                    continue
                if quota <= 0:
                    continue
            if best is None or quota / float(period) < best[0] / float(best[1]):
                best = (quota, period)
        return best

    def cpuset(self):
        """Effective CPUs (list of ints) or None when not known."""
        from .sizes import parse_cpu_list
        names = ("cpuset.cpus.effective", "cpuset.cpus")
        for name in names:
            try:
                text = self.read(self.path("cpuset", name)).strip()
            except CgroupError:
                continue
            if text:
                return parse_cpu_list(text)
        return None

    def cpu_usage(self):
        """(total, user, system) CPU time in seconds."""
        if self.version == 2:
            stat = self._keyed(self.path("cpu", "cpu.stat"))
            return (stat.get("usage_usec", 0) / 1e6, stat.get("user_usec", 0) / 1e6,
                    stat.get("system_usec", 0) / 1e6)
        total = self._int(self.path("cpuacct", "cpuacct.usage")) / 1e9
        stat = self._keyed(self.path("cpuacct", "cpuacct.stat"))
        return (total, stat.get("user", 0) / float(procfs.CLK_TCK),
                stat.get("system", 0) / float(procfs.CLK_TCK))

    def cpu_usage_percpu(self):
        """{cpu: (user_s, system_s)} on v1; None on v2, which has no per-CPU data."""
        if self.version == 2:
            return None
        try:
            lines = self.read(self.path("cpuacct", "cpuacct.usage_all")).splitlines()[1:]
        except CgroupError:
            lines = []
        result = {}
        for line in lines:
            parts = line.split()
            if len(parts) == 3:
                result[int(parts[0])] = (int(parts[1]) / 1e9, int(parts[2]) / 1e9)
        if result:
            return result
        usage = self.read(self.path("cpuacct", "cpuacct.usage_percpu")).split()
        return dict((i, (int(v) / 1e9, 0.0)) for i, v in enumerate(usage))

    def cpu_throttling(self):
        """(periods, throttled_periods, throttled_seconds)."""
        stat = self._keyed(self.path("cpu", "cpu.stat"))
        if self.version == 2:
            return (stat.get("nr_periods", 0), stat.get("nr_throttled", 0),
                    stat.get("throttled_usec", 0) / 1e6)
        return (stat.get("nr_periods", 0), stat.get("nr_throttled", 0),
                stat.get("throttled_time", 0) / 1e9)

    # ---------------------------------------------------------- pids and IO

    def pids_current(self):
        return self._int(self.path("pids", "pids.current"), default=0) or 0

    def pids_limit(self):
        return self._lineage_min("pids", "pids.max")

    def blkio(self):
        """{'MAJ:MIN': {'rbytes', 'wbytes', 'rios', 'wios'}}."""
        devices = {}
        if self.version == 2:
            try:
                text = self.read(self.path("io", "io.stat"))
            except CgroupError:
                return devices
            for line in text.splitlines():
                parts = line.split()
                if not parts:
                    continue
                entry = devices.setdefault(parts[0], {"rbytes": 0, "wbytes": 0, "rios": 0,
                                                      "wios": 0})
                for item in parts[1:]:
                    key, _, value = item.partition("=")
                    if key in entry:
                        entry[key] = int(value)
            return devices
        for name, unit in (("blkio.throttle.io_service_bytes", "bytes"),
                           ("blkio.throttle.io_serviced", "ios")):
            try:
                text = self.read(self.path("blkio", name))
            except CgroupError:
                continue
            for line in text.splitlines():
                parts = line.split()
                if len(parts) != 3 or parts[1] not in ("Read", "Write"):
                    continue
                entry = devices.setdefault(parts[0], {"rbytes": 0, "wbytes": 0, "rios": 0,
                                                      "wios": 0})
                entry[("r" if parts[1] == "Read" else "w") + unit] += int(parts[2])
        return devices
