"""Making sure a VM's init takes its stop signal.

A SIGPWR that reaches init in the first instants of its boot, before it takes the
signal, is lost, and Docker would wait out the stop timeout (90 s). Whoever asks for a
stop -- `cvm stop`/`restart` themselves, and cvm netd for a `docker stop` or `restart`
it sees in the event stream -- follows it: if that same init shows no sign of its
shutdown (the report its stop writes, cvm.guestfiles) after a moment, it is sent the
signal once more. Both may send it: a second SIGPWR to an init already shutting down
changes nothing.
"""

import logging
import os
import signal
import threading

from . import guestfiles, ns
from .procfs import process_start_time
from .errors import CvmError

log = logging.getLogger("cvm.stopsignal")
AGAIN_AFTER = 2.0  # seconds a VM has to show its shutdown began


def follow(store, name, record, container_id, asked_at=None):
    """Start following a stop of VM `name` about to be (or, at epoch `asked_at`, just)
    asked; returns the timer (cancel it once the container stopped), or None when there
    is nothing to follow: the VM's init does not report its shutdown, is not running, or
    started after the stop was asked (that stop is over)."""
    if not (record or {}).get("reports_shutdown"):
        return None
    try:
        pid = ns.init_pid(container_id)
        if asked_at is not None and process_start_time(pid) > asked_at:
            return None
    except (CvmError, OSError):
        return None

    def again():
        try:
            if ns.init_pid(container_id) != pid or \
                    guestfiles.read_report(store, name)["initiator"]:
                return
            os.kill(pid, signal.SIGPWR)
            log.info("%s: its init had not taken the stop signal; sent it again", name)
        except (CvmError, ProcessLookupError):
            pass
    timer = threading.Timer(AGAIN_AFTER, again)
    timer.daemon = True
    timer.start()
    return timer
