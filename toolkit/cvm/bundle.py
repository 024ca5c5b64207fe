"""A VM as one portable archive: `cvm export` and `cvm import`, and what `cvm migrate`
streams from one host to another.

The archive is a tar stream (zstd when the `zstandard` package is there, gzip
otherwise), written as it is read, with no copy on disk:

    cvm-vm.json      first: format, the VM's spec and how it was made, its image, its
                     /etc/hosts and /etc/resolv.conf (see guestfiles.still_fitting)
    layer/...        its writable layer (the overlay2 upper directory), whiteouts and
                     opaque directories (trusted.overlay.* xattrs) kept (a move may have
                     copied it to the target already: the header's layer_kept)
    volumes/N/...    the host directory of each volume (a snapshot may keep one beside
                     it as a reflinked tree instead: the header's volumes_kept)
    image/...        with --with-image: `docker save` of its image
    manifest.json    last: a SHA-256 of every member (its header and its data)

Import reads it into a staging area on the same filesystems as where things go, checks
every member against the manifest, and only then creates the VM (not started), moves
the layer into the new container and the volumes into place, and starts it: a
truncated or altered archive, or one whose VM cannot be made here, leaves nothing.
"""

import contextlib
import functools
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import time

from . import guestfiles, paths
from .errors import Conflict, CvmError, NotFound, SpecError

FORMAT = 1
HEADER, MANIFEST = "cvm-vm.json", "manifest.json"
ZSTD_MAGIC, GZIP_MAGIC = b"\x28\xb5\x2f\xfd", b"\x1f\x8b"
CHUNK = 1 << 20
WRITE_SLICE = 64 << 10  # 1 MiB writes are several times slower than 64 KiB ones here
XATTR_PREFIX = "SCHILY.xattr."
KEPT_VOLUME_PREFIX = ".cvm-snapshot-"  # a volume's copy kept beside it by a snapshot


class ArchiveError(CvmError):
    """The archive is not one cvm wrote, or not whole, or altered."""

    exit_code = 2


def compression_available():
    try:
        import zstandard  # noqa: F401
        return "zstd"
    except ImportError:
        return "gzip"


class _Compressor:
    """A write-only file object that compresses into `out`."""

    def __init__(self, out, kind):
        self.kind = kind
        if kind == "zstd":
            import zstandard
            # threads=-1: zstd compresses on every CPU, off the GIL, while this thread
            # reads and hashes (a running VM is frozen for as long as this takes)
            self.stream = zstandard.ZstdCompressor(level=3, threads=-1).stream_writer(
                out, closefd=False)
        else:
            import gzip
            self.stream = gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1, mtime=0)

    def write(self, data):
        return self.stream.write(data)

    def close(self):
        if self.kind == "zstd":
            self.stream.flush(__import__("zstandard").FLUSH_FRAME)
        self.stream.close()


def _decompressed(source):
    """A readable stream of `source`'s tar bytes, whichever compression it has."""
    head = source.peek(4)[:4] if hasattr(source, "peek") else b""
    if head.startswith(ZSTD_MAGIC):
        try:
            import zstandard
        except ImportError:
            raise ArchiveError("the archive is zstd-compressed and this host lacks the "
                               "zstandard package (pip install zstandard)") from None
        return zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True)
    if head.startswith(GZIP_MAGIC):
        import gzip
        return gzip.GzipFile(fileobj=source, mode="rb")
    return source


def _member_digest(info, data_digest=None):
    """What the manifest keeps of a member: its header's meaning and its data."""
    header = json.dumps([info.name, info.type.decode(), info.mode & 0o7777, info.uid, info.gid,
                         info.linkname, info.devmajor, info.devminor, info.size,
                         sorted((k, v) for k, v in info.pax_headers.items()
                                if k.startswith(XATTR_PREFIX))],
                        ensure_ascii=False)
    digest = hashlib.sha256(header.encode("utf-8", "surrogateescape"))
    if data_digest is not None:
        digest.update(data_digest)
    return digest.hexdigest()


class _Hashing:
    """A reader that hashes what goes through it."""

    def __init__(self, handle):
        self.handle = handle
        self.hash = hashlib.sha256()

    def read(self, size=-1):
        data = self.handle.read(size)
        self.hash.update(data)
        return data


# ---------------------------------------------------------------- export


