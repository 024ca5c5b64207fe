"""What makes a container behave like a VM, on every image and init mode that applies.

By default: cvm/debian12 (built offline here) in systemd and in compat mode. On a host
with other images built: CVM_TEST_IMAGES=cvm/centos7,cvm/rocky9 ./run tests -k semantics
(init modes: CVM_TEST_INITS=systemd,compat).
"""

import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from cvm import api
from cvm.spec import parse_spec

from .conftest import CVM, NetdProcess, restart_dockerd, wait_for
from .nethelpers import Lab, ping

pytestmark = [pytest.mark.engine, pytest.mark.slow]

IMAGES = [i for i in os.environ.get("CVM_TEST_IMAGES", "cvm/debian12:latest").split(",") if i]
INITS = [m for m in os.environ.get("CVM_TEST_INITS", "systemd,compat").split(",") if m]
CASES = [(image, init) for image in IMAGES for init in INITS]


class Booted:
    """One VM per (image, init mode) with a static IP, an ssh key and cvm netd."""

    def __init__(self, image, init, index):
        self.image, self.init = image, init
        self.lab = Lab()
        self.state = tempfile.mkdtemp(prefix="cvm-semantics-")
        self.ctx = api.Context(state_root=self.state)
        self.netd = NetdProcess(self.state)
        try:
            self._boot(image, init, index)
        except BaseException:
            self.close()
            raise

    def _boot(self, image, init, index):
        from cvm import images
        self.netd.start()
        self.bridge = self.lab.bridge("198.51.100.1/24", prefix="cvs")
        self.ip = "198.51.100.%d" % (60 + index)
        self.key = os.path.join(self.state, "id_ed25519")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.key],
                       check=True)
        with open(self.key + ".pub") as handle:
            public = handle.read()
        if image == "cvm/debian12:latest":
            images.ensure(["debian12"], ctx=self.ctx)
        self.name = "sem%s%d" % (init[:3], index)
        started = time.monotonic()
        self.vm = api.create(parse_spec({
            "name": self.name, "image": image, "init": init, "memory": "512m",
            "hostname": self.name + ".example.com", "ssh_keys": [public],
            "nics": [{"mode": "bridge", "link": self.bridge, "ip": self.ip + "/24",
                      "gw": "198.51.100.1"}]}), ctx=self.ctx)
        self.boot_seconds = self.wait_running(started)

    def run(self, script, check=True, timeout=60):
        code, out, err = api.get(self.name, self.ctx).exec(["sh", "-c", script],
                                                           timeout=timeout)
        if check and code != 0:
            raise AssertionError("%s: `%s` failed (%d): %s%s" % (
                self.name, script, code, out.decode(), err.decode()))
        return out.decode()

    def write(self, path, text):
        code, _, err = api.get(self.name, self.ctx).exec(["sh", "-c", "cat > " + path],
                                                         input=text.encode())
        assert code == 0, err

    def state_of_system(self):
        try:
            return self.run("systemctl is-system-running", check=False, timeout=10).strip()
        except Exception:
            return "unreachable"

    def wait_running(self, started, timeout=60):
        wait_for(lambda: self.state_of_system() == "running", timeout=timeout,
                 what="%s (%s) to reach running" % (self.name, self.init))
        return time.monotonic() - started

    def ssh(self, command):
        return subprocess.run(["ssh", "-i", self.key, "-o", "StrictHostKeyChecking=no",
                               "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                               "-o", "ConnectTimeout=5", "-o", "BatchMode=yes",
                               "root@" + self.ip, command], capture_output=True, text=True,
                              timeout=30)

    def container(self):
        return self.ctx.engine.inspect(api.get(self.name, self.ctx).container_id)

    def close(self):
        for vm in api.ls(self.ctx):
            try:
                vm.remove(force=True)
            except Exception:
                pass
        self.netd.stop()
        self.lab.cleanup()
        shutil.rmtree(self.state, ignore_errors=True)


@pytest.fixture(scope="module", params=CASES, ids=["%s-%s" % c for c in CASES])
def booted(request, engine):
    image, init = request.param
    machine = Booted(image, init, CASES.index(request.param))
    # Set up the cron entries now: they need a minute boundary, other tests run meanwhile.
    machine.run("echo '* * * * * root touch /tmp/cron-d-ran' > /etc/cron.d/cvmtest && "
                "echo '* * * * * touch /tmp/crontab-ran' | crontab -")
    machine.cron_set_at = time.monotonic()
    yield machine
    machine.close()


def test_boots_to_running_with_no_failed_units(booted):
    assert booted.boot_seconds < 10, "took %.1f s" % booted.boot_seconds
    if booted.init == "systemd":
        assert booted.run("systemctl --failed --no-legend --plain").strip() == ""
    assert booted.run("hostname").strip() == booted.name
    assert booted.run("hostname -f").strip() == booted.name + ".example.com"
    assert booted.run("systemctl is-active ssh cron rsyslog 2>/dev/null || systemctl "
                      "is-active sshd crond rsyslog").split() == ["active"] * 3
    print("%s (%s): running after %.1f s" % (booted.image, booted.init, booted.boot_seconds))


