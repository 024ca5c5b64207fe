"""The `cvm` command: a thin layer over the Python API.

Each command imports what it needs when it runs, so that short commands stay short.
Errors are cvm's typed exceptions; main() prints them as one line and exits non-zero.
"""

import json
import os
import sys

import click

from . import __version__
from .errors import CvmError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _echo_json(data):
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="cvm")
def cli():
    """Run Docker containers as if they were virtual machines."""


# ---------------------------------------------------------------- create / apply

SPEC_FLAGS = [
    click.option("--image", help="Image to boot (see `cvm image ls`)."),
    click.option("--hostname", help="Hostname (default: the VM's name)."),
    click.option("--cpus", help="CPU quota, e.g. 1.5."),
    click.option("--cpuset", help="CPUs the VM may run on, e.g. 0-1."),
    click.option("--cpu-shares", help="Relative CPU weight (2-262144)."),
    click.option("--memory", "-m", help="Memory limit, e.g. 512m, 4g, 1.5g."),
    click.option("--swap", help="Swap on top of memory (default 0: no swap)."),
    click.option("--pids", help="Process limit (default 4096; 'unlimited')."),
    click.option("--device-read-bps", multiple=True, metavar="DEV:RATE"),
    click.option("--device-write-bps", multiple=True, metavar="DEV:RATE"),
    click.option("--device-read-iops", multiple=True, metavar="DEV:N"),
    click.option("--device-write-iops", multiple=True, metavar="DEV:N"),
    click.option("--blkio-weight", help="Block IO weight (10-1000)."),
    click.option("--volume", "-v", "volumes", multiple=True, metavar="HOST:GUEST[:ro]",
                 help="Host directory (created if missing) mounted in the VM."),
    click.option("--init", help="auto (default), systemd, compat or none."),
    click.option("--env", "-e", multiple=True, metavar="KEY=VALUE"),
    click.option("--label", "-l", "labels", multiple=True, metavar="KEY=VALUE"),
    click.option("--restart", help="Restart policy (default unless-stopped)."),
    click.option("--dns", multiple=True, help="DNS server (repeatable)."),
    click.option("--search", multiple=True, help="DNS search domain (repeatable)."),
    click.option("--ssh-key", "ssh_key_files", multiple=True, metavar="FILE",
                 help="Public key file allowed to log in as root (repeatable)."),
    click.option("--nic", "nics", multiple=True, metavar="mode=bridge,link=br0,ip=CIDR,...",
                 help="A NIC (repeatable); see `cvm net --help`."),
    click.option("--lxcfs/--no-lxcfs", default=None, help="Bind LXCFS's /proc files."),
    click.option("--tune", multiple=True, help="Service to size to the VM (repeatable)."),
]


def spec_flags(func):
    for option in reversed(SPEC_FLAGS):
        func = option(func)
    return func


def _flags_to_raw(flags):
    raw = {}
    for key, value in flags.items():
        if key == "ssh_key_files":
            keys = []
            for path in value:
                try:
                    with open(path) as handle:
                        keys.append(handle.read())
                except OSError as exc:
                    from .errors import SpecError
                    raise SpecError("ssh_keys", "cannot read %s: %s" % (path, exc.strerror)) \
                        from None
            value, key = keys, "ssh_keys"
        if value is None or value == ():
            continue
        raw[key] = list(value) if isinstance(value, tuple) else value
    return raw


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("name", required=False)
@spec_flags
@click.option("-f", "--file", "spec_file", type=click.Path(), help="Spec file (flags override it).")
@click.option("--no-start", is_flag=True, help="Create but do not start.")
@click.option("--json", "as_json", is_flag=True)
@click.argument("command", nargs=-1)
def create(name, spec_file, no_start, as_json, command, **flags):
    """Create a VM (and start it). A trailing `-- CMD...` sets the command for init none."""
    from .specfile import load_file, merge
    raw, where = {}, ""
    if spec_file:
        entries = load_file(spec_file)
        if name:
            entries = [e for e in entries if e[1].get("name") in (None, name)]
        if len(entries) != 1:
            raise CvmError("%s: expected exactly one VM%s; use `cvm apply -f` for many" % (
                spec_file, " named %s" % name if name else ""))
        where, raw = entries[0]
        where = "" if name else where
    overrides = _flags_to_raw(flags)
    if name:
        overrides["name"] = name
    if command:
        overrides["command"] = list(command)
    _require_root("cvm create")
    result = _call("create", spec=merge(raw, overrides), start=not no_start, where=where,
                   details=as_json)
    if as_json:
        _echo_json(result)
    else:
        click.echo(result["name"])


