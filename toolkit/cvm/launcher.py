"""The Python `cvm` command's entry point (pip's console script): short commands go
straight to cvm netd. On hosts the C client (toolkit/client/cvm.c) comes first, and
runs this for whatever netd did not run.

Of a `cvm ls` that cvm netd serves, ~35 ms would be Python importing click and cvm's
CLI, and ~10 ms json and socket. The launcher imports none of them: when a netd that
runs this same code answers, the commands in FORWARDED are sent to it as their argv
(a cvm.wire frame); it runs them with the same CLI code (cvm.service.op_cli) and
sends back what they printed and their exit code. Every other command, and every
command when no such netd answers, runs cvm.cli in this process.
"""

import os
import sys

FORWARDED = frozenset(["create", "start", "stop", "restart", "rm", "ls", "inspect", "resize"])
# Options naming files relative to the caller's working directory: such commands run here.
PATH_OPTIONS = {"create": ("-f", "--file", "--ssh-key")}


def _names_a_path(arg, option):
    return arg == option or arg.startswith(option + "=") or (
        len(option) == 2 and arg.startswith(option))  # -fspec.yml


def forwardable(argv):
    """Whether cvm netd may run this command line for its caller."""
    if not argv or argv[0] not in FORWARDED:
        return False
    return not any(_names_a_path(arg, option) for option in PATH_OPTIONS.get(argv[0], ())
                   for arg in argv[1:])


def forward(argv):
    """(exit code, stdout, stderr) from the daemon, or None to run the command here."""
    from . import wire
    from .paths import code_stamp, default_root, netd_socket
    sock = wire.connect(netd_socket(default_root()))
    if sock is None:
        return None
    try:
        reply = wire.exchange(sock, {"op": "cli", "args": {
            "argv": argv, "tty": sys.stdout.isatty(), "code": code_stamp()}})
    except wire.NotAFrame:
        return None  # an older daemon that speaks another protocol: nothing ran
    except (OSError, ValueError) as exc:
        # It may have run: running it again here could do it twice.
        return 1, "", ("cvm: lost cvm netd while it ran `cvm %s` (%s); see `cvm ls` and "
                       "the netd log\n" % (argv[0], exc))
    finally:
        sock.close()
    if not reply.get("ok"):
        return None  # a daemon that cannot run commands, or runs other code: nothing ran
    result = reply["result"]
    return result["exit"], result["stdout"], result["stderr"]


def main():
    argv = sys.argv[1:]
    wanted = forwardable(argv) and not os.environ.get("CVM_NO_DAEMON")
    outcome = forward(argv) if wanted else None
    if outcome is None:
        from .cli import main as run_here
        run_here()
        return
    code, out, err = outcome
    try:
        sys.stdout.write(out)
        sys.stdout.flush()
        sys.stderr.write(err)
        sys.stderr.flush()
    except BrokenPipeError:  # `cvm ls | head -1`
        pass
    # Nothing is left to tear down: skipping the interpreter's finalization saves ~3 ms.
    os._exit(code)