class _Writer:
    def __init__(self, out, compression):
        self.compressor = _Compressor(out, compression)
        self.tar = tarfile.open(fileobj=self.compressor, mode="w|", format=tarfile.PAX_FORMAT,
                                encoding="utf-8", errors="surrogateescape")
        self.manifest = {}

    def add_bytes(self, name, data):
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
        self.tar.addfile(info, io.BytesIO(data))
        self.manifest[name] = _member_digest(info, hashlib.sha256(data).digest())

    def add_tree(self, root, prefix):
        """Every entry under `root` as `prefix/...`: owners, modes, times, hard links,
        devices (overlay whiteouts) and extended attributes as they are."""
        self._add(root, prefix)
        for directory, subdirs, files in os.walk(root):
            subdirs.sort()
            for entry in sorted(subdirs) + sorted(files):
                path = os.path.join(directory, entry)
                self._add(path, prefix + "/" + os.path.relpath(path, root))

    def _add(self, path, name):
        info = self.tar.gettarinfo(path, name)
        if info is None:
            return  # a socket: nothing to carry
        for attribute in _xattrs(path):
            info.pax_headers[XATTR_PREFIX + attribute] = os.getxattr(
                path, attribute, follow_symlinks=False).decode("utf-8", "surrogateescape")
        if info.isreg():
            with open(path, "rb") as handle:
                reader = _Hashing(handle)
                self.tar.addfile(info, reader)
            self.manifest[name] = _member_digest(info, reader.hash.digest())
        else:
            self.tar.addfile(info)
            self.manifest[name] = _member_digest(info)

    def add_image_save(self, chunks):
        """`docker save` (a tar stream) as members under image/: no copy on disk."""
        reader = _ChunkReader(chunks)
        with tarfile.open(fileobj=reader, mode="r|") as saved:
            for member in saved:
                data = saved.extractfile(member) if member.isreg() else None
                member.name = "image/" + member.name
                if data is None:
                    self.tar.addfile(member)
                    self.manifest[member.name] = _member_digest(member)
                else:
                    hashing = _Hashing(data)
                    self.tar.addfile(member, hashing)
                    self.manifest[member.name] = _member_digest(member, hashing.hash.digest())

    def finish(self):
        self.add_bytes(MANIFEST, json.dumps({"format": FORMAT, "members": self.manifest},
                                            sort_keys=True).encode())
        self.tar.close()
        self.compressor.close()


class _ChunkReader:
    """A file-like reader over an iterator of byte chunks."""

    def __init__(self, chunks):
        self.chunks = iter(chunks)
        self.pending = b""

    def read(self, size=-1):
        while size < 0 or len(self.pending) < size:
            try:
                self.pending += next(self.chunks)
            except StopIteration:
                break
        if size < 0:
            size = len(self.pending)
        data, self.pending = self.pending[:size], self.pending[size:]
        return data


def _xattrs(path):
    try:
        return [a for a in os.listxattr(path, follow_symlinks=False)
                if a.startswith(("trusted.overlay.", "user.", "security.capability"))]
    except OSError:
        return []


def upper_dir(ctx, container_id):
    """The container's writable layer on the host (overlay2's upper directory)."""
    info = ctx.engine.inspect(container_id) or {}
    driver = info.get("GraphDriver") or {}
    if driver.get("Name") != "overlay2":
        raise CvmError("the VM's storage driver is %s; export and import need overlay2" %
                       (driver.get("Name") or "unknown"))
    return driver["Data"]["UpperDir"]


def tree_size(root):
    """Bytes of the regular files under `root` (what an archive of it carries)."""
    total = 0
    for directory, _, files in os.walk(root):
        for entry in files:
            with contextlib.suppress(OSError):
                info = os.lstat(os.path.join(directory, entry))
                if stat.S_ISREG(info.st_mode):
                    total += info.st_size
    return total


