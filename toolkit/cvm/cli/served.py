"""The commands cvm netd serves: declared once, run the same from the launcher (parsed
without click) and from the click CLI (built from these declarations).

Each `run` builds a request from the parameters (reading the caller's files: `create
-f`, `--ssh-key`, `apply -f`), has the operation run (cvm.cli.calls) and renders what
comes back (cvm.cli.render).
"""

import os
import sys

from . import render
from .args import Argument, Command, Option
from .calls import call, call_with_sockets

# The spec's fields as `cvm create` flags. Pinned to cvm.spec.VMSpec by a test: a field
# added there needs its flag here (or a reason in the test).
SPEC_OPTIONS = [
    Option(["--image"], "image", help="Image to boot (see `cvm image ls`)."),
    Option(["--hostname"], "hostname", help="Hostname (default: the VM's name)."),
    Option(["--cpus"], "cpus", help="CPU quota, e.g. 1.5."),
    Option(["--cpuset"], "cpuset", help="CPUs the VM may run on, e.g. 0-1."),
    Option(["--cpu-shares"], "cpu_shares", help="Relative CPU weight (2-262144)."),
    Option(["--memory", "-m"], "memory", help="Memory limit, e.g. 512m, 4g, 1.5g."),
    Option(["--swap"], "swap", help="Swap on top of memory (default 0: no swap)."),
    Option(["--pids"], "pids", help="Process limit (default 4096; 'unlimited')."),
    Option(["--device-read-bps"], "device_read_bps", multiple=True, metavar="DEV:RATE"),
    Option(["--device-write-bps"], "device_write_bps", multiple=True, metavar="DEV:RATE"),
    Option(["--device-read-iops"], "device_read_iops", multiple=True, metavar="DEV:N"),
    Option(["--device-write-iops"], "device_write_iops", multiple=True, metavar="DEV:N"),
    Option(["--blkio-weight"], "blkio_weight", help="Block IO weight (10-1000)."),
    Option(["--volume", "-v"], "volumes", multiple=True, metavar="HOST:GUEST[:ro]",
           help="Host directory (created if missing) mounted in the VM."),
    Option(["--init"], "init", help="auto (default), systemd, compat or none."),
    Option(["--env", "-e"], "env", multiple=True, metavar="KEY=VALUE"),
    Option(["--label", "-l"], "labels", multiple=True, metavar="KEY=VALUE"),
    Option(["--restart"], "restart", help="Restart policy (default unless-stopped)."),
    Option(["--dns"], "dns", multiple=True, help="DNS server (repeatable)."),
    Option(["--search"], "search", multiple=True, help="DNS search domain (repeatable)."),
    Option(["--ssh-key"], "ssh_key_files", multiple=True, metavar="FILE",
           help="Public key file allowed to log in as root (repeatable)."),
    Option(["--nic"], "nics", multiple=True, metavar="mode=bridge,link=br0,ip=CIDR,...",
           help="A NIC (repeatable); see `cvm net --help`."),
    Option(["--lxcfs"], "lxcfs", value=False, off="--no-lxcfs", default=None,
           help="Bind LXCFS's /proc files."),
    Option(["--tune"], "tune", multiple=True, help="Service to size to the VM (repeatable)."),
    Option(["--snapshots"], "snapshots", metavar="SCHEDULE[:KEEP]",
           help="Snapshots netd takes: hourly, daily, weekly or a cron expression; the "
                "newest KEEP (default 7) stay."),
]
JSON = Option(["--json"], "as_json", value=False, help="Print the result as JSON.")
SPEC_FLAG_FIELDS = {option.dest: option.dest for option in SPEC_OPTIONS}
SPEC_FLAG_FIELDS["ssh_key_files"] = "ssh_keys"


def require_root(what):
    from ..ns import require_root as check  # not at the top: `cvm ls` needs none of cvm.ns
    check(what)


def flags_to_raw(params):
    """The spec fields the flags give (files named by them read here, in the caller)."""
    raw = {}
    for dest, field in SPEC_FLAG_FIELDS.items():
        value = params.get(dest)
        if value is None or value == ():
            continue
        if dest == "ssh_key_files":
            value = [_read("ssh_keys", path) for path in value]
        raw[field] = list(value) if isinstance(value, tuple) else value
    return raw


def _read(field, path):
    from ..errors import SpecError
    try:
        with open(path) as handle:
            return handle.read()
    except OSError as exc:
        raise SpecError(field, "cannot read %s: %s" % (path, exc.strerror)) from None