def test_ssh_with_the_vm_key_to_its_static_ip(booted):
    result = booted.ssh("hostname; id -u")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [booted.name, "0"]
    # Root logs in by key only; host keys were made at first boot, not baked in.
    config = booted.run("sshd -T 2>/dev/null | grep -E '^(permitrootlogin|passwordauthentication)'")
    assert "permitrootlogin without-password" in config or \
        "permitrootlogin prohibit-password" in config
    assert "passwordauthentication no" in config
    image_keys = subprocess.run(["docker", "run", "--rm", "--entrypoint", "sh", booted.image,
                                 "-c", "ls /etc/ssh/ssh_host_* 2>/dev/null | wc -l"],
                                capture_output=True, text=True).stdout.strip()
    assert image_keys == "0"


def test_journald_and_rsyslog_write_logs(booted):
    marker = "cvm-log-marker-%d" % os.getpid()
    booted.run("logger -t cvmtest %s" % marker)
    wait_for(lambda: marker in booted.run("cat /var/log/syslog /var/log/messages 2>/dev/null",
                                          check=False), timeout=10, what="rsyslog to write")
    if booted.init == "systemd":
        wait_for(lambda: marker in booted.run("journalctl -t cvmtest --no-pager", check=False),
                 timeout=10, what="journalctl to show the message")


@pytest.mark.parametrize("command", ["hwclock --systohc", "date -s '2001-01-01'",
                                     "timedatectl set-time '2001-01-01 00:00:00'"])
def test_setting_the_clock_fails_clearly(booted, command):
    started = time.monotonic()
    code, out, err = api.get(booted.name, booted.ctx).exec(["sh", "-c", command], timeout=30)
    assert code != 0
    assert "the clock belongs to the container host" in err.decode()
    assert time.monotonic() - started < 5


def test_cron_runs_root_crontab_and_cron_d(booted):
    remaining = max(5.0, 75.0 - (time.monotonic() - booted.cron_set_at))
    wait_for(lambda: booted.run("ls /tmp/cron-d-ran /tmp/crontab-ran", check=False).count(
        "ran") == 2, timeout=remaining, interval=1.0, what="both cron entries to run")


def test_enablement_persists_across_reboot_which_keeps_ip_and_mac(booted):
    unit = ("[Unit]\nDescription=cvm test {name}\n[Service]\nExecStart=/bin/sh -c 'trap "
            "\"echo stopped > /var/tmp/{name}.stopped; exit 0\" TERM; while :; do sleep 1; "
            "done'\n[Install]\nWantedBy=multi-user.target\n")
    for name in ("cvmsvc1", "cvmsvc2"):
        booted.write("/etc/systemd/system/%s.service" % name, unit.format(name=name))
    booted.run("systemctl daemon-reload 2>/dev/null; systemctl enable cvmsvc1 && "
               "service cvmsvc1 restart && chkconfig cvmsvc2 on && service cvmsvc2 start")
    assert booted.run("systemctl is-active cvmsvc1 cvmsvc2").split() == ["active", "active"]
    mac = booted.run("cat /sys/class/net/eth0/address").strip()
    first_start = booted.container()["State"]["StartedAt"]
    booted.run("(sleep 0.5; reboot) >/dev/null 2>&1 &")
    wait_for(lambda: booted.container()["State"]["StartedAt"] != first_start, timeout=60,
             what="the VM to come back from reboot")
    booted.wait_running(time.monotonic())
    second_start = booted.container()["State"]["StartedAt"]
    booted.run("(sleep 0.5; systemctl reboot) >/dev/null 2>&1 &")
    wait_for(lambda: booted.container()["State"]["StartedAt"] != second_start, timeout=60,
             what="the VM to come back from systemctl reboot")
    booted.wait_running(time.monotonic())
    assert booted.run("systemctl is-active cvmsvc1 cvmsvc2").split() == ["active", "active"]
    assert booted.run("cat /sys/class/net/eth0/address").strip() == mac
    assert booted.run("ip -4 -o addr show eth0").split()[3] == booted.ip + "/24"
    assert ping(booted.ip) and booted.ssh("true").returncode == 0
    assert booted.run("cat /var/tmp/cvmsvc1.stopped").strip() == "stopped"  # got SIGTERM
    assert booted.run("systemctl is-active ssh cron 2>/dev/null || systemctl is-active sshd "
                      "crond").split() == ["active", "active"]


