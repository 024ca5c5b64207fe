"""Copies of a running VM's trees made in passes, so that the VM is frozen only for the
last, as Proxmox's vzdump does with rsync in its 'suspend' mode. The first pass copies
everything while the VM runs; each later one copies again only what changed since the
pass before began, and removes what is gone: one more while the VM runs (what it wrote
during the first), then the last with the VM frozen. An archive is then written from
the copies while the VM runs.

What changed is told by each entry's stat (type, inode, size, owner, mode, mtime,
ctime). Timestamps are coarse (a clock tick; whole seconds on ext4's small inodes), so a
write in the same tick as a pass's look would keep the look's ctime: any entry whose
ctime is not clearly older than the pass before is copied again too.

Copies keep owners, modes, times, extended attributes (overlay whiteouts and opaque
directories), hard links and holes; copy_file_range shares blocks where the filesystem
can (XFS, btrfs), which is what makes a snapshot's kept volume trees cost only what
changes after it (cvm.snapshots)."""

import contextlib
import errno
import os
import stat
import struct
import time

from .paths import remove

UNCLEAR_NS = 1_100_000_000  # whole-second timestamps, and a clock tick
UNCLEAR_FINE_NS = 20_000_000  # nanosecond timestamps from a clock of 100 ticks a second
ROOM_MARGIN = 64 << 20
COPY_CHUNK = 1 << 30


FICLONE = 0x40049409
FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_LAST, FIEMAP_EXTENT_SHARED = 0x1, 0x2000
FIEMAP_HEADER, FIEMAP_EXTENT = struct.Struct("=QQIIII"), struct.Struct("=QQQQQIIII")


def copy_paths(target):
    """What a copy to `target` makes on disk: the copy, and the entry being copied."""
    return [target, target + ".partial"]


class TreeCopy:
    """`source` copied to `target` (made here, or given empty, and removed by remove())."""

    def __init__(self, source, target):
        self.source, self.target = source, target
        self.scratch = copy_paths(target)[1]
        self.copied = {}  # relative path -> the stat signature it was copied with
        self.started_ns = None  # when the last pass began
        self.fine_timestamps = False  # seen a ctime with nanoseconds in the tree
        self.owned = False  # the target is this copy's (made, or found empty): remove() may

    def sync(self):
        """One pass. After a pass made with the tree's writers frozen, the copy is
        exactly the tree."""
        if self.started_ns is None:
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.target, 0o700)
            if os.listdir(self.target):
                raise FileExistsError(errno.EEXIST, "not an empty directory", self.target)
            self.owned = True
            settled_before = None
        else:
            settled_before = self.started_ns - (
                UNCLEAR_FINE_NS if self.fine_timestamps else UNCLEAR_NS)
        self.started_ns = time.time_ns()
        self._sync(settled_before)

    @property
    def paths(self):
        return copy_paths(self.target)

    def remove(self):
        for path in self.paths if self.owned else [self.scratch]:
            with contextlib.suppress(OSError):
                remove(path)

    def _sync(self, settled_before):
        linked = {}  # (device, inode) -> the first of its names copied in this pass
        directories, present, touched = [], set(), set()
        for directory, subdirs, files in os.walk(self.source):
            relative_dir = os.path.relpath(directory, self.source)
            entries = [(".", directory)] if relative_dir == "." else []
            entries += [(os.path.normpath(os.path.join(relative_dir, entry)),
                         os.path.join(directory, entry)) for entry in subdirs + files]
            for relative, path in entries:
                try:
                    info = os.lstat(path)
                except FileNotFoundError:
                    continue  # removed while the VM runs: the second pass settles it
                present.add(relative)
                is_directory = stat.S_ISDIR(info.st_mode)
                self.fine_timestamps |= info.st_ctime_ns % 1_000_000_000 != 0
                if self._entry(relative, path, info, linked, settled_before):
                    touched.add(os.path.dirname(relative) or ".")
                    if is_directory:
                        touched.add(relative)
                if is_directory:
                    directories.append((relative, path, info))
        for relative in sorted(set(self.copied) - present, reverse=True):
            remove(os.path.join(self.target, relative))
            del self.copied[relative]
            touched.add(os.path.dirname(relative) or ".")
        # Last: making and removing entries in a directory changes its times.
        for relative, path, info in directories:
            if relative in touched:
                _set_metadata(path, os.path.join(self.target, relative), info)

    def _entry(self, relative, path, info, linked, settled_before):
        """Bring the copy of one entry up to date (a directory: make it); did it change?
        Entries as they were in the last pass and changed before `settled_before` are."""
        target = os.path.join(self.target, relative)
        if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
            first = linked.setdefault((info.st_dev, info.st_ino), relative)
            if first != relative:
                self.copied[relative] = _signature(info)
                first_target = os.path.join(self.target, first)
                if _same_file(target, first_target):
                    return False
                remove(target)
                os.link(first_target, target)
                return True
        if settled_before is not None and info.st_ctime_ns < settled_before and \
                self.copied.get(relative) == _signature(info):
            return False
        if stat.S_ISDIR(info.st_mode):
            if not _is_directory(target):
                remove(target)
                os.mkdir(target, 0o700)
        elif stat.S_ISSOCK(info.st_mode):
            remove(target)  # a socket is nothing to copy
        else:
            self._copy_entry(path, info)
            if _is_directory(target):
                remove(target)  # a file replaces a directory: os.replace cannot
            os.replace(self.scratch, target)
        self.copied[relative] = _signature(info)
        return True

    def _copy_entry(self, path, info):
        """`path` made at the scratch path, as it is: data, owner, mode, xattrs, times."""
        scratch = self.scratch
        if stat.S_ISREG(info.st_mode):
            with open(path, "rb") as source, open(scratch, "wb") as copy:
                _copy_data(source.fileno(), copy.fileno(), info.st_size)
        elif stat.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(path), scratch)
        else:
            os.mknod(scratch, info.st_mode, info.st_rdev)  # devices, FIFOs, whiteouts
        _set_metadata(path, scratch, info)


