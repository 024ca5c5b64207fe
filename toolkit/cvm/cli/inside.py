"""Commands about what runs inside VMs, from the host: the VM's own numbers (free, top,
mpstat, uptime, vmstat), the tools in other containers, service sizing. (`cvm nsrun`,
`cvm exec` and `cvm enter` are in cvm.cli.served.)"""

import contextlib
import os
import sys

import click

from . import hosttools
from .group import CONTEXT_SETTINGS, cli


# ---------------------------------------------------------------- the VM's own numbers


def _tool_command(tool):
    def command(args):
        sys.exit(hosttools.run(tool, args))

    command.__name__ = tool
    command.__doc__ = ("%s of a VM, from the host: the VM's cgroup, the original's layout "
                       "and flags (cvm %s --help for them)." % (tool, tool))
    command = click.argument("args", nargs=-1, type=click.UNPROCESSED)(command)
    settings = dict(CONTEXT_SETTINGS, ignore_unknown_options=True,
                    help_option_names=[hosttools.CLICK_HELP])
    return cli.command(tool, context_settings=settings)(command)


for _tool in hosttools.TOOLS:
    _tool_command(_tool)


@cli.group(context_settings=CONTEXT_SETTINGS)
def tools():
    """cvm's cgroup-aware free/top/mpstat/uptime/vmstat inside containers."""


@tools.command("install", context_settings=CONTEXT_SETTINGS)
@click.argument("containers", nargs=-1, required=True)
def tools_install(containers):
    """Copy the tools into running containers (any container; needs its python3)."""
    from ..vmtools import install_tools
    for container in containers:
        install_tools(container)
        click.echo(container)


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
    from .. import api, tune as tuning
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


# ---------------------------------------------------------------- the console (`cvm logs`:
# cvm.cli.served)


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("name")
def console(name):
    """The VM's console (/dev/console): log in there when its network or sshd is down.
    Ctrl-] leaves it."""
    from .. import api, relay
    sock, resize = api.get(name).console()
    click.echo("Connected to the console of %s; Ctrl-] leaves it. Press Enter for a login "
               "prompt." % name, err=True)
    relay.attach(sock, tty=True, resize=resize)
    click.echo("\r\nLeft the console of %s." % name, err=True)


# ---------------------------------------------------------------- export and import


@cli.command("export", context_settings=CONTEXT_SETTINGS)
@click.argument("name")
@click.option("-o", "--output", required=True, metavar="FILE",
              help="The archive to write ('-': standard output).")
@click.option("--stop", is_flag=True, help="Stop a running VM for the copy (default: freeze "
              "it, as docker pause does), then run it again.")
@click.option("--copy-first", is_flag=True, help="Copy a running VM's layer and volumes "
              "beside them first, so that it is frozen only to bring the copies up to date "
              "(needs room for them; without it, it is frozen for the whole archive).")
@click.option("--with-image", is_flag=True, help="Carry the VM's image in the archive too.")
@click.option("--no-volumes", is_flag=True, help="Leave the volumes' data out: the importing "
              "host has it at the same paths (shared storage).")
@click.option("--compress", type=click.Choice(["zstd", "gzip"]),
              help="Default: zstd when the zstandard package is there, gzip otherwise.")
def export_(name, output, stop, copy_first, with_image, no_volumes, compress):
    """Write a VM (spec, writable layer, volumes) as one archive, streaming."""
    from .. import bundle, ns
    from ..context import default_context
    ns.require_root("cvm export")

    def write(handle, staging=()):
        bundle.export(name, handle, default_context(), stop, with_image, compress,
                      volumes=not no_volumes, copy_first=copy_first, staging=staging)
    if output == "-":
        write(sys.stdout.buffer)
        return
    partial = os.path.abspath(output + ".partial")
    try:
        with open(partial, "wb") as handle:
            write(handle, staging=[partial])  # netd removes it if this process is killed
        os.rename(partial, output)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)  # a full disk or a kill leaves no half archive
        raise
    click.echo(output)


@cli.command("import", context_settings=CONTEXT_SETTINGS)
@click.argument("archive", metavar="FILE")
@click.option("--name", help="Import under another name (its NICs get new MACs).")
@click.option("--nic", "nics", multiple=True, metavar="mode=...,link=...,ip=...",
              help="NICs instead of the archive's (repeatable).")