def run_create(params):
    from ..errors import SpecError
    from ..specfile import merge
    raw, where, name = {}, "", params["name"]
    if params["spec_file"]:
        from ..specfile import load_file
        entries = load_file(params["spec_file"])
        if name:
            entries = [e for e in entries if e[1].get("name") in (None, name)]
        if len(entries) != 1:
            raise SpecError(None, "%s: expected exactly one VM%s; use `cvm apply -f` for "
                            "many" % (params["spec_file"], " named %s" % name if name else ""))
        where, raw = entries[0]
        where = "" if name else where
    overrides = flags_to_raw(params)
    if name:
        overrides["name"] = name
    if params["command"]:
        overrides["command"] = list(params["command"])
    require_root("cvm create")
    result = call("create", spec=merge(raw, overrides), start=not params["no_start"],
                  where=where, details=params["as_json"])
    render.as_json(result) if params["as_json"] else render.out(result["name"])


def run_apply(params):
    """The plan, then the changes: all or none (cvm.applying). A dry run shows every
    problem of the file; a real run with problems stops at the first, changing nothing."""
    from ..errors import SpecError
    from ..specfile import load_file
    specs = [{"where": where, "spec": raw} for where, raw in load_file(params["spec_file"])]
    items = call("plan", specs=specs, recreate=params["recreate"])
    problems = sum(len(item["problems"]) for item in items)
    if params["dry_run"]:
        render.as_json(items) if params["as_json"] else render.plan(items)
        if problems:
            raise SpecError(None, "%s: %d problem%s; nothing was changed" % (
                params["spec_file"], problems, "s" if problems > 1 else ""))
        return
    if not params["as_json"] and not problems:
        render.plan(items)
    done = call("apply", specs=specs, recreate=params["recreate"],
                keep_going=params["keep_going"])  # with problems: raises the first
    render.as_json(done) if params["as_json"] else render.applied(done)


def listing(op, renderer, **fixed):
    def run(params):
        args = dict((key, params[key]) for key in fixed)
        rows = call(op, **args)
        render.as_json(rows) if params["as_json"] else renderer(rows)
    return run


def run_attached(name, argv, tty):
    """A process in the VM with this caller's stdio; its exit code."""
    from .. import relay
    env = {"TERM": os.environ.get("TERM", "xterm")} if tty else None
    started, (sock,) = call_with_sockets("exec_start", name=name, argv=argv, tty=tty, env=env)
    process = started["process"]
    try:
        relay.attach(sock, tty, resize=lambda rows, columns: call(
            "exec_resize", process=process, rows=rows, columns=columns))
    finally:
        sock.close()
    return call("exec_wait", process=process)


def run_logs(params):
    from .. import relay
    _, (sock,) = call_with_sockets("logs", name=params["name"], follow=params["follow"],
                                   this_boot=params["this_boot"])
    try:
        relay.relay(sock, tty=True, stdin_fd=None)  # the console's bytes as they are
    finally:
        sock.close()


def run_exec(params):
    require_root("cvm exec")
    return run_attached(params["name"], list(params["command"]), params["tty"])


def run_enter(params):
    require_root("cvm enter")
    return run_attached(params["name"], None, sys.stdin.isatty())


NAMESPACES = ("net", "uts", "ipc", "pid", "mount")


def run_nsrun(params):
    """Replace this process with the host binary, in the VM's namespaces (netd only says
    where the VM's init is)."""
    require_root("cvm nsrun")
    from .. import ns
    pid = call("init_pid", name=params["name"])
    ns.nsrun(pid, [n for n in NAMESPACES if params[n]], list(params["command"]),
             keep_caps=not params["drop_caps"])


def run_each(op, **fixed):
    def run(params):
        return render.each(call(op, names=list(params["names"]),
                                **dict((key, params[key]) for key in fixed)))
    return run


def run_resize(params):
    call("resize", name=params["name"], **dict((key, params[key]) for key in (
        "cpus", "memory", "pids", "cpuset", "cpu_shares")))
    render.out(params["name"])


def run_net_attach(params):
    from ..specfile import parse_nic_text
    result = call("net_attach", name=params["name"], nic=parse_nic_text(params["nic"]))
    render.out("%s %s" % (params["name"], result.get("name")))


def run_net_detach(params):
    call("net_detach", name=params["name"], ifname=params["ifname"])
    render.out("%s %s" % (params["name"], params["ifname"]))


def run_bridge_add(params):
    require_root("cvm bridge add")
    vxlan = None
    if params["vxlan"] is not None:
        vxlan = {"id": params["vxlan"], "port": params["vxlan_port"],
                 "local": params["vxlan_local"], "remotes": list(params["vxlan_remote"])}
    call("bridge_add", vxlan=vxlan, **dict((key, params[key]) for key in (
        "name", "address", "uplink", "pool", "mtu", "allow_overlap")))
    render.out(params["name"])


