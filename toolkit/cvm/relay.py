"""Moving a VM process's stdio over the stream Docker gives for an exec (see
Engine.exec_start): the caller's stdin goes in, the process's output comes out.

Without a TTY, Docker frames the output: one byte naming the stream (1 stdout, 2 stderr),
three zero bytes, a 4-byte big-endian length, then that many bytes. With a TTY it is the
terminal's bytes as they are. Closing our sending side is the process's end of input.

Builtin modules only (`socket` would add ~5 ms of imports): `cvm exec` runs this in the
launcher's process.
"""

import _socket
import errno
import os

from .readiness import readable

HEADER = 8
CHUNK = 65536


class Demuxer:
    """Splits Docker's framed stream into (stream number, bytes) pieces."""

    def __init__(self):
        self.pending = b""

    def feed(self, data):
        self.pending += data
        pieces = []
        while len(self.pending) >= HEADER:
            size = int.from_bytes(self.pending[4:HEADER], "big")
            if len(self.pending) < HEADER + size:
                break
            pieces.append((self.pending[0], self.pending[HEADER:HEADER + size]))
            self.pending = self.pending[HEADER + size:]
        return pieces


def _write_all(fd, data):
    while data:
        try:
            written = os.write(fd, data)
        except InterruptedError:
            continue
        data = data[written:]


def relay(sock, tty, stdin_fd=0, stdout_fd=1, stderr_fd=2):
    """Copy stdin into the process and its output out until the process ends. A reader
    that went away (`cvm exec ... | head -1`) ends the copy quietly."""
    demuxer = None if tty else Demuxer()
    outputs = {1: stdout_fd, 2: stderr_fd}
    sending = stdin_fd is not None
    try:
        while True:
            watched = [sock] + ([stdin_fd] if sending else [])
            try:
                ready = readable(watched)
            except InterruptedError:  # SIGWINCH: the caller's handler already resized
                continue
            if sending and stdin_fd in ready:
                data = _read(stdin_fd)
                if data:
                    sock.sendall(data)
                else:
                    sending = False
                    _close_sending(sock)
            if sock in ready:
                data = sock.recv(CHUNK)
                if not data:
                    return
                if demuxer is None:
                    _write_all(stdout_fd, data)
                else:
                    for stream, piece in demuxer.feed(data):
                        _write_all(outputs.get(stream, stdout_fd), piece)
    except BrokenPipeError:
        return


def _read(fd):
    try:
        return os.read(fd, CHUNK)
    except OSError as exc:
        if exc.errno in (errno.EIO, errno.EBADF):  # a terminal hung up, stdin closed
            return b""
        raise


def _close_sending(sock):
    try:
        sock.shutdown(_socket.SHUT_WR)
    except OSError:
        pass


def collect(sock, input=None, deadline=None):
    """Feed `input` (bytes) and gather (stdout, stderr) of a non-TTY process. Returns None
    if `deadline` (a time.monotonic() value) passed first."""
    import time
    try:
        if input:
            sock.sendall(input)
        _close_sending(sock)
        demuxer = Demuxer()
        streams = {1: [], 2: []}
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            ready = readable([sock], left)
            if not ready:
                continue
            data = sock.recv(CHUNK)
            if not data:
                return b"".join(streams[1]), b"".join(streams[2])
            for stream, piece in demuxer.feed(data):
                streams.setdefault(stream, []).append(piece)
    finally:
        sock.close()


class RawTerminal:
    """The caller's terminal in raw mode for the duration of a `with` block, so that keys
    (Ctrl-C included) go to the VM's shell; restored however the block ends."""

    def __init__(self, fd=0):
        self.fd = fd
        self.saved = None

    def __enter__(self):
        import termios
        import tty
        if os.isatty(self.fd):
            self.saved = termios.tcgetattr(self.fd)
            tty.setraw(self.fd)
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            import termios
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
        return False


def terminal_size(fd=1):
    """(rows, columns) of the caller's terminal, or None."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return None
    return size.lines, size.columns


def attach(sock, tty, resize=None):
    """Relay the caller's stdio to a process until it ends. With `tty`, the caller's
    terminal goes raw and `resize(rows, columns)` follows its size (SIGWINCH)."""
    if not tty:
        relay(sock, tty=False)
        return
    import signal
    previous = None
    if resize is not None and terminal_size() is not None:
        def follow(signum, frame):
            size = terminal_size()
            if size:
                resize(*size)
        previous = signal.signal(signal.SIGWINCH, follow)
        follow(None, None)
    try:
        with RawTerminal():
            relay(sock, tty=True)
    finally:
        if previous is not None:
            signal.signal(signal.SIGWINCH, previous)
