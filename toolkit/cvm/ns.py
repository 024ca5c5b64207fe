"""Acting inside a VM from the host: nsenter helpers with cgroup placement.

A process that plain nsenter starts stays in the host's cgroups and so escapes
the VM's CPU, memory and pids limits. Every helper here first moves itself into
the VM's cgroups, then execs util-linux nsenter, so the command (and anything it
forks) is accounted to the VM, exactly like a process started inside it.
"""

import os
import subprocess

from .cgroups import Cgroup, CgroupError, read_text
from .engine import WAIT_SCRIPT
from .errors import CvmError, NotFound, PermissionDenied

NAMESPACE_FLAGS = {"mount": "--mount", "uts": "--uts", "ipc": "--ipc", "net": "--net",
                   "pid": "--pid", "cgroup": "--cgroup"}


def require_root(what):
    if os.geteuid() != 0:
        raise PermissionDenied("%s needs root (it enters another process's namespaces); run "
                               "it as root or with sudo" % what)


def nsenter_path():
    import shutil
    path = shutil.which("nsenter")
    if path is None:
        raise CvmError("nsenter is not installed; install util-linux")
    return path


def init_pid(container_id):
    """Host PID of the VM's PID 1, found from its cgroup without asking Docker."""
    try:
        cgroup = Cgroup.of_container(container_id)
        pids = cgroup.pids()
    except CgroupError:
        raise NotFound("VM container %s is not running" % container_id[:12]) from None
    for pid in pids:
        try:
            status = read_text("/proc/%d/status" % pid)
        except CgroupError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:") and line.split()[-1] == "1" and len(line.split()) > 2:
                return pid
    raise NotFound("VM container %s has no init process (is it running?)" % container_id[:12])


def vm_environment(pid, term=None):
    """The environment PID 1 of the VM was started with, plus HOME and TERM."""
    try:
        with open("/proc/%d/environ" % pid, "rb") as handle:
            raw = handle.read().split(b"\0")
    except OSError:
        raw = []
    env = {}
    for item in raw:
        if b"=" in item:
            key, value = item.split(b"=", 1)
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env.setdefault("HOME", "/root")
    if term:
        env["TERM"] = term
    else:
        env.pop("TERM", None)
    return env


def join_cgroups(cgroup):
    """Move the calling process into `cgroup` (every v1 hierarchy, or the v2 leaf)."""
    me = str(os.getpid())
    for controller, directory in sorted(set((c, d) for c, d in cgroup.dirs.items())):
        target = os.path.join(directory, "cgroup.procs")
        try:
            with open(target, "w") as handle:
                handle.write(me)
        except OSError as exc:
            if cgroup.version == 2 and exc.errno == 16:  # EBUSY: not a leaf (systemd inside)
                leaf = os.path.join(directory, "cvm-exec")
                os.makedirs(leaf, exist_ok=True)
                with open(os.path.join(leaf, "cgroup.procs"), "w") as handle:
                    handle.write(me)
            else:
                raise CvmError("cannot join the VM's %s cgroup (%s): %s" % (
                    controller, target, exc.strerror)) from None


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


def command_in_vm(pid, argv, namespaces=None, root=True):
    """The nsenter argv that runs `argv` in the VM (all namespaces and its root by default)."""
    cmd = [nsenter_path(), "--target", str(pid)]
    if namespaces is None:
        cmd += [NAMESPACE_FLAGS[n] for n in ("mount", "uts", "ipc", "net", "pid", "cgroup")]
    else:
        cmd += [NAMESPACE_FLAGS[n] for n in namespaces]
    if root:
        cmd += ["--root", "--wd"]
    return cmd + ["--"] + list(argv)


def _exec(pid, cgroup, argv, env, namespaces=None, root=True):
    join_cgroups(cgroup)
    os.execve(nsenter_path(), command_in_vm(pid, argv, namespaces, root), env)


def enter(pid, cgroup):
    """Replace this process with an interactive login shell inside the VM."""
    require_root("cvm enter")
    shell = login_shell(pid)
    env = vm_environment(pid, term=os.environ.get("TERM", "xterm"))
    argv = ["/bin/sh", "-c", 'cd "$HOME" 2>/dev/null || cd /; exec "$0" -l', shell]
    _exec(pid, cgroup, argv, env)


def exec_command(pid, cgroup, argv):
    """Replace this process with `argv` run inside the VM; its exit code becomes ours."""
    require_root("cvm exec")
    _exec(pid, cgroup, argv, vm_environment(pid))


def nsrun(pid, namespaces, argv):
    """Replace this process with a host binary run in the chosen namespaces of the VM.

    It is a host tool borrowing the VM's view (ss, tcpdump, ip), so it stays in the host's
    cgroups and keeps the host's root and environment.
    """
    require_root("cvm nsrun")
    os.execve(nsenter_path(), command_in_vm(pid, argv, namespaces or ["net"], root=False),
              dict(os.environ))


def run(pid, cgroup, argv, input=None, timeout=None):
    """Run `argv` inside the VM and return (exit code, stdout, stderr) — for the API."""
    require_root("running a command in a VM")

    def place():
        join_cgroups(cgroup)

    result = subprocess.run(command_in_vm(pid, argv), input=input, capture_output=True,
                            timeout=timeout, env=vm_environment(pid), preexec_fn=place)
    return result.returncode, result.stdout, result.stderr


CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_REMOUNT, MS_BIND = 1, 32, 4096


def in_mount_namespace(pid, action, what):
    """Run `action()` in a forked child that has joined the VM's mount namespace.

    Paths then resolve in the VM's own tree: going through /proc/<pid>/root instead
    would follow the VM's symlinks against the host's root, and would miss the VM's
    tmpfs mounts (/run) that Docker's archive API does not see either.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    ns_fd = os.open("/proc/%d/ns/mnt" % pid, os.O_RDONLY)
    try:
        child = os.fork()
        if child == 0:
            code = 1
            try:
                if libc.setns(ns_fd, CLONE_NEWNS) == 0:  # root and cwd become the VM's
                    action(libc)
                    code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
    finally:
        os.close(ns_fd)
    if os.waitstatus_to_exitcode(status) != 0:
        raise CvmError("cannot %s inside the VM (pid %d)" % (what, pid))


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


def init_released(pid):
    """Has PID 1 of this start left cvm's wait for the host (exec'd the real init)?"""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return WAIT_SCRIPT.encode() not in handle.read()
    except OSError:
        return False


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
