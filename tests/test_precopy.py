"""Two-pass copies of a tree (cvm.precopy) on this host's filesystem: after the second
pass the copy is exactly the tree, whatever changed between the passes, and the second
pass copies only what may have changed."""

import hashlib
import os
import stat
import time

import pytest

from cvm import precopy


def listing(root):
    """{relative path: what a copy must keep} of `root` and every entry under it, and
    its hard links as groups of names."""
    paths = [root]
    for directory, subdirs, files in os.walk(root):
        paths += [os.path.join(directory, name) for name in subdirs + files]
    found, inodes = {}, {}
    for path in paths:
        info = os.lstat(path)
        relative = os.path.relpath(path, root)
        xattrs = sorted((a, os.getxattr(path, a, follow_symlinks=False))
                        for a in os.listxattr(path, follow_symlinks=False))
        kept = [stat.S_IFMT(info.st_mode), info.st_uid, info.st_gid, xattrs]
        if not stat.S_ISLNK(info.st_mode):
            kept += [stat.S_IMODE(info.st_mode), info.st_mtime_ns]
        if stat.S_ISREG(info.st_mode):
            with open(path, "rb") as handle:
                kept += [hashlib.sha256(handle.read()).hexdigest(), info.st_size]
            inodes.setdefault(info.st_ino, []).append(relative)
        elif stat.S_ISLNK(info.st_mode):
            kept.append(os.readlink(path))
        elif stat.S_ISCHR(info.st_mode) or stat.S_ISFIFO(info.st_mode):
            kept.append(info.st_rdev)
        found[relative] = kept
    groups = sorted(sorted(names) for names in inodes.values() if len(names) > 1)
    return found, groups


