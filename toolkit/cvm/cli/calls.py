"""Running an operation for a command: in cvm netd when one of the same code answers,
else in this process (cvm.ops either way), and turning errors into one line."""

import os
import sys

from .. import client
from ..errors import CvmError
from ..paths import default_root

verbose = False  # `cvm --verbose`: say where operations run


def say(text):
    sys.stderr.write("cvm: %s\n" % text)


def call(op, **args):
    """The result of operation `op`; the sockets it may come with are closed."""
    result, sockets = call_with_sockets(op, **args)
    for sock in sockets:
        sock.close()
    return result


def call_with_sockets(op, **args):
    """(result, [socket]) of operation `op`, served by netd or run here."""
    try:
        return client.request(default_root(), op, args)
    except client.NotServed as why:
        if verbose:
            say("%s; running %s in this process" % (why, op))
    from .. import ops
    from ..context import default_context
    result = ops.handle(op, args, default_context())
    if isinstance(result, ops.WithSockets):
        return result.result, result.sockets
    return result, []


def guarded(run):
    """Run `run()`; its exit code, with cvm's errors as one line on stderr (exit 2 for bad
    input, 1 for faults) and a bug as one line too (70; CVM_DEBUG=1 shows where)."""
    try:
        code = run()
        return code if isinstance(code, int) else 0
    except CvmError as exc:
        say(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `cvm ls | head -1`
        return 141
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:
        cgroups = sys.modules.get("cvm.cgroups")  # not imported here unless it was used
        if cgroups is not None and isinstance(exc, cgroups.CgroupError):
            say(str(exc))
            return 1
        if os.environ.get("CVM_DEBUG"):
            raise
        say("internal error: %s: %s (run with CVM_DEBUG=1 for the traceback)" % (
            type(exc).__name__, exc))
        return 70
