"""The cvm source as a reproducible tarball, for installing cvm on other hosts.

The same tree gives the same bytes (sorted names, fixed times and owners, no caches), so
that Ansible's copy of it to a host changes nothing when nothing changed.
"""

import gzip
import io
import os
import tarfile

from .paths import project_root

SHIPPED = ("pyproject.toml", "README.md", "toolkit", "templates", "os-images")
SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
SKIPPED_SUFFIXES = (".pyc", ".egg-info")


def _files(root):
    for entry in SHIPPED:
        path = os.path.join(root, entry)
        if os.path.isfile(path):
            yield entry
            continue
        for directory, subdirs, files in os.walk(path):
            subdirs[:] = sorted(d for d in subdirs
                                if d not in SKIPPED_DIRS and not d.endswith(SKIPPED_SUFFIXES))
            for name in sorted(files):
                if not name.endswith(SKIPPED_SUFFIXES):
                    yield os.path.relpath(os.path.join(directory, name), root)


def source_tarball(root=None):
    """The bytes of cvm-src.tar.gz: every shipped file under cvm-src/."""
    root = root or project_root()
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as compressed, \
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for relative in _files(root):
            path = os.path.join(root, relative)
            info = tarfile.TarInfo(os.path.join("cvm-src", relative))
            info.size = os.path.getsize(path)
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.mtime = 0
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
    return buffer.getvalue()


def write_source_tarball(output, root=None):
    """Write the tarball to `output` unless it already holds the same bytes.
    Returns True when the file changed."""
    data = source_tarball(root)
    try:
        with open(output, "rb") as handle:
            if handle.read() == data:
                return False
    except FileNotFoundError:
        pass
    with open(output + ".tmp", "wb") as handle:
        handle.write(data)
    os.rename(output + ".tmp", output)
    return True
