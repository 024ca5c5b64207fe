"""Operations that take a VM out of its normal state for a while -- created but not yet
whole, frozen for an export, stopped for a move -- and must leave it whole again, even
when the process doing them is killed.

The VM's record says what is under way and which process does it ("operation": kind,
pid and that process's start time, so that a reused pid is not mistaken for it). cvm
netd looks for operations whose process is gone (`dead`) and finishes or undoes them:
a dead create is made whole or rolled back, a frozen VM is thawed, a VM stopped for an
export runs again, a move goes back or forward (see cvm.netd.Daemon.recover).
"""

import contextlib
import os
import time

from . import paths, procfs


def owner():
    """Who runs an operation: this process (its pid and its start time)."""
    pid = os.getpid()
    return {"pid": pid, "since": procfs.start_ticks(pid)}


def alive(operation):
    try:
        return procfs.start_ticks(operation["pid"]) == operation["since"]
    except (KeyError, TypeError):
        return False


def mark(ctx, name, kind, **details):
    """Record that this process runs operation `kind` on VM `name`."""
    with ctx.store.vm_lock(name):
        record = ctx.store.read_vm(name)
        record["operation"] = dict(owner(), kind=kind, **details)
        ctx.store.write_vm(name, record)


def clear(ctx, name):
    with ctx.store.vm_lock(name):
        record = ctx.store.read_vm(name)
        if record is not None and record.pop("operation", None) is not None:
            ctx.store.write_vm(name, record)


def pause_point(kind, step):
    """Where tests kill an operation: with CVM_PAUSE_AT=KIND:STEP in its environment,
    the process touches the file CVM_PAUSED names and waits there to be killed."""
    if os.environ.get("CVM_PAUSE_AT") != "%s:%s" % (kind, step):
        return
    marker = os.environ.get("CVM_PAUSED")
    if marker:
        open(marker, "w").close()
    while True:
        time.sleep(1)


def dead(ctx):
    """{VM name: its operation} for operations whose process is gone."""
    return {name: record["operation"] for name, record in ctx.store.vm_records().items()
            if record.get("operation") and not alive(record["operation"])}


@contextlib.contextmanager
def quiesced(ctx, vm, mode, kind, staging=(), before=None):
    """The VM frozen (mode "freeze": its cgroup, as Docker's pause does) or stopped
    ("stop") for the block, running again after it; a VM that was not running is left
    as it is. Were this process killed, cvm netd would resume it (see cvm.netd).
    `before` runs first, with the VM running; `staging` names directories the operation
    makes, which cvm netd removes if the process dies, until discard_staging() does."""
    if not vm.running:
        yield
        return
    mark(ctx, vm.name, kind, mode=mode, boot=vm.boot, **({"staging": list(staging)}
                                                         if staging else {}))
    try:
        if before is not None:
            before()
        if mode == "freeze":
            ctx.engine.pause(vm.container_id)
        else:
            vm.stop_container()  # not vm.stop(): it is to run again
        yield
    finally:
        resume(vm.refresh(), mode)


def resume(vm, mode, boot=None):
    """Put a VM that an operation froze or stopped back to running, and forget it.
    A dead operation's VM still running the `boot` it was stopping has its stop still
    under way in Docker (whose stop signal may have been lost with the process that
    followed it): it is stopped here, then started."""
    if mode == "freeze":
        if vm.status == "paused":
            vm.ctx.engine.unpause(vm.container_id)
    else:
        if boot is not None and vm.status == "running" and vm.boot == boot:
            vm.stop_container()
            vm.refresh()
        if vm.status != "running":
            vm.start()
    _quiesce_over(vm.ctx, vm.name)


def _quiesce_over(ctx, name):
    """The VM runs again: its operation is over, or goes on without the quiesce while it
    still has staging directories to remove."""
    with ctx.store.vm_lock(name):
        record = ctx.store.read_vm(name)
        operation = (record or {}).pop("operation", None)
        if operation is None:
            return
        if operation.get("staging"):
            record["operation"] = {key: value for key, value in operation.items()
                                   if key not in ("mode", "boot")}
        ctx.store.write_vm(name, record)


def discard_staging(ctx, name, operation):
    """Remove what an operation staged (directories, or a file half copied), and the
    operation with it."""
    for path in operation.get("staging", []):
        with contextlib.suppress(OSError):
            paths.remove(path)
    clear(ctx, name)
