"""Files cvm gives every VM, kept on the host and bind-mounted read-only into it, and the
one directory a VM writes for the host: how its last shutdown went.

/etc/cvm/limits.env, /etc/cvm/limits.json, /etc/cvm/network.env, /etc/cvm/lxcfs and the
wait-ready entrypoint live in <state>/guests/<vm>/ and are bound file by file (so /etc/cvm
stays the VM's own directory). Writing them costs a host file write: no copy into the
container at create (Docker's put_archive mounts the container's filesystem, ~40 ms),
no entering the VM on resize. They are rewritten in place, never replaced, since a bind
mount holds on to the file it was given.
"""

import os

from .engine import LXCFS_FILES, LXCFS_MARKER, WAIT_SCRIPT, WAIT_SCRIPT_TEXT, network_env
from .errors import NotFound

# The VM's shutdown path writes here (read-write, the VM's own): `shutdown` holds the
# verb systemd-shutdown ran (poweroff, halt, reboot), `initiator` says "host" when the
# host's stop signal started it, `stopping` that the stop it asked for is under way (see
# cvm.stopsignal). See os-images/common and the compat init.
REPORT_DIR = "/run/cvm/report"
REPORT_KEYS = ("shutdown", "initiator", "stopping")


def bound_files(spec, init_mode, host, lxcfs=False):
    """{guest path: bytes} of the files bound into a VM of `spec` (`lxcfs`: with LXCFS's
    /proc files)."""
    from . import limits
    files = {path: content for path, (content, _) in limits.files(spec, host).items()}
    env = network_env(spec)
    if env:
        files["/etc/cvm/network.env"] = "".join(
            "%s=%s\n" % (k, v) for k, v in sorted(env.items())).encode()
    if init_mode in ("systemd", "compat"):
        files[WAIT_SCRIPT] = WAIT_SCRIPT_TEXT.encode()
    if lxcfs:
        files[LXCFS_MARKER] = ("LXCFS serves this VM's %s\n" % " ".join(LXCFS_FILES)).encode()
    return files


def host_path(store, name, guest_path):
    return os.path.join(store.guest_dir(name), os.path.basename(guest_path))


def write(store, name, files):
    """Write (or rewrite in place) the host side of each bound file."""
    directory = store.guest_dir(name)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    for guest_path, content in files.items():
        mode = 0o755 if guest_path == WAIT_SCRIPT else 0o644
        try:
            fd = os.open(host_path(store, name, guest_path), os.O_WRONLY | os.O_CREAT, mode)
        except IsADirectoryError:  # Docker made a directory there: the files were removed
            raise NotFound("the files of VM %s were removed while it was being made "
                           "(cvm rm?)" % name) from None
        try:
            os.write(fd, content)
            os.ftruncate(fd, len(content))
        finally:
            os.close(fd)


def binds(store, name, files, report=False):
    """Docker bind specs for the files (and the shutdown report's directory)."""
    specs = ["%s:%s:ro" % (host_path(store, name, guest_path), guest_path)
             for guest_path in sorted(files)]
    if report:
        os.makedirs(report_dir(store, name), mode=0o755, exist_ok=True)
        specs.append("%s:%s:rw" % (report_dir(store, name), REPORT_DIR))
    return specs


def report_dir(store, name):
    return os.path.join(store.guest_dir(name), "report")


def read_report(store, name):
    """{"shutdown": verb or None, "initiator": "host" or None} of the VM's last shutdown."""
    report = {}
    for key in ("shutdown", "initiator"):
        try:
            with open(os.path.join(report_dir(store, name), key)) as handle:
                report[key] = handle.read().strip() or None
        except OSError:
            report[key] = None
    return report


def report_written_at(store, name, key):
    """When the VM wrote `key` of its shutdown report (epoch seconds), or None."""
    try:
        return os.stat(os.path.join(report_dir(store, name), key)).st_mtime
    except OSError:
        return None


def clear_report(store, name):
    """Forget the last shutdown's report: a new boot writes its own."""
    for key in REPORT_KEYS:
        try:
            os.unlink(os.path.join(report_dir(store, name), key))
        except OSError:
            pass


def powered_off_from_inside(store, name):
    """Did the VM's last shutdown come from inside it (poweroff, halt, shutdown -h) rather
    than from the host (docker stop or restart, dockerd or host shutdown) or a crash (a
    killed or OOM-killed init writes nothing)?"""
    report = read_report(store, name)
    return report["shutdown"] in ("poweroff", "halt") and report["initiator"] != "host"
