"""`cvm doctor`: is this host ready to run VMs? One row per check, each with a fix."""

import collections
import os
import shutil
import subprocess

Check = collections.namedtuple("Check", "name status detail fix")
OK, WARN, FAIL = "OK", "WARN", "FAIL"

LXCFS_DIR = "/var/lib/lxcfs"


def check_root():
    if os.geteuid() == 0:
        return Check("root", OK, "running as root", "")
    return Check("root", FAIL, "running as uid %d" % os.geteuid(), "run cvm as root (sudo)")


def check_engine(engine):
    from .errors import CvmError
    try:
        version = engine.version()
        info = engine.info()
    except CvmError as exc:
        return [Check("engine", FAIL, str(exc)[:100], "start it: systemctl start docker "
                      "(or dockerd &); ./run setup installs it")]
    rows = [Check("engine", OK, "Docker %s, API %s, %s cgroup driver" % (
        version.get("Version"), version.get("ApiVersion"), info.get("CgroupDriver")), "")]
    bridges = os.path.exists("/sys/class/net/docker0")
    rows.append(Check("engine network", WARN if bridges else OK,
                      "docker0 exists (Docker's default bridge is on)" if bridges else
                      "no default bridge: VMs get their network only from cvm",
                      'set "bridge": "none", "iptables": false in /etc/docker/daemon.json '
                      "(unless this host also runs ordinary containers)" if bridges else ""))
    return rows


def check_cgroups():
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        with open("/sys/fs/cgroup/cgroup.controllers") as handle:
            controllers = handle.read().split()
        version = 2
    else:
        controllers = sorted(d for d in os.listdir("/sys/fs/cgroup")
                             if os.path.isdir(os.path.join("/sys/fs/cgroup", d)))
        version = 1
    needed = ["cpu", "cpuset", "memory", "pids"] + (["cpuacct"] if version == 1 else ["io"])
    missing = [c for c in needed if c not in controllers]
    rows = [Check("cgroups", FAIL if missing else OK, "v%d: %s" % (version, ",".join(controllers))
                  + ("; missing %s" % ",".join(missing) if missing else ""),
                  "enable the missing controllers on the kernel command line" if missing else "")]
    if version == 1:
        swap = os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
        rows.append(Check("swap accounting", OK if swap else WARN,
                          "on" if swap else "off: swap limits cannot be set or seen",
                          "" if swap else "boot with swapaccount=1 (only matters with swap)"))
    return rows


def check_kernel():
    from .net import kernel
    features = kernel.features()
    rows = []
    for feature, label in kernel.FEATURES.items():
        needed_by = {"veth": "bridge and routed NICs", "bridge": "bridge NICs",
                     "macvlan": "macvlan NICs", "ipvlan": "ipvlan NICs",
                     "8021q": "vlan= on macvlan/ipvlan NICs",
                     "bridge_vlan_filtering": "vlan= on bridge NICs",
                     "vxlan": "overlay bridges"}[feature]
        core = feature in ("veth", "bridge")
        if features.get(feature):
            rows.append(Check("kernel: " + label, OK, "works (needed by %s)" % needed_by, ""))
        else:
            rows.append(Check("kernel: " + label, FAIL if core else WARN,
                              "missing: %s unavailable" % needed_by,
                              "modprobe %s or use a kernel with it" % feature.split("_")[0]))
    pfs = kernel.sriov_pfs()
    rows.append(Check("kernel: SR-IOV", OK if pfs else WARN,
                      ", ".join("%s (%d VFs)" % kv for kv in sorted(pfs.items())) if pfs else
                      "no SR-IOV capable NIC: sriov NICs unavailable",
                      "" if pfs else "needs a NIC with SR-IOV and its VFs enabled"))
    return rows


HOST_LIMITS = {"fs/inotify/max_user_instances": 8192, "fs/inotify/max_user_watches": 524288,
               "kernel/keys/maxkeys": 2000}


