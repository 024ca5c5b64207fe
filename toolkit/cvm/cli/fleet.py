"""Commands across hosts: `cvm migrate` (run on a VM's host) and `cvm move` (run on the
controller, through playbooks/move.yml, which updates the inventory too)."""

import click

from .group import CONTEXT_SETTINGS, cli


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("name")
@click.option("--to", "target", required=True, metavar="ADDRESS",
              help="The host to move to, as ssh reaches it (the fleet's key).")
@click.option("--key", metavar="FILE", help="ssh key for the target (default: the fleet's, "
              "/root/.ssh/cvm_fleet).")
def migrate(name, target, key):
    """Move a VM from this host to another (cold: stop, copy, start there, remove here)."""
    from .. import ns
    from ..context import default_context
    from ..migrate import migrate as run
    ns.require_root("cvm migrate")
    run(default_context(), name, target, key,
        progress=lambda text: click.echo("migrate: %s" % text, err=True))
    click.echo(name)


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("name")
@click.option("--to", "target", required=True, metavar="HOST",
              help="The inventory host to move the VM to.")
@click.option("--inventory", "-i", required=True, type=click.Path(exists=True),
              help="The fleet's inventory (updated to match).")
def move(name, target, inventory):
    """Move a VM to another host of the fleet and update the inventory (move.yml)."""
    from ..errors import CvmError
    from ..provisioning import LiveDisplay, provision
    result = provision(inventory, "move.yml", extravars={"vm": name, "to": target},
                       on_change=LiveDisplay())
    if not result.ok:
        failures = [message for host in result.hosts.values()
                    for _, message in host.failures]
        raise CvmError("move: %s" % (failures[0] if failures else "failed (ansible-playbook "
                                     "%s)" % result.status))
    click.echo("%s %s" % (name, target))