def header_of(name, ctx, with_image=False, volumes=True):
    """What an archive of VM `name` starts with: enough for another host to check, before
    anything is sent, that it can take the VM (`cvm import --check`). Without `volumes`,
    the volumes' data is not in the archive: the importing host has it in place (shared
    storage, or the same host: cvm apply's undo of a recreate)."""
    from . import api
    vm = api.get(name, ctx)
    if not vm.container_id or vm.status == "missing":
        raise NotFound("VM %s has no container to export" % name)
    upper = upper_dir(ctx, vm.container_id)
    image = ctx.engine.image(vm.spec.image)
    sizes = [tree_size(upper)] + [tree_size(v.host) for v in vm.spec.volumes
                                   if volumes and os.path.isdir(v.host)]
    header = {
        "format": FORMAT, "name": name, "spec": vm.record["spec"],
        "made": {key: vm.record.get(key) for key in (
            "init", "init_reason", "lxcfs", "reports_shutdown", "profile")},
        "image": {"ref": vm.spec.image, "id": image["Id"],
                  "digests": image.get("RepoDigests") or [], "carried": with_image},
        "volumes": [v.to_text() for v in vm.spec.volumes], "volumes_carried": volumes,
        "bytes": sum(sizes),
        "host": os.uname().nodename, "created": time.time()}
    if vm.owns_resolver_files:
        header["resolver_files"] = guestfiles.read_resolver_files(ctx.store, name)
    return vm, upper, header


def export(name, out, ctx, stop=False, with_image=False, compression=None,
           header_only=False, volumes=True, copy_first=False, volumes_kept=None, staging=(),
           layer_kept=None):
    """Write VM `name` to the binary stream `out`. A running VM is frozen (its cgroup, as
    Docker's pause does) or, with `stop`, stopped for the copy, and runs again after:
    whatever happens, even if this process is killed (cvm netd then finishes it). With
    `copy_first` (and room), it is frozen only to bring copies of its trees up to date
    (cvm.precopy), and the archive is written from the copies; otherwise nothing is
    copied on disk. With `header_only`, only what `cvm import --check` reads; without
    `volumes`, not the volumes' data (see header_of). `volumes_kept` ({volume index: a
    directory to make, kept_volume_path}) copies those volumes there (cvm.precopy: by
    reflink where the filesystem can) instead of into the archive, at the same moment as
    the rest. `layer_kept`: the layer is not archived; the importing host has a copy of
    it there (layer_copy_on; cvm.migrate made it). `staging`: what the caller makes for
    this export (the file `out` writes), which cvm netd removes with the copies if this
    process dies. Returns the header, and how long the VM was frozen or stopped (0 if it
    was not running)."""
    vm, upper, header = header_of(name, ctx, with_image, volumes)
    kept = {"volumes/%d" % index: target for index, target in (volumes_kept or {}).items()}
    if kept:
        header["volumes_kept"] = {str(index): target
                                  for index, target in volumes_kept.items()}
    if layer_kept:
        header["layer_kept"] = layer_kept
    writer = _Writer(out, compression or compression_available())
    writer.add_bytes(HEADER, json.dumps(header, sort_keys=True).encode())
    if header_only:
        writer.finish()
        return header, 0.0
    trees = [] if layer_kept else [(upper, "layer")]
    trees += [(volume.host, "volumes/%d" % index) for index, volume in
              enumerate(vm.spec.volumes if volumes else ()) if os.path.isdir(volume.host)]
    copies = _copies(ctx, name, trees, header["bytes"], kept) \
        if copy_first and vm.running and not stop else None
    if copies is None:
        quiesced = _write_quiesced(ctx, vm, writer, trees, "stop" if stop else "freeze", kept,
                                   staging)
    else:
        quiesced = _write_from_copies(ctx, vm, writer, trees, copies, kept, staging)
    if with_image:
        writer.add_image_save(ctx.engine.save_image(header["image"]["id"]))
    writer.finish()
    return header, quiesced


def _write_quiesced(ctx, vm, writer, trees, mode, kept, staging):
    """Archive `trees` (those in `kept`: copy them there) with the VM frozen or stopped
    throughout; the seconds it was."""
    from . import operations, precopy
    was_running = vm.running
    copies = [precopy.TreeCopy(tree, kept[prefix]) for tree, prefix in trees if prefix in kept]
    staging = list(staging) + [path for copy in copies for path in copy.paths]
    if staging and not was_running:
        operations.mark(ctx, vm.name, "export", staging=staging)  # quiesced() marks otherwise
    try:
        with operations.quiesced(ctx, vm, mode, "export", staging=staging):
            quiesced_at = time.monotonic()
            for tree, prefix in trees:
                if prefix not in kept:
                    writer.add_tree(tree, prefix)
            for copy in copies:
                copy.sync()
            quiesced = time.monotonic() - quiesced_at
    except BaseException:
        for copy in copies:
            copy.remove()
        raise
    finally:
        if staging:
            operations.clear(ctx, vm.name)
    return quiesced if was_running else 0.0


