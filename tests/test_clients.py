"""The `cvm` command and cvm netd: typed operations, the same answers served or not.

The launcher parses the commands netd serves without click, and must give exactly the
values click gives; netd runs operations (not CLI code) and the CLI renders what comes
back; a netd of other code refuses every operation and the caller runs it itself."""

import contextlib
import json
import os
import socket
import subprocess
import threading

import click
import pytest

from cvm import wire
from cvm.cli import args, served
from cvm.cli.main import cli as click_cli
from cvm.paths import netd_socket

from .conftest import BUSYBOX, CVM, NetdProcess


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
                requests.append(wire.receive(connection)[0])
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


def served_log(netd, marker):
    return [line.split("served ")[1].split(" ")[0] for line in netd.log()[marker:].splitlines()
            if " served " in line]


# ---------------------------------------------------------------- parsing without click


def click_values(argv):
    """The values click gives the command that `argv` names."""
    context = click_cli.make_context("cvm", list(argv), resilient_parsing=True)
    names = []
    while isinstance(context.command, click.Group):
        words = list(getattr(context, "_protected_args", [])) + context.args
        name, command, rest = context.command.resolve_command(context, words)
        names.append(name)
        context = command.make_context(name, rest, parent=context)
    return tuple(names), context.params


PARSED_ALIKE = [
    ["ls"], ["ls", "--json"], ["inspect", "web1"], ["inspect", "--json", "web1"],
    ["start", "a", "b"], ["stop", "-t", "5", "a"], ["stop", "--timeout=5", "a", "b"],
    ["restart", "a", "-t", "3"], ["rm", "-f", "a", "b"], ["rm", "a", "--force"],
    ["resize", "web1", "--cpus", "2", "-m", "1g"], ["resize", "web1", "-m1g", "--pids=10"],
    ["create", "web1", "--image", "x", "-m", "512m", "--nic", "mode=bridge,link=br0",
     "--nic", "mode=routed,ip=198.51.100.9/32", "-v", "/a:/b", "-e", "A=1", "--lxcfs"],
    ["create", "web1", "--image=x", "--no-lxcfs", "--no-start", "--json", "--", "sleep", "9"],
    ["create", "--image", "x", "--", "sleep", "9"], ["create", "-f", "vm.yml"],
    ["create", "web1", "--ssh-key", "id.pub", "--tune", "nginx", "--init", "none"],
    ["apply", "-f", "vms.yml", "--dry-run"], ["apply", "--file=vms.yml", "--recreate"],
    ["exec", "web1", "--", "sh", "-c", "exit 3"], ["exec", "-t", "web1", "--", "top"],
    ["exec", "web1", "ls", "/"], ["enter", "web1"], ["nsrun", "web1", "--", "ss", "-lnt"],
    ["nsrun", "--mount", "--uts", "--keep-caps", "web1", "ip", "a"], ["logs", "-f", "web1"],
    ["logs", "web1", "--boot"], ["image", "ls"], ["image", "ls", "--json"],
    ["net", "attach", "web1", "--nic", "mode=bridge,link=br0"], ["net", "detach", "a", "eth1"],
    ["net", "ls"], ["net", "ls", "web1", "--json"], ["bridge", "ls"],
    ["bridge", "add", "br9", "--address", "198.51.100.1/24", "--mtu", "1400"],
    ["bridge", "rm", "br9", "br8"],
    ["stats"], ["stats", "web1", "db1", "--json"], ["stats", "--sort", "cpu", "-v"],
    ["stats", "--interval", "0.2", "web1"],
]
LEFT_TO_CLICK = [
    ["ls", "--help"], ["ls", "--bogus"], ["stop", "-t", "five", "a"], ["start"],
    ["exec", "web1", "ls", "-la"], ["exec", "web1"], ["inspect"], ["inspect", "a", "b"],
    ["bridge", "add", "br9", "--mtu"], ["net", "attach", "web1"], ["rm", "-fx", "a"],
    ["--version"], [], ["stats", "--watch"], ["stats", "--watch", "5", "a"],
]


@pytest.mark.parametrize("argv", PARSED_ALIKE, ids=" ".join)
def test_the_launcher_parses_exactly_as_click_does(argv):
    command, values = args.find(served.COMMANDS, argv)
    names, expected = click_values(argv)
    assert command.path == names
    assert values == expected


