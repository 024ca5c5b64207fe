"""Snapshots of a VM: `cvm snapshot`, `cvm snapshot ls`/`rm`, `cvm restore`.

A snapshot is an archive of cvm.bundle (the format `cvm export` writes: spec, writable
layer, volumes, manifest) kept in the state directory, under snapshots/<VM>/<SNAP>.cvm.
The writable layer is the VM's overlay2 upper directory, so a snapshot holds what
changed since the image, compressed, not the whole root filesystem. A volume on a
filesystem that copies by reflink (XFS, btrfs) is kept out of the archive, as a copy
beside it (<its parent>/.cvm-snapshot-<VM>-<SNAP>-<index>) whose blocks it shares with
the volume until either changes: such a snapshot costs only what changes after it. A
running VM is frozen only to bring copies of its files up to date (cvm.precopy), or
stopped with `stop`, as an export does.

A restore puts the VM back as it was: files, spec (limits, NICs: the same addresses and
MACs) and, when the snapshot holds them, its volumes' data. It is all or nothing: the
VM as it is now is kept aside first (its layer in an archive, its volumes' directories
renamed), and put back if anything fails. A journal beside the snapshots says how far
a restore got: if its process is killed, cvm netd (recover_restores) finishes it when its
import had made the VM, and puts the VM back as it was otherwise. Snapshots outlive `cvm
rm` of their VM; a restore of a VM that no longer exists makes it again.
"""

import contextlib
import json
import os
import re
import shutil
import time

from . import paths
from .errors import Conflict, CvmError, NotFound, SpecError

SUFFIX = ".cvm"
SNAPSHOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def directory(ctx, name):
    return os.path.join(ctx.store.root, "snapshots", name)


def path_of(ctx, name, snapshot):
    return os.path.join(directory(ctx, name), snapshot + SUFFIX)


def _checked_name(snapshot):
    if not SNAPSHOT_NAME.match(snapshot or ""):
        raise SpecError("snapshot", "%r is not a snapshot name (letters, digits, '_', '.', "
                        "'-'; 64 at most, not starting with a punctuation mark)" % snapshot)
    return snapshot


