"""`cvm migrate NAME --to HOST`: move a VM to another host, cold, as Incus and Proxmox move
containers, with export/import (cvm.bundle) as the mechanism. Run on the VM's host
(playbooks/move.yml does it for `cvm move`); the target runs `cvm import` over ssh.

1. check: the target can take the VM (name, addresses, bridges, image, volumes, disk),
   from the archive's header, before anything stops;
2. pre-copy: while the VM runs, its writable layer (to beside the target's Docker data,
   bundle.layer_copy_on) and its volumes (to the same paths) are copied to the target
   with rsync (when both hosts have it), so that only what changes meanwhile is copied
   while it is stopped;
3. stop the VM (its desired state stays running), copy what changed in its layer and
   volumes, and stream the rest (spec; the layer and volumes too when there was no
   pre-copy) to the target, which checks every member, makes the VM (taking the layer
   copied ahead with a rename) and starts it (same spec, IP and MAC; the address is
   announced as its NICs are wired, so remote FDBs follow);
4. check that the VM answers on the target;
5. commit: remove it here, and its volumes' data (the target has it, checked) unless
   another VM here uses them.

Until step 4 begins the VM belongs here: any failure removes what the target made and
starts it here again. The record of this VM says which step the move is at; if this
process is killed, cvm netd does the same from that record (`recover`): before the
commit, back here; from the commit on, forward. So the VM runs on exactly one host.
"""

import json
import os
import shlex
import subprocess

from .errors import CvmError

KNOWN_HOSTS = "/root/.ssh/cvm_fleet_known_hosts"
FLEET_KEY = "/root/.ssh/cvm_fleet"


def ssh_program(key=None):
    """ssh as the fleet runs it, with the fleet's key (host.yml puts it on every host);
    host keys learnt on first use."""
    command = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
               "-o", "StrictHostKeyChecking=accept-new", "-o", "UserKnownHostsFile=" +
               KNOWN_HOSTS, "-o", "LogLevel=ERROR"]
    key = key or (FLEET_KEY if os.path.exists(FLEET_KEY) else None)
    if key:
        command += ["-i", key]
    return command


def ssh_command(target, key=None):
    """ssh to another host of the fleet as root."""
    return ssh_program(key) + ["root@" + target]


def on_target(target, argv, key=None, stdin=None, timeout=600):
    """Run a cvm command on the target; (exit code, stdout, stderr)."""
    return in_shell_on(target, " ".join(shlex.quote(word) for word in ["cvm"] + list(argv)),
                       key, stdin, timeout)


def in_shell_on(target, command, key=None, stdin=None, timeout=600):
    """Run a shell command line on the target; (exit code, stdout, stderr)."""
    result = subprocess.run(ssh_command(target, key) + [command], stdin=stdin,
                            capture_output=True, timeout=timeout)
    return (result.returncode, result.stdout.decode(errors="replace"),
            result.stderr.decode(errors="replace"))


def _fail_from(target, code, err, what):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    reason = lines[-1] if lines else "exit %d" % code
    if reason.startswith("cvm: "):
        reason = reason[len("cvm: "):]
    raise CvmError("%s on %s: %s" % (what, target, reason))


def _step(ctx, name, step):
    """Record that the move is at `step` (what cvm netd would do if this process died)."""
    from . import operations
    with ctx.store.vm_lock(name):
        record = ctx.store.read_vm(name)
        record["operation"]["step"] = step
        ctx.store.write_vm(name, record)
    operations.pause_point("migrate", step)


def migrate(ctx, name, target, key=None, progress=None):
    """Move VM `name` to host `target` (an address reachable over ssh)."""
    from . import api, bundle, operations
    say = progress or (lambda text: None)
    vm = api.get(name, ctx)
    if target in _own_addresses():
        raise CvmError("to: %s is this host; the VM is already here" % target)
    say("checking that %s can take %s" % (target, name))
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "wb") as out:
        bundle.export(name, out, ctx, header_only=True)
    with os.fdopen(read_end, "rb") as header:
        code, _, err = on_target(target, ["import", "--check", "-"], key, stdin=header)
    if code != 0:
        _fail_from(target, code, err, "the move is refused")
    was_running = vm.running
    volumes = [v.host for v in vm.spec.volumes if os.path.isdir(v.host)]
    layer_copy = _layer_copy_on(target, key, name)  # None: no pre-copy
    precopied = volumes if layer_copy else []
    trees = [(bundle.upper_dir(ctx, vm.container_id), layer_copy)] if layer_copy else []
    trees += [(path, path) for path in precopied]
    # The target's copies are recorded before they exist: `back` removes them (they were
    # empty or absent there: the check above made sure).
    operations.mark(ctx, name, "migrate", target=target, key=key, step="check",
                    was_running=was_running, copied=[copy for _, copy in trees])
    try:
        if trees:
            _step(ctx, name, "precopy")
            say("copying %s's layer and volumes to %s while it runs" % (name, target))
            _sync_trees(trees, target, key)
        if was_running:
            say("stopping %s" % name)
            ctx.engine.stop(vm.container_id)
        _step(ctx, name, "stopped")
        if trees:
            say("copying what changed in %s's layer and volumes" % name)
            _sync_trees(trees, target, key)
        say("copying %s to %s" % (name, target))
        _copy(ctx, name, target, key, start=was_running, volumes=not precopied,
              layer_kept=layer_copy)
        _step(ctx, name, "verify")
        if was_running:
            code, _, err = on_target(target, ["exec", name, "--", "true"], key, timeout=60)
            if code != 0:
                _fail_from(target, code, err, "the VM does not answer")
    except BaseException:
        say("moving %s failed: it stays here" % name)
        back(ctx, name, target, key, was_running, [copy for _, copy in trees])
        raise
    _step(ctx, name, "commit")
    forward(ctx, name)
    say("%s runs on %s" % (name, target))
    return {"name": name, "to": target}


