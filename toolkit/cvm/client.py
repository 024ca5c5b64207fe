"""Talking to the cvm daemon (`cvm netd`) over its unix socket.

The daemon keeps the Docker SDK and pyroute2 loaded, so heavy commands sent to it
skip ~300 ms of imports. The same `service.handle()` runs in the daemon and, when
no daemon answers, in the calling process: there is one implementation of each
operation, and the socket only moves its arguments and result.

Protocol: one JSON object per line each way.
    request  {"op": "create", "args": {...}}
    response {"ok": true, "result": ...} | {"ok": false, "error": {"type", "message", "field"}}
"""

import json
import os
import socket
import threading

from .errors import from_dict

SOCKET_NAME = "netd.sock"

# Set in the daemon's threads that run a forwarded command: its operations run right
# there, with the daemon's context, instead of going through the socket again.
serving = threading.local()


def socket_path(store):
    return socket_path_under(store.root)


def socket_path_under(root):
    return os.path.join(root, SOCKET_NAME)


def connect(root, timeout):
    """A connected socket to the daemon of the store at `root`, or None."""
    path = socket_path_under(root)
    if not os.path.exists(path):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def exchange(sock, request):
    """Send one request, return the decoded reply."""
    sock.sendall(json.dumps(request).encode() + b"\n")
    line = sock.makefile("rb").readline()
    if not line:
        raise OSError("the cvm daemon closed the connection")
    return json.loads(line)


def daemon_running(store):
    try:
        return call(store, "ping", {}, timeout=2, local_fallback=False) == "pong"
    except (OSError, ValueError, LookupError):
        return False


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
    with sock:
        reply = exchange(sock, {"op": op, "args": args})
    if reply.get("ok"):
        return reply.get("result")
    raise from_dict(reply.get("error") or {})