def _require_root(what):
    from .errors import PermissionDenied
    if os.geteuid() != 0:
        raise PermissionDenied("%s needs root (it enters another process's namespaces); run "
                               "it as root or with sudo" % what)


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option("-f", "--file", "spec_file", required=True, type=click.Path())
@click.option("--dry-run", is_flag=True, help="Show the plan only.")
@click.option("--recreate", is_flag=True, help="Recreate VMs whose change cannot be made live.")
@click.option("--json", "as_json", is_flag=True)
def apply(spec_file, dry_run, recreate, as_json):
    """Make the VMs of a spec file exist and match it."""
    from .specfile import load_file
    specs = [{"where": where, "spec": raw} for where, raw in load_file(spec_file)]
    items = _call("plan", specs=specs, recreate=recreate)
    if as_json and dry_run:
        _echo_json(items)
        return
    if not as_json:
        _print_plan(items)
    blocked = [i for i in items if i["action"] == "blocked"]
    if dry_run:
        return
    if blocked:
        raise CvmError("%s: %s needs a recreate (%s changed); rerun with --recreate" % (
            spec_file, blocked[0]["name"], ", ".join(blocked[0]["recreate_fields"])))
    done = _call("apply", specs=specs, recreate=recreate)
    counts = {}
    for item in done:
        counts[item["action"]] = counts.get(item["action"], 0) + 1
    if as_json:
        _echo_json(done)
    else:
        click.echo("created %d, changed %d, recreated %d, unchanged %d" % (
            counts.get("create", 0), counts.get("change", 0), counts.get("recreate", 0),
            counts.get("unchanged", 0)))


def _print_plan(items):
    symbols = {"create": "+", "change": "~", "recreate": "!", "unchanged": "=", "blocked": "x"}
    for item in items:
        line = "%s %s  %s" % (symbols[item["action"]], item["name"], item["action"])
        if item["action"] == "blocked":
            line += " (needs --recreate: %s)" % ", ".join(item["recreate_fields"])
        click.echo(line)
        for key, change in item["changes"].items():
            click.echo("    %s: %s -> %s" % (key, _short(change["old"]), _short(change["new"])))


def _short(value):
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) < 70 else text[:67] + "..."


# ---------------------------------------------------------------- lifecycle


def _store():
    from .state import Store
    return Store()


def _call(op, **args):
    """Run an operation in the daemon if it answers, else here (cvm.client)."""
    from . import client
    return client.call(_store(), op, args)


def _each(op, names, **args):
    from .errors import from_dict
    failed = 0
    for result in _call(op, names=list(names), **args):
        if result["ok"]:
            click.echo(result["name"])
        else:
            error = from_dict(result["error"])
            click.echo("cvm: %s" % error, err=True)
            failed = error.exit_code
    if failed:
        sys.exit(failed)


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("names", nargs=-1, required=True)
def start(names):
    """Start VMs."""
    _each("start", names)


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("names", nargs=-1, required=True)
@click.option("-t", "--timeout", type=int, help="Seconds to wait for a clean shutdown.")
def stop(names, timeout):
    """Stop VMs (a clean shutdown)."""
    _each("stop", names, timeout=timeout)


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("names", nargs=-1, required=True)
@click.option("-t", "--timeout", type=int)
def restart(names, timeout):
    """Restart VMs."""
    _each("restart", names, timeout=timeout)


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Remove running VMs too.")
def rm(names, force):
    """Remove VMs: container, wiring and state (volume data stays)."""
    _each("rm", names, force=force)


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option("--json", "as_json", is_flag=True)
def ls(as_json):
    """List VMs."""
    from .sizes import format_size
    from .table import human_duration, render
    rows = _call("ls")
    if as_json:
        _echo_json(rows)
        return
    click.echo(render(
        ["NAME", "STATUS", "IMAGE", "CPUS", "MEMORY", "IPS", "UPTIME"],
        [[r["name"], r["status"], r["image"], "%g" % r["cpus"] if r["cpus"] else "-",
          format_size(r["memory"]) if r["memory"] else "-", ",".join(r["ips"]) or "-",
          human_duration(r["uptime_seconds"])] for r in rows]))


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def inspect(name, as_json):
    """Show a VM: its spec, its container and how it was set up."""
    data = _call("inspect", name=name)
    if as_json:
        _echo_json(data)
        return
    import yaml
    click.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip())


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("name")
@click.option("--cpus")
@click.option("--memory", "-m")
@click.option("--pids")
@click.option("--cpuset")
@click.option("--cpu-shares")
def resize(name, cpus, memory, pids, cpuset, cpu_shares):
    """Change a VM's limits live (swap stays off)."""
    _call("resize", name=name, cpus=cpus, memory=memory, pids=pids, cpuset=cpuset,
          cpu_shares=cpu_shares)
    click.echo(name)


