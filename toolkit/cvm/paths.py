"""Where cvm keeps its state, where its data files are, and which code it runs; and
removing what is at a path. Imported by the launcher, so: nothing heavy here."""

import os

DEFAULT_ROOT = "/var/lib/cvm"
NETD_SOCKET = "netd.sock"
READY_FILE = "/run/cvm/ready"  # inside a VM: the host has wired its NICs (see cvm.engine)


def default_root():
    return os.path.abspath(os.environ.get("CVM_STATE_DIR") or DEFAULT_ROOT)


def netd_socket(root):
    return os.path.join(root, NETD_SOCKET)


def code_stamp(package_dir=os.path.dirname(os.path.abspath(__file__))):
    """Changes whenever cvm's code does (a file added, removed or rewritten): lets a
    command tell a cvm netd started before an upgrade, which still runs the old code."""
    count = size = mtimes = 0
    pending = [package_dir]
    while pending:
        for entry in os.scandir(pending.pop()):
            if entry.is_dir() and entry.name != "__pycache__":
                pending.append(entry.path)
            elif entry.name.endswith(".py"):
                info = entry.stat()
                count, size, mtimes = count + 1, size + info.st_size, mtimes + info.st_mtime_ns
    return "%d-%d-%d" % (count, size, mtimes)


def project_root():
    """Where os-images/, templates/ and playbooks/ live: CVM_HOME, the checkout, or
    /usr/share/cvm."""
    from .errors import CvmError
    candidates = [os.environ.get("CVM_HOME"),
                  os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                  "/usr/share/cvm"]
    for candidate in candidates:
        if candidate and os.path.isdir(os.path.join(candidate, "os-images")):
            return candidate
    raise CvmError("cannot find os-images/ (set CVM_HOME to the cvm checkout)")


def remove(path):
    """Remove what is at `path`: a directory tree, a file, a link (not what it points
    to); nothing if nothing is there."""
    if os.path.isdir(path) and not os.path.islink(path):
        import shutil
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)