def check_host_limits():
    """Root's inotify and keyring quotas are shared by every VM's systemd."""
    low = []
    for key, wanted in HOST_LIMITS.items():
        try:
            with open("/proc/sys/" + key) as handle:
                value = int(handle.read().split()[0])
        except (OSError, ValueError):
            continue
        if value < wanted:
            low.append("%s=%d" % (key.replace("/", "."), value))
    if low:
        return Check("host limits", WARN, "low: %s; systemd VMs beyond ~20 stall at boot" %
                     ", ".join(low), "./run setup (writes /etc/sysctl.d/90-cvm.conf)")
    return Check("host limits", OK, "inotify and keyring quotas fit hundreds of VMs", "")


def mount_points(mounts_file="/proc/self/mounts"):
    with open(mounts_file) as handle:
        # Mount points escape spaces as \\040; LXCFS_DIR has none.
        return {line.split()[1] for line in handle if line.strip()}


def check_lxcfs(lxcfs_dir=LXCFS_DIR):
    # os.path.isdir/ismount say False for a dead FUSE mount (stat fails with ENOTCONN),
    # so whether it is mounted comes from the mount table.
    if lxcfs_dir not in mount_points():
        return Check("lxcfs", WARN, "not running: /proc in VMs shows the host's totals to "
                     "unmodified programs (cvm's free/top still tell the truth)",
                     "apt-get install lxcfs; lxcfs -l --enable-cfs %s (./run setup does both)"
                     % lxcfs_dir)
    try:
        with open(os.path.join(lxcfs_dir, "proc", "meminfo")) as handle:
            handle.read(64)
    except OSError as exc:
        return Check("lxcfs", FAIL, "mounted but dead (%s): running VMs' /proc/meminfo, "
                     "/proc/stat... fail to read" % exc.strerror,
                     "umount -l %s; start lxcfs again (./run setup); then `cvm restart` "
                     "the VMs created with it" % lxcfs_dir)
    return Check("lxcfs", OK, "running at %s" % lxcfs_dir, "")


def check_vms_without_lxcfs(store):
    """VMs whose spec left LXCFS to the host but that were made while it was down."""
    missing = sorted(name for name, record in store.vm_records().items()
                     if not record.get("lxcfs") and record["spec"].get("lxcfs") is None)
    if not missing:
        return Check("VMs and lxcfs", OK, "every VM that may bind LXCFS binds it", "")
    return Check("VMs and lxcfs", WARN, "made while LXCFS was down, their /proc shows the "
                 "host's totals to unmodified tools: %s" % ", ".join(missing),
                 "recreate them (cvm rm -f NAME; cvm apply), or set lxcfs: false in their spec")


def check_nsenter():
    from .errors import CvmError
    from .ns import nsenter_path  # the one `cvm nsrun` runs
    try:
        path = nsenter_path()
    except CvmError:
        return Check("nsenter", FAIL, "not installed", "apt-get install util-linux")
    version = subprocess.run([path, "--version"], capture_output=True, text=True).stdout.strip()
    return Check("nsenter", OK, version, "")


def check_disk(path="/var/lib/docker"):
    while not os.path.exists(path):
        path = os.path.dirname(path)
    usage = shutil.disk_usage(path)
    free_gib = usage.free / float(1 << 30)
    status = FAIL if free_gib < 1 else WARN if free_gib < 10 else OK
    return Check("free disk", status, "%.1f GiB free on %s" % (free_gib, path),
                 "" if status == OK else "free space under %s" % path)


def check_netd(store):
    from . import client
    from .paths import netd_socket
    running = client.status(store.root)
    if running is None:
        return Check("netd", WARN, "not running: VMs are not re-wired after a restart",
                     "start `cvm netd` (systemd unit: templates/systemd/cvm-netd.service)")
    if not running["current"]:
        return Check("netd", WARN, "runs the code cvm had before an upgrade (pid %d): "
                     "commands run without it, slower" % running["pid"],
                     "systemctl restart cvm-netd (or kill %d; ./run setup)" % running["pid"])
    return Check("netd", OK, "answering on %s" % netd_socket(store.root), "")


