"""The whole `cvm` command, on click: the served commands built from their declarations
(cvm.cli.served), the others from the command-group modules beside this one."""

import sys

import click

from . import calls, served
from .args import Argument
from .group import CONTEXT_SETTINGS, bridge, cli, image, net

def to_click(command):
    """A click command for a declared one (cvm.cli.args): same flags, same values."""
    params = []
    for param in command.params:
        if isinstance(param, Argument):
            params.append(click.Argument(
                [param.dest], nargs=param.nargs if not param.rest else -1,
                required=param.required, metavar=param.metavar,
                type=click.UNPROCESSED if param.rest else None))
            continue
        flags = list(param.flags)
        if param.off:
            flags = ["%s/%s" % (flags[0], param.off)] + flags[1:]
        # A required option gets no default: click 8.3+ takes an explicit None as given.
        extra = {} if param.required else {"default": param.default}
        if param.bare is not None:
            extra["flag_value"] = param.bare
        params.append(click.Option(
            flags + [param.dest], is_flag=not param.value, multiple=param.multiple,
            help=param.help, metavar=param.metavar, required=param.required,
            type=click.Choice(param.choices) if param.choices else (
                param.kind if param.value else None), **extra))

    def callback(**values):
        code = command.run(values)
        if code:
            sys.exit(code)

    settings = dict(CONTEXT_SETTINGS)
    if any(isinstance(p, Argument) and p.rest for p in command.params):
        settings["ignore_unknown_options"] = True
    return click.Command(command.path[-1], params=params, callback=callback,
                         help=command.help, context_settings=settings)


GROUPS = {(): cli, ("net",): net, ("bridge",): bridge, ("image",): image}
for _command in served.COMMANDS:
    GROUPS[_command.path[:-1]].add_command(to_click(_command))

# The other commands register themselves on `cli` as they are imported.
from . import fleet, host, images, inside, lab, monitoring  # noqa: E402,F401


def run(argv=None):
    """Run one `cvm` command; its exit code. Errors become one line on stderr."""
    def invoke():
        try:
            return cli.main(args=argv, prog_name="cvm", standalone_mode=False)
        except click.exceptions.Exit as exc:
            return exc.exit_code
        except click.UsageError as exc:  # one line, as every other refusal
            command = exc.ctx.command_path if exc.ctx else "cvm"
            click.echo("cvm: %s (see `%s --help`)" % (exc.format_message().rstrip("."),
                                                       command), err=True)
            return exc.exit_code
        except click.ClickException as exc:
            exc.show()
            return exc.exit_code
        except click.exceptions.Abort:
            click.echo("Aborted.", err=True)
            return 130
    return calls.guarded(invoke)


def main(argv=None):
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
