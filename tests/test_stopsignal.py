"""A stop signal the VM's init loses is sent again once the init takes it (cvm.stopsignal),
the host tells one boot from the next by its ready file (cvm.ns), and cvm's wait script
ends on either stop signal.

The "VM" here is a container whose PID 1 is a shell that, like systemd in its first
instants, drops its stop signal for a while, then takes it as cvm's images do (it reports
the host's stop, and that it is stopping, and ends) or as another systemd does (it ends).
"""

import contextlib
import logging
import os
import signal
import subprocess
import time

import pytest

from cvm import guestfiles, ns, procfs, stopsignal
from cvm.engine import WAIT_SCRIPT_TEXT
from cvm.paths import READY_FILE

from .conftest import wait_booted, wait_for

CVM_IMAGE = {"init": "systemd", "reports_shutdown": True}  # stopped with SIGPWR
OTHER_SYSTEMD = {"init": "systemd", "reports_shutdown": False}  # with SIGRTMIN+3


def deaf_init(ctx, name, image, deaf_seconds, signum=signal.SIGPWR, released=True):
    """Start the container; returns (container id, PID 1's host pid)."""
    report = guestfiles.report_dir(ctx.store, name)
    os.makedirs(report, exist_ok=True)
    script = "%s trap '' %d; sleep %d; " \
             "trap 'echo host > /run/cvm/report/initiator; " \
             "echo poweroff > /run/cvm/report/stopping; exit 0' %d; " \
             "while :; do sleep 0.1; done" % (
                 "touch %s;" % READY_FILE if released else "", signum, deaf_seconds, signum)
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


@pytest.mark.parametrize("record", [CVM_IMAGE, OTHER_SYSTEMD], ids=["SIGPWR", "SIGRTMIN+3"])
def test_a_lost_stop_signal_is_sent_again_once_the_init_takes_it(ctx, images, name, caplog,
                                                                 record):
    """Deaf for 3 s: the signal sent at once is lost; at the follower's first look (2 s)
    the init still drops it, so nothing is sent; at the next it takes it, and is sent it
    once."""
    caplog.set_level(logging.INFO, logger="cvm.stopsignal")
    signum = stopsignal.stop_signal_of(record)
    try:
        container, pid = deaf_init(ctx, name, images["busybox"], deaf_seconds=3,
                                   signum=signum)
        following = stopsignal.follow(ctx.store, name, record, container)
        os.kill(pid, signum)  # as docker stop sends it: lost
        assert exit_code_within(name, 3 * stopsignal.AGAIN_AFTER + 5) == 0
        following.thread.join(stopsignal.AGAIN_AFTER + 2)
        assert not following.thread.is_alive()  # it ended with the init
        assert caplog.text.count("sent it again") == 1
    finally:
        remove(name)


def test_the_last_boots_report_does_not_pass_for_this_boots_stop(ctx, images, name):
    """A report of the last boot's stop (written before this boot was released) does not
    say that this boot took its stop signal."""
    report = guestfiles.report_dir(ctx.store, name)
    os.makedirs(report, exist_ok=True)
    old = time.time() - 5
    for key, value in (("initiator", "host"), ("stopping", "poweroff")):
        with open(os.path.join(report, key), "w") as handle:
            handle.write(value + "\n")
        os.utime(os.path.join(report, key), (old, old))
    try:
        container, pid = deaf_init(ctx, name, images["busybox"], deaf_seconds=1)
        stopsignal.follow(ctx.store, name, CVM_IMAGE, container)
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


@pytest.mark.parametrize("signum", [signal.SIGPWR, stopsignal.SYSTEMD_HALT],
                         ids=["SIGPWR", "SIGRTMIN+3"])
def test_the_wait_script_ends_on_either_stop_signal(images, name, tmp_path, signum):
    """A VM stopped before the host released it ends at once: its PID 1, cvm's wait
    script, takes the stop signal of cvm's images and of any other systemd."""
    script = tmp_path / "wait-ready"
    script.write_text(WAIT_SCRIPT_TEXT)
    try:
        subprocess.run(["docker", "run", "-d", "--name", name, "--network", "none",
                        "--tmpfs", "/run", "-v", "%s:/wait-ready:ro" % script,
                        "--entrypoint", "/bin/sh", images["busybox"], "/wait-ready",
                        "sleep", "1000"], check=True, capture_output=True)
        pid = int(subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", name],
                                 check=True, capture_output=True, text=True).stdout)
        wait_for(lambda: procfs.takes_signal(pid, signum), what="the wait script's traps")
        os.kill(pid, signum)
        assert exit_code_within(name, 5) == 0
    finally:
        remove(name)


def test_a_vm_of_another_systemd_stopped_before_its_release_ends_at_once(ctx, images, name):
    """An image whose systemd is not cvm's is stopped with SIGRTMIN+3. Started with no
    host to release it (no netd here), its PID 1 is still cvm's wait script, which must
    end on that signal: Docker would otherwise wait out its 90 s."""
    from cvm import api
    from cvm.spec import parse_spec
    tag = "cvm-test/other-systemd:%s" % name
    subprocess.run(["docker", "build", "-q", "-t", tag, "-"], check=True, capture_output=True,
                   input=('FROM %s\nLABEL io.cvm.host-stop-signal=""\n' % images["debian"]).encode())
    try:
        vm = api.create(parse_spec({"name": name, "image": tag, "memory": "256m"}), ctx=ctx)
        assert vm.record["init"] == "systemd" and not vm.record["reports_shutdown"]
        vm.stop()
        subprocess.run(["docker", "start", vm.container_id], check=True, capture_output=True)
        assert not ns.init_released(vm.refresh().pid)
        started = time.monotonic()
        subprocess.run(["docker", "stop", vm.container_id], check=True, capture_output=True,
                       timeout=120)
        assert time.monotonic() - started < 10
    finally:
        with contextlib.suppress(Exception):
            api.get(name, ctx).remove(force=True)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


FAIL_ONCE = """#!/bin/sh
# The first call fails, as a poweroff request can early in a boot; later ones go through.
[ -e /run/failed-once ] || { touch /run/failed-once; exit 1; }
exec /usr/bin/systemctl.real "$@"
"""


def test_a_vm_whose_first_poweroff_request_fails_is_sent_its_stop_signal_again(
        ctx, images, name, caplog):
    """cvm's image tells the host that it is stopping only once its poweroff is queued.
    Were it told before, a failed request would stop the follower, and the stop would wait
    out its whole timeout. That the host asked is written first, and stays."""
    from cvm import api
    from cvm.spec import parse_spec
    caplog.set_level(logging.INFO, logger="cvm.stopsignal")
    try:
        vm = api.create(parse_spec({"name": name, "image": images["debian"],
                                    "memory": "256m"}), ctx=ctx)
        wait_booted(vm)
        code, _, err = vm.exec(["sh", "-c", "mv /usr/bin/systemctl /usr/bin/systemctl.real && "
                                "cat > /usr/bin/systemctl && chmod 755 /usr/bin/systemctl"],
                               input=FAIL_ONCE.encode())
        assert code == 0, err
        started = time.monotonic()
        vm.stop(timeout=30)
        assert time.monotonic() - started < 3 * stopsignal.AGAIN_AFTER + 5
        assert caplog.text.count("sent it again") == 1
        assert guestfiles.read_report(ctx.store, name) == {"shutdown": "poweroff",
                                                           "initiator": "host"}
    finally:
        with contextlib.suppress(Exception):
            api.get(name, ctx).remove(force=True)
