"""The VM lifecycle: the Python API under the CLI.

Data flows one way: spec -> validated -> engine creates the container (--net=none)
-> net wires its NICs from the host -> state records the spec -> the network
daemon re-applies it on every start.

    import cvm
    vm = cvm.create(cvm.parse_spec({"name": "web1", "image": "cvm/debian12", "memory": "1g"}))
    vm.exec(["hostname"])        # -> (0, b"web1\\n", b"")
    cvm.get("web1").resize(memory="2g")
"""

import contextlib
import os
import shutil
import time

from . import guestfiles, ns
from .context import Context, default_context  # noqa: F401 (part of the API)
from .engine import cgroup_version, host_stop_signal, lxcfs_running
from .errors import Conflict, CvmError, NotFound, SpecError
from .paths import READY_FILE
from .spec import HostFacts, VMSpec, host_path_danger, parse_spec

AUTHORIZED_KEYS = "/root/.ssh/authorized_keys"
CONSOLE_DETACH_KEYS = "ctrl-]"  # as virsh console and telnet

SYSTEMD_INITS = ("/sbin/init", "/lib/systemd/systemd", "/usr/lib/systemd/systemd",
                 "/usr/sbin/init")
COMPAT_MIN_SYSTEMD = 230  # older systemd cannot boot on a cgroup v2 host


def _net():
    from .net import wiring as net  # deferred: pyroute2 costs ~150 ms and only wiring needs it
    return net


# ---------------------------------------------------------------- init mode


def resolve_init(spec, image_attrs, cgroup_version):
    """(mode, argv of PID 1 or None, why) for the spec's init on this image and host."""
    labels = (image_attrs.get("Config") or {}).get("Labels") or {}
    cmd = (image_attrs.get("Config") or {}).get("Cmd") or []
    systemd_version = labels.get("io.cvm.systemd-version")
    init_argv = labels.get("io.cvm.init")
    init_argv = init_argv.split() if init_argv else (
        cmd if cmd and cmd[0] in SYSTEMD_INITS else ["/sbin/init"])
    compat_argv = (labels.get("io.cvm.compat-init") or "/usr/bin/systemctl init").split()
    if spec.init == "none":
        return "none", None, "init: none was asked for"
    if spec.init == "systemd":
        if not (systemd_version or labels.get("io.cvm.init-mode") == "systemd"
                or (cmd and cmd[0] in SYSTEMD_INITS)):
            raise SpecError("init", "image %s has no systemd (no io.cvm.systemd-version "
                            "label, command %s); use init: auto or none" % (
                                spec.image, " ".join(cmd) or "none"))
        return "systemd", init_argv, "init: systemd was asked for"
    if spec.init == "compat":
        return "compat", compat_argv, "init: compat was asked for"
    # auto
    if systemd_version:
        if cgroup_version == 2 and int(systemd_version) < COMPAT_MIN_SYSTEMD:
            return "compat", compat_argv, (
                "the image's systemd %s is older than %d and this host is cgroup v2"
                % (systemd_version, COMPAT_MIN_SYSTEMD))
        return "systemd", init_argv, "the image has systemd %s" % systemd_version
    if labels.get("io.cvm.init-mode") in ("systemd", "compat", "none"):
        mode = labels["io.cvm.init-mode"]
        return mode, {"systemd": init_argv, "compat": compat_argv}.get(mode), \
            "the image's io.cvm.init-mode label"
    if cmd and cmd[0] in SYSTEMD_INITS:
        return "systemd", list(cmd), "the image's command is an init (%s)" % cmd[0]
    return "none", None, "the image has no init (command %s)" % (" ".join(cmd) or "none")


# ---------------------------------------------------------------- VM objects