# ---------------------------------------------------------------- inside the VM


def _running_vm(name):
    from . import api
    from .errors import NotFound
    vm = api.get(name)
    if not vm.container_id:
        raise NotFound("VM %s has no container" % name)
    return vm


def _attached(vm, argv, tty):
    """Run argv in the VM with the caller's stdio; exit with its exit code."""
    from . import relay
    process, sock = vm.start_process(argv, tty=tty, env={"TERM": os.environ.get(
        "TERM", "xterm")} if tty else None)
    try:
        relay.attach(sock, tty, resize=lambda rows, columns: vm.ctx.engine.exec_resize(
            process, rows, columns))
    finally:
        sock.close()
    sys.exit(vm.process_exit_code(process))


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("name")
def enter(name):
    """An interactive login shell inside the VM, with the VM's own privileges and limits."""
    from . import ns
    vm = _running_vm(name)
    _attached(vm, ns.login_command(vm.pid), tty=sys.stdin.isatty())


@cli.command("exec", context_settings=dict(CONTEXT_SETTINGS, ignore_unknown_options=True))
@click.argument("name")
@click.option("-t", "--tty", is_flag=True, help="Give the command a terminal.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(name, tty, command):
    """Run CMD inside the VM; stdio and exit code pass through: cvm exec NAME -- CMD...

    The command has the VM's capabilities, seccomp profile and cgroups, as the VM's own
    processes do (Docker's exec starts it)."""
    _attached(_running_vm(name), list(command), tty=tty)


@cli.command(context_settings=dict(CONTEXT_SETTINGS, ignore_unknown_options=True))
@click.argument("name")
@click.option("--net", "namespaces", flag_value="net", multiple=True)
@click.option("--uts", "namespaces", flag_value="uts", multiple=True)
@click.option("--ipc", "namespaces", flag_value="ipc", multiple=True)
@click.option("--pid", "namespaces", flag_value="pid", multiple=True)
@click.option("--mount", "namespaces", flag_value="mount", multiple=True)
@click.option("--drop-caps/--keep-caps", default=True, show_default=True,
              help="Run with the VM's capability set, or with the host's (full power).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def nsrun(name, namespaces, drop_caps, command):
    """Run a HOST binary in the VM's namespaces (default: --net): cvm nsrun NAME -- ss -lnt

    \b
    Host-privileged by design: it stays in the host's cgroups, root and environment.
    By default it has no more capabilities than the VM's processes; --keep-caps gives
    it all of root's on the host. With --mount, the binary comes from the VM."""
    from . import ns
    vm = _running_vm(name)
    ns.nsrun(vm.pid, list(namespaces), list(command), keep_caps=not drop_caps)


# ---------------------------------------------------------------- the VM's own numbers


def _tool_command(tool):
    def command(name, args):
        from .procview.sources import VMSource
        import importlib
        vm = _running_vm(name)
        module = importlib.import_module("cvm.procview." + tool)
        sys.argv[0] = tool
        sys.exit(module.main(list(args), source=VMSource.of_pid(vm.pid)))

    command.__name__ = tool
    command.__doc__ = ("%s of a VM, from the host: the VM's cgroup, the original's layout "
                       "and flags (cvm %s NAME -- -h for them)." % (tool, tool))
    command = click.argument("args", nargs=-1, type=click.UNPROCESSED)(command)
    command = click.argument("name")(command)
    return cli.command(tool, context_settings=dict(CONTEXT_SETTINGS, ignore_unknown_options=True,
                                                   help_option_names=["--cvm-help"]))(command)


for _tool in ("free", "top", "mpstat", "uptime", "vmstat"):
    _tool_command(_tool)


@cli.group(context_settings=CONTEXT_SETTINGS)
def tools():
    """cvm's cgroup-aware free/top/mpstat/uptime/vmstat inside containers."""


@tools.command("install", context_settings=CONTEXT_SETTINGS)
@click.argument("containers", nargs=-1, required=True)
def tools_install(containers):
    """Copy the tools into running containers (any container; needs its python3)."""
    from .api import default_context
    from .images import tools_files
    engine = default_context().engine
    files = tools_files()
    for container in containers:
        engine.put_files(container, files)
        click.echo(container)


# ---------------------------------------------------------------- tuning


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("name")
@click.argument("service")
@click.option("--show", is_flag=True, help="Show the settings and the diff (the default).")
@click.option("--apply", "apply_", is_flag=True, help="Write the files and check them.")
@click.option("--reload", is_flag=True, help="Reload the service (implies --apply).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a computed value (kept for later re-tunes).")
def tune(name, service, show, apply_, reload, sets):
    """Size SERVICE (nginx, redis, mysql, php-fpm, jvm) to the VM's limits."""
    from . import api, tune as tuning
    vm = api.get(name)
    definition = tuning.service_named(service)
    overrides = tuning.parse_sets(definition, sets)
    if apply_ or reload:
        result, reported = tuning.apply(vm, service, overrides, reload=reload,
                                        ctx=api.default_context())
        for path, _, _ in result.files:
            click.echo("wrote %s" % path)
        if reported:
            click.echo(reported.rstrip())
        return
    result, _ = tuning.plan(vm, service, overrides)
    for key, value in sorted(result.settings.items()):
        click.echo("%s = %s" % (key, value))
    diff = result.diff()
    click.echo(diff.rstrip() if diff else "(the VM already has these settings)")


# ---------------------------------------------------------------- monitoring


def _docker_size(value, binary=False):
    """docker stats' sizes: binary for memory (512MiB, 1.5GiB), SI for IO (1.2kB, 3.4MB)."""
    base, units, number = (1024.0, ("B", "KiB", "MiB", "GiB", "TiB"), "%.4g%s") if binary \
        else (1000.0, ("B", "kB", "MB", "GB", "TB"), "%.3g%s")
    for unit in units:
        if abs(value) < base or unit == units[-1]:
            return ("%.0f%s" if unit == "B" else number) % (value, unit)
        value /= base


def stats_rows(now, before):
    from .monitor import rates
    from .table import human_duration
    rows = []
    for stats in now:
        rate = rates(stats, before.get(stats.name)) if before else None
        if stats.status != "running":
            rows.append({"name": stats.name, "status": stats.status, "sort": (0, 0, 0)})
            continue
        limit = stats.memory_limit
        memory_pct = 100.0 * stats.memory_working_set / limit if limit else None
        net_in = sum(n["rx_bytes"] for n in stats.nics.values())
        net_out = sum(n["tx_bytes"] for n in stats.nics.values())
        block_in = sum(d["rbytes"] for d in stats.block.values())
        block_out = sum(d["wbytes"] for d in stats.block.values())
        cpu = rate["cpu_percent"] if rate else None
        rows.append({
            "name": stats.name, "status": "running",
            "cpu": "%.2f%%" % cpu if cpu is not None else "--",
            "quota": "%.2f%%" % rate["cpu_quota_percent"] if rate and rate[
                "cpu_quota_percent"] is not None else "--",
            "memory": "%s / %s" % (_docker_size(stats.memory_working_set, binary=True),
                                   _docker_size(limit, binary=True) if limit else "unlimited"),
            "memory_pct": "%.2f%%" % memory_pct if memory_pct is not None else "--",
            "net": "%s / %s" % (_docker_size(net_in), _docker_size(net_out)),
            "block": "%s / %s" % (_docker_size(block_in), _docker_size(block_out)),
            "pids": "%d%s" % (stats.pids, " / %d" % stats.pids_limit if stats.pids_limit
                              else ""),
            "uptime": human_duration(stats.uptime),
            "sort": (cpu or 0.0, stats.memory_working_set, net_in + net_out)})
    return rows


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("names", nargs=-1)
@click.option("--watch", "watch", is_flag=False, flag_value=2.0, default=None, type=float,
              metavar="[SECONDS]", help="Refresh in place (every 2 s by default).")
@click.option("--sort", type=click.Choice(["cpu", "mem", "net", "name"]), default="name")
@click.option("--json", "as_json", is_flag=True, help="Every counter, with rates.")
@click.option("--prometheus", is_flag=True, help="cAdvisor-style Prometheus text format.")
@click.option("--textfile", type=click.Path(), help="Write the Prometheus text here "
              "(atomically, for node_exporter's textfile collector).")
@click.option("--interval", default=0.5, show_default=True,
              help="Seconds between the two sweeps that give rates.")
@click.option("--verbose", "-v", is_flag=True, help="Name the files that could not be read.")
def stats(names, watch, sort, as_json, prometheus, textfile, interval, verbose):
    """Resource use of VMs, read from their cgroups (like docker stats, far cheaper)."""
    import time
    from .monitor import Monitor, exposition, write_textfile
    from .table import render
    monitor = Monitor(_store())
    if prometheus:
        sys.stdout.write(exposition(monitor).decode())
        return
    if textfile:
        write_textfile(monitor, textfile)
        return
    previous = {s.name: s for s in monitor.sweep(names)}
    unknown = [n for n in names if n not in previous]
    if unknown:
        from .errors import NotFound
        raise NotFound("no VM named %r (see `cvm ls`)" % unknown[0])
    keys = {"cpu": 0, "mem": 1, "net": 2}
    while True:
        time.sleep(watch if watch else interval)
        now = monitor.sweep(names)
        if as_json:
            from .monitor import rates
            _echo_json([dict(s.to_dict(), rates=rates(s, previous.get(s.name))) for s in now])
            return
        rows = stats_rows(now, previous)
        if sort == "name":
            rows.sort(key=lambda r: r["name"])
        else:
            rows.sort(key=lambda r: r["sort"][keys[sort]], reverse=True)
        table = render(["NAME", "CPU %", "QUOTA %", "MEM USAGE / LIMIT", "MEM %", "NET I/O",
                        "BLOCK I/O", "PIDS", "UPTIME"],
                       [[r["name"], r.get("cpu", r["status"]), r.get("quota", ""),
                         r.get("memory", ""), r.get("memory_pct", ""), r.get("net", ""),
                         r.get("block", ""), r.get("pids", ""), r.get("uptime", "")]
                        for r in rows])
        if watch:
            click.echo("\033[H\033[2J" + table, nl=True)
        else:
            click.echo(table)
        if verbose:
            for s in now:
                for what, problem in s.errors:
                    click.echo("cvm: %s: %s: %s" % (s.name, what, problem), err=True)
        if not watch:
            return
        previous = {s.name: s for s in now}


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option("--listen", default="127.0.0.1:9730", show_default=True, metavar="ADDR:PORT")
@click.option("--cache", default=1.0, show_default=True, help="Seconds a sweep serves scrapes.")
@click.option("--install-unit", is_flag=True, help="Install the systemd unit and exit.")
def exporter(listen, cache, install_unit):
    """Serve /metrics (cAdvisor's names) for Prometheus, sweeping on scrape."""
    if install_unit:
        from .templates import install_systemd_unit
        click.echo(install_systemd_unit("cvm-exporter.service", listen=listen))
        return
    from .monitor import Exporter, Monitor
    exporter_ = Exporter(Monitor(_store()), listen, cache)
    try:
        server = exporter_.serve()
    except OSError as exc:
        raise CvmError("listen: cannot listen on %s: %s" % (listen, exc.strerror)) from None
    click.echo("serving /metrics on %s" % listen, err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


# ---------------------------------------------------------------- host


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option("--json", "as_json", is_flag=True)
def doctor(as_json):
    """Check that this host is ready to run VMs."""
    from . import doctor as doctor_module
    from .table import render
    checks = doctor_module.run_checks()
    if as_json:
        _echo_json([c._asdict() for c in checks])
    else:
        click.echo(render(["CHECK", "STATUS", "DETAIL", "FIX"],
                          [[c.name, c.status, c.detail, c.fix] for c in checks]))
    if any(c.status == "FAIL" for c in checks):
        sys.exit(1)


# ---------------------------------------------------------------- network


@cli.group(context_settings=CONTEXT_SETTINGS)
def net():
    """NICs of VMs: attach, detach, list.

    \b
    A NIC is given as key=value pairs, e.g.
      mode=bridge,link=br0,ip=198.51.100.10/24,gw=198.51.100.1
    Modes: bridge (veth into a host bridge), routed (veth, host routes the /32 and
    answers ARP/NDP on link=UPLINK), macvlan, ipvlan (on parent link=), sriov
    (a VF of PF link=, vf=N or the first free). Common keys: name, ip, ip6, gw,
    gw6, mac, mtu, routes ("CIDR via ADDR", repeatable). Per mode: bridge hairpin,
    host_name, vlan; macvlan macvlan_mode, vlan; ipvlan ipvlan_mode, vlan; sriov
    vf, vlan, qos, spoofchk, trust, link_state, min_rate, max_rate.
    """


@net.command("attach", context_settings=CONTEXT_SETTINGS)
@click.argument("name")
@click.option("--nic", required=True, metavar="mode=...,link=...,ip=...")
def net_attach(name, nic):
    """Add a NIC to a VM (wired at once if it runs) and keep it in its spec."""
    from .specfile import parse_nic_text
    result = _call("net_attach", name=name, nic=parse_nic_text(nic))
    click.echo("%s %s" % (name, result.get("name")))


@net.command("detach", context_settings=CONTEXT_SETTINGS)
@click.argument("name")
@click.argument("ifname")
def net_detach(name, ifname):
    """Remove a NIC from a VM and from its spec."""
    _call("net_detach", name=name, ifname=ifname)
    click.echo("%s %s" % (name, ifname))


@net.command("ls", context_settings=CONTEXT_SETTINGS)
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True)
def net_ls(name, as_json):
    """List NICs: host side, VM side, mode, addresses, MAC, state."""
    from .table import render
    rows = _call("net_ls", name=name)
    if as_json:
        _echo_json(rows)
        return
    click.echo(render(["VM", "VM SIDE", "HOST SIDE", "MODE", "ADDRESSES", "MAC", "STATE"],
                      [[r["vm"], r["vm_side"], r.get("host_side"), r["mode"],
                        ",".join(r["addresses"]) or "-", r["mac"], r["state"]] for r in rows]))


@cli.group(context_settings=CONTEXT_SETTINGS)
def bridge():
    """Host bridges for VMs (persisted and recreated at boot by cvm netd)."""


@bridge.command("add", context_settings=CONTEXT_SETTINGS)
@click.argument("name")
@click.option("--address", help="Host address on the bridge, e.g. 198.51.100.1/24.")
@click.option("--uplink", help="Enslave this interface; its addresses move to the bridge.")
@click.option("--pool", help="Addresses for ip=auto, e.g. 198.51.100.100-198.51.100.199.")
@click.option("--mtu", type=int)
def bridge_add(name, address, uplink, pool, mtu):
    """Create (or adopt) a bridge."""
    _require_root("cvm bridge add")
    _call("bridge_add", name=name, address=address, uplink=uplink, pool=pool, mtu=mtu)
    click.echo(name)


@bridge.command("rm", context_settings=CONTEXT_SETTINGS)
@click.argument("names", nargs=-1, required=True)
def bridge_rm(names):
    """Remove bridges cvm made (refused while VMs use them)."""
    for name in names:
        _call("bridge_rm", name=name)
        click.echo(name)


@bridge.command("ls", context_settings=CONTEXT_SETTINGS)
@click.option("--json", "as_json", is_flag=True)
def bridge_ls(as_json):
    """List the bridges cvm manages."""
    from .table import render
    rows = _call("bridge_ls")
    if as_json:
        _echo_json(rows)
        return
    click.echo(render(["NAME", "STATE", "ADDRESS", "POOL", "UPLINK", "PORTS"],
                      [[r["name"], r["state"], r["address"] or "-", r["pool"] or "-",
                        r["uplink"] or "-", len(r["ports"])] for r in rows]))


def _running(pid):
    from .procfs import process_stat
    try:
        return process_stat(pid)[3] != "Z"  # a zombie has exited; its parent reaps it
    except OSError:
        return False


def _stop_netd():
    import signal
    import time
    from .client import daemon_status
    running = daemon_status(_store())
    if running is None:
        click.echo("cvm netd is not running")
        return
    os.kill(running["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 60  # it finishes the wiring it has in hand
    while _running(running["pid"]):
        if time.monotonic() > deadline:
            raise CvmError("cvm netd (pid %d) did not exit within 60 s" % running["pid"])
        time.sleep(0.1)
    click.echo("cvm netd (pid %d) stopped" % running["pid"])


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option("--once", is_flag=True, help="Reconcile everything, then exit.")
@click.option("--install-unit", is_flag=True, help="Install the systemd unit and exit.")
@click.option("--workers", default=8, show_default=True, help="VMs wired in parallel.")
@click.option("--status", is_flag=True, help="Exit 0 if a netd answers for this state and "
              "runs this cvm's code, 3 if it runs older code, 1 if none answers.")
@click.option("--stop", is_flag=True, help="Stop the netd that answers for this state "
              "(one running older code, say) and wait for it to exit.")
def netd(once, install_unit, workers, status, stop):
    """The network daemon: re-wires VMs on every start, serves the CLI."""
    import logging
    from . import ns
    if stop:
        _stop_netd()
        return
    if status:
        from .client import daemon_status
        running = daemon_status(_store())
        if running is None:
            click.echo("cvm netd is not running")
            sys.exit(1)
        if not running["current"]:
            click.echo("cvm netd is running older code (pid %d): restart it" % running["pid"])
            sys.exit(3)
        click.echo("cvm netd is running (pid %d)" % running["pid"])
        return
    ns.require_root("cvm netd")
    if install_unit:
        from .templates import install_systemd_unit
        click.echo(install_systemd_unit("cvm-netd.service"))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s netd: %(message)s")
    from .api import Context
    from .net.daemon import Daemon
    daemon = Daemon(Context(), workers=workers)
    if once:
        daemon.reconcile()
        daemon.pool.shutdown()
        return
    import signal
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        daemon.run()
    except KeyboardInterrupt:
        pass


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("output", type=click.Path(dir_okay=False))
def dist(output):
    """Write cvm's source as a reproducible tarball (for installing other hosts)."""
    from .dist import write_source_tarball
    changed = write_source_tarball(output)
    _echo_json({"path": os.path.abspath(output), "changed": changed})


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option("--inventory", "-i", required=True, type=click.Path(exists=True),
              help="Inventory of container hosts and their cvm_vms.")
@click.option("--playbook", default="site.yml", show_default=True,
              help="site.yml, host.yml, images.yml, vms.yml, or a path.")
@click.option("--limit", "-l", metavar="PATTERN", help="Only these hosts.")
@click.option("--check", is_flag=True, help="Report what would change; change nothing.")
@click.option("--diff", is_flag=True, help="Show field-by-field changes.")
@click.option("--tags", "-t", multiple=True, help="Only plays/tasks with these tags.")
@click.option("--extra-vars", "-e", "extra", multiple=True, metavar="KEY=VALUE")
@click.option("--json", "as_json", is_flag=True, help="Print the per-host results as JSON.")
def provision(inventory, playbook, limit, check, diff, tags, extra, as_json):
    """Run cvm's playbooks (site.yml) through ansible-runner, with live progress."""
    from .provisioning import LiveDisplay, provision as run_provision
    from .table import render
    from .spec import split_key_value
    extravars = dict(split_key_value("extra-vars", item) for item in extra)
    result = run_provision(inventory, playbook, limit=limit, check=check, diff=diff,
                           tags=list(tags), extravars=extravars,
                           on_change=None if as_json else LiveDisplay())
    if as_json:
        _echo_json(result.to_dict())
    else:
        rows = [[h.name, h.ok, h.changed, h.failed, h.unreachable, h.skipped]
                for h in result.hosts.values()]
        click.echo(render(["HOST", "OK", "CHANGED", "FAILED", "UNREACHABLE", "SKIPPED"], rows))
    if not result.ok:
        failed = [h.name for h in result.hosts.values() if h.failed or h.unreachable]
        raise CvmError("provision: failed on %s (ansible-playbook %s)" % (
            ", ".join(failed) or "the controller", result.status))


# ---------------------------------------------------------------- images


@cli.group(context_settings=CONTEXT_SETTINGS)
def image():
    """Build, import, list and remove OS images."""


@image.command("build", context_settings=CONTEXT_SETTINGS)
@click.argument("distro")
@click.option("--base", help="Registry base image already on this host (e.g. rockylinux:9).")
@click.option("--rootfs", type=click.Choice(["debootstrap"]), help="Build the base offline.")
@click.option("--tag", help="Image tag (default cvm/DISTRO:latest).")
@click.option("--extra-packages", multiple=True, help="More packages (repeatable, or a,b,c).")
def image_build(distro, base, rootfs, tag, extra_packages):
    """Build an OS image: the distro's base plus the cvm layer."""
    from . import images
    extras = [p for item in extra_packages for p in item.split(",") if p]
    result = images.build(distro, base=base, rootfs=rootfs, tag=tag, extra_packages=extras,
                          progress=images.print_progress())
    click.echo("", err=True)
    click.echo(result)


@image.command("import", context_settings=CONTEXT_SETTINGS)
@click.option("--rootfs", "tarball", required=True, type=click.Path(),
              help="Tarball of a VM's root filesystem (tar, tar.gz).")
@click.option("--distro", required=True, help="What the VM runs (e.g. centos7).")
@click.option("--tag", required=True)
def image_import(tarball, distro, tag):
    """Turn a real VM's root filesystem into a cvm image (the migration path)."""
    from . import images
    click.echo(images.import_vm(tarball, distro, tag, progress=images.print_progress()))


@image.command("render", context_settings=CONTEXT_SETTINGS)
@click.argument("distro")
@click.option("--base", help="Base image (default: the recipe's registry image).")
@click.option("--out", type=click.Path(), help="Write the whole build context here.")
def image_render(distro, base, out):
    """Print (or write out) the Dockerfile cvm would build for a distro."""
    from . import images
    recipe = images.load_recipe(distro)
    rendered = images.render(recipe, base or recipe["registry_base"],
                             "registry image %s" % (base or recipe["registry_base"]), True)
    if out:
        os.makedirs(out, exist_ok=True)
        images.write_context(out, recipe, rendered)
    click.echo(rendered["Dockerfile"], nl=False)


@image.command("ls", context_settings=CONTEXT_SETTINGS)
@click.option("--json", "as_json", is_flag=True)
def image_ls(as_json):
    """List cvm images."""
    from . import images
    from .sizes import format_size
    from .table import render
    rows = images.ls()
    if as_json:
        _echo_json(rows)
        return
    click.echo(render(["TAG", "ID", "DISTRO", "VERSION", "INIT", "BUILT", "SIZE"],
                      [[r["tag"], r["id"], r["distro"], r["version"], r["init"], r["built"],
                        format_size(r["size"] or 0)] for r in rows]))


@image.command("rm", context_settings=CONTEXT_SETTINGS)
@click.argument("refs", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True)
def image_rm(refs, force):
    """Remove images."""
    from . import images
    for ref in refs:
        images.rm(ref, force=force)
        click.echo(ref)


@image.command("ensure", context_settings=CONTEXT_SETTINGS)
@click.argument("names", nargs=-1, required=True)
def image_ensure(names):
    """Build the named images (busybox, or distros offline) if missing or stale."""
    from . import images
    for tag in images.ensure(names, progress=images.print_progress()):
        click.echo("\nbuilt %s" % tag, err=True)


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option("--clean", is_flag=True, help="Remove the demo's VMs and bridge.")
def demo(clean):
    """Create a few VMs on a host-only bridge and show them working."""
    from . import demo as demo_module, ns
    ns.require_root("cvm demo")
    sys.exit(demo_module.main(clean=clean))


def _is_cgroup_error(exc):
    # Only a command that imported cvm.cgroups can raise its error; do not import it here.
    cgroups = sys.modules.get(__package__ + ".cgroups")
    return cgroups is not None and isinstance(exc, cgroups.CgroupError)


def run(argv=None):
    """Run one `cvm` command; its exit code. Errors become one line on stderr."""
    try:
        result = cli.main(args=argv, prog_name="cvm", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except CvmError as exc:
        click.echo("cvm: %s" % exc, err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:  # a bug: say so in one line; CVM_DEBUG=1 shows where
        if _is_cgroup_error(exc):
            click.echo("cvm: %s" % exc, err=True)
            return 1
        if os.environ.get("CVM_DEBUG"):
            raise
        click.echo("cvm: internal error: %s: %s (run with CVM_DEBUG=1 for the traceback)" % (
            type(exc).__name__, exc), err=True)
        return 70


def main(argv=None):
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
