"""Acting on a VM from the host: its init's pid, host binaries in its namespaces, and
cvm's own writes into its filesystem.

What a user runs inside a VM (`cvm exec`, `cvm enter`, the Ansible connection) is started
by Docker's exec (see Engine.exec_start), so it has exactly the VM's capabilities,
seccomp profile, label and cgroups. `cvm nsrun` is the one deliberate exception: a host
binary borrowing the VM's namespaces, run by default with no more capabilities than the
VM has (--keep-caps gives it the host's: it is then as powerful as root on the host).
"""

import os

from .cgroups import Cgroup, CgroupError, read_text
from .errors import CvmError, NotFound, PermissionDenied
from .paths import READY_FILE
from .procfs import start_ticks, status_field

NAMESPACE_FLAGS = {"mount": "--mount", "uts": "--uts", "ipc": "--ipc", "net": "--net",
                   "pid": "--pid", "cgroup": "--cgroup"}


def require_root(what):
    if os.geteuid() != 0:
        raise PermissionDenied("%s needs root (it enters another process's namespaces); run "
                               "it as root or with sudo" % what)


SYSTEM_BIN_DIRS = ("/usr/bin", "/bin", "/usr/sbin", "/sbin")


def _host_tool(name, package="util-linux"):
    """The system's own binary, run as root: found in the system's directories, not on
    the caller's PATH (nor through shutil.which, whose imports cost `cvm nsrun` ~7 ms)."""
    for directory in SYSTEM_BIN_DIRS:
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    raise CvmError("%s is not installed; install %s" % (name, package))


def nsenter_path():
    return _host_tool("nsenter")


# container id -> (pid, start ticks) of its init, as found last: a process is known by
# the pair (a PID alone may be reused), so a hit costs one read of /proc/PID/stat.
_inits = {}


def init_pid(container_id):
    """Host PID of the VM's PID 1, found from its cgroup without asking Docker."""
    known = _inits.get(container_id)
    if known is not None and start_ticks(known[0]) == known[1]:
        return known[0]
    _inits.pop(container_id, None)
    pid = _find_init(container_id)
    ticks = start_ticks(pid)
    if ticks is not None:
        _inits[container_id] = (pid, ticks)
    return pid


def _find_init(container_id):
    # Looked for twice: early in its boot the VM's systemd makes init.scope and moves
    # itself there, which a walk that listed the directories before and read the
    # processes after misses.
    for _ in range(2):
        try:
            pids = Cgroup.of_container(container_id).pids()
        except CgroupError:
            raise NotFound("VM container %s is not running" % container_id[:12]) from None
        for pid in pids:
            try:
                status = read_text("/proc/%d/status" % pid)
            except CgroupError:
                continue
            ids = status_field(status, "NSpid").split()
            if len(ids) > 1 and ids[-1] == "1":
                return pid
    raise NotFound("VM container %s has no init process (is it running?)" % container_id[:12])


def login_shell(pid):
    """root's login shell from the VM's /etc/passwd, falling back to /bin/sh."""
    try:
        with open("/proc/%d/root/etc/passwd" % pid) as handle:
            for line in handle:
                parts = line.strip().split(":")
                if len(parts) >= 7 and parts[0] == "root" and parts[6]:
                    if os.path.exists("/proc/%d/root%s" % (pid, parts[6])):
                        return parts[6]
    except OSError:
        pass
    for shell in ("/bin/bash", "/bin/sh"):
        if os.path.exists("/proc/%d/root%s" % (pid, shell)):
            return shell
    raise CvmError("the VM has no shell (/bin/sh); use `cvm nsrun` with a host binary")


def login_command(pid):
    """The argv of an interactive login shell in the VM, started in root's home."""
    return ["/bin/sh", "-c", 'cd "$HOME" 2>/dev/null || cd /; exec "$0" -l', login_shell(pid)]


def capabilities(pid):
    """{"CapInh": int, "CapPrm": ..., "CapEff": ..., "CapBnd": ...} of a process."""
    caps = {}
    for line in read_text("/proc/%d/status" % pid).splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Cap"):
            caps[key] = int(value.strip(), 16)
    return caps


def _setpriv_caps(caps):
    """setpriv's argument for exactly these capability bits: -all,+cap_0,+cap_5,..."""
    return ",".join(["-all"] + ["+cap_%d" % bit for bit in range(64) if caps >> bit & 1])


def nsrun_command(pid, namespaces, argv, keep_caps=False):
    """The argv that runs host binary `argv` in the VM's `namespaces` (default: net).

    Without `keep_caps`, setpriv (util-linux, beside nsenter) gives the command the VM's
    capability bounding and inheritable sets once nsenter has joined the namespaces: as
    root, its permitted and effective sets are then the VM's too. Unlike `cvm exec`, it
    stays in the host's cgroups, root and environment: a host tool borrowing the VM's
    view (ss, tcpdump, ip)."""
    command = [nsenter_path(), "--target", str(pid)] + [
        NAMESPACE_FLAGS[n] for n in (namespaces or ["net"])] + ["--"]
    if not keep_caps:
        vm = capabilities(pid)
        command += [_host_tool("setpriv"), "--bounding-set", _setpriv_caps(vm["CapBnd"]),
                    "--inh-caps", _setpriv_caps(vm["CapInh"]), "--"]
    return command + list(argv)


