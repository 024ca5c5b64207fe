"""The frames that cvm's clients and cvm netd exchange on netd's unix socket.

One request frame, one reply frame per connection. A frame is a header line
b"CVM1 <length>\\n" and then <length> bytes of marshal data (dicts, lists, strings,
bytes, numbers, None). A reply may carry open file descriptors with it (SCM_RIGHTS):
how netd hands a client the stream of a process it started in a VM. Builtin modules
only: the launcher imports this for every short command, and json and socket alone
would cost it ~10 ms. marshal trusts its input: so does the daemon, whose socket only
root can open.
"""

import _socket
import marshal
import sys

MAGIC = b"CVM1 "
MAX_HEADER = 32
MAX_FDS = 4
CHUNK = 65536


class NotAFrame(ValueError):
    """The peer speaks something else (an older cvm netd, or not cvm at all)."""


def connect(path, timeout=None):
    """A socket connected to `path`, or None when nothing listens there."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def encode(message):
    data = marshal.dumps(message)
    return MAGIC + str(len(data)).encode() + b"\n" + data


def send(sock, message, fds=()):
    """Send one frame, with `fds` (open descriptors) attached to its first byte."""
    frame = encode(message)
    if fds:
        packed = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)
        sent = sock.sendmsg([frame], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, packed)])
        frame = frame[sent:]
    if frame:
        sock.sendall(frame)


def receive(sock):
    """(message, [fds]) of the next frame on `sock`."""
    data, fds = bytearray(), []
    header_end = length = None
    while length is None or len(data) < header_end + length:
        chunk, ancillary, _, _ = sock.recvmsg(CHUNK, _socket.CMSG_SPACE(MAX_FDS * 4))
        for level, kind, payload in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds.extend(int.from_bytes(payload[at:at + 4], sys.byteorder, signed=True)
                           for at in range(0, len(payload) - 3, 4))
        if not chunk:
            raise ConnectionError("the peer closed the connection" if not data else
                                  "the peer closed the connection mid-frame")
        data += chunk
        if length is None:
            header_end = data.find(b"\n") + 1
            if header_end == 0:
                if len(data) > MAX_HEADER:
                    raise NotAFrame("not a cvm frame: %r" % bytes(data[:MAX_HEADER]))
                continue
            header = bytes(data[:header_end])
            if not header.startswith(MAGIC) or not header[len(MAGIC):-1].isdigit():
                raise NotAFrame("not a cvm frame: %r" % header)
            length = int(header[len(MAGIC):-1])
    return marshal.loads(bytes(data[header_end:header_end + length])), fds


def exchange(sock, request):
    """Send one request on a connected socket; return (reply, [fds])."""
    send(sock, request)
    return receive(sock)
