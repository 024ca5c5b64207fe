"""The frames that `cvm` and cvm netd exchange on netd's unix socket.

One request frame, one reply frame per connection. A frame is a header line
b"CVM1 <length>\\n" and then <length> bytes of marshal data (dicts, lists, strings,
bytes, numbers, None). Builtin modules only: cvm.launcher imports this for every short
command, and json and socket alone would cost it ~10 ms. marshal trusts its input:
so does the daemon, whose socket only root can open.

A request for "cli" with "reply": "raw" (the C client, toolkit/client/cvm.c, which
decodes no marshal) is answered with a raw frame instead: see encode_output.
"""

import _socket
import marshal

MAGIC = b"CVM1 "
MAX_HEADER = 32


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


def encode_output(reply):
    """The raw reply to a "cli" request: b"CVM1 RAN <exit> <out length> <err length>\\n"
    and what the command printed, or b"CVM1 NOTRUN\\n" when it did not run here."""
    if not reply.get("ok"):
        return b"CVM1 NOTRUN\n"
    result = reply["result"]
    out, err = (result[stream].encode("utf-8", "backslashreplace")  # as sys.stderr does
                for stream in ("stdout", "stderr"))
    return b"CVM1 RAN %d %d %d\n" % (result["exit"], len(out), len(err)) + out + err


def decode(read):
    """The message of the next frame, `read(n)` returning up to n bytes ('' at the end)."""
    header = b""
    while not header.endswith(b"\n"):
        byte = read(1)
        if not byte:
            raise ConnectionError("the peer closed the connection")
        header += byte
        if len(header) > MAX_HEADER:
            raise NotAFrame("not a cvm frame: %r" % header)
    if not header.startswith(MAGIC) or not header[len(MAGIC):-1].isdigit():
        raise NotAFrame("not a cvm frame: %r" % header)
    length = int(header[len(MAGIC):-1])
    data = bytearray()
    while len(data) < length:
        chunk = read(length - len(data))
        if not chunk:
            raise ConnectionError("the peer closed the connection mid-frame")
        data += chunk
    return marshal.loads(data)


def exchange(sock, request):
    """Send one request on a connected socket; return the reply."""
    sock.sendall(encode(request))
    return decode(sock.recv)
