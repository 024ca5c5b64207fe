"""Day-two operations on one host: export and import (into this realm and another), and
snapshots taken, listed, restored and removed (cvm.bundle, cvm.snapshots)."""

import contextlib
import datetime
import gzip
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from cvm import api, bundle, scheduled_snapshots, snapshots
from cvm.errors import Conflict, NotFound, SpecError

from .conftest import BUSYBOX, CVM, NetdProcess, remove_realm, residue, wait_for
from .nethelpers import SUBNET, wait_pingable

pytestmark = pytest.mark.engine


def make_vm(ctx, name, volume_dir, bridge, octet):
    from cvm.spec import parse_spec
    os.makedirs(volume_dir, exist_ok=True)
    return api.create(parse_spec({
        "name": name, "image": BUSYBOX, "init": "none", "command": ["sleep", "100000"],
        "volumes": ["%s:/data" % volume_dir],
        "nics": [{"mode": "bridge", "link": bridge, "ip": "%s.%d/24" % (SUBNET, octet)}]}),
        ctx=ctx)


def in_vm(ctx, name, script):
    code, out, err = api.get(name, ctx).exec(["sh", "-c", script])
    assert code == 0, err
    return out.decode()


def files_of(ctx, name):
    """{path: sha256} of the files the tests write: in the layer and in the volume."""
    listing = in_vm(ctx, name, "for f in /etc/marker /etc/added /data/f /data/big; do "
                               "[ -e $f ] && echo $f $(md5sum < $f); done; true")
    return dict(line.split(" ", 1) for line in listing.splitlines())


def mac_of(ctx, name):
    return in_vm(ctx, name, "cat /sys/class/net/eth0/address").strip()


def test_export_rm_import_here_and_in_another_realm(ctx, images, lab, name, scratch, tmp_path):
    bridge = lab.bridge("%s.1/24" % SUBNET)
    volume = os.path.join(scratch, "vol")
    make_vm(ctx, name, volume, bridge, 70)
    in_vm(ctx, name, "echo layer > /etc/marker; head -c 3000000 /dev/urandom > /data/big; "
                     "echo nameserver 198.51.100.54 >> /etc/resolv.conf; "
                     "echo '198.51.100.9 db' >> /etc/hosts")
    before, mac = files_of(ctx, name), mac_of(ctx, name)
    resolver = in_vm(ctx, name, "cat /etc/resolv.conf /etc/hosts")  # the VM's own edits
    archive = str(tmp_path / "vm.cvm")
    with open(archive, "wb") as out:
        bundle.export(name, out, ctx)
    api.get(name, ctx).remove(force=True, volumes=True)
    assert not os.path.exists(volume)
    with open(archive, "rb") as source:
        bundle.import_archive(source, ctx)
    assert files_of(ctx, name) == before and mac_of(ctx, name) == mac
    assert in_vm(ctx, name, "cat /etc/resolv.conf /etc/hosts") == resolver
    assert wait_pingable("%s.70" % SUBNET)

    other = api.Context(state_root=tempfile.mkdtemp(prefix="cvm-realm2-"))
    try:
        api.get(name, ctx).remove(force=True, volumes=True)
        with open(archive, "rb") as source:
            bundle.import_archive(source, other)
        assert api.get(name, other).running and files_of(other, name) == before
        assert in_vm(other, name, "cat /etc/resolv.conf /etc/hosts") == resolver
        assert wait_pingable("%s.70" % SUBNET)
    finally:
        remove_realm(other)
        shutil.rmtree(other.store.root, ignore_errors=True)


