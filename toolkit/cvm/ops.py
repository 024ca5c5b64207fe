"""cvm's operations as data in, data out: what cvm netd serves, and what a command runs
in its own process when no netd of the same code answers (cvm.cli.calls). One
implementation either way; the CLI renders what comes back (cvm.cli.render).

Arguments and results are plain data (cvm.wire frames: dicts, lists, strings,
numbers); errors are cvm's typed exceptions. A result may come with a socket
(`WithSockets`): netd passes it to the client with the reply.
"""

import os
import time

from .errors import CvmError

OPS = {}


def operation(func):
    OPS[func.__name__] = func
    return func


class WithSockets:
    """A result and the sockets that go with it to the caller."""

    def __init__(self, result, sockets):
        self.result = result
        self.sockets = sockets


def handle(op, args, ctx):
    func = OPS.get(op)
    if func is None:
        raise CvmError("unknown operation %r" % op)
    return func(ctx, **(args or {}))


# ---------------------------------------------------------------- the daemon itself


LOADED_CODE = None  # the code stamp of the process that serves (set by cvm netd)


@operation
def status(ctx):
    """Which code this process runs (paths.code_stamp) and its pid."""
    from .paths import code_stamp
    return {"pid": os.getpid(), "code": LOADED_CODE or code_stamp()}


# ---------------------------------------------------------------- VMs


@operation
def create(ctx, spec, start=True, where="", details=True):
    """`spec` is raw (flags over a file, read by the caller): validated here, next to the
    engine. Without `details`, only the name: the full view costs Docker another inspect."""
    from . import api
    from .spec import parse_spec
    vm = api.create(parse_spec(spec, where=where), start=start, ctx=ctx)
    return vm.to_dict() if details else {"name": vm.name}


PARALLEL = 8  # VMs started, stopped or removed at once, as `docker stop a b c` does


def _each(ctx, names, action):
    """`action` on each VM named, several at a time; a result per name, in order."""
    from . import api

    def one(name):
        try:
            action(api.get(name, ctx))
            return {"name": name, "ok": True}
        except CvmError as exc:
            return {"name": name, "ok": False, "error": exc.to_dict()}
    if len(names) < 2:
        return [one(name) for name in names]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(min(PARALLEL, len(names))) as pool:
        return list(pool.map(one, names))


@operation
def start(ctx, names):
    return _each(ctx, names, lambda vm: vm.start())


@operation
def stop(ctx, names, timeout=None):
    return _each(ctx, names, lambda vm: vm.stop(timeout=timeout))


@operation
def restart(ctx, names, timeout=None):
    return _each(ctx, names, lambda vm: vm.restart(timeout=timeout))


@operation
def rm(ctx, names, force=False, volumes=False):
    return _each(ctx, names, lambda vm: vm.remove(force=force, volumes=volumes))


@operation
def ls(ctx):
    """Every VM's summary; in netd from what its sampler keeps of each VM."""
    from . import api
    if ctx.sampler is None:
        return [vm_summary(vm) for vm in api.ls(ctx)]
    monitor = ctx.sampler.monitor
    vms = api.ls(ctx, monitor.records())
    started = monitor.started_at([vm.name for vm in vms if vm.status == "running"])
    return [vm_summary(vm, started.get(vm.name)) for vm in vms]


def vm_summary(vm, started_at=None):
    """`started_at`: when its init started, if known (else it is looked up)."""
    from . import ns, procfs
    from .errors import NotFound
    from .sizes import parse_size
    spec = vm.record["spec"]
    uptime = None
    if vm.status == "running" and started_at:
        uptime = max(0.0, time.time() - started_at)
    elif vm.status == "running":
        try:
            uptime = procfs.process_age(ns.init_pid(vm.container_id))
        except (NotFound, OSError):
            pass
    return {"name": vm.name, "status": vm.status, "image": spec["image"],
            "cpus": spec.get("cpus"),
            "memory": parse_size(spec["memory"]) if spec.get("memory") else None,
            "ips": [a.split("/")[0] for a in vm.addresses()], "uptime_seconds": uptime,
            "container_id": vm.container_id}


@operation
def inspect(ctx, name):
    from . import api
    return api.get(name, ctx).to_dict()


@operation
def init_pid(ctx, name):
    """The host PID of a running VM's init (for `cvm nsrun`, which enters its namespaces)."""
    from . import api
    return api.get(name, ctx).pid


@operation
def named_vm(ctx, words):
    """The first of `words` that names a VM, and the host PID of its init (NotFound if it
    is not running): {"name", "pid"}, or {"name": None}. For the host-side tools, whose
    flags stand on either side of the VM's name and which read its /proc and cgroup."""
    names = set(ctx.store.vm_names())
    name = next((word for word in words if word in names), None)
    if name is None:
        return {"name": None}
    return {"name": name, "pid": init_pid(ctx, name)}


@operation
def resize(ctx, name, **limits):
    from . import api
    api.get(name, ctx).resize(**limits)
    return name


def _parse_all(specs):
    """[{'where': 'vms.yml: vms[0]', 'spec': raw}, ...] -> validated specs."""
    from .spec import parse_spec
    return [parse_spec(entry["spec"], where=entry.get("where", "")) for entry in specs]


