"""What was asked for: persisted VM specs, bridges and address pools, with locks.

The Docker engine is the source of truth for what exists; this store holds what
was asked, so that the network daemon can re-apply it after any restart.

Layout under the state root (default /var/lib/cvm, root-only):
    vms/<name>.json        one record per VM
    bridges/<name>.json    bridges cvm made
    lock                   host-wide lock for changes that must not interleave
    locks/<name>.lock      per-VM lock for wiring
Every write is an atomic replace (temp file, fsync, rename, fsync dir).
"""

import contextlib
import errno
import fcntl
import json
import os
import time

from .errors import PermissionDenied, StateError

from .paths import DEFAULT_ROOT, default_root  # noqa: F401 (part of this module's API)

LOCK_TIMEOUT = 60.0
APPLY_LOCK_TIMEOUT = 1800.0  # a whole apply of another file may be under way


class Store:
    def __init__(self, root=None):
        self.root = os.path.abspath(root or default_root())

    @property
    def realm(self):
        """Short id of this store. Containers and interfaces carry it, so that two
        stores on one host (a test run beside production) never touch each other's."""
        import hashlib  # ~3.6 ms to import: only for commands that need the realm
        return hashlib.sha1(self.root.encode()).hexdigest()[:8]

    # ------------------------------------------------------------ plumbing

    def _dir(self, kind):
        path = os.path.join(self.root, kind)
        if not os.path.isdir(path):
            try:
                os.makedirs(path, mode=0o700, exist_ok=True)
                os.chmod(self.root, 0o700)
            except PermissionError:
                raise PermissionDenied("cvm keeps its state in %s and needs root to write it; "
                                       "run it as root" % self.root) from None
        return path

    def _path(self, kind, name):
        return os.path.join(self._dir(kind), name + ".json")

    def _read(self, kind, name):
        path = os.path.join(self.root, kind, name + ".json")  # reading creates nothing
        try:
            with open(path) as handle:
                return json.load(handle)
        except FileNotFoundError:
            return None
        except PermissionError:
            raise PermissionDenied("cannot read %s; run cvm as root" % path) from None
        except ValueError as exc:
            raise StateError("%s is corrupt (%s); move it away to recover" % (path, exc)) from None

    def _write(self, kind, name, record):
        directory = self._dir(kind)
        path = os.path.join(directory, name + ".json")
        temp = "%s.tmp.%d" % (path, os.getpid())
        data = json.dumps(record, indent=2, sort_keys=True).encode() + b"\n"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, path)
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise PermissionDenied("cannot write %s; run cvm as root" % path) from None
            raise StateError("cannot write %s: %s" % (path, exc.strerror)) from None

    def _delete(self, kind, name):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(kind, name))

    def _names(self, kind):
        directory = os.path.join(self.root, kind)
        try:
            entries = os.listdir(directory)
        except FileNotFoundError:
            return []  # nothing was ever stored there
        except PermissionError:
            raise PermissionDenied("cannot read %s; run cvm as root" % directory) from None
        return sorted(e[:-5] for e in entries if e.endswith(".json"))

    # ------------------------------------------------------------ locks

    @contextlib.contextmanager
    def _flock(self, path, timeout, what, create=True):
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise StateError("%s is held by another cvm process for over %d s; "
                                         "is one stuck?" % (what, timeout)) from None
                    time.sleep(0.005)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def make(self):
        """Create the store's root directory (root only), if missing."""
        self._dir("vms")

    def lock(self, timeout=LOCK_TIMEOUT):
        """Host-wide lock: names, addresses and MACs are checked and claimed under it."""
        self.make()
        return self._flock(os.path.join(self.root, "lock"), timeout, "the cvm state lock")

    def apply_lock(self, timeout=APPLY_LOCK_TIMEOUT):
        """One `cvm apply` at a time: the undo of one must not take away what another
        found done."""
        self.make()
        return self._flock(os.path.join(self.root, "apply.lock"), timeout,
                           "the lock of cvm apply")

    def vm_lock(self, name, timeout=LOCK_TIMEOUT, existing=False):
        """Per-VM lock: wiring and unwiring of one VM never interleave. With `existing`,
        FileNotFoundError if the VM's lock file is gone (delete_vm removes it): a late
        clean-up of a removed VM must not leave a new one behind."""
        path = os.path.join(self._dir("locks"), name + ".lock")
        return self._flock(path, timeout, "the lock of VM %s" % name, create=not existing)

    # ------------------------------------------------------------ records

    def read_vm(self, name):
        return self._read("vms", name)

    def write_vm(self, name, record):
        record = dict(record, updated=time.time())
        self._write("vms", name, record)
        return record

    def guest_dir(self, name):
        """Host side of the files bound into the VM (see cvm.guestfiles)."""
        return os.path.join(self.root, "guests", name)

    def delete_vm(self, name):
        self._delete("vms", name)
        import shutil  # costs ~3 ms: not for every command that reads the state
        shutil.rmtree(self.guest_dir(name), ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self._dir("locks"), name + ".lock"))

    def vm_names(self):
        return self._names("vms")

    def vm_records(self):
        records = {}
        for name in self.vm_names():
            record = self.read_vm(name)
            if record is not None:
                records[name] = record
        return records

    def read_bridge(self, name):
        return self._read("bridges", name)

    def write_bridge(self, name, record):
        self._write("bridges", name, record)

    def delete_bridge(self, name):
        self._delete("bridges", name)

    def bridge_records(self):
        return {n: self._read("bridges", n) for n in self._names("bridges")}
