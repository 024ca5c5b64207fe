"""Helpers shared by the benchmarks: a private cvm realm, a daemon for it, timing, ping.

Every benchmark measures cvm against a baseline in the same run, on the same image,
and prints figures and ratios. Nothing here is a test: there are no thresholds.
"""

import contextlib
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

CVM = os.path.join(os.path.dirname(sys.executable), "cvm")  # what hosts have on PATH

BUSYBOX = "cvm/busybox:latest"
DEBIAN = "cvm/debian12:latest"


def median(values):
    return statistics.median(values)


def ratio_interval(values, baseline, resamples=2000):
    """90% bootstrap interval of median(values) / median(baseline), resampling whole
    rounds (the i-th of each was measured together): how much of a ratio is noise."""
    import random
    pick = random.Random(1)
    rounds = range(len(values))
    ratios = sorted(
        statistics.median(values[i] for i in chosen) /
        statistics.median(baseline[i] for i in chosen)
        for chosen in ([pick.choice(rounds) for _ in rounds] for _ in range(resamples)))
    return ratios[int(0.05 * resamples)], ratios[int(0.95 * resamples)]


def p95(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def ms(seconds):
    return "%.1f ms" % (seconds * 1000)


@contextlib.contextmanager
def realm(with_netd=True):
    """A throwaway state directory (its own realm), optionally with its own cvm netd."""
    from cvm import api, client
    root = tempfile.mkdtemp(prefix="cvm-bench-")
    ctx = api.Context(state_root=root)
    env = dict(os.environ, CVM_STATE_DIR=root)
    daemon = None
    try:
        if with_netd:
            log = open(os.path.join(root, "netd.log"), "w")
            daemon = subprocess.Popen([CVM, "netd"], stdout=log, stderr=subprocess.STDOUT,
                                      env=env)
            deadline = time.monotonic() + 30
            while not client.status(root):
                if time.monotonic() > deadline:
                    raise SystemExit("bench: cvm netd did not start")
                time.sleep(0.05)
        yield ctx, env
        if daemon is not None and not (client.status(root) or {}).get("current"):
            # The CLI then ran every command in-process, so its figures are not netd's.
            raise SystemExit("bench: cvm's code changed during the run and its netd stopped "
                             "serving the CLI; the figures above are void, run it again")
    finally:
        for vm in api.ls(ctx):
            with contextlib.suppress(Exception):
                vm.remove(force=True)
        if daemon is not None:
            daemon.terminate()
            daemon.wait()
        shutil.rmtree(root, ignore_errors=True)


def cvm(env, *args, check=True, program=CVM):
    result = subprocess.run([program] + [str(a) for a in args], env=env, capture_output=True,
                            text=True)
    if check and result.returncode != 0:
        raise SystemExit("bench: cvm %s: %s" % (" ".join(map(str, args)), result.stderr))
    return result


def _checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def icmp_ping(address, timeout=0.01):
    """One ICMP echo to `address`; True if it answered within `timeout` seconds."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        sock.settimeout(timeout)
        ident = os.getpid() & 0xFFFF
        header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
        packet = struct.pack("!BBHHH", 8, 0, _checksum(header + b"cvm"), ident, 1) + b"cvm"
        sock.sendto(packet, (address, 0))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, source = sock.recvfrom(1024)
            except socket.timeout:
                return False
            if source[0] == address and data[20] == 0:
                return True
        return False
    except OSError:
        return False
    finally:
        sock.close()


def wait_pingable(address, limit=30.0):
    """Seconds until `address` answers a ping (polled every few milliseconds)."""
    started = time.monotonic()
    while not icmp_ping(address, 0.005):
        if time.monotonic() - started > limit:
            raise SystemExit("bench: %s never answered" % address)
    return time.monotonic() - started


def bridge(name, address):
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", address, "dev", name], check=True)
    subprocess.run(["ip", "link", "set", name, "up"], check=True)


def remove_link(name):
    subprocess.run(["ip", "link", "del", name], capture_output=True)


def header(title):
    print("\n== %s" % title)
