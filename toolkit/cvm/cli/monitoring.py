"""Monitoring commands: `cvm stats` and the Prometheus exporter."""

import sys

import click

from .group import CONTEXT_SETTINGS, cli
from .render import as_json as _echo_json


def _store():
    from ..state import Store
    return Store()


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
    from ..monitor import Monitor, exposition, stats_rows, write_textfile
    from ..table import render
    monitor = Monitor(_store())
    previous = {s.name: s for s in monitor.sweep(names)}
    unknown = [n for n in names if n not in previous]
    if unknown:
        from ..errors import NotFound
        raise NotFound("no VM named %r (see `cvm ls`)" % unknown[0])
    if prometheus:
        sys.stdout.write(exposition(monitor, names).decode())
        return
    if textfile:
        write_textfile(monitor, textfile, names)
        return
    keys = {"cpu": 0, "mem": 1, "net": 2}
    while True:
        time.sleep(watch if watch else interval)
        now = monitor.sweep(names)
        if as_json:
            from ..monitor import rates
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
        from ..templates import install_systemd_unit
        click.echo(install_systemd_unit("cvm-exporter.service", listen=listen))
        return
    from ..monitor import Exporter, Monitor
    exporter_ = Exporter(Monitor(_store()), listen, cache)
    try:
        server = exporter_.serve()
    except OSError as exc:
        from ..errors import CvmError
        raise CvmError("listen: cannot listen on %s: %s" % (listen, exc.strerror)) from None
    click.echo("serving /metrics on %s" % listen, err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
