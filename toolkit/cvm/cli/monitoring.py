"""Monitoring commands: the Prometheus exporter (`cvm stats` is served: cvm.cli.served)."""


import click

from .group import CONTEXT_SETTINGS, cli


def _store():
    from ..state import Store
    return Store()


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option("--listen", default="127.0.0.1:9730", show_default=True, metavar="ADDR:PORT")
@click.option("--cache", default=1.0, show_default=True, help="Seconds a sweep serves scrapes.")
@click.option("--install-unit", is_flag=True, help="Install the systemd unit and exit.")
def exporter(listen, cache, install_unit):
    """Serve /metrics (cAdvisor's names) for Prometheus: each sweep made ahead of the
    scrape it is for, once scrapes come at a steady interval."""
    if install_unit:
        from ..templates import install_systemd_unit
        click.echo(install_systemd_unit("cvm-exporter.service", listen=listen))
        return
    from ..monitor import Exporter, Monitor, allow_open_files
    allow_open_files()
    exporter_ = Exporter(Monitor(_store()), listen, cache)
    try:
        server = exporter_.serve()
    except OSError as exc:
        from ..errors import CvmError
        raise CvmError("listen: cannot listen on %s: %s" % (listen, exc.strerror)) from None
    import threading
    stopping = threading.Event()
    threading.Thread(target=exporter_.prepare_ahead, args=(stopping,), name="ahead",
                     daemon=True).start()
    click.echo("serving /metrics on %s" % listen, err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stopping.set()