def test_damaged_archives_are_refused_naming_the_damage(ctx, images, lab, name, scratch,
                                                        tmp_path):
    bridge = lab.bridge("%s.1/24" % SUBNET)
    volume = os.path.join(scratch, "vol")
    make_vm(ctx, name, volume, bridge, 71)
    in_vm(ctx, name, "head -c 2000000 /dev/urandom > /data/big")
    archive = tmp_path / "vm.cvm"
    with open(str(archive), "wb") as out:
        bundle.export(name, out, ctx, compression="gzip")
    api.get(name, ctx).remove(force=True, volumes=True)
    data = archive.read_bytes()
    truncated = tmp_path / "truncated.cvm"
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(bundle.ArchiveError):
        with open(str(truncated), "rb") as source:
            bundle.import_archive(source, ctx)
    assert residue(ctx, name, [volume]) == []
    for member, expected in (("volumes/0/big", "member volumes/0/big does not match its "
                                               "checksum in the manifest"),
                             (bundle.MANIFEST, "member manifest.json is damaged")):
        raw = bytearray(gzip.decompress(data))
        raw[raw.find(member.encode()) + 512 + 20] ^= 0xFF  # in the member's data
        altered = tmp_path / "altered.cvm"
        altered.write_bytes(gzip.compress(bytes(raw)))
        with pytest.raises(bundle.ArchiveError, match=expected):
            with open(str(altered), "rb") as source:
                bundle.import_archive(source, ctx)
        assert residue(ctx, name, [volume]) == []


def test_an_archive_cannot_have_a_host_directory_taken_into_its_vm(ctx, images, name,
                                                                   scratch, tmp_path):
    """The layer a move copied ahead and the volumes a snapshot keeps are taken only from
    where cvm puts them: an archive naming another directory is refused, and leaves
    nothing."""
    from cvm.spec import parse_spec
    volume, elsewhere = os.path.join(scratch, "vol"), str(tmp_path / "elsewhere")
    os.makedirs(volume)
    api.create(parse_spec({"name": name, "image": BUSYBOX, "init": "none",
                           "command": ["sleep", "100000"], "volumes": ["%s:/data" % volume]}),
               ctx=ctx)
    forged = {"layer_kept": (elsewhere, "layer: it is said to be copied to %s, which is not "
                                        "where a move of %s copies it" % (elsewhere, name)),
              "volumes_kept": ({0: elsewhere}, r"volumes\[0\]: its data is said to be kept "
                               "at %s, which is not where snapshots keep it" % elsewhere)}
    archives = {}
    for key, (value, _) in forged.items():
        archives[key] = str(tmp_path / ("%s.cvm" % key))
        with open(archives[key], "wb") as out:
            bundle.export(name, out, ctx, **{key: value})
    api.get(name, ctx).remove(force=True, volumes=True)
    for key, (_, expected) in forged.items():
        with pytest.raises(bundle.ArchiveError, match=expected):
            with open(archives[key], "rb") as source:
                bundle.import_archive(source, ctx)
        assert residue(ctx, name, [volume]) == []


def test_a_snapshot_brings_back_files_spec_address_and_mac(cvm, ctx, images, lab, name,
                                                          scratch):
    bridge = lab.bridge("%s.1/24" % SUBNET)
    volume = os.path.join(scratch, "vol")
    make_vm(ctx, name, volume, bridge, 72)
    in_vm(ctx, name, "echo one > /etc/marker; echo v1 > /data/f")
    snapped, mac = files_of(ctx, name), mac_of(ctx, name)
    taken = cvm("snapshot", name, "before", check=True).stdout
    assert taken.startswith("%s before (" % name) and ", frozen " in taken  # it ran
    in_vm(ctx, name, "echo two > /etc/marker; echo v2 > /data/f; echo x > /etc/added")
    cvm("resize", name, "--memory", "96m", check=True)
    changed = files_of(ctx, name)
    assert changed != snapped

    running = cvm("restore", name, "before")
    assert running.returncode == 2 and "is running; stop it first or restore with --stop" \
        in running.stderr
    assert files_of(ctx, name) == changed  # untouched
    cvm("restore", name, "before", "--stop", check=True)
    vm = api.get(name, ctx)
    assert vm.running and vm.spec.memory is None  # the snapshot's spec: no memory limit
    assert files_of(ctx, name) == snapped and mac_of(ctx, name) == mac
    assert wait_pingable("%s.72" % SUBNET)

    rows = snapshots.listing(ctx, name)
    assert [(r["vm"], r["snapshot"], r["volumes"]) for r in rows] == [(name, "before", True)]
    assert rows[0]["bytes"] > 0 and "before" in cvm("snapshot", "ls", check=True).stdout
    assert cvm("snapshot", name, "before").returncode == 2  # taken already
    cvm("snapshot", "rm", name, "before", check=True)
    assert snapshots.listing(ctx, name) == []
    assert not os.path.exists(snapshots.directory(ctx, name))


