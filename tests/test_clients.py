"""The `cvm` command's two clients of cvm netd: the C client that hosts run
(toolkit/client/cvm.c) and the Python launcher (cvm.launcher). Either one has netd run
a short command, or runs it in Python itself."""

import contextlib
import json
import os
import socket
import subprocess
import threading

import pytest

from cvm import wire
from cvm.paths import netd_socket

from .conftest import BUSYBOX, CVM, CvmRunner, NetdProcess

LOST = "cvm: lost cvm netd while it ran `cvm %s`; see `cvm ls` and the netd log\n"


@pytest.fixture(params=["C client", "Python launcher"])
def each_client(request, state_dir, ctx, c_client):
    return CvmRunner(state_dir, c_client if request.param == "C client" else CVM)


@contextlib.contextmanager
def fake_netd(state_dir, answer):
    """A socket where cvm netd's would be, answering each request with the bytes
    `answer(request)` returns. Yields the list of the requests it got."""
    requests, stopping = [], threading.Event()
    server = socket.socket(socket.AF_UNIX)
    server.bind(netd_socket(state_dir))
    server.listen()
    server.settimeout(0.05)

    def serve():
        while not stopping.is_set():
            try:
                connection, _ = server.accept()
            except socket.timeout:
                continue
            with connection:
                connection.settimeout(10)
                requests.append(wire.decode(connection.recv))
                connection.sendall(answer(requests[-1]))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield requests
    finally:
        stopping.set()
        thread.join()
        server.close()
        os.unlink(netd_socket(state_dir))


def run_client(c_client, state_dir, *args, **kwargs):
    return subprocess.run([c_client] + list(args), capture_output=True, timeout=60,
                          env=dict(os.environ, CVM_STATE_DIR=state_dir), **kwargs)


# ---------------------------------------------------------------- with the real netd


def test_launcher_forwards_only_what_the_daemon_can_run_for_the_caller():
    from cvm.launcher import forwardable
    assert forwardable(["ls"]) and forwardable(["rm", "-f", "web1"])
    assert forwardable(["create", "web1", "--image", "x", "--", "tail", "-n", "1"])
    for local in (["create", "-f", "vm.yml"], ["create", "web1", "--file=vm.yml"],
                  ["create", "web1", "-fvm.yml"], ["create", "web1", "--ssh-key", "id.pub"],
                  ["exec", "web1", "--", "true"], ["enter", "web1"], ["top", "web1"], [],
                  ["apply", "-f", "vm.yml"], ["--version"]):
        assert not forwardable(local), local


def test_forwarded_commands_print_and_exit_as_local_ones(each_client, netd, images, name):
    """The same command through cvm netd and in-process: same output, same exit code."""
    cvm = each_client
    local = {"CVM_NO_DAEMON": "1"}
    marker = len(netd.log())
    cases = [["ls"], ["inspect", name + "x"], ["create", name, "--image", BUSYBOX, "--cpus", "0"],
             ["create", name, "--image", BUSYBOX, "--hostname", "no_underscores"],
             ["resize", name + "x", "--memory", "1g"], ["create", "--help"],
             ["inspect", "caf\udcff"]]  # an argument that is not UTF-8 (b"caf\xff")
    for args in cases:
        here, there = cvm(*args, env=local), cvm(*args)
        assert (there.returncode, there.stdout, there.stderr) == \
            (here.returncode, here.stdout, here.stderr), args
    assert "running `cvm inspect caf\\udcff`" in netd.log()[marker:]  # as the log shows it
    created = cvm("create", name, "--image", BUSYBOX, "--init", "none", "--", "sleep", "1000",
                  check=True)
    assert created.stdout == name + "\n"
    refused = cvm("rm", name)
    assert refused.returncode != 0 and refused.stderr.startswith("cvm: ")
    assert "running" in refused.stderr
    assert cvm("rm", "-f", name, check=True).stdout == name + "\n"
    detailed = json.loads(cvm("create", name, "--image", BUSYBOX, "--init", "none", "--json",
                              "--", "sleep", "1000", check=True).stdout)
    assert detailed["status"] == "running" and len(detailed["container_id"]) == 64
    assert detailed["spec"]["command"] == ["sleep", "1000"]
    cvm("rm", "-f", name, check=True)
    log = netd.log()[marker:]
    for args in (["create", name, "--image", BUSYBOX, "--init", "none"], ["rm", "-f", name]):
        assert "running `cvm %s" % " ".join(args) in log, log[-2000:]