@pytest.mark.parametrize("argv", LEFT_TO_CLICK, ids=lambda a: " ".join(a) or "nothing")
def test_the_launcher_leaves_what_it_is_not_sure_of_to_click(argv):
    assert args.find(served.COMMANDS, argv) is None


HEAVY_MODULES = ("click", "docker", "pyroute2", "yaml", "jinja2", "socket", "selectors")


def heavy_modules_imported(state_dir, argv):
    """The heavy modules that `cvm ARGV`, served by netd, imported in the launcher (up to
    its exit, or its exec of another program: `cvm nsrun`)."""
    probe = ("import sys; sys.argv = ['cvm'] + %r; import cvm.launcher, os\n"
             "os._exit = lambda code: (print(sorted(m for m in sys.modules if m.split('.')[0]"
             " in %r)), sys.exit(code))\n"
             "os.execve = lambda path, argv, env: os._exit(0)\n"
             "cvm.launcher.main()" % (list(argv), HEAVY_MODULES))
    result = subprocess.run([os.path.join(os.path.dirname(CVM), "python"), "-c", probe],
                            capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, CVM_STATE_DIR=state_dir))
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[-1]


def test_the_launcher_imports_neither_click_nor_the_docker_sdk(state_dir, netd):
    assert heavy_modules_imported(state_dir, ["ls"]) == "[]"


def test_the_host_helpers_run_without_heavy_imports(cvm, state_dir, netd, images, name):
    """exec, nsrun, logs, image ls and the host-side tools: netd does what needs Docker."""
    cvm("create", name, "--image", BUSYBOX, "--init", "none", "--", "sleep", "1000", check=True)
    assert heavy_modules_imported(state_dir, ["exec", name, "--", "true"]) == "[]"
    assert heavy_modules_imported(state_dir, ["free", "-m", name]) == "[]"
    assert heavy_modules_imported(state_dir, ["nsrun", name, "--", "true"]) == "[]"
    assert heavy_modules_imported(state_dir, ["logs", name]) == "[]"
    assert heavy_modules_imported(state_dir, ["image", "ls"]) == "[]"
    assert "named_vm" in netd.log()  # the VM was found by netd, not by this process


# ---------------------------------------------------------------- with the real netd


def test_served_commands_print_and_exit_as_local_ones(cvm, netd, images, name):
    """The same command through cvm netd and in-process: same output, same exit code."""
    local = {"CVM_NO_DAEMON": "1"}
    marker = len(netd.log())
    cases = [["ls"], ["inspect", name + "x"], ["create", name, "--image", BUSYBOX, "--cpus", "0"],
             ["create", name, "--image", BUSYBOX, "--hostname", "no_underscores"],
             ["resize", name + "x", "--memory", "1g"], ["create", "--help"],
             ["inspect", "caf\udcff"], ["net", "ls"], ["bridge", "ls"]]
    for argv in cases:
        here, there = cvm(*argv, env=local), cvm(*argv)
        assert (there.returncode, there.stdout, there.stderr) == \
            (here.returncode, here.stdout, here.stderr), argv
    created = cvm("create", name, "--image", BUSYBOX, "--init", "none", "--", "sleep", "1000",
                  check=True)
    assert created.stdout == name + "\n"
    # netd lists from what its sampler keeps (uptime from the init it found): the same
    [here], [there] = (json.loads(cvm("ls", "--json", env=env, check=True).stdout)
                       for env in (local, None))
    assert abs(here.pop("uptime_seconds") - there.pop("uptime_seconds")) < 2 and here == there
    cvm("stop", name, "-t", "0", check=True)
    here, there = (json.loads(cvm("ls", "--json", env=env, check=True).stdout)
                   for env in (local, None))
    assert here == there and here[0]["status"] == "exited" and here[0]["uptime_seconds"] is None
    cvm("start", name, check=True)
    refused = cvm("rm", name)
    assert refused.returncode != 0 and refused.stderr.startswith("cvm: ")
    assert "running" in refused.stderr
    shown = cvm("exec", name, "--", "sh", "-c", "cat; echo err >&2; exit 7", input="in\n")
    assert (shown.returncode, shown.stdout, shown.stderr) == (7, "in\n", "err\n")
    assert cvm("rm", "-f", name, check=True).stdout == name + "\n"
    detailed = json.loads(cvm("create", name, "--image", BUSYBOX, "--init", "none", "--json",
                              "--", "sleep", "1000", check=True).stdout)
    assert detailed["status"] == "running" and len(detailed["container_id"]) == 64
    assert detailed["spec"]["command"] == ["sleep", "1000"]
    cvm("rm", "-f", name, check=True)
    served = served_log(netd, marker)
    for op in ("ls", "inspect", "create", "rm", "exec_start", "exec_wait", "net_ls",
               "bridge_ls"):
        assert op in served, served