def _signature(info):
    return (info.st_mode, info.st_ino, info.st_size, info.st_uid, info.st_gid,
            info.st_mtime_ns, info.st_ctime_ns)


def _is_directory(path):
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _same_file(a, b):
    try:
        return os.path.samestat(os.lstat(a), os.lstat(b))
    except FileNotFoundError:
        return False


def _copy_data(source, copy, size):
    """The data of `size` bytes, its holes left holes."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(source, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break  # only a hole is left
            raise
        end = min(os.lseek(source, start, os.SEEK_HOLE), size)
        _copy_range(source, copy, start, end - start)
        offset = end
    os.ftruncate(copy, size)


def _copy_range(source, copy, offset, length):
    while length > 0:
        try:
            done = os.copy_file_range(source, copy, min(length, COPY_CHUNK), offset, offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            done = _pwrite_copy(source, copy, offset, min(length, COPY_CHUNK))
        if done == 0:
            return  # the file is shorter than it was (the first pass, with the VM running)
        offset += done
        length -= done


def _pwrite_copy(source, copy, offset, length):
    data = os.pread(source, min(length, 1 << 20), offset)
    os.pwrite(copy, data, offset)
    return len(data)


def _set_metadata(path, target, info):
    os.lchown(target, info.st_uid, info.st_gid)  # first: a chown clears file capabilities
    wanted = {name: os.getxattr(path, name, follow_symlinks=False)
              for name in _xattr_names(path)}
    for name in _xattr_names(target):
        if name not in wanted:
            os.removexattr(target, name, follow_symlinks=False)
    for name, value in wanted.items():
        os.setxattr(target, name, value, follow_symlinks=False)
    if not stat.S_ISLNK(info.st_mode):
        os.chmod(target, stat.S_IMODE(info.st_mode))
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)


def _xattr_names(path):
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM):
            return []  # symlinks on some filesystems
        raise


def room_for(targets, nbytes):
    """Is there room for `nbytes` of copies on each filesystem of `targets`? Without it,
    the VM is frozen for the whole archive instead."""
    for target in targets:
        space = os.statvfs(os.path.dirname(target))
        if space.f_bavail * space.f_frsize < nbytes + ROOM_MARGIN:
            return False
    return True


def reflinks(directory):
    """Can files in `directory` be copied by reflink (their blocks shared until one of them
    changes)? Asked of the filesystem with two empty files."""
    import fcntl
    import tempfile
    with tempfile.TemporaryFile(dir=directory) as source, \
            tempfile.TemporaryFile(dir=directory) as copy:
        try:
            fcntl.ioctl(copy.fileno(), FICLONE, source.fileno())
        except OSError:
            return False
    return True


def unshared_bytes(tree):
    """The bytes of the files under `tree` that no other file shares (by reflink): what
    removing them would free."""
    total = 0
    for directory, _, files in os.walk(tree):
        for entry in files:
            path = os.path.join(directory, entry)
            if not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            with open(path, "rb") as handle:
                total += _unshared_bytes_of(handle.fileno())
    return total


def _unshared_bytes_of(fd, batch=64):
    import fcntl
    total, start = 0, 0
    while True:
        request = bytearray(FIEMAP_HEADER.size + batch * FIEMAP_EXTENT.size)
        FIEMAP_HEADER.pack_into(request, 0, start, (1 << 64) - 1 - start, FIEMAP_FLAG_SYNC,
                                0, batch, 0)
        try:
            fcntl.ioctl(fd, FS_IOC_FIEMAP, request)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY):
                return os.fstat(fd).st_blocks * 512  # no extent map: count all
            raise
        mapped = FIEMAP_HEADER.unpack_from(request, 0)[3]
        if not mapped:
            return total
        for index in range(mapped):
            logical, _, length, _, _, flags, _, _, _ = FIEMAP_EXTENT.unpack_from(
                request, FIEMAP_HEADER.size + index * FIEMAP_EXTENT.size)
            if not flags & FIEMAP_EXTENT_SHARED:
                total += length
            if flags & FIEMAP_EXTENT_LAST:
                return total
        start = logical + length