def take(ctx, name, snapshot=None, stop=False, volumes=True):
    """Snapshot VM `name` as `snapshot` (default: the time, YYYYmmdd-HHMMSS); returns
    its row (as `listing` gives), with the seconds it took and those the VM was frozen
    (or stopped) for. A kill or a full disk leaves no partial snapshot, and the VM
    running again (cvm.operations)."""
    from . import api, bundle
    vm = api.get(name, ctx)  # NotFound first
    snapshot = _checked_name(snapshot or time.strftime("%Y%m%d-%H%M%S"))
    target = path_of(ctx, name, snapshot)
    if os.path.exists(target):
        raise Conflict("snapshot: VM %s already has a snapshot %s" % (name, snapshot))
    os.makedirs(directory(ctx, name), mode=0o700, exist_ok=True)
    kept = _volumes_to_keep(vm.spec, snapshot) if volumes else {}
    partial = "%s.partial-%d" % (target, os.getpid())
    started = time.monotonic()
    try:
        _remove_kept(kept.values())  # what a killed snapshot of this name left
        with open(partial, "wb") as handle:
            _, quiesced = bundle.export(name, handle, ctx, stop=stop, volumes=volumes,
                                        copy_first=True, volumes_kept=kept,
                                        staging=[partial])
        os.rename(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        _remove_kept(kept.values())
        raise
    return dict(_row(ctx, name, snapshot), seconds=round(time.monotonic() - started, 2),
                quiesced=round(quiesced, 3))


def _volumes_to_keep(spec, snapshot):
    """{volume index: where its copy is kept} for the volumes whose filesystem copies by
    reflink; the others go into the archive."""
    from . import bundle, precopy
    kept = {}
    for index, volume in enumerate(spec.volumes):
        parent = os.path.dirname(volume.host.rstrip("/")) or "/"
        if os.path.isdir(volume.host) and precopy.reflinks(parent):
            kept[index] = bundle.kept_volume_path(parent, spec.name, snapshot, index)
    return kept


def _remove_kept(kept):
    from .precopy import copy_paths
    for path in kept:
        for made in copy_paths(path):  # a killed copy leaves the file it was making too
            paths.remove(made)


def listing(ctx, name=None):
    """Rows of snapshots, of VM `name` or of every VM: vm, snapshot, created, bytes
    (on disk), volumes (whether it holds their data)."""
    root = os.path.join(ctx.store.root, "snapshots")
    if name is not None:
        names = [name]
        from . import api
        if not api.exists(name, ctx) and not os.path.isdir(directory(ctx, name)):
            raise NotFound("no VM named %r and no snapshots of one" % name)
    else:
        names = sorted(os.listdir(root)) if os.path.isdir(root) else []
    return [_row(ctx, vm, snapshot) for vm in names for snapshot in names_of(ctx, vm)]


def names_of(ctx, name):
    """The names of VM `name`'s snapshots, sorted (no archive is opened)."""
    try:
        files = os.listdir(directory(ctx, name))
    except FileNotFoundError:
        return []
    return sorted(f[:-len(SUFFIX)] for f in files if f.endswith(SUFFIX))


def _row(ctx, name, snapshot):
    """A snapshot's row; its bytes are the archive's and, of the volume copies it keeps,
    the blocks they no longer share with anything (what removing it frees)."""
    from .precopy import unshared_bytes
    header = _header(ctx, name, snapshot)
    kept = list((header.get("volumes_kept") or {}).values())
    return {"vm": name, "snapshot": snapshot, "created": header.get("created"),
            "bytes": os.path.getsize(path_of(ctx, name, snapshot)) + sum(
                unshared_bytes(path) for path in kept if os.path.isdir(path)),
            "volumes": bool(header.get("volumes_carried", True) and header.get("volumes")),
            "reflinked": kept}


def _header(ctx, name, snapshot):
    from . import bundle
    try:
        handle = open(path_of(ctx, name, snapshot), "rb")
    except FileNotFoundError:
        raise NotFound("VM %s has no snapshot %s (see `cvm snapshot ls %s`)" % (
            name, snapshot, name)) from None
    with handle:
        tar, _, header = bundle.open_archive(handle)
        tar.close()
        return header


def remove(ctx, name, snapshot):
    path = path_of(ctx, name, _checked_name(snapshot))
    kept = (_header(ctx, name, snapshot).get("volumes_kept") or {}).values()
    os.unlink(path)
    _remove_kept(kept)
    with contextlib.suppress(OSError):
        os.rmdir(directory(ctx, name))  # its last one


def restore(ctx, name, snapshot, stop=False):
    """Put VM `name` back as snapshot `snapshot` holds it; the VM runs afterwards if it
    ran before (or did not exist). Refused while it runs unless `stop`."""
    from . import api, bundle, operations
    header = _header(ctx, name, _checked_name(snapshot))
    if header.get("name") != name:
        raise SpecError("snapshot", "%s is a snapshot of VM %s, not of %s" % (
            snapshot, header.get("name"), name))
    vm = api.get(name, ctx) if api.exists(name, ctx) else None
    was_running = vm is None or vm.running
    if vm is not None and vm.running:
        if not stop:
            raise Conflict("VM %s is running; stop it first or restore with --stop" % name)
        vm.stop()
    aside = _Aside(ctx, name, header, was_running)
    try:
        aside.take(vm)
        operations.pause_point("restore", "aside")
        with open(path_of(ctx, name, snapshot), "rb") as handle:
            bundle.import_archive(handle, ctx, start=was_running)
        operations.pause_point("restore", "imported")
    except BaseException:
        aside.put_back()
        raise
    aside.forget()
    return api.get(name, ctx)


def recover_restores(ctx):
    """Finish what killed restores left, from their journals: a restore whose import made
    the VM is done (what was aside goes); any other is undone (the VM back as it was).
    What was done, one line each."""
    from . import api, operations
    done = []
    root = os.path.join(ctx.store.root, "snapshots")
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        aside = _Aside.from_journal(ctx, name)
        if aside is None or operations.alive(aside.owner):
            continue
        record = ctx.store.read_vm(name)
        if record is not None and record.get("operation"):
            continue  # its import or create is being recovered first
        if aside.step == "importing" and record is not None:
            if aside.was_running:
                api.get(name, ctx).start()
            aside.forget()
            done.append("%s: a killed restore had finished its import: done" % name)
        else:
            aside.put_back()
            done.append("%s: a killed restore: put back as it was" % name)
    return done


class _Aside:
    """What a restore replaces, kept until it succeeds: the VM (if it exists) as its
    layer and spec in an archive, then removed, and the directories the snapshot's
    volumes go to, renamed beside them; so that the snapshot's import finds its name,
    addresses and volume paths free. A journal beside the snapshots says how far it got,
    for `recover_restores` after a kill."""

    def __init__(self, ctx, name, header, was_running):
        from . import operations
        from .spec import parse_spec
        self.ctx, self.name, self.was_running = ctx, name, was_running
        self.owner = operations.owner()
        self.archive = os.path.join(directory(ctx, name), ".before-restore-%d" % os.getpid())
        carried = header.get("volumes_carried", True)
        self.volumes = [v.host for v in parse_spec(header["spec"]).volumes
                        if carried and os.path.isdir(v.host)]
        self.suffix = ".cvm-before-restore-%d" % os.getpid()
        self.renamed, self.removed, self.step = [], False, "aside"

    def _aside_path(self, path):
        return path.rstrip("/") + self.suffix

    @classmethod
    def from_journal(cls, ctx, name):
        try:
            with open(cls.journal_of(ctx, name)) as handle:
                saved = json.load(handle)
        except (OSError, ValueError):
            return None
        aside = cls.__new__(cls)
        aside.ctx, aside.name = ctx, name
        for key, value in saved.items():
            setattr(aside, key, value)
        return aside

    @staticmethod
    def journal_of(ctx, name):
        return os.path.join(directory(ctx, name), ".restore.json")

    def _save(self):
        state = {key: getattr(self, key) for key in (
            "owner", "archive", "volumes", "suffix", "renamed", "removed", "step",
            "was_running")}
        path = self.journal_of(self.ctx, self.name)
        with open(path + ".tmp", "w") as handle:
            json.dump(state, handle)
        os.rename(path + ".tmp", path)

    def take(self, vm):
        from . import bundle
        os.makedirs(directory(self.ctx, self.name), mode=0o700, exist_ok=True)
        self._save()
        if vm is not None:
            with open(self.archive, "wb") as handle:
                bundle.export(self.name, handle, self.ctx, volumes=False)
        for path in self.volumes:
            self.renamed.append(path)
            self._save()  # before the rename: a kill between them finds it either way
            os.rename(path, self._aside_path(path))
        if vm is not None:
            self.removed = True
            self._save()
            vm.remove(force=True)
        self.step = "importing"
        self._save()

    def put_back(self):
        """Undo take() and whatever the failed import left (it leaves no VM of its own,
        but be sure), then bring the VM back as it was."""
        from . import api, bundle
        if self.step == "importing" or (self.removed and api.exists(self.name, self.ctx)):
            with contextlib.suppress(CvmError):
                api.get(self.name, self.ctx).remove(force=True)
        for path in self.renamed:
            if not os.path.exists(self._aside_path(path)):
                continue  # the kill came before its rename
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)  # what the failed restore put there
            os.rename(self._aside_path(path), path)
        if self.removed and not api.exists(self.name, self.ctx):
            with open(self.archive, "rb") as handle:
                bundle.import_archive(handle, self.ctx, start=self.was_running)
        elif self.was_running and api.exists(self.name, self.ctx):
            api.get(self.name, self.ctx).start()
        self.forget()

    def forget(self):
        for path in self.renamed:
            shutil.rmtree(self._aside_path(path), ignore_errors=True)
        for path in (self.archive, self.journal_of(self.ctx, self.name)):
            with contextlib.suppress(OSError):
                os.unlink(path)
