"""Making sure a VM's init takes its stop signal.

A stop signal that reaches init in the first instants of its boot, before it takes the
signal, is lost, and Docker would wait out the stop timeout (90 s). Whoever asks for a
stop -- `cvm stop`/`restart` themselves, and cvm netd for a `docker stop` or `restart`
it sees in the event stream -- follows it. Every AGAIN_AFTER seconds, for as long as
Docker would wait, while that same init runs and takes the signal (blocks or catches
it: sent earlier, it would be lost again), it is sent the signal again:
- an init that reports its shutdown (cvm's images, the compat init: SIGPWR) until this
  boot's report (cvm.guestfiles) says it is `stopping`: cvm's images write that once
  their poweroff is queued, so that a request that failed is made again;
- another systemd (SIGRTMIN+3), which reports nothing, once.
Both may send it: another stop signal to an init already shutting down changes nothing.
"""

import logging
import os
import signal
import threading
import time

from . import guestfiles, ns
from .engine import STOP_TIMEOUT_SYSTEMD
from .errors import CvmError
from .procfs import process_start_time, start_ticks, takes_signal

log = logging.getLogger("cvm.stopsignal")
AGAIN_AFTER = 2.0  # seconds a VM has to show its shutdown began
SYSTEMD_HALT = signal.SIGRTMIN + 3  # 37, as Docker numbers "SIGRTMIN+3"


def stop_signal_of(record):
    """The signal Docker stops the VM's init with (cvm.engine.host_stop_signal), or None
    for a VM without an init."""
    if (record or {}).get("reports_shutdown"):
        return signal.SIGPWR
    if (record or {}).get("init") == "systemd":
        return SYSTEMD_HALT
    return None


class Following:
    """The stop of one boot of a VM, followed in a thread until cancel() or its end."""

    def __init__(self, store, name, pid, signum, reports):
        self.store, self.name, self.pid = store, name, pid
        self.signum, self.reports = signum, reports
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
            if start_ticks(self.pid) != self.since:
                return  # it ended (its pid may be another process's by now)
            if self.reports and self._shutdown_shown():
                return
            if not takes_signal(self.pid, self.signum):
                continue
            try:
                os.kill(self.pid, self.signum)
            except ProcessLookupError:
                return
            log.info("%s: its init had not taken the stop signal; sent it again", self.name)
            if not self.reports:
                return

    def _shutdown_shown(self):
        """Has this boot's init begun its shutdown? A report written before this boot was
        released is the last boot's."""
        released = ns.released_at(self.pid)
        written = guestfiles.report_written_at(self.store, self.name, "stopping")
        return released is not None and written is not None and written >= released


def follow(store, name, record, container_id, asked_at=None, signum=None):
    """Start following a stop of VM `name` about to be (or, at epoch `asked_at`, just)
    asked (with `signum`, when known); returns the Following (cancel it once the
    container stopped), or None when there is nothing to follow: the VM has no init,
    `signum` is not its stop signal, its init is not running, or it started after the
    stop was asked (that stop is over)."""
    stop_signal = stop_signal_of(record)
    if stop_signal is None or (signum is not None and signum != stop_signal):
        return None
    try:
        pid = ns.init_pid(container_id)
        if asked_at is not None and process_start_time(pid) > asked_at:
            return None
    except (CvmError, OSError) as exc:
        log.info("%s: its stop is not followed: %s", name, exc)
        return None
    return Following(store, name, pid, stop_signal, record.get("reports_shutdown", False))