def check_nic_filters(ctx, running):
    """Every running VM's bridge and routed NICs have their anti-spoofing chain, and no
    chain is left for a port no running VM has (see cvm.net.filtering)."""
    from .errors import CvmError
    from .net.wiring import filter_report
    from .net.netlink import Netlink
    try:
        with Netlink.open() as host:
            report = filter_report(ctx, running, host.nft())
    except CvmError as exc:
        return Check("NIC filters", WARN, str(exc)[:120], "")
    problems = ["missing for %s %s (%s)" % entry for entry in report["missing"]] + [
        "stale: %s port %s" % entry for entry in report["stale"]]
    if problems:
        return Check("NIC filters", WARN, "; ".join(problems)[:300],
                     "restart cvm netd: it re-applies missing filters and removes stale "
                     "ones (systemctl restart cvm-netd)")
    return Check("NIC filters", OK, "every running VM's NIC sends only from its own MAC "
                 "and addresses (nftables)", "")


def _mtu(interface):
    try:
        with open("/sys/class/net/%s/mtu" % interface) as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return None


def check_nic_mtus(ctx, running):
    """A VM whose NIC's MTU is above its bridge's loses every full-size frame (an overlay
    bridge's MTU is the underlay's minus 50)."""
    from .net.veth import port_name
    from .spec import parse_spec
    too_big = []
    for name, record in sorted(ctx.store.vm_records().items()):
        if name not in running:
            continue
        for index, nic in enumerate(parse_spec(record["spec"]).nics):
            if nic.mode != "bridge":
                continue
            port = _mtu(port_name(name, index, nic))
            bridge = _mtu(nic.link)
            if port and bridge and port > bridge:
                too_big.append("%s %s: %d > %s's %d" % (name, nic.name, port, nic.link, bridge))
    if too_big:
        return Check("NIC MTUs", WARN, "; ".join(too_big)[:300],
                     "set the NIC's mtu to the bridge's (cvm apply), or leave mtu unset: it "
                     "then follows the bridge")
    return Check("NIC MTUs", OK, "no VM's NIC is above its bridge's MTU", "")


def check_host_paths(store):
    """Volumes the operator let through with host_path_ok: each hands the host to a VM."""
    given = sorted("%s (%s)" % (name, volume.split(":")[0])
                   for name, record in store.vm_records().items()
                   for volume in record["spec"].get("volumes", [])
                   if "host_path_ok" in volume.split(":", 2)[-1].split(","))
    if not given:
        return Check("host paths in VMs", OK, "no VM has a host-only path as a volume", "")
    return Check("host paths in VMs", WARN, "root in these VMs can change the host: %s" %
                 ", ".join(given), "keep only what is meant (host_path_ok on the volume)")


def check_snapshot_schedules(ctx):
    """Scheduled snapshots whose time passed without them (netd down, a failing take)."""
    from .scheduled_snapshots import missed
    late = missed(ctx)
    if not late:
        return Check("snapshot schedules", OK, "no scheduled snapshot is late", "")
    return Check("snapshot schedules", WARN, "late: %s" % ", ".join(
        "%s (%s)" % (name, snapshot) for name, snapshot in late),
        "is cvm netd running? its log says why a snapshot failed")


def run_checks(ctx=None):
    from .api import Context
    ctx = ctx or Context()
    rows = [check_root()]
    rows += check_engine(ctx.engine)
    rows += check_cgroups()
    rows += check_kernel()
    rows.append(check_host_limits())
    rows.append(check_lxcfs())
    if rows[-1].status == OK and os.geteuid() == 0:
        rows.append(check_vms_without_lxcfs(ctx.store))
    if os.geteuid() == 0:
        rows.append(check_host_paths(ctx.store))
        rows.append(check_snapshot_schedules(ctx))
    rows.append(check_nsenter())
    rows.append(check_disk())
    rows.append(check_netd(ctx.store))
    if os.geteuid() == 0 and rows[1].status == OK:
        running = ctx.engine.running_vms(ctx.realm)
        rows.append(check_nic_filters(ctx, running))
        rows.append(check_nic_mtus(ctx, running))
    return rows
