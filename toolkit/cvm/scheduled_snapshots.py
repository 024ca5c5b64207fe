"""Snapshots on a schedule, with expiry: the spec's `snapshots: {schedule, keep}`.

cvm netd looks every minute. A VM's schedule is a series of slots (cron's: the host's
local time); for the latest slot that has passed, the VM has a snapshot named after it,
auto-YYYYmmdd-HHMM, or netd takes one, then removes the oldest scheduled ones beyond
`keep`. Snapshots taken by hand are never pruned. A slot missed while netd was down is
taken when it is back, once (as anacron and systemd's Persistent= timers do): the latest
slot only. Slots before the schedule was first seen on this host do not count, so a new
VM is not snapshotted at once for a slot that passed before it existed.

hourly, daily and weekly are spread over the hour and the night by the VM's name, so
that a dense host does not freeze all its VMs in the same minute: hourly at a minute of
its own, daily between 00:00 and 05:59, weekly on Sunday at that time. A cron expression
is taken as written.

`cvm doctor` lists the schedules whose latest slot passed more than GRACE ago without
its snapshot.
"""

import datetime
import logging
import time
import zlib

from . import snapshots
from .errors import CvmError
from .sizes import format_seconds
from .spec import parse_spec

log = logging.getLogger("cvm.snapshots")
PREFIX = "auto-"
SINCE = "snapshots_since"  # in the VM's record: when this host first saw its schedule
GRACE = datetime.timedelta(minutes=15)


def cron_of(schedule, name):
    """The cron expression of a schedule for VM `name`."""
    if schedule not in ("hourly", "daily", "weekly"):
        return schedule
    spread = zlib.crc32(name.encode())
    minute, hour = spread % 60, spread // 60 % 6
    return {"hourly": "%d * * * *" % minute, "daily": "%d %d * * *" % (minute, hour),
            "weekly": "%d %d * * 0" % (minute, hour)}[schedule]


def latest_slot(schedule, name, now):
    """The latest time at or before `now` (naive, local) that the schedule names."""
    from cronsim import CronSim
    return next(CronSim(cron_of(schedule, name), now.replace(second=0, microsecond=0)
                        + datetime.timedelta(minutes=1), reverse=True))


def slot_name(slot):
    return PREFIX + slot.strftime("%Y%m%d-%H%M")


def _scheduled(ctx):
    """(VM name, its record, its SnapshotSchedule) of each VM with a schedule."""
    for name, record in sorted(ctx.store.vm_records().items()):
        if record.get("phase") != "ready" or not record["spec"].get("snapshots"):
            continue
        try:
            yield name, record, parse_spec(record["spec"]).snapshots
        except CvmError:
            continue


def _since(ctx, name, record, now):
    """When this host first saw the VM's schedule (recorded the first time it is asked)."""
    if record.get(SINCE):
        return datetime.datetime.fromtimestamp(record[SINCE])
    with ctx.store.vm_lock(name):
        current = ctx.store.read_vm(name)
        if current is None:
            return now
        if not current.get(SINCE):
            current[SINCE] = time.mktime(now.timetuple())
            ctx.store.write_vm(name, current)
        return datetime.datetime.fromtimestamp(current[SINCE])


def _unsnapped(ctx, now, note_first_sight):
    """(VM name, its SnapshotSchedule, its latest slot) of the schedules whose latest slot
    since the schedule was first seen here has no snapshot; with `note_first_sight`, a
    schedule seen for the first time is recorded as seen now."""
    for name, record, schedule in _scheduled(ctx):
        slot = latest_slot(schedule.schedule, name, now)
        if note_first_sight:
            since = _since(ctx, name, record, now)
        else:
            since = datetime.datetime.fromtimestamp(record[SINCE]) if record.get(SINCE) \
                else now
        if since <= slot and slot_name(slot) not in snapshots.names_of(ctx, name):
            yield name, schedule, slot


def due(ctx, now=None):
    """[(VM name, snapshot name, its SnapshotSchedule)] of the slots to take now."""
    return [(name, slot_name(slot), schedule) for name, schedule, slot in
            _unsnapped(ctx, now or datetime.datetime.now(), note_first_sight=True)]


def expired(ctx, name, keep):
    """The scheduled snapshots of VM `name` beyond the newest `keep`, oldest first."""
    scheduled = [s for s in snapshots.names_of(ctx, name) if s.startswith(PREFIX)]
    return scheduled[:-keep] if len(scheduled) > keep else []


def run_due(ctx, now=None):
    """Take what is due and prune what expired; what was done, one line each."""
    done = []
    for name, snapshot, schedule in due(ctx, now):
        try:
            row = snapshots.take(ctx, name, snapshot, volumes=schedule.volumes)
            done.append("%s: took snapshot %s (%d bytes, %s, frozen %s)" % (
                name, snapshot, row["bytes"], format_seconds(row["seconds"]),
                format_seconds(row["quiesced"])))
        except CvmError as exc:
            done.append("%s: snapshot %s failed: %s" % (name, snapshot, exc))
            continue
        for old in expired(ctx, name, schedule.keep):
            snapshots.remove(ctx, name, old)
            done.append("%s: removed snapshot %s (keeping %d)" % (name, old, schedule.keep))
    return done


def missed(ctx, now=None):
    """[(VM name, the slot's snapshot name)] of schedules whose latest slot passed more
    than GRACE ago without its snapshot."""
    now = now or datetime.datetime.now()
    return [(name, slot_name(slot)) for name, _, slot in
            _unsnapped(ctx, now, note_first_sight=False) if slot <= now - GRACE]


def keep_taking(ctx, stopping, interval=60.0):
    """netd's loop: run_due every `interval` seconds (at once, then on the minute) until
    `stopping` is set."""
    while True:
        try:
            for line in run_due(ctx):
                log.info("%s", line)
        except Exception:
            log.exception("scheduled snapshots failed")
        if stopping.wait(interval - time.time() % interval + 1):
            return