def _write_from_copies(ctx, vm, writer, trees, copies, kept, staging):
    """Copy `trees` twice while the VM runs, once more frozen, then archive the copies
    (but those in `kept`, which stay where they were made); the seconds the VM was
    frozen."""
    from . import operations

    def copy_while_running():
        for copy in copies:
            copy.sync()
        operations.pause_point("export", "copied")
        for copy in copies:
            copy.sync()  # what the VM wrote during the first: less to do frozen

    written = False
    try:
        with operations.quiesced(ctx, vm, "freeze", "export", staging=list(staging) + [
                path for copy in copies for path in copy.paths], before=copy_while_running):
            frozen_at = time.monotonic()
            for copy in copies:
                copy.sync()
        frozen = time.monotonic() - frozen_at
        operations.pause_point("export", "thawed")
        for copy, (_, prefix) in zip(copies, trees):
            if prefix not in kept:
                writer.add_tree(copy.target, prefix)
        written = True
        return frozen
    finally:
        for copy, (_, prefix) in zip(copies, trees):
            if not (written and prefix in kept):
                copy.remove()
        operations.clear(ctx, vm.name)


def _copies(ctx, name, trees, nbytes, kept):
    """Copies of a running VM's `trees` (cvm.precopy), made beside them (or where `kept`
    says), so that it is frozen only to bring them up to date; None when there is no room
    for them."""
    from . import precopy
    token = "cvm-export-%d-%s" % (os.getpid(), name)
    root = ctx.engine.root_dir
    targets = [os.path.join(root, token) if prefix == "layer" else kept.get(prefix) or
               os.path.join(os.path.dirname(tree.rstrip("/")) or "/", ".%s-%s" % (
                   token, prefix.split("/")[1])) for tree, prefix in trees]
    if not precopy.room_for(targets, nbytes):
        return None
    return [precopy.TreeCopy(tree, target) for (tree, _), target in zip(trees, targets)]


# ---------------------------------------------------------------- import


class _Staging:
    """Where an archive is unpacked before anything is made: the layer next to Docker's
    layers, each volume next to its final place (so that moving them in is a rename)."""

    def __init__(self, ctx, spec, volumes=True):
        token = "cvm-import-%d-%s" % (os.getpid(), spec.name)
        root = ctx.engine.root_dir
        self.layer = os.path.join(root, token)
        self.volumes = {}
        for index, volume in enumerate(spec.volumes if volumes else ()):
            parent = os.path.dirname(volume.host.rstrip("/")) or "/"
            self.volumes[index] = os.path.join(parent, ".%s-%d" % (token, index))
        self.made = []

    def target(self, name):
        """Where member `name` is unpacked, or None for members not unpacked."""
        if name == "layer" or name.startswith("layer/"):
            return os.path.join(self.layer, name[len("layer"):].lstrip("/"))
        if name.startswith("volumes/"):
            parts = name.split("/", 2)
            base = self.volumes.get(int(parts[1])) if parts[1].isdigit() else None
            if base is None:
                raise ArchiveError("member %s: the archive's spec has no volume %s" % (
                    name, parts[1]))
            return os.path.join(base, parts[2]) if len(parts) > 2 else base
        return None

    def make_roots(self):
        for directory in [self.layer] + list(self.volumes.values()):
            os.makedirs(directory, mode=0o700)
            self.made.append(directory)

    def remove(self):
        for path in self.made:
            with contextlib.suppress(OSError):
                paths.remove(path)


def read_header(tar):
    first = tar.next()
    if first is None or first.name != HEADER:
        raise ArchiveError("not a cvm VM archive (it does not start with %s)" % HEADER)
    header = json.loads(tar.extractfile(first).read())
    if header.get("format") != FORMAT:
        raise ArchiveError("archive format %s; this cvm reads format %d" % (
            header.get("format"), FORMAT))
    return first, header