def test_clean_stop_then_poweroff_stays_off(booted):
    booted.run("rm -f /var/tmp/cvmsvc1.stopped")
    started = time.monotonic()
    subprocess.run([CVM, "stop", booted.name], check=True, capture_output=True,
                   env=dict(os.environ, CVM_STATE_DIR=booted.state))
    took = time.monotonic() - started
    assert took < 30, "a clean stop took %.1f s" % took
    subprocess.run([CVM, "start", booted.name], check=True, capture_output=True,
                   env=dict(os.environ, CVM_STATE_DIR=booted.state))
    booted.wait_running(time.monotonic())
    assert booted.run("cat /var/tmp/cvmsvc1.stopped").strip() == "stopped"
    if booted.init == "systemd":  # the journal of the previous boot was flushed to disk
        assert "Stopped" in booted.run("journalctl -b -1 --no-pager | tail -50")
    booted.run("(sleep 0.5; poweroff) >/dev/null 2>&1 &")
    wait_for(lambda: booted.container()["State"]["Status"] == "exited", timeout=60,
             what="the VM to power off")
    time.sleep(3)  # Docker's restart policy would have started it again by now
    assert booted.container()["State"]["Status"] == "exited"
    assert booted.ctx.store.read_vm(booted.name)["desired"] == "stopped"
    subprocess.run([CVM, "start", booted.name], check=True, capture_output=True,
                   env=dict(os.environ, CVM_STATE_DIR=booted.state))
    booted.wait_running(time.monotonic())
    assert ping(booted.ip)


def _started_at(booted):
    return booted.container()["State"]["StartedAt"]


def _back_up_and_wired(booted, before):
    wait_for(lambda: booted.container()["State"]["Running"] and _started_at(booted) != before,
             timeout=90, what="the VM to come back")
    booted.wait_running(time.monotonic())
    assert ping(booted.ip)
    assert booted.ctx.store.read_vm(booted.name)["desired"] == "running"


def test_ordinary_restarts_never_change_what_the_vm_should_be(booted):
    """Only a poweroff inside the VM keeps it off: not Docker's restart or stop, not a
    killed or OOM-killed init (their exit codes are the same as a poweroff's or a crash's:
    the VM's shutdown path tells them apart)."""
    docker = ["docker"]
    before = _started_at(booted)
    subprocess.run(docker + ["restart", booted.name], check=True, capture_output=True)
    _back_up_and_wired(booted, before)

    subprocess.run(docker + ["stop", booted.name], check=True, capture_output=True)
    time.sleep(1)  # netd has seen the container die
    assert booted.ctx.store.read_vm(booted.name)["desired"] == "running"
    before = _started_at(booted)
    subprocess.run(docker + ["start", booted.name], check=True, capture_output=True)
    _back_up_and_wired(booted, before)

    before = _started_at(booted)
    os.kill(api.get(booted.name, booted.ctx).pid, 9)
    _back_up_and_wired(booted, before)

    before = _started_at(booted)
    init = api.get(booted.name, booted.ctx).pid
    with open("/proc/%d/oom_score_adj" % init, "w") as handle:
        handle.write("1000")  # the memory cgroup's OOM killer picks PID 1
    try:
        booted.run("head -c 734003200 /dev/zero | tail > /dev/null", check=False, timeout=60)
    except Exception:
        pass  # the VM died under it
    wait_for(lambda: booted.container()["State"]["OOMKilled"] or _started_at(booted) != before,
             timeout=60, what="the OOM killer to end the VM's init")
    _back_up_and_wired(booted, before)


@pytest.mark.parametrize("command", ["halt", "shutdown -h now", "systemctl poweroff"])
def test_halt_shutdown_or_systemctl_poweroff_inside_keeps_the_vm_off(booted, command):
    booted.run("(sleep 0.5; %s) >/dev/null 2>&1 &" % command)
    try:
        wait_for(lambda: booted.ctx.store.read_vm(booted.name)["desired"] == "stopped",
                 timeout=60, what="netd to record the VM stopped")
    except AssertionError as failure:  # what netd and Docker saw, for the failure's reader
        state = booted.container()["State"]
        raise AssertionError("%s; container %s exit %s; netd's log ends:\n%s" % (
            failure, state["Status"], state["ExitCode"], booted.netd.log()[-1500:])) from None
    wait_for(lambda: booted.container()["State"]["Status"] == "exited", timeout=60,
             what="the VM to stay off")
    subprocess.run([CVM, "start", booted.name], check=True, capture_output=True,
                   env=dict(os.environ, CVM_STATE_DIR=booted.state))
    booted.wait_running(time.monotonic())


def test_vms_come_back_running_and_wired_after_dockerd_restarts(booted):
    before = _started_at(booted)
    restart_dockerd()
    _back_up_and_wired(booted, before)


def test_init_choice_is_shown(booted):
    inspected = api.get(booted.name, booted.ctx).to_dict()
    assert inspected["init"] == booted.init
    assert re.match(r"init: \w+ was asked for", inspected["init_reason"])