def test_c_client_leaves_to_python_what_netd_must_not_run(cvm, netd, images, name, tmp_path):
    """A file named relative to the caller, a command netd does not serve, CVM_NO_DAEMON,
    and no netd at all: the C client execs the Python CLI, which runs them."""
    with open(os.path.join(str(tmp_path), "vm.yml"), "w") as spec:
        spec.write("name: %s\nimage: %s\ninit: none\ncommand: [sleep, '1000']\n" % (
            name, BUSYBOX))
    marker = len(netd.log())
    assert cvm("create", "-f", "vm.yml", cwd=str(tmp_path), check=True).stdout == name + "\n"
    assert cvm("--version", check=True).stdout.startswith("cvm, version")
    assert name in cvm("ls", env={"CVM_NO_DAEMON": "1"}, check=True).stdout
    assert "running `cvm" not in netd.log()[marker:]
    assert name in cvm("ls", check=True).stdout
    assert "running `cvm ls`" in netd.log()[marker:]  # the control: netd serves `ls`
    netd.stop()
    assert name in cvm("ls", check=True).stdout
    assert cvm("rm", "-f", name, check=True).stdout == name + "\n"


def test_a_netd_running_older_code_is_bypassed_reported_and_stopped(cvm, netd, state_dir,
                                                                     c_client):
    """After an upgrade the daemon still runs the old code: commands must not run there."""
    import cvm as package
    source = os.path.join(os.path.dirname(package.__file__), "wire.py")
    before = os.stat(source)
    assert cvm("netd", "--status").returncode == 0
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # "upgraded"
    try:
        status = cvm("netd", "--status")
        assert status.returncode == 3 and "older code" in status.stdout
        doctor = {row["name"]: row for row in json.loads(cvm("doctor", "--json").stdout)}
        assert doctor["netd"]["status"] == "WARN" and "before an upgrade" in doctor["netd"]["detail"]
        marker = len(netd.log())
        for client in (c_client, CVM):
            assert CvmRunner(state_dir, client)("ls", check=True).stdout.startswith("NAME")
        assert "running `cvm ls`" not in netd.log()[marker:]  # ran in the caller instead
        second = cvm("netd", timeout=30)  # must not take the socket of a live daemon
        assert second.returncode == 1 and "another process serves" in second.stderr
        stopped = cvm("netd", "--stop", check=True)
        assert "stopped" in stopped.stdout and netd.process.wait(timeout=5) == 0
        assert cvm("netd", "--status").returncode == 1
    finally:
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_netd_makes_its_store_on_a_fresh_host(state_dir, ctx):
    fresh = os.path.join(state_dir, "fresh")  # no cvm command ever wrote it
    daemon = NetdProcess(fresh)
    daemon.log_path = os.path.join(state_dir, "fresh-netd.log")
    try:
        daemon.start()
        assert os.stat(fresh).st_mode & 0o777 == 0o700
    finally:
        daemon.stop()


def test_netd_answers_garbage_with_an_error(netd, state_dir):
    sock = wire.connect(netd_socket(state_dir), timeout=10)
    try:
        sock.sendall(b'{"op": "ls"}\n')
        reply = wire.decode(sock.recv)
    finally:
        sock.close()
    assert reply["ok"] is False and reply["error"]["message"].startswith("not a cvm request")
    assert netd.process.poll() is None


# ---------------------------------------------------------------- the protocol