def open_archive(source):
    """(tar stream, its first member, the header) of the archive read from the binary
    stream `source`."""
    if not hasattr(source, "peek"):
        source = io.BufferedReader(source, CHUNK)
    try:
        tar = tarfile.open(fileobj=_decompressed(source), mode="r|", encoding="utf-8",
                           errors="surrogateescape")
        first, header = read_header(tar)
    except (tarfile.TarError, EOFError, ValueError, OSError, zlib_error()) as exc:
        raise ArchiveError("not a cvm VM archive (%s)" % exc) from None
    return tar, first, header


def import_archive(source, ctx, name=None, nics=None, start=True, check_only=False):
    """Create the VM of the archive read from the binary stream `source` (renamed, or
    with other NICs); returns the VM. All or nothing. With `check_only`, only check
    (from its header) that this host can take it: returns the spec."""
    from . import api, operations
    from .spec import parse_spec
    tar, first, header = open_archive(source)
    raw = dict(header["spec"])
    if name:
        raw["name"] = name
    if nics is not None:
        raw["nics"] = nics
    elif name and raw.get("nics"):
        # A copy under another name must not take the original's MAC.
        raw["nics"] = [dict(nic, mac=None) for nic in raw["nics"]]
    spec = parse_spec(raw, where="archive")
    can_take(ctx, spec, header)
    image = _image_for(ctx, header, carried=header["image"].get("carried"))
    if check_only:
        return spec
    staging = _Staging(ctx, spec, header.get("volumes_carried", True))
    digests = {HEADER: _member_digest(first, hashlib.sha256(json.dumps(
        header, sort_keys=True).encode()).digest())}
    try:
        staging.make_roots()
        manifest = _unpack(tar, staging, digests, ctx)
        _check(manifest, digests)
        _copy_kept(header, staging, spec)
        _take_kept_layer(ctx, header, staging, spec)
        if image is None:
            image = _load_carried(ctx, staging, header)
        vm = api.create(spec, start=False, ctx=ctx, profile=header["made"].get("profile")
                        or "vm")
        # Until it is filled, the VM is not the archive's: a killed import is undone by
        # cvm netd (undo_import), as this does on a failure.
        operations.mark(ctx, spec.name, "import", staging=staging.made)
        try:
            operations.pause_point("import", "created")
            _fill(ctx, vm, staging, spec)
            guestfiles.write(ctx.store, spec.name, guestfiles.still_fitting(
                header.get("resolver_files") or {}, parse_spec(header["spec"]), spec))
            operations.clear(ctx, spec.name)
            if start:
                vm.start()
        except BaseException:
            with contextlib.suppress(Exception):
                vm.remove(force=True)
            for index in staging.volumes:
                with contextlib.suppress(OSError):
                    if os.path.isdir(spec.volumes[index].host):
                        os.rename(spec.volumes[index].host, staging.volumes[index])
            raise
        return api.get(spec.name, ctx)
    finally:
        staging.remove()
        tar.close()


def undo_import(ctx, name, operation):
    """What a killed import left: its VM, not yet filled (and the volumes it made), and
    its staging directories."""
    from . import api, operations
    with contextlib.suppress(CvmError):
        api.get(name, ctx).remove(force=True, volumes=True)
    operations.discard_staging(ctx, name, operation)
    return "an import killed half-way: removed (import the archive again)"


def can_take(ctx, spec, header):
    """Can this host take the archive's VM: its name and addresses free, its volumes'
    directories empty, the bridges and parents of its NICs here, the disk room for it?
    One clear error otherwise, before anything is unpacked."""
    from . import api
    if api.exists(spec.name, ctx):
        raise Conflict("name: a VM named %s already exists on this host" % spec.name)
    for index, volume in enumerate(spec.volumes if header.get("volumes_carried", True)
                                   else ()):
        if os.path.isdir(volume.host) and os.listdir(volume.host):
            raise Conflict("volumes[%d]: %s already holds data on this host; move it away "
                           "or import under another name with other volumes" % (
                               index, volume.host))
    if spec.nics:
        from .net import wiring as net
        net.check_host(spec)
        with ctx.store.lock():
            net.claim_addresses(ctx, spec)  # only checked: nothing is written
    needed = int(header.get("bytes") or 0) * 1.1 + (64 << 20)
    root = ctx.engine.root_dir
    free = shutil.disk_usage(root).free
    if free < needed:
        raise CvmError("disk: %s has %d MiB free; the VM needs about %d MiB" % (
            root, free >> 20, int(needed) >> 20))