def test_files_are_read_by_the_caller_and_the_operation_served(cvm, netd, images, name,
                                                                tmp_path):
    """`create -f vm.yml` relative to the caller's directory and `--ssh-key FILE`: the
    client reads them and netd creates the VM."""
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJk test@cvm\n")
    (tmp_path / "vm.yml").write_text("name: %s\nimage: %s\ninit: none\ncommand: [sleep, "
                                     "'1000']\n" % (name, BUSYBOX))
    marker = len(netd.log())
    assert cvm("create", "-f", "vm.yml", "--ssh-key", "id.pub", cwd=str(tmp_path),
               check=True).stdout == name + "\n"
    assert "create" in served_log(netd, marker)
    assert json.loads(cvm("inspect", name, "--json").stdout)["spec"]["ssh_keys"] == [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJk test@cvm"]
    marker = len(netd.log())
    assert name in cvm("ls", env={"CVM_NO_DAEMON": "1"}, check=True).stdout
    assert served_log(netd, marker) == []
    netd.stop()
    assert name in cvm("ls", check=True).stdout
    assert cvm("rm", "-f", name, check=True).stdout == name + "\n"


def test_a_netd_running_older_code_refuses_every_operation(cvm, netd, state_dir):
    """After an upgrade the daemon still runs the old code: nothing may run there; the
    caller runs it and says so with --verbose; a restarted netd serves again."""
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
        listed = cvm("--verbose", "ls", check=True)
        assert listed.stdout.startswith("NAME")
        assert "runs other code than this cvm" in listed.stderr and "running ls in this " \
            "process" in listed.stderr
        assert cvm("bridge", "ls", check=True).stdout.startswith("NAME")
        assert served_log(netd, marker) == []  # ran in the caller instead
        second = cvm("netd", timeout=30)  # must not take the socket of a live daemon
        assert second.returncode == 1 and "another process serves" in second.stderr
        stopped = cvm("netd", "--stop", check=True)
        assert "stopped" in stopped.stdout and netd.process.wait(timeout=5) == 0
        assert cvm("netd", "--status").returncode == 1
        netd.start()  # the new code's netd serves again
        marker = len(netd.log())
        assert cvm("ls", check=True).stdout.startswith("NAME")
        assert served_log(netd, marker) == ["ls"]
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
        reply, _ = wire.receive(sock)
    finally:
        sock.close()
    assert reply["ok"] is False and reply["error"]["message"].startswith("not a cvm request")
    assert netd.process.poll() is None


# ---------------------------------------------------------------- the protocol


def test_wire_frames_round_trip_carry_sockets_and_refuse_other_protocols():
    message = {"op": "ls", "args": {"names": ["a", b"caf\xff"], "n": 1.5, "none": None,
                                    "text": "é\n" * 50000}}
    left, right = socket.socketpair()
    carried_left, carried_right = socket.socketpair()
    with left, right, carried_left, carried_right:
        writer = threading.Thread(target=wire.send, args=(left, message,
                                                          [carried_left.fileno()]))
        writer.start()
        received, fds = wire.receive(right)
        writer.join()
        assert received == message and len(fds) == 1
        with socket.socket(fileno=fds[0]) as carried:  # the same socket, passed over
            carried.sendall(b"through")
            assert carried_right.recv(16) == b"through"
    for garbage in (b'{"ok": false, "error": {"type": "CvmError", "message": "x"}}\n',
                    b"CVM1 NOTRUN\n"):
        left, right = socket.socketpair()
        with left, right:
            left.sendall(garbage)
            with pytest.raises(wire.NotAFrame):
                wire.receive(right)
    left, right = socket.socketpair()
    with left, right:
        left.sendall(wire.encode(message)[:-1])
        left.shutdown(socket.SHUT_WR)
        with pytest.raises(ConnectionError):
            wire.receive(right)


def test_a_lost_netd_is_one_line_and_never_a_second_run(state_dir):
    """netd may have run the operation before the connection broke: running it again
    could do it twice, so the caller says so and stops."""
    for cut_off in (b"", wire.encode({"ok": True, "result": []})[:12]):
        with fake_netd(state_dir, lambda request: cut_off) as requests:
            result = subprocess.run([CVM, "rm", "-f", "web1"], capture_output=True, text=True,
                                    timeout=60, env=dict(os.environ, CVM_STATE_DIR=state_dir))
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr.startswith("cvm: lost cvm netd while it ran rm")
        assert len(result.stderr.splitlines()) == 1 and len(requests) == 1
        assert requests[0]["op"] == "rm" and requests[0]["code"]


def test_a_late_cleanup_of_a_removed_vm_leaves_no_lock_file(ctx):
    """netd cleans up after a VM's container died; when `cvm rm` has removed the VM
    first, the clean-up must not make its lock file again (state left behind)."""
    from cvm.netd import Daemon
    ctx.store.make()
    with ctx.store.vm_lock("gone"):
        pass
    ctx.store.delete_vm("gone")
    Daemon(ctx).cleanup("gone")
    assert not os.path.exists(os.path.join(ctx.store.root, "locks", "gone.lock"))


# ---------------------------------------------------------------- container states


def test_netd_lists_what_docker_did_behind_cvms_back_at_once(cvm, netd, images, name):
    """netd answers listings from Docker's events, not a list of every container: a
    `docker` command behind cvm's back shows in the very next `cvm ls`."""
    cvm("create", name, "--image", BUSYBOX, "--init", "none", "--", "sleep", "100000",
        check=True)

    def status():
        [row] = json.loads(cvm("ls", "--json", check=True).stdout)
        return row["status"]

    assert status() == "running"
    for command, expected in ((["pause"], "paused"), (["unpause"], "running"),
                              (["stop", "-t", "0"], "exited"), (["start"], "running"),
                              (["rm", "-f"], "missing")):
        container = cvm("inspect", name, "--json", check=True)
        subprocess.run(["docker"] + command + [json.loads(container.stdout)["container_id"]],
                       check=True, capture_output=True)
        assert status() == expected, command
    cvm("rm", "-f", name, check=True)


def test_container_states_catch_up_without_the_stream(ctx, images, name):
    """Between two uses, the events the stream has not brought yet are read: a state
    kept with no stream at all is still true."""
    from cvm import api
    from cvm.containerstates import ContainerStates
    from cvm.spec import parse_spec
    vm = api.create(parse_spec({"name": name, "image": BUSYBOX, "init": "none",
                                "command": ["sleep", "100000"]}), ctx=ctx)
    states = ContainerStates(ctx.engine, ctx.realm)
    assert states.current() == {vm.container_id: "running"}
    ctx.engine.pause(vm.container_id)
    assert states.current() == {vm.container_id: "paused"}
    ctx.engine.unpause(vm.container_id)
    vm.remove(force=True)
    assert states.current() == {}


def test_container_states_never_go_back_to_an_older_event():
    from cvm.containerstates import ContainerStates

    class Listed:
        def vm_containers(self, realm):
            return [{"Id": "c1", "State": "running"}]

        def events(self, realm, since, until):
            return []

    def event(action, at):
        return {"id": "c1", "Action": action, "timeNano": at}

    states = ContainerStates(Listed(), "realm")
    states.followed(event("die", 1))  # before the seeding list: nothing to apply it to
    assert states.current() == {"c1": "running"}
    seeded_at = states.followed_ns
    states.followed(event("pause", seeded_at + 2))
    states.apply(event("start", seeded_at + 1))  # older, brought late by a catch-up
    assert states.current() == {"c1": "paused"}
    states.followed(event("destroy", seeded_at + 3))
    assert states.current() == {}
    states.lose_track()
    assert states.current() == {"c1": "running"}  # listed again
