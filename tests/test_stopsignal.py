"""A stop signal the VM's init loses is sent again until the init shows it took it
(cvm.stopsignal), and the host tells one boot from the next by its ready file (cvm.ns).

The "VM" here is a container whose PID 1 is a shell that, like systemd in its first
instants, ignores SIGPWR for a while, then takes it as cvm's images do: it writes
"host" into its shutdown report and ends.
"""

import contextlib
import logging
import os
import signal
import subprocess
import time

from cvm import guestfiles, ns, stopsignal
from cvm.engine import READY_FILE

from .conftest import wait_for

REPORT = {"reports_shutdown": True}


def deaf_init(ctx, name, image, deaf_seconds, released=True):
    """Start the container; returns (container id, PID 1's host pid)."""
    report = guestfiles.report_dir(ctx.store, name)
    os.makedirs(report, exist_ok=True)
    script = "%s trap '' PWR; sleep %d; " \
             "trap 'echo host > /run/cvm/report/initiator; exit 0' PWR; " \
             "while :; do sleep 0.1; done" % (
                 "touch %s;" % READY_FILE if released else "", deaf_seconds)
    container = subprocess.run(
        ["docker", "run", "-d", "--name", name, "--network", "none", "--tmpfs", "/run",
         "-v", "%s:/run/cvm/report" % report, "--entrypoint", "/bin/sh", image, "-c", script],
        check=True, capture_output=True, text=True).stdout.strip()
    pid = ns.init_pid(container)
    wait_for(lambda: not released or ns.init_released(pid), what="the ready file")
    return container, pid


def exit_code_within(name, seconds):
    """The container's exit code once it stopped, or None if it still runs after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}",
                                name], capture_output=True, text=True).stdout.split()
        if state and state[0] == "false":
            return int(state[1])
        time.sleep(0.1)
    return None


def remove(name):
    with contextlib.suppress(subprocess.SubprocessError):
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


def test_a_lost_stop_signal_is_sent_again_until_the_init_takes_it(ctx, images, name, caplog):
    """Deaf for 3 s: the signal sent at once and the one sent again after 2 s are lost,
    the next is taken."""
    caplog.set_level(logging.INFO, logger="cvm.stopsignal")
    try:
        container, pid = deaf_init(ctx, name, images["busybox"], deaf_seconds=3)
        following = stopsignal.follow(ctx.store, name, REPORT, container)
        os.kill(pid, signal.SIGPWR)  # as docker stop sends it: lost
        assert exit_code_within(name, 3 * stopsignal.AGAIN_AFTER + 5) == 0
        assert caplog.text.count("sent it again") >= 2
        assert guestfiles.read_report(ctx.store, name)["initiator"] == "host"
        following.thread.join(stopsignal.AGAIN_AFTER + 2)
        assert not following.thread.is_alive()  # it ended with the init
    finally:
        remove(name)


def test_the_last_boots_report_does_not_pass_for_this_boots_stop(ctx, images, name):
    """A report of the last boot's stop (written before this boot was released) does not
    say that this boot took its stop signal."""
    report = guestfiles.report_dir(ctx.store, name)
    os.makedirs(report, exist_ok=True)
    with open(os.path.join(report, "initiator"), "w") as handle:
        handle.write("host\n")
    old = time.time() - 5
    os.utime(os.path.join(report, "initiator"), (old, old))
    try:
        container, pid = deaf_init(ctx, name, images["busybox"], deaf_seconds=1)
        stopsignal.follow(ctx.store, name, REPORT, container)
        os.kill(pid, signal.SIGPWR)
        assert exit_code_within(name, stopsignal.AGAIN_AFTER + 5) == 0
    finally:
        remove(name)


def test_a_start_is_released_by_its_ready_file_not_by_what_pid_1_runs(ctx, images, name):
    """PID 1 here is not cvm's wait script (at Docker's start event it may still be runc's
    own): the start counts as released once, and only once, the host wrote its ready file."""
    try:
        container, pid = deaf_init(ctx, name, images["busybox"], deaf_seconds=60,
                                   released=False)
        assert not ns.init_released(pid)
        before = time.time()
        ns.write_file(pid, READY_FILE, b"ready\n")
        assert ns.init_released(pid)
        assert ns.released_at(pid) >= before - 0.02
    finally:
        remove(name)