def _image_for(ctx, header, carried):
    """The archive's image on this host: by ID, else pulled by digest from the registry
    it was pushed to; None when the archive carries it."""
    wanted = header["image"]
    with contextlib.suppress(SpecError):
        if ctx.engine.image(wanted["id"])["Id"] == wanted["id"]:
            return wanted["id"]
    for reference in wanted.get("digests") or []:
        with contextlib.suppress(CvmError):
            ctx.engine.pull(reference)
            name, _, version = wanted["ref"].rpartition(":")
            ctx.engine.tag(reference, name or wanted["ref"], version if name else "latest")
            return wanted["id"]
    if carried:
        return None
    raise NotFound("image: %s (%s) is not on this host and no registry it was pushed to "
                   "answers; put it here (cvm image pull) or export with --with-image" % (
                       wanted["ref"], wanted["id"][:19]))


def _unpack(tar, staging, digests, ctx):
    """Unpack every member after the header; the manifest (the last member)."""
    last = HEADER
    try:
        for member in tar:
            if member.name == HEADER:
                continue  # read first (a stream's iteration yields it again)
            last = member.name
            if member.name == MANIFEST:
                return _manifest(tar.extractfile(member).read())
            if "/../" in "/" + member.name + "/" or member.name.startswith("/"):
                raise ArchiveError("member %s: a path outside the archive" % member.name)
            target = staging.target(member.name)
            if member.name.startswith("image/"):
                target = os.path.join(staging.layer + ".image", member.name[len("image/"):])
            digests[member.name] = _extract(tar, member, target, staging)
    except (tarfile.TarError, EOFError, zlib_error(), OSError) as exc:
        if isinstance(exc, CvmError):
            raise
        raise ArchiveError("the archive is truncated or damaged after member %s (%s)" % (
            last, exc)) from None
    raise ArchiveError("the archive is truncated: it ends after member %s, before its "
                       "manifest" % last)


def _manifest(data):
    """The manifest's checksums. It is the one member not checked against itself: a
    damaged one is refused as such."""
    try:
        manifest = json.loads(data)
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("members"), dict):
        raise ArchiveError("member %s is damaged (not the list of checksums cvm wrote)" %
                           MANIFEST)
    return manifest


def zlib_error():
    import zlib
    return zlib.error


