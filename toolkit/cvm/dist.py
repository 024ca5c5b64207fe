"""The cvm source as a reproducible tarball, and a wheelhouse of its dependencies, for
installing cvm on other hosts (which may reach no package index: `cvm lab` hosts).

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
    return _write_if_changed(output, source_tarball(root))


WHEELHOUSE_CACHE = os.environ.get("CVM_CACHE_DIR", "/var/cache/cvm")


def requirements(root=None):
    """What a host needs to install cvm from its source: its runtime dependencies and its
    build backend (from pyproject.toml)."""
    import tomllib
    with open(os.path.join(root or project_root(), "pyproject.toml"), "rb") as handle:
        project = tomllib.load(handle)
    return sorted(project["build-system"]["requires"] + project["project"]["dependencies"])


def write_wheelhouse(output, root=None):
    """A tarball of wheels for `requirements()`, for hosts that reach no package index
    (`pip install --no-index --find-links`). Downloaded once per set of requirements
    (kept in /var/cache/cvm) and written like the source tarball: the same wheels give
    the same bytes. Returns True when `output` changed."""
    import hashlib
    import subprocess
    import sys
    import tempfile
    wanted = requirements(root)
    key = hashlib.sha256("\n".join(wanted).encode()).hexdigest()[:16]
    cached = os.path.join(WHEELHOUSE_CACHE, "wheelhouse-%s.tar.gz" % key)
    if not os.path.exists(cached):
        os.makedirs(WHEELHOUSE_CACHE, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="cvm-wheelhouse-") as directory:
            result = subprocess.run([sys.executable, "-m", "pip", "download", "-q",
                                     "--only-binary=:all:", "-d", directory] + wanted,
                                    capture_output=True, text=True)
            if result.returncode != 0:
                from .errors import CvmError
                raise CvmError("cannot download cvm's dependencies for the wheelhouse: %s" %
                               " ".join(result.stderr.split())[-300:])
            buffer = io.BytesIO()
            with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as compressed, \
                    tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name in sorted(os.listdir(directory)):
                    info = tarfile.TarInfo(os.path.join("wheelhouse", name))
                    info.size = os.path.getsize(os.path.join(directory, name))
                    info.mode = 0o644
                    with open(os.path.join(directory, name), "rb") as handle:
                        tar.addfile(info, handle)
        with open(cached + ".tmp", "wb") as handle:
            handle.write(buffer.getvalue())
        os.rename(cached + ".tmp", cached)
    with open(cached, "rb") as handle:
        data = handle.read()
    return _write_if_changed(output, data)


def _write_if_changed(output, data):
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
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