@click.option("--no-start", is_flag=True, help="Create it, do not start it.")
@click.option("--check", is_flag=True, help="Only check, from the archive's header, that this "
              "host can take the VM (name, addresses, bridges, image, volumes, disk).")
def import_(archive, name, nics, no_start, check):
    """Create a VM from an archive of `cvm export` ('-': standard input), checking every
    member against its manifest first."""
    from .. import bundle, ns
    from ..context import default_context
    from ..specfile import parse_nic_text
    ns.require_root("cvm import")
    nic_list = [parse_nic_text(text) for text in nics] or None
    if archive == "-":
        handle = sys.stdin.buffer
    else:
        try:
            handle = open(archive, "rb")
        except OSError as exc:
            from ..errors import NotFound
            raise NotFound("%s: %s" % (archive, exc.strerror)) from None
    with handle:
        made = bundle.import_archive(handle, default_context(), name, nic_list,
                                     start=not no_start, check_only=check)
    click.echo(made.name)


# ---------------------------------------------------------------- snapshots


class _TakeByDefault(click.Group):
    """`cvm snapshot NAME [SNAP]` takes one; `ls` and `rm` are the group's other commands
    (a VM named ls or rm: `cvm snapshot take ls`)."""

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["take"] + list(args)
        return super().resolve_command(ctx, args)


@cli.group("snapshot", cls=_TakeByDefault, context_settings=CONTEXT_SETTINGS)
def snapshot():
    """Snapshots of VMs: `cvm snapshot NAME [SNAP]` takes one (default name: the time),
    `ls` lists them, `rm` removes one, `cvm restore NAME SNAP` goes back to one.

    A snapshot holds the VM's writable layer (what changed since its image), its spec
    and, unless --no-volumes, its volumes' data. It stays when its VM is removed."""


@snapshot.command("take", context_settings=CONTEXT_SETTINGS)
@click.argument("name")
@click.argument("snap", required=False)
@click.option("--stop", is_flag=True, help="Stop a running VM for the copy (default: freeze "
              "it, as docker pause does), then run it again.")
@click.option("--no-volumes", is_flag=True, help="Leave the volumes' data out.")
def snapshot_take(name, snap, stop, no_volumes):
    """Snapshot VM NAME as SNAP."""
    from .. import ns, snapshots
    from ..context import default_context
    from ..sizes import format_seconds, format_size
    ns.require_root("cvm snapshot")
    row = snapshots.take(default_context(), name, snap, stop=stop, volumes=not no_volumes)
    held = ", %s %s" % ("stopped" if stop else "frozen", format_seconds(row["quiesced"])) \
        if row["quiesced"] else ""
    click.echo("%s %s (%s in %.1f s%s)" % (name, row["snapshot"], format_size(row["bytes"]),
                                           row["seconds"], held))


@snapshot.command("ls", context_settings=CONTEXT_SETTINGS)
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True)
def snapshot_ls(name, as_json):
    """List snapshots (of NAME, or of every VM)."""
    import json
    import time

    from .. import snapshots
    from ..context import default_context
    from ..sizes import format_size
    from ..table import render
    rows = snapshots.listing(default_context(), name)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(render(["VM", "SNAPSHOT", "CREATED", "SIZE", "VOLUMES"], [
        [row["vm"], row["snapshot"],
         time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["created"] or 0)),
         format_size(row["bytes"]), _volumes_held(row)] for row in rows]))


def _volumes_held(row):
    if not row["volumes"]:
        return "no"
    return "reflink" if row["reflinked"] else "yes"


@snapshot.command("rm", context_settings=CONTEXT_SETTINGS)
@click.argument("name")
@click.argument("snap")
def snapshot_rm(name, snap):
    """Remove snapshot SNAP of VM NAME."""
    from .. import snapshots
    from ..context import default_context
    snapshots.remove(default_context(), name, snap)


@cli.command("restore", context_settings=CONTEXT_SETTINGS)
@click.argument("name")
@click.argument("snap")
@click.option("--stop", is_flag=True, help="Stop the VM first if it runs.")
def restore(name, snap, stop):
    """Put VM NAME back as snapshot SNAP holds it: files, spec, addresses and MACs, and
    volumes' data when the snapshot has them. All or nothing."""
    from .. import ns, snapshots
    from ..context import default_context
    ns.require_root("cvm restore")
    vm = snapshots.restore(default_context(), name, snap, stop=stop)
    click.echo("%s restored from %s (%s)" % (name, snap, vm.status))
