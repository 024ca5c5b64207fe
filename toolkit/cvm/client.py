"""Talking to the cvm daemon (`cvm netd`) over its unix socket.

The daemon keeps the Docker SDK and pyroute2 loaded, so heavy commands sent to it
skip ~300 ms of imports. The same `service.handle()` runs in the daemon and, when
no daemon answers, in the calling process: there is one implementation of each
operation, and the socket only moves its arguments and result.

Protocol: one cvm.wire frame each way.
    request  {"op": "create", "args": {...}}
    response {"ok": True, "result": ...} | {"ok": False, "error": {"type", "message", "field"}}
"""

import os
import threading

from . import wire
from .errors import CvmError, from_dict
from .paths import code_stamp, netd_socket

# Set in the daemon's threads that run a forwarded command: its operations run right
# there, with the daemon's context, instead of going through the socket again.
serving = threading.local()


def socket_path(store):
    return netd_socket(store.root)


def connect(root, timeout):
    """A connected socket to the daemon of the store at `root`, or None."""
    return wire.connect(netd_socket(root), timeout)


def daemon_running(store):
    try:
        return call(store, "ping", {}, timeout=2, local_fallback=False) == "pong"
    except (OSError, ValueError, LookupError):
        return False


def daemon_status(store):
    """{"pid", "current"} of the daemon that answers for `store`, or None. `current`:
    it runs the installed code (not what was installed before an upgrade)."""
    try:
        running = call(store, "code", {}, timeout=2, local_fallback=False)
    except (OSError, ValueError, LookupError, CvmError):  # CvmError: it lacks op "code"
        return None
    return {"pid": running["pid"], "current": running["code"] == code_stamp()}


def call(store, op, args, timeout=600, local_fallback=True):
    """Run `op` in the daemon if one answers, else in this process."""
    context = getattr(serving, "ctx", None)
    if context is not None:
        from . import service
        return service.handle(op, args, ctx=context)
    sock = None if os.environ.get("CVM_NO_DAEMON") else connect(store.root, timeout)
    if sock is None:
        if not local_fallback:
            raise LookupError("no daemon")
        from . import service
        return service.handle(op, args, store_root=store.root)
    try:
        reply = wire.exchange(sock, {"op": op, "args": args})
    finally:
        sock.close()
    if reply.get("ok"):
        return reply.get("result")
    raise from_dict(reply.get("error") or {})