@operation
def plan(ctx, specs, recreate=False):
    """The plan of a spec file with every problem in it: a VM whose fields are invalid is
    an item of action "invalid" with its error (the file goes on being checked)."""
    from . import applying
    from .spec import parse_spec
    parsed, wheres, invalid = [], [], {}
    for index, entry in enumerate(specs):
        try:
            parsed.append(parse_spec(entry["spec"], where=entry.get("where", "")))
            wheres.append(entry.get("where", ""))
        except CvmError as exc:
            raw_name = entry["spec"].get("name") if isinstance(entry["spec"], dict) else None
            invalid[index] = {"name": str(raw_name or entry.get("where") or index),
                              "action": "invalid", "changes": {}, "recreate_fields": [],
                              "problems": [str(exc)]}
    items = iter(item.to_dict() for item in applying.plan(parsed, recreate, ctx, wheres))
    return [invalid[index] if index in invalid else next(items)
            for index in range(len(specs))]


@operation
def apply(ctx, specs, recreate=False, keep_going=False):
    from . import applying
    return [item.to_dict() for item in applying.apply(
        _parse_all(specs), recreate=recreate, keep_going=keep_going, ctx=ctx,
        wheres=[entry.get("where", "") for entry in specs])]


@operation
def stats(ctx, names=None, interval=0.5):
    """[{"now": VMStats, "before": VMStats or None}] of every VM (or those named): rates
    over the last second from netd's sampler, else from two sweeps `interval` apart."""
    from .errors import NotFound
    from .monitor import Monitor, two_sweeps
    names = list(names or ())
    if ctx.sampler is not None:
        pairs = ctx.sampler.pairs(names, interval or 0.5)
    else:
        pairs = two_sweeps(Monitor(ctx.store), names, interval)
    found = {now.name for now, _ in pairs}
    unknown = [name for name in names if name not in found]
    if unknown:
        raise NotFound("no VM named %r (see `cvm ls`)" % unknown[0])
    return [{"now": now.to_dict(), "before": before.to_dict() if before else None}
            for now, before in pairs]


# ---------------------------------------------------------------- processes in VMs


@operation
def exec_start(ctx, name, argv=None, tty=False, env=None):
    """Start `argv` (default: a login shell) in the VM as `docker exec` would; its stdio
    goes back as a socket (see cvm.relay)."""
    from . import api, ns
    vm = api.get(name, ctx)
    if not vm.container_id:
        raise CvmError("VM %s has no container" % name)
    process, sock = vm.start_process(argv or ns.login_command(vm.pid), tty=tty, env=env)
    return WithSockets({"process": process}, [sock])


@operation
def logs(ctx, name, follow=False, this_boot=False):
    """What the VM printed on its console (VM.logs), as a socket to read to its end. A
    thread copies Docker's stream into it, so a followed log holds no request open; when
    the reader leaves, Docker's stream is closed too."""
    import contextlib
    import socket
    import threading
    from . import api
    from .readiness import readable
    stream = api.get(name, ctx).logs(follow, this_boot)
    ours, theirs = socket.socketpair()

    def copy():
        try:
            for chunk in stream:
                ours.sendall(chunk)
        except Exception:  # noqa: BLE001 the reader went away, and the watcher closed both
            pass
        finally:
            with contextlib.suppress(OSError):
                ours.shutdown(socket.SHUT_RDWR)  # wakes the watcher

    def watch():  # the reader closes its end (or the copy ended): stop reading Docker's
        readable([ours])
        stream.close()
        ours.close()

    threading.Thread(target=copy, name="logs-copy", daemon=True).start()
    threading.Thread(target=watch, name="logs-watch", daemon=True).start()
    return WithSockets({}, [theirs])


@operation
def exec_wait(ctx, process):
    """The exit code of a process from exec_start, once its stream has ended."""
    return ctx.engine.exec_exit_code(process)


@operation
def exec_resize(ctx, process, rows, columns):
    ctx.engine.exec_resize(process, rows, columns)


# ---------------------------------------------------------------- NICs and bridges


@operation
def net_attach(ctx, name, nic):
    from . import nics
    return nics.attach(ctx, name, nic).to_dict()


@operation
def net_detach(ctx, name, ifname):
    from . import nics
    nics.detach(ctx, name, ifname)
    return name


@operation
def net_ls(ctx, name=None):
    from . import nics
    return nics.list_nics(ctx, name)


@operation
def image_ls(ctx):
    from . import images
    return images.ls(ctx)


@operation
def bridge_add(ctx, name, address=None, uplink=None, pool=None, mtu=None, vxlan=None,
               allow_overlap=False):
    from .net import hostbridge
    return hostbridge.add(ctx, name, address, uplink, pool, mtu, vxlan, allow_overlap)


@operation
def bridge_rm(ctx, name):
    from .net import hostbridge
    hostbridge.remove(ctx, name)
    return name


@operation
def bridge_ls(ctx):
    from .net import hostbridge
    return hostbridge.ls(ctx)
