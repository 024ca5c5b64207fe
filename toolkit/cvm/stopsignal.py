"""Making sure a VM's init takes its stop signal.

A SIGPWR that reaches init in the first instants of its boot, before it takes the
signal, is lost, and Docker would wait out the stop timeout (90 s). Whoever asks for a
stop -- `cvm stop`/`restart` themselves, and cvm netd for a `docker stop` or `restart`
it sees in the event stream -- follows it: while that same init shows no sign of its
shutdown (the initiator its stop writes into this boot's report, cvm.guestfiles), it is
sent the signal again every AGAIN_AFTER seconds, for as long as Docker would wait. Both
may send it: another SIGPWR to an init already shutting down changes nothing.
"""

import logging
import os
import signal
import threading
import time

from . import guestfiles, ns
from .engine import STOP_TIMEOUT_SYSTEMD
from .errors import CvmError
from .procfs import process_start_time, start_ticks

log = logging.getLogger("cvm.stopsignal")
AGAIN_AFTER = 2.0  # seconds a VM has to show its shutdown began


class Following:
    """The stop of one boot of a VM, followed in a thread until cancel() or its end."""

    def __init__(self, store, name, pid):
        self.store, self.name, self.pid = store, name, pid
        self.since = start_ticks(pid)
        self.over = threading.Event()
        self.thread = threading.Thread(target=self._follow, name="stop of %s" % name,
                                       daemon=True)
        self.thread.start()

    def cancel(self):
        self.over.set()

    def _follow(self):
        deadline = time.monotonic() + STOP_TIMEOUT_SYSTEMD
        while not self.over.wait(AGAIN_AFTER) and time.monotonic() < deadline:
            try:
                if not self._stop_not_taken():
                    return
                os.kill(self.pid, signal.SIGPWR)
            except ProcessLookupError:
                return
            log.info("%s: its init had not taken the stop signal; sent it again", self.name)

    def _stop_not_taken(self):
        """Does this boot's init still run without having begun its shutdown? An
        initiator written before this boot was released is the last boot's."""
        if start_ticks(self.pid) != self.since:
            return False  # it ended (its pid may be another process's by now)
        released = ns.released_at(self.pid)
        written = guestfiles.report_written_at(self.store, self.name, "initiator")
        return released is None or written is None or written < released


def follow(store, name, record, container_id, asked_at=None):
    """Start following a stop of VM `name` about to be (or, at epoch `asked_at`, just)
    asked; returns the Following (cancel it once the container stopped), or None when
    there is nothing to follow: the VM's init does not report its shutdown, is not
    running, or started after the stop was asked (that stop is over)."""
    if not (record or {}).get("reports_shutdown"):
        return None
    try:
        pid = ns.init_pid(container_id)
        if asked_at is not None and process_start_time(pid) > asked_at:
            return None
    except (CvmError, OSError):
        return None
    return Following(store, name, pid)
