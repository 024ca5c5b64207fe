"""Shared fixtures. Integration tests drive the real Docker engine and kernel.

Every test runs against its own state directory, so its VMs carry their own realm
label and a production `cvm netd` on the same host never touches them (nor they it).
Whatever a test made -- containers, interfaces, namespaces, directories -- is removed
afterwards, on failure too.
"""

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

CVM = os.path.join(os.path.dirname(sys.executable), "cvm")  # the Python CLI (its launcher)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUSYBOX = "cvm/busybox:latest"
DEBIAN = "cvm/debian12:latest"
# The tests' image builds log here, not among the host's build logs in /var/log/cvm.
BUILD_LOG_DIR = os.environ["CVM_LOG_DIR"] = tempfile.mkdtemp(prefix="cvm-test-logs-")


def pytest_collection_modifyitems(items):
    """A test that uses the engine (through any fixture) is marked `engine`: `-m "not
    engine"` runs the others alone, on a machine without Docker."""
    for item in items:
        if "engine" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.engine)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(BUILD_LOG_DIR, ignore_errors=True)


def engine_answers():
    import docker
    try:
        docker.APIClient(version="auto", timeout=5).ping()
        return True
    except Exception:
        return False


def restart_dockerd(timeout=180):
    """Stop dockerd (it stops every container, as on a host shutdown) and start it again
    the way `./run setup` did. Whatever happens on the way, an engine answers afterwards:
    a dockerd that outlasts `timeout` while stopping its containers is killed, and one
    that is gone is started, so the tests after this one still have their engine."""
    if os.path.isdir("/run/systemd/system"):
        try:
            subprocess.run(["systemctl", "restart", "docker"], check=True, timeout=timeout)
        finally:
            if not engine_answers():
                subprocess.run(["systemctl", "start", "docker"], timeout=timeout)
        wait_for(engine_answers, timeout=60, interval=0.5, what="dockerd to answer again")
        return
    try:
        pid = dockerd_pid()
        if pid is not None:
            os.kill(pid, 15)
            wait_for(lambda: not process_runs(pid, "dockerd"), timeout=timeout,
                     what="dockerd to stop")
    finally:
        pid = dockerd_pid()
        if pid is not None and process_runs(pid, "dockerd"):
            os.kill(pid, 9)
            wait_for(lambda: not process_runs(pid, "dockerd"), timeout=30,
                     what="dockerd to die")
        start_dockerd()


def pid_in(pidfile):
    try:
        with open(pidfile) as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return None


def dockerd_pid():
    return pid_in("/var/run/docker.pid")


def process_runs(pid, command):
    """Whether `pid` is a live (not zombie) process running `command`."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
        with open("/proc/%d/comm" % pid) as handle:
            return handle.read().strip() == command and state != "Z"
    except OSError:
        return False


def start_dockerd():
    # A pid file naming a process that is gone or runs something else stops dockerd.
    for pidfile, command in (("/var/run/docker.pid", "dockerd"),
                             ("/var/run/docker/containerd/containerd.pid", "containerd")):
        pid = pid_in(pidfile)
        if pid is not None and not process_runs(pid, command):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pidfile)
    os.makedirs("/var/log/cvm", exist_ok=True)
    with open("/var/log/cvm/dockerd.log", "a") as log:
        # setsid -f: dockerd is not our child, so no zombie of it outlives its exit.
        subprocess.run(["setsid", "-f", "dockerd"], stdout=log, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, check=True)
    wait_for(engine_answers, timeout=90, interval=0.5, what="dockerd to answer again")


@pytest.fixture(scope="session")
def engine():
    if not engine_answers():
        pytest.fail("no Docker engine answers; `./run tests` starts one")
    from cvm.engine import Engine
    return Engine()


@pytest.fixture(scope="session")
def images(engine):
    """The images integration tests boot: built locally, never pulled."""
    from cvm import api, images
    images.ensure(["busybox", "debian12"], ctx=api.Context())
    return {"busybox": BUSYBOX, "debian": DEBIAN}


@pytest.fixture
def state_dir(tmp_path):
    path = tmp_path / "state"
    path.mkdir()
    return str(path)


@pytest.fixture
def ctx(state_dir, engine):
    from cvm.api import Context
    context = Context(state_root=state_dir)
    yield context
    remove_realm(context)


def remove_realm(context):
    """Remove every container of a test realm and unwire its VMs."""
    with contextlib.suppress(Exception):
        from cvm import api
        for vm in api.ls(ctx=context):
            with contextlib.suppress(Exception):
                vm.remove(force=True)
    for container in context.engine.vm_containers(context.realm):
        with contextlib.suppress(Exception):
            context.engine.remove(container["Id"], force=True)


@pytest.fixture
def name():
    """A fresh VM name (short: host interface names derive from it)."""
    return "t" + secrets.token_hex(4)


class CvmRunner:
    """Runs a real `cvm` command (the console script hosts have on PATH) against the
    test's state directory."""

    def __init__(self, state_dir, program):
        self.program = program
        self.env = dict(os.environ, CVM_STATE_DIR=state_dir)

    def __call__(self, *args, check=False, timeout=120, env=None, input=None, cwd=None):
        result = subprocess.run([self.program] + [str(a) for a in args], capture_output=True,
                                text=True, timeout=timeout, env=dict(self.env, **(env or {})),
                                input=input, cwd=cwd)
        if check and result.returncode != 0:
            raise AssertionError("cvm %s failed (%d): %s%s" % (
                " ".join(map(str, args)), result.returncode, result.stdout, result.stderr))
        return result

    def popen(self, *args, **kwargs):
        return subprocess.Popen([self.program] + [str(a) for a in args], env=self.env, **kwargs)


