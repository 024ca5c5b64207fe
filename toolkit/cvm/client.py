"""Asking cvm netd to run an operation (see cvm.ops): one request, one reply.

netd keeps the Docker SDK and pyroute2 loaded and follows every VM, so operations sent
to it skip ~300 ms of imports. Every request carries the caller's code stamp: a netd
started before an upgrade runs other code and refuses every operation the same way
(NotServed), and the caller then runs the operation itself (cvm.cli.calls). Standard
library only: the launcher uses this for every short command.

    request  {"op": "ls", "args": {...}, "code": "<stamp>"}
    reply    {"ok": True, "result": ...}
             {"ok": False, "error": {"type", "message", "field"}}   a typed cvm error
             {"ok": False, "refused": "why"}                        nothing ran
A reply may carry a socket (the stdio of a process started in a VM).
"""

import os

from . import wire
from .errors import CvmError, from_dict
from .paths import code_stamp, netd_socket

STATUS_OP = "status"  # answered whatever code the caller runs


class NotServed(Exception):
    """netd did not run the operation (none answers, or it runs other code)."""


def request(root, op, args, timeout=None):
    """The result of `op` run by the netd of the store at `root`, and the sockets it sent
    with it: (result, [socket]). Raises NotServed when nothing ran there, and the typed
    cvm error when the operation failed."""
    if os.environ.get("CVM_NO_DAEMON") and op != STATUS_OP:
        raise NotServed("CVM_NO_DAEMON is set")
    sock = wire.connect(netd_socket(root), timeout)
    if sock is None:
        raise NotServed("no cvm netd answers on %s" % netd_socket(root))
    try:
        wire.send(sock, {"op": op, "args": args, "code": code_stamp()})
        reply, fds = wire.receive(sock)
    except wire.NotAFrame:
        raise NotServed("a netd of an older protocol answers") from None
    except (OSError, ValueError) as exc:
        # It may have run: running it again here could do it twice.
        raise CvmError("lost cvm netd while it ran %s (%s); see `cvm ls` and the netd log"
                       % (op, exc)) from None
    finally:
        sock.close()
    sockets = [_socket_of(fd) for fd in fds]
    if reply.get("ok"):
        return reply.get("result"), sockets
    for extra in sockets:
        extra.close()
    if reply.get("refused"):
        raise NotServed(reply["refused"])
    raise from_dict(reply.get("error") or {})


def _socket_of(fd):
    import _socket  # not `socket`: its imports cost `cvm exec` ~5 ms
    return _socket.socket(fileno=fd)


def status(root, timeout=2):
    """{"pid", "code", "current"} of the netd answering for `root`, or None. `current`:
    it runs the code installed now (not what was installed when it started)."""
    try:
        running, _ = request(root, STATUS_OP, {}, timeout=timeout)
    except (NotServed, CvmError):  # CvmError: a netd without this operation
        return None
    return dict(running, current=running["code"] == code_stamp())