@pytest.fixture
def reflink_dir(tmp_path):
    """A directory on an XFS filesystem with reflinks (a loop mount made for the test)."""
    image, mount_point = str(tmp_path / "xfs.img"), str(tmp_path / "xfs")
    if not shutil.which("mkfs.xfs"):
        pytest.skip("mkfs.xfs is not installed (Debian's xfsprogs; ./run setup installs it)")
    with open(image, "wb") as handle:
        handle.truncate(320 << 20)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", image], check=True)
    os.mkdir(mount_point)
    mounted = subprocess.run(["mount", "-o", "loop", image, mount_point],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip("this host cannot loop-mount a filesystem: %s" % mounted.stderr.strip())
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", mount_point]).returncode != 0:
            subprocess.run(["umount", "-l", mount_point])  # a VM still holds it


def inode_of(ctx, name, path):
    return in_vm(ctx, name, "stat -c %%i %s" % path).strip()


def test_on_a_reflink_filesystem_a_snapshot_keeps_volumes_as_shared_copies(
        cvm, ctx, images, lab, name, reflink_dir):
    """A volume on XFS is kept beside it as a reflinked copy, not archived: the snapshot
    costs only what changes after it, and restores its files (hard links too)."""
    from cvm.precopy import unshared_bytes
    bridge = lab.bridge("%s.1/24" % SUBNET)
    volume = os.path.join(reflink_dir, "vol")
    try:
        make_vm(ctx, name, volume, bridge, 79)
        in_vm(ctx, name, "echo v1 > /data/f; ln /data/f /data/f2; "
                         "head -c 8388608 /dev/urandom > /data/big")
        snapped = files_of(ctx, name)
        taken = cvm("snapshot", name, "s1", check=True).stdout
        assert ", frozen " in taken
        kept = bundle.kept_volume_path(reflink_dir, name, "s1", 0)
        [row] = snapshots.listing(ctx, name)
        assert row["volumes"] and row["reflinked"] == [kept]
        assert os.path.getsize(os.path.join(kept, "big")) == 8 << 20
        assert unshared_bytes(kept) < 1 << 20  # its blocks are the volume's
        assert row["bytes"] < 1 << 20  # the archive holds the layer only
        assert "reflink" in cvm("snapshot", "ls", name, check=True).stdout

        in_vm(ctx, name, "echo v2 > /data/f; dd if=/dev/urandom of=/data/big bs=1M "
                         "count=2 conv=notrunc 2>/dev/null; rm /data/f2; sync")
        assert files_of(ctx, name) != snapped
        assert 2 << 20 <= unshared_bytes(kept) < 3 << 20  # what changed, copied on write
        cvm("restore", name, "s1", "--stop", check=True)
        assert files_of(ctx, name) == snapped
        assert inode_of(ctx, name, "/data/f") == inode_of(ctx, name, "/data/f2")
        assert wait_pingable("%s.79" % SUBNET)

        cvm("snapshot", "rm", name, "s1", check=True)
        assert os.listdir(reflink_dir) == ["vol"]  # the kept copy went with it
    finally:
        remove_realm(ctx)


def test_a_killed_snapshot_of_a_reflinked_volume_leaves_no_copy(cvm, ctx, state_dir, images,
                                                                 lab, name, reflink_dir):
    bridge = lab.bridge("%s.1/24" % SUBNET)
    volume = os.path.join(reflink_dir, "vol")
    try:
        make_vm(ctx, name, volume, bridge, 80)
        in_vm(ctx, name, "echo v1 > /data/f")
        _killed_at(cvm, state_dir, "export:copied", "snapshot", name, "s1")
        assert api.get(name, ctx).status == "running"
        assert bundle.kept_volume_path(reflink_dir, name, "s1", 0) in [
            os.path.join(reflink_dir, entry) for entry in os.listdir(reflink_dir)]
        daemon = NetdProcess(state_dir).start()
        try:
            wait_for(lambda: os.listdir(reflink_dir) == ["vol"] and
                     "operation" not in api.get(name, ctx).record,
                     timeout=30, what="netd to remove the kept copy")
        finally:
            daemon.stop()
        assert snapshots.listing(ctx, name) == [] and api.get(name, ctx).status == "running"
        assert os.listdir(snapshots.directory(ctx, name)) == []  # no partial archive
    finally:
        remove_realm(ctx)


def test_a_failed_restore_leaves_the_vm_as_it_was(ctx, images, lab, name, scratch):
    """The snapshot's address is taken by another VM meanwhile: the restore is refused
    and the VM keeps its files, volume and wiring."""
    bridge = lab.bridge("%s.1/24" % SUBNET)
    volume = os.path.join(scratch, "vol")
    make_vm(ctx, name, volume, bridge, 73)
    snapshots.take(ctx, name, "s1")
    from cvm import nics
    nics.detach(ctx, name, "eth0")
    nics.attach(ctx, name, {"mode": "bridge", "link": bridge, "ip": "%s.74/24" % SUBNET})
    make_vm(ctx, name + "b", os.path.join(scratch, "vol2"), bridge, 73)
    in_vm(ctx, name, "echo after > /data/f; echo after > /etc/marker")
    after = files_of(ctx, name)
    with pytest.raises(Conflict, match="%s.73" % SUBNET):
        snapshots.restore(ctx, name, "s1", stop=True)
    vm = api.get(name, ctx)
    assert vm.running and files_of(ctx, name) == after
    assert [str(a) for a in vm.spec.nics[0].addresses()] == ["%s.74/24" % SUBNET]
    assert wait_pingable("%s.74" % SUBNET)
    assert [f for f in os.listdir(scratch) if "before-restore" in f] == []
    assert [f for f in os.listdir(snapshots.directory(ctx, name)) if f.startswith(".")] == []


def _killed_at(cvm, state_dir, step, *args):
    """Run `cvm ARGS` in-process until it pauses at `step` (KIND:STEP), then kill -9 it."""
    marker = os.path.join(state_dir, "paused")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(marker)
    process = subprocess.Popen(
        [CVM] + list(args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=dict(cvm.env, CVM_NO_DAEMON="1", CVM_PAUSE_AT=step, CVM_PAUSED=marker))
    wait_for(lambda: os.path.exists(marker) or process.poll() is not None, timeout=60,
             what="cvm %s to pause at %s" % (args[0], step))
    assert process.poll() is None, process.stderr.read()
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.parametrize("step,restored", [("restore:aside", False),
                                           ("import:created", False),
                                           ("restore:imported", True)])
def test_a_killed_restore_is_made_whole_by_netd(cvm, ctx, state_dir, images, lab, name,
                                                scratch, step, restored):
    """Killed (-9) before its import made the VM, a restore is undone: the VM as it was,
    running, its volume back; killed after, it is finished. Nothing is left aside."""
    bridge = lab.bridge("%s.1/24" % SUBNET)
    volume = os.path.join(scratch, "vol")
    make_vm(ctx, name, volume, bridge, 76)
    in_vm(ctx, name, "echo one > /etc/marker; echo v1 > /data/f")
    snapped = files_of(ctx, name)
    snapshots.take(ctx, name, "s1")
    in_vm(ctx, name, "echo two > /etc/marker; echo v2 > /data/f")
    current = files_of(ctx, name)
    _killed_at(cvm, state_dir, step, "restore", name, "s1", "--stop")
    daemon = NetdProcess(state_dir).start()
    try:
        wait_for(lambda: not os.path.exists(os.path.join(snapshots.directory(ctx, name),
                                                         ".restore.json")),
                 timeout=60, what="netd to make the restore whole")
        wait_for(lambda: api.exists(name, ctx) and api.get(name, ctx).running and
                 "operation" not in api.get(name, ctx).record, timeout=60,
                 what="the VM to run again")
    finally:
        daemon.stop()
    assert files_of(ctx, name) == (snapped if restored else current)
    assert wait_pingable("%s.76" % SUBNET)
    assert [f for f in os.listdir(scratch) if f != "vol"] == []  # nothing aside or staged
    assert [f for f in os.listdir(snapshots.directory(ctx, name)) if f.startswith(".")] == []


@pytest.mark.parametrize("step", ["export:copied", "export:thawed"])
def test_a_killed_export_leaves_the_vm_running_and_no_copies(cvm, ctx, state_dir, images, lab,
                                                             name, scratch, tmp_path, step):
    """A running VM's export --copy-first (a snapshot's way) copies its layer and volumes
    beside them while it runs, is frozen only to bring the copies up to date, and archives
    the copies: killed (-9) after the first pass or after the thaw, the VM runs and netd
    removes the copies."""
    bridge = lab.bridge("%s.1/24" % SUBNET)
    volume = os.path.join(scratch, "vol")
    make_vm(ctx, name, volume, bridge, 78)
    in_vm(ctx, name, "echo layer > /etc/marker; echo data > /data/f")
    docker_root = ctx.engine.info()["DockerRootDir"]

    def copies():
        return sorted([f for f in os.listdir(scratch) if f != "vol"] +
                      [f for f in os.listdir(docker_root) if f.startswith("cvm-export-")])

    _killed_at(cvm, state_dir, step, "export", name, "--copy-first", "-o",
               str(tmp_path / "vm.cvm"))
    assert api.get(name, ctx).status == "running"
    assert len(copies()) == 2, copies()  # the layer's and the volume's, left by the kill
    assert os.path.exists(str(tmp_path / "vm.cvm.partial"))
    daemon = NetdProcess(state_dir).start()
    try:
        wait_for(lambda: not copies() and "operation" not in api.get(name, ctx).record and
                 not os.path.exists(str(tmp_path / "vm.cvm.partial")),
                 timeout=30, what="netd to remove the copies and the half archive")
    finally:
        daemon.stop()
    assert api.get(name, ctx).status == "running" and wait_pingable("%s.78" % SUBNET)


def test_a_killed_import_leaves_nothing(cvm, ctx, state_dir, images, lab, name, scratch,
                                        tmp_path):
    bridge = lab.bridge("%s.1/24" % SUBNET)
    volume = os.path.join(scratch, "vol")
    make_vm(ctx, name, volume, bridge, 77)
    archive = str(tmp_path / "vm.cvm")
    with open(archive, "wb") as out:
        bundle.export(name, out, ctx)
    api.get(name, ctx).remove(force=True, volumes=True)
    _killed_at(cvm, state_dir, "import:created", "import", archive)
    assert api.exists(name, ctx)  # made, not filled
    daemon = NetdProcess(state_dir).start()
    try:
        wait_for(lambda: not api.exists(name, ctx), timeout=30,
                 what="netd to undo the import")
    finally:
        daemon.stop()
    assert residue(ctx, name, [volume]) == [] and os.listdir(scratch) == []


def test_snapshots_refuse_bad_names_and_other_vms_snapshots(ctx, images, lab, name, scratch):
    bridge = lab.bridge("%s.1/24" % SUBNET)
    make_vm(ctx, name, os.path.join(scratch, "vol"), bridge, 75)
    for bad in ("../x", "a/b", ".hidden", "x" * 65):
        with pytest.raises(SpecError, match="snapshot: .* is not a snapshot name"):
            snapshots.take(ctx, name, bad)
    with pytest.raises(NotFound, match="no VM named"):
        snapshots.take(ctx, "nosuchvm", "s")
    with pytest.raises(NotFound, match="has no snapshot nope"):
        snapshots.restore(ctx, name, "nope", stop=True)
    snapshots.take(ctx, name, "s1")
    other = name + "o"
    os.makedirs(snapshots.directory(ctx, other))
    os.link(snapshots.path_of(ctx, name, "s1"), snapshots.path_of(ctx, other, "s1"))
    with pytest.raises(SpecError, match="s1 is a snapshot of VM %s, not of %s" % (name, other)):
        snapshots.restore(ctx, other, "s1")
    snapshots.remove(ctx, other, "s1")
    snapshots.remove(ctx, name, "s1")


# ---------------------------------------------------------------- on a schedule


def make_scheduled_vm(ctx, name, schedule):
    from cvm.spec import parse_spec
    return api.create(parse_spec({
        "name": name, "image": BUSYBOX, "init": "none", "command": ["sleep", "100000"],
        "snapshots": schedule}), ctx=ctx)


def test_scheduled_snapshots_are_taken_once_per_slot_and_pruned(ctx, images, name):
    """A daily schedule at 04:00 keeping 2, run at chosen times: each slot's snapshot is
    taken once, the oldest scheduled ones go, a snapshot taken by hand stays, and a slot
    that passed more than GRACE ago without its snapshot is reported late."""
    make_scheduled_vm(ctx, name, {"schedule": "0 4 * * *", "keep": 2})
    snapshots.take(ctx, name, "by-hand")
    first = datetime.datetime(2026, 3, 1, 4, 0)
    assert scheduled_snapshots.run_due(ctx, first)[0].startswith(
        "%s: took snapshot auto-20260301-0400 (" % name)
    assert scheduled_snapshots.run_due(ctx, first + datetime.timedelta(hours=3)) == []
    for day in (2, 3):
        scheduled_snapshots.run_due(ctx, datetime.datetime(2026, 3, day, 5, 30))
    assert snapshots.names_of(ctx, name) == ["auto-20260302-0400", "auto-20260303-0400",
                                            "by-hand"]
    later = datetime.datetime(2026, 3, 4, 4, 0)
    assert scheduled_snapshots.missed(ctx, later + datetime.timedelta(minutes=10)) == []
    assert scheduled_snapshots.missed(ctx, later + datetime.timedelta(minutes=20)) == [
        (name, "auto-20260304-0400")]
    # Before the schedule was first seen here (2026-03-01 04:00), no slot counts.
    assert scheduled_snapshots.missed(ctx, datetime.datetime(2026, 2, 27, 9, 0)) == []


def test_spread_schedules_and_slots():
    from cvm.scheduled_snapshots import cron_of, latest_slot
    daily = {cron_of("daily", "vm%d" % i) for i in range(50)}
    assert len(daily) > 30  # 50 VMs are not all snapshotted in the same minute
    assert all(int(c.split()[1]) < 6 for c in daily)  # at night
    assert cron_of("daily", "web1") == cron_of("daily", "web1")  # and stably
    now = datetime.datetime(2026, 12, 2, 4, 30, 59)
    assert latest_slot("30 4 * * *", "x", now) == datetime.datetime(2026, 12, 2, 4, 30)
    assert latest_slot("31 4 * * *", "x", now) == datetime.datetime(2026, 12, 1, 4, 31)


def test_a_slot_missed_while_netd_was_down_is_late_then_taken_when_it_is_back(
        cvm, ctx, state_dir, images, name):
    slot = (datetime.datetime.now() - datetime.timedelta(minutes=20)).replace(
        second=0, microsecond=0)
    make_scheduled_vm(ctx, name, "%d * * * *:3" % slot.minute)
    with ctx.store.vm_lock(name):  # the schedule was first seen here two hours ago
        record = ctx.store.read_vm(name)
        record[scheduled_snapshots.SINCE] = time.time() - 7200
        ctx.store.write_vm(name, record)
    late = [line for line in cvm("doctor").stdout.splitlines() if "snapshot schedules" in line]
    assert late and "late: %s (%s)" % (name, scheduled_snapshots.slot_name(slot)) in late[0]
    daemon = NetdProcess(state_dir).start()
    try:
        wait_for(lambda: scheduled_snapshots.slot_name(slot) in snapshots.names_of(ctx, name),
                 timeout=30, what="netd to take the missed snapshot")
        assert "took snapshot %s" % scheduled_snapshots.slot_name(slot) in daemon.log()
    finally:
        daemon.stop()
    assert scheduled_snapshots.missed(ctx) == []
    assert "auto-" in cvm("snapshot", "ls", name, check=True).stdout