def run_bridge_rm(params):
    for name in params["names"]:
        call("bridge_rm", name=name)
        render.out(name)


def run_stats(params):
    """Rates over the last second from netd's sampler (or two sweeps here); Prometheus'
    text from a sweep of the files, here."""
    import time
    from ..monitor import VMStats, rates, stats_rows
    names = list(params["names"])
    if params["prometheus"] or params["textfile"]:
        from ..context import default_context
        from ..monitor import Monitor, exposition, write_textfile
        call("stats", names=names, interval=0)  # the names checked
        monitor = Monitor(default_context().store)
        if params["textfile"]:
            write_textfile(monitor, params["textfile"], names)
        else:
            sys.stdout.write(exposition(monitor, names).decode())
        return
    pairs = call("stats", names=names, interval=params["interval"])
    while True:
        now = [VMStats.from_dict(pair["now"]) for pair in pairs]
        before = {pair["before"]["name"]: VMStats.from_dict(pair["before"])
                  for pair in pairs if pair["before"]}
        if params["as_json"]:
            render.as_json([dict(s.to_dict(), rates=rates(s, before.get(s.name)))
                            for s in now])
            return
        render.stats(stats_rows(now, before), params["sort"], clear=bool(params["watch"]))
        if params["verbose"]:
            for stats in now:
                for what, problem in stats.errors:
                    sys.stderr.write("cvm: %s: %s: %s\n" % (stats.name, what, problem))
        if not params["watch"]:
            return
        time.sleep(params["watch"])
        previous = {pair["now"]["name"]: pair["now"] for pair in pairs}
        pairs = [dict(pair, before=previous.get(pair["now"]["name"]))
                 for pair in call("stats", names=names, interval=0)]


NAMES = Argument("names", nargs=-1)
TIMEOUT = Option(["-t", "--timeout"], "timeout", kind=int,
                 help="Seconds to wait for a clean shutdown.")

