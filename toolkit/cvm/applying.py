"""`cvm apply`: make the VMs of a spec file exist and match it, all of it or none.

Every VM of the file is checked before anything changes, against the others of the
file (names, addresses) and against the host (its VMs' and its own addresses, bridges,
images, volumes); a dry run lists every problem. Then the changes are made in the
file's order, each with its undo, and a failure undoes those already made, newest
first -- unless `keep_going`, which makes every change it can and reports each failure
(a failed VM is still put back as it was).

The undo of a create removes the VM; of a change, sets the old spec back the same way;
of a recreate, imports the VM back from an archive of its writable layer taken before it
was removed (cvm.bundle without volumes: their data stays where it is). A killed apply
is not undone: each VM is whole (cvm netd finishes a killed create), and running the
file again finishes it.
"""

import contextlib
import os

from . import api
from .errors import CvmError, SpecError, from_dict
from .spec import VMSpec

LIVE = VMSpec.LIVE_FIELDS


class PlanItem:
    def __init__(self, name, action, changes=None, recreate_fields=None, spec=None):
        self.name = name
        self.action = action  # create | change | recreate | unchanged | blocked
        self.changes = changes or {}  # field -> (old, new)
        self.recreate_fields = recreate_fields or []
        self.spec = spec
        self.problems = []  # CvmErrors found before anything changes
        self.error = None  # the CvmError that made (or undoing) it fail, with keep_going

    def to_dict(self):
        data = {"name": self.name, "action": self.action,
                "changes": {k: {"old": o, "new": n} for k, (o, n) in self.changes.items()},
                "recreate_fields": self.recreate_fields,
                "problems": [str(problem) for problem in self.problems]}
        if self.error is not None:
            data["error"] = self.error.to_dict()
        return data


def plan(specs, recreate=False, ctx=None, wheres=None):
    """A PlanItem per spec, each with the problems the checks found (named by the spec's
    place in its file, from `wheres`: "vms.yml: vms[2]")."""
    ctx = ctx or api.default_context()
    items = []
    for spec in specs:
        record = ctx.store.read_vm(spec.name)
        if record is None:
            items.append(PlanItem(spec.name, "create", spec=spec))
            continue
        old, new = record["spec"], spec.to_dict()
        changes = {key: (old.get(key), new.get(key)) for key in sorted(set(old) | set(new))
                   if old.get(key) != new.get(key)}
        # Docker wrote the resolver files of VMs made before cvm did: a recreate.
        resolver = VMSpec.RESOLVER_FIELDS if api.VM(ctx, spec.name, record).owns_resolver_files \
            else ()
        needs_recreate = [k for k in changes
                          if k not in LIVE + VMSpec.HOST_FIELDS + resolver and k != "nics"]
        if not changes:
            items.append(PlanItem(spec.name, "unchanged", spec=spec))
        elif needs_recreate:
            items.append(PlanItem(spec.name, "recreate" if recreate else "blocked", changes,
                                  needs_recreate, spec))
        else:
            items.append(PlanItem(spec.name, "change", changes, spec=spec))
    _check(ctx, items, wheres or [""] * len(items))
    return items


def _named(where, error):
    """`error` with its spec's place in the file before its message."""
    if not where:
        return error
    data = error.to_dict()
    data["message"] = "%s%s %s" % (where, "" if where.endswith(":") else ":", error.message)
    return from_dict(data)


def _check(ctx, items, wheres):
    """Fill each item's problems; later VMs of the file are checked against the addresses
    earlier ones claim (ip=auto included), as the host's lock would have them."""
    seen = {}
    records = dict(ctx.store.vm_records())
    for index, item in enumerate(items):
        where = wheres[index]
        if item.name in seen:
            item.problems.append(_named(where, SpecError(
                "name", "VM %s is declared twice (also VM %d of the file)" % (
                    item.name, seen[item.name] + 1))))
            continue
        seen[item.name] = index
        if item.action == "blocked":
            item.problems.append(_named(where, SpecError(
                item.name, "needs a recreate (%s changed); rerun with --recreate" % ", ".join(
                    item.recreate_fields))))
        if item.action not in ("create", "change", "recreate"):
            continue
        try:
            if item.action != "change":
                api.preflight(ctx, item.spec)
            spec = item.spec
            if spec.nics:
                from .net import wiring as net
                if item.action == "change":
                    net.check_host(spec)
                others = {name: r for name, r in records.items() if name != item.name}
                spec = net.claim_addresses(ctx, spec, records=others)
        except CvmError as exc:
            item.problems.append(_named(where, exc))
            continue
        records[item.name] = {"spec": spec.to_dict()}


def apply(specs, dry_run=False, recreate=False, keep_going=False, ctx=None, progress=None,
          wheres=None):
    """Make the VMs match `specs`. Returns the plan items, each with what happened. One
    apply at a time: the plan is made under the lock, so it sees what an earlier one did."""
    ctx = ctx or api.default_context()
    if dry_run:
        return plan(specs, recreate, ctx, wheres)
    with ctx.store.apply_lock():
        return _apply(ctx, plan(specs, recreate, ctx, wheres), keep_going, progress)


