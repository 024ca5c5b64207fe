"""Commands about the host itself: doctor, the netd daemon, shipping cvm, provisioning
other hosts, the demo."""

import os
import sys

import click

from ..errors import CvmError
from .group import CONTEXT_SETTINGS, cli
from .render import as_json as _echo_json


def _store():
    from ..state import Store
    return Store()


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option("--json", "as_json", is_flag=True)
def doctor(as_json):
    """Check that this host is ready to run VMs."""
    from .. import doctor as doctor_module
    from ..table import render
    checks = doctor_module.run_checks()
    if as_json:
        _echo_json([c._asdict() for c in checks])
    else:
        click.echo(render(["CHECK", "STATUS", "DETAIL", "FIX"],
                          [[c.name, c.status, c.detail, c.fix] for c in checks]))
    if any(c.status == "FAIL" for c in checks):
        sys.exit(1)


def _running(pid):
    from ..procfs import process_stat
    try:
        return process_stat(pid)[3] != "Z"  # a zombie has exited; its parent reaps it
    except OSError:
        return False


def _stop_netd():
    import signal
    import time
    from ..client import status as daemon_status
    running = daemon_status(_store().root)
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
    from .. import ns
    if stop:
        _stop_netd()
        return
    if status:
        from ..client import status as daemon_status
        running = daemon_status(_store().root)
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
        from ..templates import install_systemd_unit
        click.echo(install_systemd_unit("cvm-netd.service"))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s netd: %(message)s")
    from ..context import Context
    from ..netd import Daemon
    daemon = Daemon(Context(), workers=workers)
    if once:
        daemon.reconcile()
        daemon.pool.shutdown()
        return
    daemon.run()


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--wheelhouse", type=click.Path(dir_okay=False),
              help="Also write the wheels of cvm's dependencies here (for offline hosts).")
def dist(output, wheelhouse):
    """Write cvm's source as a reproducible tarball (for installing other hosts)."""
    from ..dist import write_source_tarball, write_wheelhouse
    result = {"path": os.path.abspath(output), "changed": write_source_tarball(output)}
    if wheelhouse:
        result["wheelhouse"] = os.path.abspath(wheelhouse)
        result["wheelhouse_changed"] = write_wheelhouse(wheelhouse)
    _echo_json(result)


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
    from ..provisioning import LiveDisplay, provision as run_provision
    from ..spec import split_key_value
    from ..table import render
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


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option("--clean", is_flag=True, help="Remove the demo's VMs and bridge (or the lab).")
@click.option("--fleet", is_flag=True, help="A lab of three cvm hosts, converged by one "
              "inventory, VMs across hosts, a VM moved.")
def demo(clean, fleet):
    """Create a few VMs on a host-only bridge and show them working."""
    from .. import demo as demo_module, ns
    ns.require_root("cvm demo")
    sys.exit(demo_module.fleet(clean) if fleet else demo_module.main(clean=clean))