COMMANDS = [
    Command(["create"], [Argument("name", required=False)] + SPEC_OPTIONS + [
        Option(["-f", "--file"], "spec_file", metavar="PATH",
               help="Spec file (flags override it)."),
        Option(["--no-start"], "no_start", value=False, help="Create but do not start."),
        JSON, Argument("command", nargs=-1, required=False)],
        "Create a VM (and start it). A trailing `-- CMD...` sets the command for init none.",
        run_create),
    Command(["apply"], [Option(["-f", "--file"], "spec_file", required=True, metavar="PATH"),
                        Option(["--dry-run"], "dry_run", value=False,
                               help="Show the plan and every problem; change nothing."),
                        Option(["--keep-going"], "keep_going", value=False,
                               help="Make every change that can be made; report each failure "
                                    "(default: a failure undoes the changes made)."),
                        Option(["--recreate"], "recreate", value=False,
                               help="Recreate VMs whose change cannot be made live."),
                        JSON],
            "Make the VMs of a spec file exist and match it.", run_apply),
    Command(["start"], [NAMES], "Start VMs.", run_each("start")),
    Command(["stop"], [NAMES, TIMEOUT], "Stop VMs (a clean shutdown).",
            run_each("stop", timeout=True)),
    Command(["restart"], [NAMES, TIMEOUT], "Restart VMs.", run_each("restart", timeout=True)),
    Command(["rm"], [NAMES, Option(["-f", "--force"], "force", value=False,
                                   help="Remove running VMs too."),
                     Option(["--volumes"], "volumes", value=False,
                            help="Remove their volumes' data too (not a directory another "
                                 "VM uses).")],
            "Remove VMs: container, wiring and state (volume data stays unless --volumes).",
            run_each("rm", force=True, volumes=True)),
    Command(["ls"], [JSON], "List VMs.", listing("ls", render.vms)),
    Command(["inspect"], [Argument("name"), JSON],
            "Show a VM: its spec, its container and how it was set up.",
            lambda params: (render.as_json if params["as_json"] else render.vm)(
                call("inspect", name=params["name"]))),
    Command(["resize"], [Argument("name"), Option(["--cpus"], "cpus"),
                         Option(["--memory", "-m"], "memory"), Option(["--pids"], "pids"),
                         Option(["--cpuset"], "cpuset"), Option(["--cpu-shares"], "cpu_shares")],
            "Change a VM's limits live (swap stays off).", run_resize),
    Command(["exec"], [Option(["-t", "--tty"], "tty", value=False,
                              help="Give the command a terminal."),
                       Argument("name"), Argument("command", rest=True, metavar="CMD...")],
            "Run CMD inside the VM; stdio and exit code pass through: cvm exec NAME -- CMD..."
            "\n\nThe command has the VM's capabilities, seccomp profile and cgroups, as the "
            "VM's own processes do (Docker's exec starts it).", run_exec),
    Command(["nsrun"], [Option(["--" + n], n, value=False, help="Join the VM's %s namespace."
                               % n) for n in NAMESPACES] + [
        Option(["--drop-caps"], "drop_caps", value=False, off="--keep-caps", default=True,
               help="Run with the VM's capability set (the default), or with the host's "
                    "(full power)."),
        Argument("name"), Argument("command", rest=True, metavar="CMD...")],
        "Run a HOST binary in the VM's namespaces (default: --net): cvm nsrun NAME -- ss -lnt"
        "\n\nHost-privileged by design: it stays in the host's cgroups, root and environment. "
        "By default it has no more capabilities than the VM's processes; --keep-caps gives it "
        "all of root's on the host. With --mount, the binary comes from the VM.", run_nsrun),
    Command(["logs"], [Option(["-f", "--follow"], "follow", value=False,
                              help="Go on printing what the VM prints."),
                       Option(["-b", "--boot"], "this_boot", value=False,
                              help="Only this boot (default: every boot since the VM's "
                                   "container was made)."),
                       Argument("name")],
            "What the VM printed on its console: its init's boot and shutdown messages, and "
            "what its services log to the console.", run_logs),
    Command(["enter"], [Argument("name")],
            "An interactive login shell inside the VM, with the VM's own privileges and "
            "limits.", run_enter),
    Command(["net", "attach"], [Argument("name"), Option(
        ["--nic"], "nic", required=True, metavar="mode=...,link=...,ip=...")],
        "Add a NIC to a VM (wired at once if it runs) and keep it in its spec.",
        run_net_attach),
    Command(["net", "detach"], [Argument("name"), Argument("ifname")],
            "Remove a NIC from a VM and from its spec.", run_net_detach),
    Command(["net", "ls"], [Argument("name", required=False), JSON],
            "List NICs: host side, VM side, mode, addresses, MAC, state.",
            listing("net_ls", render.nics, name=True)),
    Command(["bridge", "add"], [
        Argument("name"),
        Option(["--address"], "address", help="Host address on the bridge, e.g. "
                                              "198.51.100.1/24."),
        Option(["--uplink"], "uplink", help="Enslave this interface; its addresses move to "
                                            "the bridge."),
        Option(["--pool"], "pool", help="Addresses for ip=auto, e.g. "
                                        "198.51.100.100-198.51.100.199."),
        Option(["--mtu"], "mtu", kind=int),
        Option(["--allow-overlap"], "allow_overlap", value=False,
               help="Let the subnet overlap another interface's or bridge's (on purpose)."),
        Option(["--vxlan"], "vxlan", metavar="VNI", help="Make it an overlay across hosts: "
                                                         "a VXLAN port with this VNI."),
        Option(["--vxlan-port"], "vxlan_port", default="4789", help="VXLAN's UDP port."),
        Option(["--vxlan-local"], "vxlan_local", metavar="ADDRESS",
               help="This host's underlay address."),
        Option(["--vxlan-remote"], "vxlan_remote", multiple=True, metavar="ADDRESS",
               help="Another host on the overlay (repeatable).")],
        "Create (or adopt) a bridge; with --vxlan, an overlay shared with other hosts.",
        run_bridge_add),
    Command(["bridge", "rm"], [NAMES], "Remove bridges cvm made (refused while VMs use them).",
            run_bridge_rm),
    Command(["bridge", "ls"], [JSON], "List the bridges cvm manages.",
            listing("bridge_ls", render.bridges)),
    Command(["image", "ls"], [JSON], "List cvm images.", listing("image_ls", render.images)),
    Command(["stats"], [
        Argument("names", nargs=-1, required=False),
        Option(["--watch"], "watch", kind=float, bare=2.0, metavar="[SECONDS]",
               help="Refresh in place (every 2 s by default)."),
        Option(["--sort"], "sort", choices=["cpu", "mem", "net", "name"], default="name"),
        Option(["--json"], "as_json", value=False, help="Every counter, with rates."),
        Option(["--prometheus"], "prometheus", value=False,
               help="cAdvisor-style Prometheus text format."),
        Option(["--textfile"], "textfile", metavar="FILE",
               help="Write the Prometheus text here (atomically, for node_exporter's "
                    "textfile collector)."),
        Option(["--interval"], "interval", kind=float, default=0.5,
               help="Without cvm netd: seconds between the two sweeps that give rates."),
        Option(["--verbose", "-v"], "verbose", value=False,
               help="Name the files that could not be read.")],
        "Resource use of VMs, read from their cgroups (like docker stats, far cheaper). CPU "
        "% is over the last second (cvm netd keeps a sample; without it, two sweeps).",
        run_stats),
]
