"""Samples the tools keep between runs: for load averages and top's first frame.

Inside a VM the file lives in /run/cvm (tmpfs: it starts empty at every boot); from the
host, one file per VM under /run/cvm/procview. Unwritable locations are skipped: the
tools then work from the current sample alone.

Samples are kept in marshal's format, which loads with no import (json's loads re and
enum, a quarter of a tool's start-up), and read only from files of this user: the /tmp
fallback is shared. The python3 that wrote one reads it; after an upgrade of it an
unreadable file is no sample.
"""

import marshal
import os


def _candidates(key):
    name = "procview-%s.state" % key
    yield os.path.join("/run/cvm", name)
    yield os.path.join("/tmp", "cvm-%d-%s" % (os.getuid(), name))


def load(key):
    for path in _candidates(key):
        try:
            with open(path, "rb") as handle:
                if os.fstat(handle.fileno()).st_uid != os.getuid():
                    continue
                return marshal.load(handle)
        except (IOError, OSError, ValueError, EOFError, TypeError):
            continue
    return None


def save(key, data):
    for path in _candidates(key):
        try:
            directory = os.path.dirname(path)
            if not os.path.isdir(directory):
                os.makedirs(directory, 0o755)
            temp = "%s.%d" % (path, os.getpid())
            with open(temp, "wb") as handle:
                marshal.dump(data, handle)
            os.rename(temp, path)
            return True
        except (IOError, OSError):
            continue
    return False


def key_for(source):
    """One key per VM (the host side keeps one file per VM)."""
    import zlib  # hashlib would load OpenSSL: 4 ms
    cgroup = getattr(source, "cgroup", None)
    ident = repr(sorted(cgroup.dirs.items())) if cgroup is not None else "host"
    return "%08x" % zlib.crc32(ident.encode())
