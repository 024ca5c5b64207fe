"""`cvm lab`: a fleet of cvm hosts as containers on this machine (see cvm.lab)."""

import click

from .group import CONTEXT_SETTINGS, cli
from .render import as_json as _echo_json


@cli.group(context_settings=CONTEXT_SETTINGS)
@click.option("--dir", "directory", metavar="DIR", envvar="CVM_LAB_DIR",
              help="Where the lab lives (default /var/lib/cvm-lab; CVM_LAB_DIR).")
@click.pass_context
def lab(context, directory):
    """A lab of real cvm hosts (containers with systemd, dockerd, lxcfs, sshd) on this
    machine, on a LAN bridge of their own, for trying and testing a fleet."""
    context.obj = directory


def _lab(context):
    from .. import ns
    from ..lab import Lab
    ns.require_root("cvm lab")
    return Lab(context.obj)


def _say(text):
    click.echo("lab: %s" % text, err=True)


def _show(rows, as_json):
    from ..table import render
    if as_json:
        _echo_json(rows)
        return
    click.echo(render(["HOST", "STATUS", "ADDRESS", "SSH"],
                      [[r["name"], r["status"], r["address"], r["ssh"]] for r in rows]))


@lab.command("up", context_settings=CONTEXT_SETTINGS)
@click.option("-n", "--hosts", "count", default=3, show_default=True, type=int)
@click.option("--prefix", help="Host names: PREFIX1, PREFIX2... (default lab).")
@click.option("--bridge", help="The lab LAN bridge (default cvmlab0).")
@click.option("--subnet", help="The lab LAN (default 203.0.113.192/27; the controller takes "
              "its first address, the hosts the next ones).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def lab_up(context, count, prefix, bridge, subnet, as_json):
    """Make the lab's hosts (building their image offline first), reachable over ssh."""
    the_lab = _lab(context)
    rows = the_lab.up(count, prefix, bridge, subnet, progress=_say)
    _show(rows, as_json)
    if not as_json:
        click.echo("inventory: %s  (cvm provision -i %s)" % (the_lab.inventory,
                                                            the_lab.inventory))


@lab.command("ls", context_settings=CONTEXT_SETTINGS)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def lab_ls(context, as_json):
    """The lab's hosts."""
    _show(_lab(context).ls(), as_json)


@lab.command("down", context_settings=CONTEXT_SETTINGS)
@click.pass_context
def lab_down(context):
    """Remove the lab: its hosts and their data, the bridge, the registry's data."""
    for name in _lab(context).down(progress=_say):
        click.echo(name)