def _layer_copy_on(target, key, name):
    """Where on the target the VM's layer is copied ahead (beside its Docker's data), or
    None when the copies cannot go by rsync (it is missing here or on the target). One
    ssh round trip asks both."""
    import shutil
    if shutil.which("rsync") is None:
        return None
    code, out, err = in_shell_on(target, "command -v rsync >/dev/null || exit 3; docker "
                                 "info -f '{{.DockerRootDir}}'", key, timeout=60)
    if code == 3:
        return None
    if code != 0 or not out.strip().startswith("/"):
        _fail_from(target, code, err, "asking Docker where it keeps its data")
    from .bundle import layer_copy_on
    return layer_copy_on(out.strip(), name)


def _sync_trees(trees, target, key):
    """Make each (source, path on the target) copy the same as this host's tree: owners,
    modes, hard links, ACLs, xattrs (overlay whiteouts and opaque directories), device
    nodes, sparse files; what is gone here goes there. The trees go side by side (after
    the stop, each one's ssh handshake is downtime)."""
    import tempfile
    remote_shell = " ".join(shlex.quote(word) for word in ssh_program(key))
    running = []
    try:
        for source, copy in trees:
            stderr = tempfile.TemporaryFile()
            running.append((source, stderr, subprocess.Popen(
                ["rsync", "-aHAXS", "--numeric-ids", "--delete", "--mkpath", "-e",
                 remote_shell, source.rstrip("/") + "/",
                 "root@%s:%s/" % (target, copy.rstrip("/"))],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)))
        for source, stderr, process in running:
            if process.wait(timeout=3600) != 0:
                stderr.seek(0)
                _fail_from(target, process.returncode, stderr.read().decode(errors="replace"),
                           "copying %s" % source)
    finally:
        for _, stderr, process in running:
            if process.poll() is None:
                process.kill()
                process.wait()
            stderr.close()


def _copy(ctx, name, target, key, start, volumes=True, layer_kept=None):
    """Stream the VM (stopped) into `cvm import -` on the target; without `volumes`, not
    their data, and with `layer_kept`, not its layer (the target has them in place)."""
    from . import bundle
    process = subprocess.Popen(ssh_command(target, key) + [
        "cvm import -" + ("" if start else " --no-start")], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        bundle.export(name, process.stdin, ctx, volumes=volumes, layer_kept=layer_kept)
    except BrokenPipeError:
        pass  # the target gave up: its exit says why
    finally:
        _, err = process.communicate(timeout=3600)  # the end of the stream, then its exit
    if process.returncode != 0:
        _fail_from(target, process.returncode, err.decode(errors="replace"),
                   "the import failed")


def back(ctx, name, target, key, was_running, copied=()):
    """Undo a move that did not commit: nothing of it on the target (the VM, the layer and
    volumes copied there), the VM here as it was. Raises when the target cannot be asked
    (then the VM may run there)."""
    from . import api, operations
    code, out, err = on_target(target, ["ls", "--json"], key, timeout=60)
    if code != 0:
        raise CvmError("cannot reach %s to undo the move of %s (%s); retrying later" % (
            target, name, err.strip()[-200:] or "exit %d" % code))
    if any(row["name"] == name for row in json.loads(out or "[]")):
        code, _, err = on_target(target, ["rm", "-f", "--volumes", name], key, timeout=120)
        if code != 0:
            _fail_from(target, code, err, "removing the copy")
    if copied:
        code, _, err = in_shell_on(target, "rm -rf -- " + " ".join(
            shlex.quote(path) for path in copied), key, timeout=300)
        if code != 0:
            _fail_from(target, code, err, "removing the copied layer and volumes")
    vm = api.get(name, ctx)
    if was_running and not vm.running:
        vm.start()
    operations.clear(ctx, name)
    return "moved back: runs here" if was_running else "moved back"


def forward(ctx, name):
    """Finish a committed move: the VM lives on the target now (which checked every byte
    of it); remove it here, and its volumes' data unless another VM here uses them."""
    from . import api
    api.get(name, ctx).remove(force=True, volumes=True)
    return "moved: removed here"


def recover(ctx, name, operation):
    """What a killed `cvm migrate` left: back before its commit, forward from it."""
    if operation.get("step") == "commit":
        return forward(ctx, name)
    return back(ctx, name, operation["target"], operation.get("key"),
                operation.get("was_running", True), operation.get("copied", ()))


def _own_addresses():
    import socket
    addresses = {"127.0.0.1", "localhost", socket.gethostname()}
    try:
        from .net.netlink import Netlink
        with Netlink.open() as host:
            for link in host.links():
                addresses.update(a.get("address") for a in host.addresses(link["index"]))
    except Exception:
        pass
    return addresses