def write(path, data, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


def make_tree(root):
    write(os.path.join(root, "etc", "hostname"), b"vm1\n")
    write(os.path.join(root, "etc", "shadow"), b"root:*:1::::::\n", 0o640)
    os.chown(os.path.join(root, "etc", "shadow"), 0, 42)
    write(os.path.join(root, "usr", "bin", "tool"), os.urandom(300000), 0o755)
    os.link(os.path.join(root, "usr", "bin", "tool"), os.path.join(root, "usr", "bin", "alias"))
    os.symlink("../usr/bin/tool", os.path.join(root, "etc", "tool-link"))
    os.mknod(os.path.join(root, "etc", "gone-from-image"), stat.S_IFCHR | 0o000,
             os.makedev(0, 0))  # an overlay whiteout
    os.mkfifo(os.path.join(root, "etc", "fifo"))
    os.makedirs(os.path.join(root, "var", "opaque"))
    os.setxattr(os.path.join(root, "var", "opaque"), "trusted.overlay.opaque", b"y")
    os.chmod(os.path.join(root, "var"), 0o751)
    with open(os.path.join(root, "var", "sparse"), "wb") as handle:
        handle.truncate(64 << 20)  # 64 MiB of holes around 6 bytes
        handle.seek(32 << 20)
        handle.write(b"middle")
    os.utime(os.path.join(root, "etc"), ns=(1, 1_000_000_000))


def copied_blocks(path):
    return os.lstat(path).st_blocks * 512


def test_two_passes_make_the_copy_exactly_the_tree(tmp_path):
    source, target = str(tmp_path / "upper"), str(tmp_path / "copy")
    os.mkdir(source)
    make_tree(source)
    copy = precopy.TreeCopy(source, target)
    copy.sync()
    assert listing(target) == listing(source)
    assert copied_blocks(os.path.join(target, "var", "sparse")) < 1 << 20  # holes kept

    # What a running VM does between the passes.
    write(os.path.join(source, "etc", "hostname"), b"vm2\n")  # same size, new content
    os.unlink(os.path.join(source, "etc", "fifo"))
    os.rename(os.path.join(source, "etc", "shadow"), os.path.join(source, "etc", "shadow-"))
    os.unlink(os.path.join(source, "usr", "bin", "alias"))  # the link broken
    os.link(os.path.join(source, "etc", "hostname"), os.path.join(source, "hostname-too"))
    os.unlink(os.path.join(source, "etc", "tool-link"))
    os.mkdir(os.path.join(source, "etc", "tool-link"))  # a link became a directory
    write(os.path.join(source, "etc", "tool-link", "inside"), b"x")
    os.removexattr(os.path.join(source, "var", "opaque"), "trusted.overlay.opaque")
    os.chmod(os.path.join(source, "usr", "bin", "tool"), 0o700)
    os.utime(os.path.join(source, "etc"), ns=(1, 1_000_000_000))
    copy.sync()
    assert listing(target) == listing(source)
    copy.remove()
    assert not os.path.exists(target) and not os.path.exists(copy.scratch)


def test_a_later_pass_copies_only_what_may_have_changed(tmp_path):
    """An entry whose stat is unchanged and older than the pass before is not read again;
    one whose ctime is as recent as the pass before is (timestamps are coarse: a write in
    the tick of that pass's look would keep the look's stat)."""
    source, target = str(tmp_path / "upper"), str(tmp_path / "copy")
    write(os.path.join(source, "old"), b"settled")
    time.sleep(precopy.UNCLEAR_FINE_NS / 1e9 + 0.01)
    write(os.path.join(source, "recent"), b"written just now")
    copy = precopy.TreeCopy(source, target)
    copy.sync()
    # Copies made stale behind the second pass's back: only a re-read can mend them.
    for name in ("old", "recent"):
        with open(os.path.join(target, name), "r+b") as handle:
            handle.write(b"#")
    copy.sync()
    with open(os.path.join(target, "recent"), "rb") as handle:
        assert handle.read() == b"written just now"
    with open(os.path.join(target, "old"), "rb") as handle:
        assert handle.read() == b"#ettled"  # not copied again
    assert copy.fine_timestamps  # this filesystem keeps nanoseconds


def test_whole_second_timestamps_widen_what_counts_as_recent(tmp_path):
    """On a filesystem that keeps whole seconds, a file written in the second of the
    last pass's look is copied again."""
    source, target = str(tmp_path / "upper"), str(tmp_path / "copy")
    write(os.path.join(source, "f"), b"one")
    copy = precopy.TreeCopy(source, target)
    copy.sync()
    copy.fine_timestamps = False  # as if ctimes had no nanoseconds
    time.sleep(precopy.UNCLEAR_FINE_NS / 1e9 + 0.01)
    with open(os.path.join(target, "f"), "r+b") as handle:
        handle.write(b"#")
    copy.sync()
    with open(os.path.join(target, "f"), "rb") as handle:
        assert handle.read() == b"one"


def test_room_for_copies_is_checked_on_their_filesystem(tmp_path):
    free = os.statvfs(str(tmp_path)).f_bavail * os.statvfs(str(tmp_path)).f_frsize
    assert precopy.room_for([str(tmp_path / "copy")], 1 << 20)
    assert not precopy.room_for([str(tmp_path / "copy")], free)


def test_what_a_dead_copy_left_is_removed_files_and_directories(tmp_path):
    """netd removes what a killed export staged: the copies, and a file half copied."""
    from cvm import operations
    from cvm.context import Context
    ctx = Context(state_root=str(tmp_path / "state"))
    ctx.store.make()
    copy = precopy.TreeCopy(str(tmp_path), str(tmp_path / "copy"))
    os.makedirs(os.path.join(copy.target, "etc"))
    write(copy.scratch, b"half a file")
    ctx.store.write_vm("vm1", {"spec": {}, "operation": {"kind": "export",
                                                         "staging": copy.paths}})
    operations.discard_staging(ctx, "vm1", ctx.store.read_vm("vm1")["operation"])
    assert not os.path.lexists(copy.target) and not os.path.lexists(copy.scratch)
    assert "operation" not in ctx.store.read_vm("vm1")


def test_a_target_that_holds_files_is_refused_and_left_alone(tmp_path):
    source, target = tmp_path / "tree", tmp_path / "someone's"
    source.mkdir()
    target.mkdir()
    (target / "keep").write_text("theirs")
    copy = precopy.TreeCopy(str(source), str(target))
    with pytest.raises(FileExistsError):
        copy.sync()
    copy.remove()
    assert (target / "keep").read_text() == "theirs"
    empty = tmp_path / "empty"
    empty.mkdir()
    copy = precopy.TreeCopy(str(source), str(empty))
    copy.sync()
    copy.remove()
    assert not empty.exists()  # found empty, it was the copy's