class VM:
    """One VM: its stored record (what was asked) and its container (what exists)."""

    def __init__(self, ctx, name, record, status=None):
        self.ctx = ctx
        self.name = name
        self.record = record
        self._status = status  # from a list call; saves an inspect per VM in `ls`
        self._container = None

    def __repr__(self):
        return "<VM %s %s>" % (self.name, self.status)

    @property
    def spec(self):
        return parse_spec(self.record["spec"])

    @property
    def container_id(self):
        return self.record.get("container_id")

    @property
    def container(self):
        """Docker's full view (inspect), fetched once; None if the container is gone."""
        if self._container is None and self.container_id:
            self._container = self.ctx.engine.inspect(self.container_id) or {}
        return self._container or None

    def refresh(self):
        self.record = self.ctx.store.read_vm(self.name) or self.record
        self._container = self._status = None
        return self

    @property
    def status(self):
        """creating, missing, or Docker's status: created, running, restarting, exited..."""
        if self.record.get("phase") == "creating":
            return "creating"
        if self._status is None:
            container = self.container
            self._status = container["State"]["Status"] if container else "missing"
        return self._status

    @property
    def running(self):
        return self.status == "running"

    @property
    def pid(self):
        """Host PID of the VM's init; NotFound when it is not running."""
        if not self.container_id:
            raise NotFound("VM %s has no container" % self.name)
        try:
            return ns.init_pid(self.container_id)
        except NotFound:
            raise NotFound("VM %s is not running" % self.name) from None

    def cgroup(self):
        from .cgroups import Cgroup, CgroupError
        try:
            return Cgroup.of_container(self.container_id)
        except CgroupError:
            raise NotFound("VM %s is not running" % self.name) from None

    # ---------------------------------------------------------- lifecycle

    def start(self):
        from . import operations
        operation = self.record.get("operation")
        if self.status == "missing" or (self.record.get("phase") == "creating" and
                                        operation and not operations.alive(operation)):
            # Its container was removed behind cvm's back, or its create was killed.
            self.record = self.ctx.store.write_vm(self.name, dict(self.record,
                                                                  desired="running"))
            finish_create(self.ctx, self.name)
            return self.refresh()
        with self.ctx.store.vm_lock(self.name):
            self.record = self.ctx.store.write_vm(self.name, dict(self.record, desired="running"))
        if not self.running:
            self.ctx.engine.start(self.container_id)
        self._container = self._status = None
        self.wire()
        return self

    def wire(self, probe=False, early=None):
        """Make the running VM's network match its spec, then release its init.

        Idempotent: `cvm start`, the create path and the network daemon may all call it
        for the same start; the per-VM lock serialises them and the second finds it done.
        `probe` checks on the segment that each address is free (create and attach).
        """
        if not self.record["spec"].get("nics") and \
                self.record.get("init") not in ("systemd", "compat"):
            return self  # no NICs and no init waiting to be released
        spec = self.spec
        pid = self.pid
        with self.ctx.store.vm_lock(self.name):
            if spec.nics:
                _net().wire_vm(self.ctx, self.name, spec, pid, probe=probe, early=early)
                if not self.owns_resolver_files:  # Docker's, made again on every start
                    self.write_hosts(spec, pid)
            if self.record.get("init") in ("systemd", "compat"):
                if cgroup_version() == 2 and self.record.get("init") == "systemd" and \
                        self.record.get("profile", "vm") == "vm":
                    ns.make_cgroup_writable(pid)
                if not ns.init_released(pid):  # a new boot
                    guestfiles.clear_report(self.ctx.store, self.name)
                    ns.new_boot_id(pid)
                ns.write_file(pid, READY_FILE, b"ready\n")
        return self

    @property
    def owns_resolver_files(self):
        """Are the VM's /etc/hosts and /etc/resolv.conf cvm's files (every VM made since
        cvm gave them), not Docker's?"""
        return self.record.get("resolver_files") == "bound"

    def write_hosts(self, spec, pid=None):
        """/etc/hosts naming the VM on the first address of `spec` (its NICs changed),
        the VM's other lines kept; `pid`: the running VM's, for a VM whose file is still
        Docker's (made again on every start)."""
        if self.owns_resolver_files:
            edited = guestfiles.read_resolver_files(self.ctx.store, self.name, ["/etc/hosts"])
            guestfiles.write(self.ctx.store, self.name, {"/etc/hosts": guestfiles.hosts_file(
                spec, edited.get("/etc/hosts"))})
        elif pid:
            ns.overwrite_mounted_file(pid, "/etc/hosts", guestfiles.hosts_file(spec))

    def write_resolv_conf(self, spec):
        """/etc/resolv.conf from the new dns and search of `spec`: the VM's edits give way
        to what its spec now says."""
        guestfiles.write(self.ctx.store, self.name,
                         {"/etc/resolv.conf": guestfiles.resolv_conf(spec)})

    def stop(self, timeout=None):
        with self.ctx.store.vm_lock(self.name):
            self.record = self.ctx.store.write_vm(self.name, dict(self.record, desired="stopped"))
        if self.container_id and self.status in ("running", "restarting", "paused"):
            self.stop_container(timeout)
        self._container = self._status = None
        return self

    @property
    def boot(self):
        """When the running container started: tells this boot from the next."""
        return (self.container or {}).get("State", {}).get("StartedAt")

    def stop_container(self, timeout=None):
        """Stop the container, making sure its init takes the stop signal
        (cvm.stopsignal); what the VM should be is left as it is."""
        from . import stopsignal
        following = stopsignal.follow(self.ctx.store, self.name, self.record, self.container_id)
        try:
            self.ctx.engine.stop(self.container_id, timeout=timeout)
        finally:
            if following is not None:
                following.cancel()

    def restart(self, timeout=None):
        """A clean shutdown (within the VM's stop timeout unless given), then a start.
        Were this process killed in between, cvm netd would start it (cvm.operations)."""
        from . import operations
        if self.status not in ("running", "restarting", "paused"):
            return self.start()
        operations.mark(self.ctx, self.name, "restart", mode="stop", boot=self.boot)
        self.stop_container(timeout)
        operations.resume(self.refresh(), "stop")
        return self

    def remove(self, force=False, volumes=False):
        """Remove the VM: its wiring, its container and its state; its volumes' data only
        with `volumes`, and then not a directory another VM uses."""
        # Under the VM's lock, so that racing removals (and netd's wiring) take turns:
        # the later ones find it gone.
        with self.ctx.store.vm_lock(self.name):
            record = self.ctx.store.read_vm(self.name)
            if record is None:
                raise NotFound("no VM named %r (see `cvm ls`)" % self.name)
            self.record, self._container, self._status = record, None, None
            if self.status in ("running", "restarting", "paused") and not force:
                raise Conflict("VM %s is running; stop it first or use -f" % self.name)
            paths = [v.host for v in self.spec.volumes] if volumes else []
            _remove(self.ctx, self.name, self.record)
        if not paths:
            return  # and no reading of every VM's record: `rm -f` of hundreds at once
        used = {v.split(":")[0] for record in self.ctx.store.vm_records().values()
                for v in record["spec"].get("volumes", [])}
        for path in paths:
            if path not in used:
                shutil.rmtree(path, ignore_errors=True)

    def resize(self, cpus=None, memory=None, pids=None, cpuset=None, cpu_shares=None):
        """Change limits live. Swap stays off (memory+swap = memory) unless the spec has swap."""
        changes = {k: v for k, v in (("cpus", cpus), ("memory", memory), ("pids", pids),
                                     ("cpuset", cpuset), ("cpu_shares", cpu_shares))
                   if v is not None}
        if not changes:
            raise SpecError(None, "nothing to resize; give --cpus, --memory, --pids, --cpuset "
                            "or --cpu-shares")
        raw = dict(self.record["spec"])
        raw.update(changes)
        new_spec = parse_spec(raw)
        if pids is not None and new_spec.pids != -1 and self.running:
            tasks = self.cgroup().pids_current()
            if new_spec.pids < tasks:
                raise SpecError("pids", "%d is below the %d tasks VM %s runs now; stop some "
                                "first or give at least %d" % (new_spec.pids, tasks, self.name,
                                                               tasks))
        with self.ctx.store.vm_lock(self.name):
            if self.container_id and self.status != "missing":
                self.ctx.engine.update(self.container_id, new_spec)
            self.record = self.ctx.store.write_vm(self.name, dict(self.record,
                                                                  spec=new_spec.to_dict()))
        self._container = self._status = None
        self._write_limits(new_spec)
        self.retune(new_spec)
        return self

    def _write_limits(self, spec):
        """Rewrite /etc/cvm/limits.env and .json for the new limits."""
        from . import limits
        files = limits.files(spec, HostFacts.read())
        if self.record.get("guest_files") == "bound":
            guestfiles.write(self.ctx.store, self.name,
                             {path: content for path, (content, _) in files.items()})
        elif self.running:  # a VM made before its files were bound
            for path, (content, mode) in files.items():
                ns.write_file(self.pid, path, content, mode)
        elif self.container_id and self.status != "missing":
            self.ctx.engine.put_files(self.container_id, files)

    def retune(self, spec=None):
        """Re-size the spec's `tune:` services to the current limits and reload them."""
        spec = spec or self.spec
        if not spec.tune or not self.running:
            return []
        from . import tune
        failures = []
        for service in spec.tune:
            try:
                tune.apply(self, service, reload=True, ctx=self.ctx)
            except CvmError as exc:
                failures.append(str(exc))
        if failures:
            raise CvmError("%s: resized, but re-tuning failed: %s" % (
                self.name, "; ".join(failures)))
        return spec.tune

    def start_process(self, argv, tty=False, env=None):
        """Start `argv` inside the VM as `docker exec` would (the VM's capabilities,
        seccomp, label and cgroups): (process id, socket carrying its stdio; cvm.relay)."""
        self._require_running()
        return self.ctx.engine.exec_start(self.container_id, argv, tty=tty, env=env)

    def _require_running(self):
        ns.require_root("running a command in a VM")
        if not self.running:
            raise NotFound("VM %s is not running (it is %s)" % (self.name, self.status))

    def logs(self, follow=False, this_boot=False):
        """What the VM printed on its console, as chunks of bytes: every boot of its
        container (Docker keeps them across restarts), or `this_boot` only; with `follow`,
        what it prints next, until it stops."""
        container = self.container
        if container is None:
            raise NotFound("VM %s has no container, so no console output (`cvm start %s` "
                           "makes it again)" % (self.name, self.name))
        since = _started(container["State"]["StartedAt"]) if this_boot else None
        return self.ctx.engine.logs(self.container_id, follow=follow, since=since)

    def console(self, detach_keys=CONSOLE_DETACH_KEYS):
        """(socket on the VM's /dev/console, resize(rows, columns)): its init's messages
        and the getty there (images with systemd), until `detach_keys`."""
        if not self.running:
            raise NotFound("VM %s is not running (it is %s)" % (self.name, self.status))
        if not self.container["Config"].get("Tty"):
            raise Conflict("VM %s has no console: its container was made without a terminal "
                           "(init none, or made by an older cvm); `cvm export` and `cvm "
                           "import` it to give it one" % self.name)
        engine, container_id = self.ctx.engine, self.container_id
        return (engine.attach(container_id, detach_keys),
                lambda rows, columns: engine.resize(container_id, rows, columns))

    def exec(self, argv, input=None, timeout=None):
        """Run a command inside the VM: (exit code, stdout bytes, stderr bytes)."""
        self._require_running()
        result = self.ctx.engine.run(self.container_id, argv, input=input, timeout=timeout)
        if result is None:
            raise CvmError("%s: `%s` did not finish within %s s" % (
                self.name, " ".join(argv)[:80], timeout))
        return result

    # ---------------------------------------------------------- views

    def addresses(self):
        """Its NICs' addresses with their prefixes, from the stored spec as it is (stored
        specs are canonical, their ip=auto claimed): listings need no parse per VM."""
        return [nic[key] for nic in self.record["spec"].get("nics", ())
                for key in ("ip", "ip6") if nic.get(key)]

    def uptime_seconds(self):
        container = self.container
        if not container or not container["State"].get("Running"):
            return None
        return _age(container["State"].get("StartedAt"))

    def to_dict(self):
        container = self.container or {}
        state = container.get("State", {})
        return {
            "name": self.name,
            "status": self.status,
            "desired": self.record.get("desired", "running"),
            "container_id": self.container_id,
            "pid": state.get("Pid") or None,
            "started_at": state.get("StartedAt"),
            "exit_code": state.get("ExitCode"),
            "uptime_seconds": self.uptime_seconds(),
            "init": self.record.get("init"),
            "init_reason": self.record.get("init_reason"),
            "lxcfs": self.record.get("lxcfs", False),
            "addresses": self.addresses(),
            "spec": self.record["spec"],
        }


