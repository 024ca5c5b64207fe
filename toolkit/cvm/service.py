"""The operations the CLI sends to the daemon, each a thin call into the API.

`handle(op, args)` runs in the daemon for a request from its socket, or in the CLI
itself when no daemon answers: one implementation either way. Arguments and
results are plain data (cvm.wire frames); errors are cvm's typed exceptions.
"""

import io
import os
import sys
import threading

from .errors import CvmError
from .paths import code_stamp

LOADED_CODE = code_stamp()  # the code this process runs, whatever is on disk later
INSTALLED = "installed"  # a client's stamp for "the code installed where netd runs from"


def _ctx(store_root):
    from .api import Context, default_context
    if store_root is None:
        return default_context()
    return Context(state_root=store_root)


def op_ping(ctx):
    return "pong"


def op_code(ctx):
    """Which code this daemon runs (see paths.code_stamp), and its pid."""
    return {"code": LOADED_CODE, "pid": os.getpid()}


def op_create(ctx, spec, start=True, where="", details=True):
    """`spec` is raw (flags over a file): it is validated here, next to the engine.
    Without `details`, only the name: the full view costs Docker another inspect."""
    from . import api
    from .spec import parse_spec
    vm = api.create(parse_spec(spec, where=where), start=start, ctx=ctx)
    return vm.to_dict() if details else {"name": vm.name}


def _each(ctx, names, action):
    from . import api
    results = []
    for name in names:
        try:
            action(api.get(name, ctx))
            results.append({"name": name, "ok": True})
        except CvmError as exc:
            results.append({"name": name, "ok": False, "error": exc.to_dict()})
    return results


def op_start(ctx, names):
    return _each(ctx, names, lambda vm: vm.start())


def op_stop(ctx, names, timeout=None):
    return _each(ctx, names, lambda vm: vm.stop(timeout=timeout))


def op_restart(ctx, names, timeout=None):
    return _each(ctx, names, lambda vm: vm.restart(timeout=timeout))


def op_rm(ctx, names, force=False):
    return _each(ctx, names, lambda vm: vm.remove(force=force))


def op_ls(ctx):
    from . import api
    return [vm_summary(vm) for vm in api.ls(ctx)]


def vm_summary(vm):
    from . import ns, procfs
    from .errors import NotFound
    from .sizes import parse_size
    spec = vm.record["spec"]
    uptime = None
    if vm.status == "running":
        try:
            uptime = procfs.process_age(ns.init_pid(vm.container_id))
        except (NotFound, OSError):
            pass
    return {"name": vm.name, "status": vm.status, "image": spec["image"],
            "cpus": spec.get("cpus"),
            "memory": parse_size(spec["memory"]) if spec.get("memory") else None,
            "ips": [a.split("/")[0] for a in vm.addresses()], "uptime_seconds": uptime,
            "container_id": vm.container_id}


def op_inspect(ctx, name):
    from . import api
    return api.get(name, ctx).to_dict()


def op_resize(ctx, name, **limits):
    from . import api
    api.get(name, ctx).resize(**limits)
    return name


def _parse_all(specs):
    """[{'where': 'vms.yml: vms[0]', 'spec': raw}, ...] -> validated specs."""
    from .spec import parse_spec
    return [parse_spec(entry["spec"], where=entry.get("where", "")) for entry in specs]


def op_plan(ctx, specs, recreate=False):
    from . import api
    return [item.to_dict() for item in api.plan(_parse_all(specs), recreate, ctx)]


def op_apply(ctx, specs, recreate=False):
    from . import api
    return [item.to_dict() for item in api.apply(_parse_all(specs), recreate=recreate,
                                                  ctx=ctx)]


def op_net_attach(ctx, name, nic):
    from . import net
    return net.attach(ctx, name, nic).to_dict()


def op_net_detach(ctx, name, ifname):
    from . import net
    net.detach(ctx, name, ifname)
    return name


def op_net_ls(ctx, name=None):
    from . import net
    return net.list_nics(ctx, name)


def op_bridge_add(ctx, name, address=None, uplink=None, pool=None, mtu=None):
    from .net import hostbridge
    return hostbridge.add(ctx, name, address, uplink, pool, mtu)


def op_bridge_rm(ctx, name):
    from .net import hostbridge
    hostbridge.remove(ctx, name)
    return name


def op_bridge_ls(ctx):
    from .net import hostbridge
    return hostbridge.ls(ctx)


class _PerThreadStream:
    """The daemon's sys.stdout/stderr: what a forwarded command prints goes to its own
    buffer; everything else to the real stream."""

    encoding, errors = "utf-8", "strict"

    def __init__(self, real):
        self._real = real
        self._local = threading.local()

    def capture(self, buffer, tty):
        self._local.buffer, self._local.tty = buffer, tty

    def _target(self):
        return getattr(self._local, "buffer", None) or self._real

    def write(self, text):
        return self._target().write(text)

    def flush(self):
        self._target().flush()

    def isatty(self):
        if getattr(self._local, "buffer", None) is not None:
            return self._local.tty
        return self._real.isatty()

    def __getattr__(self, name):
        return getattr(self._real, name)


_install_lock = threading.Lock()


def _captured_streams():
    with _install_lock:
        if not isinstance(sys.stdout, _PerThreadStream):
            sys.stdout, sys.stderr = _PerThreadStream(sys.stdout), _PerThreadStream(sys.stderr)
    return sys.stdout, sys.stderr


def op_cli(ctx, argv, tty=False, code=None):
    """Run a `cvm` command line for a client, here in the daemon, with its context.

    Refused, so that the client runs it itself, when the command must run in the
    caller's process, or when this daemon runs other code than `code`: the stamp of the
    Python launcher's cvm, or INSTALLED from the C client (cvm upgraded since the
    daemon started). The C client sends its argv as bytes."""
    from .launcher import forwardable
    argv = [os.fsdecode(arg) for arg in argv]
    if code == INSTALLED:
        code = code_stamp()
    if code is not None and code != LOADED_CODE:
        raise CvmError("cvm netd runs other code than this cvm; restart it")
    if not forwardable(argv):
        raise CvmError("`cvm %s` runs in its caller's process" % (argv[0] if argv else ""))
    import logging
    from . import cli, client
    logging.getLogger("cvm.netd").info("running `cvm %s` for a client", " ".join(argv)[:200])
    stdout, stderr = _captured_streams()
    out, err = io.StringIO(), io.StringIO()
    stdout.capture(out, tty)
    stderr.capture(err, tty)
    client.serving.ctx = ctx
    try:
        code = cli.run(argv)
    finally:
        client.serving.ctx = None
        stdout.capture(None, None)
        stderr.capture(None, None)
    return {"exit": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


OPS = {name[3:]: func for name, func in globals().items() if name.startswith("op_")}


def handle(op, args, store_root=None, ctx=None):
    func = OPS.get(op)
    if func is None:
        raise CvmError("unknown operation %r" % op)
    return func(ctx or _ctx(store_root), **(args or {}))