def _apply(ctx, items, keep_going, progress):
    problems = [problem for item in items for problem in item.problems]
    if problems:
        first = problems[0].to_dict()
        if len(problems) > 1:
            first["message"] += " (and %d more problem%s; `cvm apply --dry-run` lists " \
                "them); nothing was changed" % (len(problems) - 1, "s" if len(problems) > 2
                                                else "")
        raise from_dict(first)
    undos = []
    try:
        for item in items:
            if item.action == "unchanged":
                continue
            if progress:
                progress(item)
            try:
                undos.append(_make(ctx, item))
            except CvmError as exc:
                if not keep_going:
                    raise _after_undoing(exc, undos) from None
                item.error = exc
    finally:
        _forget_archives(undos)
    failed = [item for item in items if item.error is not None]
    if failed:  # reported as the first failure's kind (its exit code)
        done = sum(1 for item in items if item.action != "unchanged") - len(failed)
        data = failed[0].error.to_dict()
        data["message"] = "%d of %d changes failed (%s); the other %d were made" % (
            len(failed), len(failed) + done, "; ".join(
                "%s: %s" % (item.name, item.error) for item in failed), done)
        raise from_dict(data)
    return items


def _after_undoing(exc, undos):
    """The error that stopped the apply, saying what was undone."""
    failed = []
    for undo in reversed(undos):
        try:
            undo()
        except CvmError as undo_error:
            failed.append(str(undo_error))
        except Exception as undo_error:  # an undo must not hide the first error
            failed.append("%s: %s" % (type(undo_error).__name__, undo_error))
    if failed:
        note = "; undoing the earlier changes failed too: %s" % "; ".join(failed)
    elif undos:
        note = "; the %d change%s made before it %s undone" % (
            len(undos), "s" if len(undos) > 1 else "", "were" if len(undos) > 1 else "was")
    else:
        note = "; nothing was changed"
    data = exc.to_dict()
    data["message"] += note
    return from_dict(data)


def _make(ctx, item):
    """Make one item's change; its undo. A change that fails half-way is undone here."""
    if item.action == "create":
        api.create(item.spec, ctx=ctx)  # undoes itself on failure
        return lambda: api.get(item.name, ctx).remove(force=True)
    if item.action == "change":
        old = api.get(item.name, ctx).spec
        undo = lambda: _set_live(ctx, item.name, old, "nics" in item.changes)  # noqa: E731
        try:
            _set_live(ctx, item.name, item.spec, "nics" in item.changes)
        except BaseException:
            with contextlib.suppress(Exception):
                undo()
            raise
        return undo
    return _recreate(ctx, item)


def _set_live(ctx, name, spec, nics_changed):
    vm = api.get(name, ctx)
    old_spec = vm.spec
    with ctx.store.vm_lock(name):
        if vm.container_id and vm.status != "missing":
            ctx.engine.update(vm.container_id, spec)
        vm.record = ctx.store.write_vm(name, dict(vm.record, spec=spec.to_dict()))
    if old_spec.resolver() != spec.resolver():
        vm.write_resolv_conf(spec)
    if nics_changed:
        from .net import wiring as net
        net.check_host(spec)
        with ctx.store.lock():
            spec = net.claim_addresses(ctx, spec)
            vm.record = ctx.store.write_vm(name, dict(vm.record, spec=spec.to_dict()))
        pid = vm.pid if vm.running else None
        net.reconcile(ctx, name, old_spec, spec, pid)
        vm.write_hosts(spec, pid)


def _recreate(ctx, item):
    """Remove the VM and create it from the new spec, keeping its writable layer in an
    archive until the apply is over: the undo imports it back."""
    from . import bundle
    vm = api.get(item.name, ctx)
    was_running = vm.running
    archive = os.path.join(_archive_dir(ctx), "%s.%d.cvm" % (item.name, os.getpid()))
    with open(archive, "wb") as handle:
        bundle.export(item.name, handle, ctx, stop=True, volumes=False)

    def undo():
        if api.exists(item.name, ctx):
            api.get(item.name, ctx).remove(force=True)
        with open(archive, "rb") as handle:
            bundle.import_archive(handle, ctx, start=was_running)
    undo.archive = archive
    try:
        vm.remove(force=True)
        api.create(item.spec, ctx=ctx)
    except BaseException:
        with contextlib.suppress(Exception):
            undo()
        with contextlib.suppress(OSError):
            os.unlink(archive)
        raise
    return undo


def _archive_dir(ctx):
    path = os.path.join(ctx.store.root, "replaced")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _forget_archives(undos):
    for undo in undos:
        with contextlib.suppress(OSError, AttributeError):
            os.unlink(undo.archive)
