"""A VM's console and its logs: `cvm logs` shows what init printed, boot by boot, and
`cvm console` logs in on the VM's /dev/console while its network is gone."""

import os
import select
import subprocess
import time

import pytest

from cvm import api

from .conftest import CVM, wait_for

pytestmark = pytest.mark.slow

PASSWORD = "console-test-pw"


@pytest.fixture
def booted(cvm, ctx, images, lab, netd, name):
    bridge = lab.bridge("198.51.100.1/24", prefix="cvc")
    cvm("create", name, "--image", images["debian"], "--memory", "256m", "--nic",
        "mode=bridge,link=%s,ip=198.51.100.70/24" % bridge, check=True, timeout=180)
    wait_for(lambda: _system_state(ctx, name) == "running", timeout=60,
             what="the VM to reach running")
    yield name
    cvm("rm", "-f", name)


def _system_state(ctx, name):
    code, out, _ = api.get(name, ctx).exec(["systemctl", "is-system-running"], timeout=10)
    return out.decode().strip()


class Console:
    """`cvm console NAME` driven through its stdin and stdout."""

    def __init__(self, cvm, name):
        self.process = subprocess.Popen([CVM, "console", name], env=cvm.env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
        self.seen = b""

    def send(self, text):
        self.process.stdin.write(text.encode())
        self.process.stdin.flush()

    def expect(self, text, timeout=20):
        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.process.stdout], [], [], left)[0]:
                raise AssertionError("the console never showed %r; it showed:\n%s" % (
                    text, self.seen.decode(errors="replace")[-1500:]))
            chunk = os.read(self.process.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError("the console closed before %r" % text)
            self.seen += chunk
        found = self.seen.index(text.encode()) + len(text)
        self.seen = self.seen[found:]

    def leave(self):
        self.send("\x1d")  # Ctrl-]
        _, err = self.process.communicate(timeout=10)
        return self.process.returncode, err.decode()


def test_console_login_works_with_the_network_detached(cvm, ctx, booted):
    api.get(booted, ctx).exec(["sh", "-c", "echo root:%s | chpasswd" % PASSWORD])
    cvm("net", "detach", booted, "eth0", check=True)
    console = Console(cvm, booted)
    console.send("\r")
    console.expect("login: ")
    console.send("root\r")
    console.expect("Password: ")
    console.send(PASSWORD + "\r")
    console.expect("# ")
    console.send("echo on-$(hostname)-$(ls /sys/class/net | tr '\\n' ,)\r")
    console.expect("on-%s-lo," % booted)  # its only interface now: the network is gone
    console.send("exit\r")
    console.expect("login: ")
    code, err = console.leave()
    assert code == 0 and "Ctrl-] leaves it" in err and "Left the console" in err, err


def test_logs_show_each_boot_and_keep_the_previous_one(cvm, ctx, booted):
    getty = "%s console" % booted  # its /etc/issue line (Docker's log holds back the
    # prompt that follows: it has no newline)
    wait_for(lambda: getty in cvm("logs", booted).stdout, timeout=30,
             what="the console's getty")
    first = cvm("logs", booted, check=True).stdout
    assert "Reached target" in first and "Multi-User System" in first
    cvm("restart", booted, check=True, timeout=120)
    wait_for(lambda: getty in cvm("logs", "--boot", booted).stdout, timeout=60,
             what="the second boot to reach its getty")
    every, this_boot = cvm("logs", booted).stdout, cvm("logs", "--boot", booted).stdout
    boot = "running in system mode"  # systemd's first line of each boot
    assert (every.count(boot), this_boot.count(boot)) == (2, 1)
    assert "Stopped" in every.split(getty)[1]  # the shutdown between the two boots
    assert this_boot in every


def test_logs_follow_what_the_vm_prints_until_the_reader_leaves(cvm, images, netd, name):
    """Through netd. The VM then prints nothing more: only the reader's leaving can end
    netd's copy of Docker's stream."""
    def netd_threads():
        return len(os.listdir("/proc/%d/task" % netd.process.pid))

    cvm("create", name, "--image", images["busybox"], "--init", "none", "--", "sh", "-c",
        "sleep 1; echo followed-line; exec sleep 100000", check=True)
    try:
        counts = []
        for _ in range(3):  # netd's own threads, not a request's that is ending
            counts.append(netd_threads())
            time.sleep(0.1)
        before = min(counts)
        follower = cvm.popen("logs", "--follow", name, stdout=subprocess.PIPE)
        try:
            seen, deadline = b"", time.monotonic() + 20
            while b"followed-line" not in seen and time.monotonic() < deadline:
                if select.select([follower.stdout], [], [], 1)[0]:
                    seen += os.read(follower.stdout.fileno(), 65536)
            assert seen == b"followed-line\n"
            assert follower.poll() is None  # still following
        finally:
            follower.kill()
            follower.wait()
        wait_for(lambda: netd_threads() <= before, timeout=5,
                 what="netd to stop reading the log for a reader that left")
    finally:
        cvm("rm", "-f", name)


def test_console_and_logs_of_what_cannot_have_them(cvm, ctx, images, name):
    cvm("create", name, "--image", images["busybox"], "--init", "none", "--", "sleep",
        "100000", check=True)
    try:
        result = cvm("console", name)
        assert result.returncode == 2 and result.stderr.startswith(
            "cvm: VM %s has no console: its container was made without a terminal" % name)
        assert cvm("logs", name, check=True).stdout == ""
        assert cvm("console", "ghost").stderr == "cvm: no VM named 'ghost' (see `cvm ls`)\n"
    finally:
        cvm("rm", "-f", name)


def test_the_console_log_is_bounded(cvm, ctx, images, name):
    """What a VM prints on its console is rotated by Docker (10 MiB, three files), not kept
    until the disk is full; `cvm logs` still shows the latest."""
    cvm("create", name, "--image", images["busybox"], "--init", "none", "--", "sh", "-c",
        "head -c 16000000 /dev/zero | tr '\\0' x | fold -w 999; echo the-end; sleep 100000",
        check=True)
    try:
        container = api.get(name, ctx).container
        assert container["HostConfig"]["LogConfig"] == {
            "Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}
        log = container["LogPath"]
        wait_for(lambda: "the-end" in cvm("logs", name).stdout[-100:], timeout=60,
                 what="the VM's output in its log")
        assert os.path.getsize(log) <= 10 * 2**20 and os.path.exists(log + ".1")
    finally:
        cvm("rm", "-f", name)