def _started(started_at):
    """Docker's StartedAt (nanoseconds, UTC) as a Unix time; None if never started."""
    if not started_at or started_at.startswith("0001"):
        return None
    import datetime
    text = started_at.rstrip("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        text = "%s.%s" % (head, frac[:6])
    return datetime.datetime.fromisoformat(text).replace(
        tzinfo=datetime.timezone.utc).timestamp()


def _age(started_at):
    started = _started(started_at)
    return None if started is None else max(0.0, time.time() - started)


# ---------------------------------------------------------------- module API


def get(name, ctx=None):
    ctx = ctx or default_context()
    record = ctx.store.read_vm(name)
    if record is None:
        raise NotFound("no VM named %r (see `cvm ls`)" % name)
    return VM(ctx, name, record)


def ls(ctx=None, records=None):
    """Every VM of this store (or of `records`, read from it), with Docker's view
    fetched in one list call."""
    ctx = ctx or default_context()
    records = ctx.store.vm_records() if records is None else records
    if not records:
        return []
    states = ctx.container_states.current() if ctx.container_states is not None else \
        {c["Id"]: c["State"] for c in ctx.engine.vm_containers(ctx.realm)}
    return [VM(ctx, name, record, states.get(record.get("container_id"), "missing"))
            for name, record in records.items()]


def exists(name, ctx=None):
    return (ctx or default_context()).store.read_vm(name) is not None


def create(spec, start=True, ctx=None, profile="vm"):
    """Create (and by default start) a VM from a validated spec. All or nothing: even when
    this process is killed half-way, cvm netd finishes it (see cvm.operations).
    `profile` "host" makes a container host instead (see engine.HOST_PROFILE: cvm lab)."""
    from . import operations
    ctx = ctx or default_context()
    ns.require_root("cvm create")
    if not isinstance(spec, VMSpec):
        spec = parse_spec(spec)
    made = preflight(ctx, spec, profile)
    lxcfs = made.pop("lxcfs")
    net = _net() if spec.nics else None
    with ctx.store.lock():
        existing = ctx.store.read_vm(spec.name)
        if existing is not None:
            if VM(ctx, spec.name, existing).status == "missing":
                raise Conflict("name: VM %s exists, but its container is gone (removed "
                               "behind cvm's back): `cvm start %s` makes it again from its "
                               "spec, `cvm rm %s` forgets it" % ((spec.name,) * 3))
            raise Conflict("name: a VM named %r already exists" % spec.name)
        if net:
            spec = net.claim_addresses(ctx, spec)
        record = ctx.store.write_vm(spec.name, {
            "spec": spec.to_dict(), "phase": "creating", "container_id": None,
            "desired": "running" if start else "stopped", "created_dirs": [],
            "guest_files": "bound", "init": made["init"], "init_reason": made["init_reason"],
            "lxcfs": lxcfs, "reports_shutdown": made["reports_shutdown"], "profile": profile,
            "operation": dict(operations.owner(), kind="create")})
    # Probe the segment for the VM's addresses while Docker creates and starts it.
    early = net.start_probes(ctx, spec.nics) if net and start else None
    try:
        return _build(ctx, spec, record, start, made, early)
    except BaseException:
        with contextlib.suppress(Exception):
            _remove(ctx, spec.name, record, find_by_name=not record.get("name_taken"))
        if early is not None:
            early.wait()  # let the probes finish before their sockets' interfaces go
        raise


def preflight(ctx, spec, profile="vm"):
    """The checks of a create that need no lock, before anything is made: its volumes,
    its NICs against this host, its image and init, LXCFS. How the VM is to be made."""
    _check_volumes_against(ctx, spec)
    if spec.nics:
        _net().check_host(spec)
    image = ctx.engine.image(spec.image)
    made = _made(spec, image if spec.init != "none" else {}, profile)
    if spec.lxcfs and not lxcfs_running():
        raise SpecError("lxcfs", "LXCFS is not running on this host (apt-get install lxcfs; "
                        "lxcfs -l --enable-cfs /var/lib/lxcfs)")
    made["lxcfs"] = spec.lxcfs if spec.lxcfs is not None else lxcfs_running()
    return made


def _check_volumes_against(ctx, spec):
    """The store's own directory is the host's, wherever this store keeps it."""
    for index, volume in enumerate(spec.volumes):
        danger = None if volume.host_path_ok else host_path_danger(volume.host, ctx.store.root)
        if danger:
            raise SpecError("volumes[%d]" % index, "%s; a VM with it could take over the host"
                            % danger)


def _made(spec, image, profile):
    """How the VM's container is made from its image: init and stop signal."""
    init_mode, init_argv, init_reason = resolve_init(spec, image, cgroup_version())
    stop_signal, reports_shutdown = host_stop_signal(image, init_mode)
    return {"init": init_mode, "init_argv": init_argv, "init_reason": init_reason,
            "stop_signal": stop_signal, "reports_shutdown": reports_shutdown,
            "profile": profile}


def _build(ctx, spec, record, start, made, early=None):
    """Everything after the VM's record is written: its volume directories, guest files,
    container, ssh keys, start and wiring; the record ready at the end."""
    from .operations import pause_point
    pause_point("create", "recorded")
    # Recorded before they are made, so that `cvm rm` after a kill at any point finds them.
    # (A create finished after a kill keeps those its first attempt made.)
    missing = _missing_volume_dirs(spec)
    if missing:
        made_before = record.get("created_dirs", [])
        record["created_dirs"] = made_before + [d for d in missing if d not in made_before]
        _update_record(ctx, spec.name, record)
        _make_dirs(missing)
    pause_point("create", "volumes")
    files = guestfiles.bound_files(spec, made["init"], HostFacts.read(), record["lxcfs"])
    files.update(guestfiles.resolver_files(spec))
    guestfiles.write(ctx.store, spec.name, files)
    record["resolver_files"] = "bound"
    _update_record(ctx, spec.name, record)
    pause_point("create", "files")
    # Docker refuses a taken name (409), so there is no separate check. Until the
    # record has the id, a kill leaves a container that `cvm rm` finds by name.
    try:
        record["container_id"] = ctx.engine.create(
            spec, ctx.realm, ctx.store.root, made["init"], made["init_argv"], record["lxcfs"],
            guestfiles.binds(ctx.store, spec.name, files, report=made["reports_shutdown"]),
            made["stop_signal"], made["profile"])
    except Conflict:
        record["name_taken"] = True
        raise Conflict("name: a container named %r already exists (not a cvm VM of "
                       "this host's state); pick another name" % spec.name) from None
    # root's authorized_keys stays the VM's own file (people add keys to it): written
    # once, while init waits for its NICs, or into the container when not started.
    keys = ("\n".join(spec.ssh_keys) + "\n").encode() if spec.ssh_keys else None
    keys_after_start = start and made["init"] in ("systemd", "compat")
    if keys and not keys_after_start:
        ctx.engine.put_files(record["container_id"], {AUTHORIZED_KEYS: (keys, 0o600)})
    vm = VM(ctx, spec.name, record)
    pause_point("create", "container")
    if start:
        ctx.engine.start(record["container_id"])
        if keys and keys_after_start:
            ns.write_file(vm.pid, AUTHORIZED_KEYS, keys, 0o600, dir_mode=0o700)
        pause_point("create", "started")
        vm.wire(probe=True, early=early)
        pause_point("create", "wired")
    record["phase"] = "ready"
    record.pop("operation", None)
    return VM(ctx, spec.name, _update_record(ctx, spec.name, record))


def _update_record(ctx, name, record):
    """Write the record of a VM being made, unless `cvm rm` removed it meanwhile: then the
    create stops (and undoes what it made) instead of bringing it back."""
    with ctx.store.vm_lock(name):
        if ctx.store.read_vm(name) is None:
            raise NotFound("VM %s was removed while it was being created" % name)
        return ctx.store.write_vm(name, record)


def finish_create(ctx, name):
    """A create whose process died, or a VM whose container is gone: make it whole again
    from its record (what was made of it is made again); a create that cannot be finished
    is rolled back. What was done, in words."""
    from . import operations
    record = ctx.store.read_vm(name)
    spec = parse_spec(record["spec"])
    creating = record.get("phase") != "ready"
    _remove_container(ctx, name, record)
    image = ctx.engine.image(spec.image) if spec.init != "none" else {}
    record = ctx.store.write_vm(name, dict(
        record, container_id=None, phase="creating",
        operation=dict(operations.owner(), kind="create")))
    try:
        _build(ctx, spec, record, record.get("desired") == "running",
               _made(spec, image, record.get("profile") or "vm"))
    except BaseException:
        if creating:
            with contextlib.suppress(Exception):
                _remove(ctx, name, record)
        else:
            ctx.store.write_vm(name, dict(record, phase="ready", operation=None))
        raise
    return "made whole from its record"


def _remove_container(ctx, name, record, find_by_name=True):
    """Remove a VM's wiring and container (found by id, or by name in this realm)."""
    container_id = record.get("container_id")
    if container_id:
        info = ctx.engine.inspect(container_id)
    else:
        info = ctx.engine.named(name) if find_by_name else None
    if info is not None and info["Config"]["Labels"].get("io.cvm.realm") != ctx.realm:
        info = None  # a same-named container that is not ours: never touch it
    spec = None
    with contextlib.suppress(CvmError):
        spec = parse_spec(record["spec"])
    if spec is not None and spec.nics:
        pid = (info or {}).get("State", {}).get("Pid") or None
        _net().unwire_vm(ctx, name, spec, pid)
    if info is not None:
        ctx.engine.remove(info["Id"], force=True)


def _remove(ctx, name, record, find_by_name=True):
    """Undo everything a VM has on the host. Safe on half-created VMs, whose container
    may exist before the record has its id (then it is found by name)."""
    _remove_container(ctx, name, record, find_by_name)
    if record.get("phase") != "ready":
        for directory in reversed(record.get("created_dirs", [])):
            with contextlib.suppress(OSError):
                os.rmdir(directory)  # only if still empty: never delete data
    ctx.store.delete_vm(name)


def _missing_volume_dirs(spec):
    """The host directories of the spec's volumes that do not exist yet, parents first."""
    missing = []
    for volume in spec.volumes:
        absent = []
        path = volume.host
        while not os.path.exists(path):
            absent.append(path)
            path = os.path.dirname(path)
        if absent and not os.path.isdir(path):
            raise SpecError("volumes", "%s is not a directory" % path)
        missing.extend(d for d in reversed(absent) if d not in missing)
    return missing


def _make_dirs(directories):
    """Make the directories in order; on a failure, remove those made and say which."""
    made = []
    try:
        for directory in directories:
            os.mkdir(directory, 0o755)
            made.append(directory)
    except OSError as exc:
        for directory in reversed(made):
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        raise SpecError("volumes", "cannot create %s: %s" % (exc.filename, exc.strerror)) \
            from None