@pytest.fixture
def cvm(state_dir, ctx):
    return CvmRunner(state_dir, CVM)


def wait_for(predicate, timeout=20.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %.0fs waiting for %s (last: %r)" % (timeout, what, last))


def wait_booted(vm, timeout=60, states=(b"running", b"degraded")):
    """Wait until the VM's systemd says its boot is over (`systemctl is-system-running`)."""
    wait_for(lambda: vm.exec(["systemctl", "is-system-running"])[1].strip() in states,
             timeout=timeout, what="%s to boot" % vm.name)


def enter_session(cvm, name, script, timeout=20):
    """What `cvm enter NAME` shows on a pseudo-terminal when `script` is typed at the VM's
    prompt (as a user types: keys sent before the shell runs are not read by it)."""
    import pty
    import select
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(CVM, ["cvm", "enter", name], cvm.env)
    output, typed = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([fd], [], [], 0.2)[0]:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the shell exited and closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if not typed and output.rstrip().endswith((b"#", b"$", b"\x1b[6n")):
                os.write(fd, script.encode() + b"\n")
                typed = True
    finally:
        with contextlib.suppress(OSError):
            os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(fd)
    return output.decode(errors="replace")


def residue(context, name, dirs=()):
    """What a VM left behind: containers, state, directories. Empty means clean."""
    left = []
    for container in context.engine.vm_containers(context.realm):
        if container["Labels"].get("io.cvm.vm") == name:
            left.append("container %s" % container["Names"])
    if context.engine.named(name) is not None:
        left.append("container named %s" % name)
    if context.store.read_vm(name) is not None:
        left.append("state entry %s" % name)
    if os.path.exists(context.store.guest_dir(name)):
        left.append("guest files %s" % context.store.guest_dir(name))
    for directory in dirs:
        if os.path.exists(directory):
            left.append("directory %s" % directory)
    return left


@pytest.fixture
def scratch(tmp_path):
    """A host directory for volume tests that is removed even if a test fails."""
    path = tmp_path / "scratch"
    yield str(path)
    shutil.rmtree(str(path), ignore_errors=True)


@pytest.fixture
def lab():
    from .nethelpers import Lab
    scaffolding = Lab()
    yield scaffolding
    scaffolding.cleanup()


class NetdProcess:
    """A `cvm netd` for the test's state directory."""

    def __init__(self, state_dir):
        self.state_dir = state_dir
        self.process = None
        self.log_path = os.path.join(state_dir, "netd.log")

    def start(self):
        from cvm import client
        log = open(self.log_path, "a")
        earlier = log.tell()  # a netd started before logged here too
        self.process = subprocess.Popen([CVM, "netd"], stdout=log, stderr=subprocess.STDOUT,
                                        env=dict(os.environ, CVM_STATE_DIR=self.state_dir))
        log.close()
        wait_for(lambda: client.status(self.state_dir), timeout=20,
                 what="cvm netd to answer")
        wait_for(lambda: "reconciled" in self.log()[earlier:], timeout=20,
                 what="netd's first reconcile")
        return self

    def log(self):
        with open(self.log_path) as handle:
            return handle.read()

    def kill(self, sig=9):
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)

    def stop(self):
        self.kill(15)


@pytest.fixture
def netd(state_dir, ctx):
    daemon = NetdProcess(state_dir).start()
    yield daemon
    daemon.stop()