def _extract(tar, member, target, staging):
    """Make `member` at `target` as it was (owner, mode, times, xattrs); its digest."""
    data_digest = None
    if member.isdir():
        if target not in staging.made:
            os.makedirs(target, exist_ok=True)
    elif member.isreg():
        os.makedirs(os.path.dirname(target), exist_ok=True)
        hashing, hashed = hashlib.sha256(), None
        source = tar.extractfile(member)
        with open(target, "wb") as handle:
            while True:
                chunk = source.read(CHUNK)
                if not chunk:
                    break
                if hashed is not None:
                    hashed.result()
                hashed = _hasher().submit(hashing.update, chunk)
                view = memoryview(chunk)
                for offset in range(0, len(chunk), WRITE_SLICE):
                    handle.write(view[offset:offset + WRITE_SLICE])
        if hashed is not None:
            hashed.result()
        data_digest = hashing.digest()
    elif member.issym():
        os.symlink(member.linkname, target)
    elif member.islnk():
        os.link(staging.target(member.linkname) or member.linkname, target)
    elif member.ischr() or member.isblk() or member.isfifo():
        kind = {tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK,
                tarfile.FIFOTYPE: stat.S_IFIFO}[member.type]
        os.mknod(target, kind | (member.mode & 0o7777),
                 os.makedev(member.devmajor, member.devminor))
    if not member.islnk():
        os.lchown(target, member.uid, member.gid)
        if not member.issym():
            os.chmod(target, member.mode & 0o7777)
            os.utime(target, (member.mtime, member.mtime))
        for key, value in member.pax_headers.items():
            if key.startswith(XATTR_PREFIX):
                os.setxattr(target, key[len(XATTR_PREFIX):],
                            value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
    return _member_digest(member, data_digest)


@functools.lru_cache(maxsize=None)
def _hasher():
    """One thread that hashes a chunk while the next is written: both release the GIL."""
    import concurrent.futures
    return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hash")


def _check(manifest, digests):
    expected = dict(manifest.get("members") or {})
    for name, digest in digests.items():
        if name not in expected:
            raise ArchiveError("member %s is not in the archive's manifest" % name)
        if expected.pop(name) != digest:
            raise ArchiveError("member %s does not match its checksum in the manifest (the "
                               "archive was altered or damaged)" % name)
    if expected:
        raise ArchiveError("member %s of the manifest is missing from the archive" %
                           sorted(expected)[0])


def kept_volume_path(parent, name, snapshot, index):
    """Where snapshot `snapshot` of VM `name` keeps its copy of volume `index`: in the
    volume's `parent` directory (on its filesystem, to share its blocks)."""
    return os.path.join(parent, "%s%s-%s-%d" % (KEPT_VOLUME_PREFIX, name, snapshot, index))


def _copy_kept(header, staging, spec):
    """Copy the volumes a snapshot keeps outside its archive (by reflink where the
    filesystem can) into their staging directories. Only from where a snapshot keeps
    them: an archive may not have a directory of this host's copied into a VM."""
    from . import precopy
    for index, kept in (header.get("volumes_kept") or {}).items():
        target = staging.volumes.get(int(index))
        if target is None:
            continue
        volume = spec.volumes[int(index)].host.rstrip("/")
        if os.path.dirname(kept) != os.path.dirname(volume) or \
                not os.path.basename(kept).startswith(KEPT_VOLUME_PREFIX):
            raise ArchiveError("volumes[%s]: its data is said to be kept at %s, which is not "
                               "where snapshots keep it" % (index, kept))
        if not os.path.isdir(kept):
            raise ArchiveError("volumes[%s]: the copy of its data kept at %s is gone" % (
                index, kept))
        copy = precopy.TreeCopy(kept, target)
        staging.made.append(copy.scratch)
        copy.sync()


def layer_copy_on(root_dir, name):
    """Where a move copies VM `name`'s layer ahead on a host whose Docker keeps its data
    in `root_dir` (cvm.migrate), so that import takes it with a rename."""
    return os.path.join(root_dir, "cvm-migrate-%s-layer" % name)


def _take_kept_layer(ctx, header, staging, spec):
    """Take the layer a move copied here ahead (header layer_kept) as the staged one."""
    kept = header.get("layer_kept")
    if not kept:
        return
    if kept != layer_copy_on(ctx.engine.root_dir, spec.name):
        raise ArchiveError("layer: it is said to be copied to %s, which is not where a move "
                           "of %s copies it" % (kept, spec.name))
    if not os.path.isdir(kept):
        raise ArchiveError("layer: the copy of it made ahead at %s is gone" % kept)
    os.rmdir(staging.layer)  # made empty by make_roots: the archive had no layer members
    os.rename(kept, staging.layer)


def _load_carried(ctx, staging, header):
    """`docker load` the image the archive carries (as `docker save` wrote it)."""
    directory = staging.layer + ".image"
    buffer = _tar_stream(directory)
    try:
        ctx.engine.load_image(buffer)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    name, _, version = header["image"]["ref"].rpartition(":")
    ctx.engine.tag(header["image"]["id"], name or header["image"]["ref"],
                   version if name else "latest")
    return header["image"]["id"]


def _tar_stream(directory):
    """The files under `directory` as a tar stream, chunk by chunk."""
    import threading
    read_end, write_end = os.pipe()

    def write():
        with os.fdopen(write_end, "wb") as out, tarfile.open(fileobj=out, mode="w|") as tar:
            for entry in sorted(os.listdir(directory)):
                tar.add(os.path.join(directory, entry), entry)
    threading.Thread(target=write, daemon=True).start()
    with os.fdopen(read_end, "rb") as pipe:
        while True:
            chunk = pipe.read(CHUNK)
            if not chunk:
                return
            yield chunk


def _fill(ctx, vm, staging, spec):
    """Move the unpacked layer into the new container and the volumes into place."""
    upper = upper_dir(ctx, vm.container_id)
    for entry in os.listdir(upper):  # what create put there (mount points, keys)
        paths.remove(os.path.join(upper, entry))
    for entry in os.listdir(staging.layer):
        os.rename(os.path.join(staging.layer, entry), os.path.join(upper, entry))
    for index, staged in staging.volumes.items():
        volume = spec.volumes[index]
        if os.path.isdir(volume.host):
            os.rmdir(volume.host)  # made empty by create: the archive's takes its place
        os.rename(staged, volume.host)