def test_wire_frames_round_trip_and_refuse_other_protocols():
    message = {"op": "cli", "args": {"argv": ["ls", b"caf\xff"], "tty": False, "n": 1.5,
                                     "none": None, "text": "é\n" * 50000}}
    frame = wire.encode(message)
    chunks = [frame[i:i + 7] for i in range(0, len(frame), 7)]  # a socket's short reads
    assert wire.decode(_reader(chunks)) == message
    with pytest.raises(wire.NotAFrame):  # what an older netd answered: a JSON line
        wire.decode(_reader([b'{"ok": false, "error": {"type": "CvmError", "message": "x"}}\n']))
    with pytest.raises(wire.NotAFrame):  # the C client's raw reply
        wire.decode(_reader([b"CVM1 NOTRUN\n"]))
    with pytest.raises(ConnectionError):
        wire.decode(_reader([frame[:-1]]))


def test_raw_replies_carry_output_as_utf8_and_refusals_as_notrun():
    ran = {"ok": True, "result": {"exit": 3, "stdout": "é\n", "stderr": "caf\udcff\n"}}
    assert wire.encode_output(ran) == b"CVM1 RAN 3 3 10\n\xc3\xa9\ncaf\\udcff\n"
    assert wire.encode_output({"ok": False, "error": {"message": "x"}}) == b"CVM1 NOTRUN\n"


def _reader(chunks):
    data = bytearray(b"".join(chunks))

    def read(size):
        piece = bytes(data[:min(size, 7)])
        del data[:len(piece)]
        return piece
    return read


def test_c_client_sends_its_argv_as_bytes_and_prints_the_reply_byte_for_byte(c_client,
                                                                           state_dir):
    out, err = b"x" * 3000000 + "é\n".encode(), b"careful\n"
    reply = b"CVM1 RAN 7 %d %d\n" % (len(out), len(err)) + out + err
    with fake_netd(state_dir, lambda request: reply) as requests:
        result = run_client(c_client, state_dir, "ls", "--json", b"caf\xff")
        # A reader that leaves early: the client still exits as the command did.
        piped = subprocess.run(["bash", "-o", "pipefail", "-c", '"$0" ls | head -c 5', c_client],
                               capture_output=True, env=dict(os.environ, CVM_STATE_DIR=state_dir))
    assert (result.returncode, result.stdout, result.stderr) == (7, out, err)
    assert (piped.returncode, piped.stdout, piped.stderr) == (7, b"xxxxx", err)
    assert requests[0] == {"op": "cli", "reply": "raw", "args": {
        "argv": [b"ls", b"--json", b"caf\xff"], "tty": False, "code": "installed"}}


def test_c_client_runs_in_python_what_a_netd_did_not_run(c_client, state_dir):
    """A netd that refuses `cvm ls` (it runs other code): its refusal in the raw reply,
    and as a netd older than the raw reply answers. The Python CLI then runs `ls`."""
    other_code = wire.encode({"ok": False, "error": {"type": "CvmError", "message": "other"}})

    def stale_netd(refusal):
        def answer(request):
            if request["op"] == "ls":  # the operation the Python CLI's `ls` calls
                return wire.encode({"ok": True, "result": []})
            return refusal if request.get("reply") == "raw" else other_code
        return answer

    for refusal in (b"CVM1 NOTRUN\n", other_code):
        with fake_netd(state_dir, stale_netd(refusal)) as requests:
            result = run_client(c_client, state_dir, "ls", text=True)
        assert (result.returncode, result.stdout.split()[0]) == (0, "NAME"), result.stderr
        # The C client asked, then the Python launcher (with its code stamp), then the CLI
        # running in Python called the `ls` operation.
        assert [(request["op"], request["args"].get("code")) for request in requests] == \
            [("cli", "installed"), ("cli", requests[1]["args"]["code"]), ("ls", None)]
        assert requests[1]["args"]["code"] not in ("installed", None)


def test_c_client_never_runs_twice_what_netd_may_have_run(c_client, state_dir):
    for cut_off in (b"", b"CVM1 RAN 0 10 0\nonly"):
        with fake_netd(state_dir, lambda request: cut_off) as requests:
            result = run_client(c_client, state_dir, "rm", "-f", "web1", text=True)
        assert (result.returncode, result.stdout, result.stderr) == (1, "", LOST % "rm")
        assert len(requests) == 1