def nsrun(pid, namespaces, argv, keep_caps=False):
    """Replace this process with a host binary run in the chosen namespaces of the VM."""
    require_root("cvm nsrun")
    command = nsrun_command(pid, namespaces, argv, keep_caps)
    os.execve(command[0], command, dict(os.environ))


CLONE_NEWNS, CLONE_FS = 0x00020000, 0x00000200
MS_RDONLY, MS_REMOUNT, MS_BIND = 1, 32, 4096


def in_mount_namespace(pid, action, what):
    """Run `action(libc)` in a thread of its own that has joined the VM's mount namespace.

    Paths then resolve in the VM's own tree: going through /proc/<pid>/root instead
    would follow the VM's symlinks against the host's root, and would miss the VM's
    tmpfs mounts (/run) that Docker's archive API does not see either.

    Only that thread moves, and it ends with the action: unshare(CLONE_FS) gives it a
    root and working directory of its own, which setns(CLONE_NEWNS) requires. (A forked
    child did this before, at 1.5 ms, or 17 ms when a packet socket had just been used:
    the child's exit then made the final close, which waits out an RCU grace period.)
    The action must not import anything new: imports would resolve in the VM's tree.
    """
    import ctypes
    import threading

    libc = ctypes.CDLL(None, use_errno=True)
    try:
        ns_fd = os.open("/proc/%d/ns/mnt" % pid, os.O_RDONLY)
    except (FileNotFoundError, ProcessLookupError):
        raise NotFound("cannot %s inside the VM: its init (pid %d) is gone (the VM stopped "
                       "or was removed meanwhile)" % (what, pid)) from None
    failure = []

    def run():
        try:
            if libc.unshare(CLONE_FS) != 0 or libc.setns(ns_fd, CLONE_NEWNS) != 0:
                raise OSError(ctypes.get_errno(), "joining its mount namespace")
            action(libc)
        except Exception as exc:
            failure.append(exc)

    try:
        thread = threading.Thread(target=run, name="in-vm-mount-namespace")
        thread.start()
        thread.join()
    finally:
        os.close(ns_fd)
    if failure:
        raise CvmError("cannot %s inside the VM (pid %d): %s" % (what, pid, failure[0]))


def write_file(pid, path, content, mode=0o644, dir_mode=0o755):
    """Write a file inside a running VM (atomically, never following a final symlink)."""
    def action(libc):
        os.makedirs(os.path.dirname(path), mode=dir_mode, exist_ok=True)
        temp = path + ".cvm-tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        os.write(fd, content)
        os.close(fd)
        os.rename(temp, path)

    in_mount_namespace(pid, action, "write %s" % path)


def overwrite_mounted_file(pid, path, content):
    """Rewrite a file Docker bind-mounts into the VM (/etc/hosts): in place, as a rename
    over a mount point is refused."""
    def action(libc):
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
        os.write(fd, content)
        os.close(fd)

    in_mount_namespace(pid, action, "write %s" % path)


def make_cgroup_writable(pid):
    """cgroup v2 hosts: remount the VM's /sys/fs/cgroup read-write so that systemd can
    manage its own subtree. With a private cgroup namespace that mount shows only the
    VM's subtree, so this grants nothing above it."""
    def action(libc):
        if libc.mount(b"none", b"/sys/fs/cgroup", None, MS_REMOUNT | MS_BIND, None) != 0:
            raise OSError(ctypes_errno(), "remount")

    in_mount_namespace(pid, action, "remount /sys/fs/cgroup read-write")


def released_at(pid):
    """When the host released this start of the VM (wrote its ready file), in epoch
    seconds; None if it has not. Each start has a new /run, so the file tells one boot
    from the next. PID 1's command line could not: at Docker's start event it may still
    be runc's, before it execs the wait script."""
    try:
        return os.lstat("/proc/%d/root%s" % (pid, READY_FILE)).st_mtime
    except OSError:
        return None


def init_released(pid):
    return released_at(pid) is not None


def new_boot_id(pid):
    """Give this start of the VM its own boot ID, as systemd-nspawn does: the kernel's is
    the host's, so without this journald would see one boot across every VM reboot."""
    import uuid
    boot_id = str(uuid.uuid4()).encode() + b"\n"
    target = b"/proc/sys/kernel/random/boot_id"

    def action(libc):
        os.makedirs("/run/cvm", exist_ok=True)
        with open("/run/cvm/boot_id", "wb") as handle:
            handle.write(boot_id)
        if libc.mount(b"/run/cvm/boot_id", target, None, MS_BIND, None) != 0:
            raise OSError(ctypes_errno(), "bind boot_id")

    in_mount_namespace(pid, action, "set the VM's boot ID")


def ctypes_errno():
    import ctypes
    return ctypes.get_errno()
