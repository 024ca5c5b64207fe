"""Commands declared as data, parsed without click.

The commands that netd serves are declared once (cvm.cli.served). The launcher parses a
command line with `parse` (no click: it costs ~20 ms); the click CLI builds the same
commands from the same declarations (cvm.cli.main.to_click). `parse` gives exactly the
values click would, or None whenever it is not sure (help, an unknown option, a bad
value, anything unusual): click then parses, and reports errors its own way.
"""


class Option:
    """`flags`: ("--memory", "-m"); `value`: takes one (else a flag); `off`: the flag
    that sets it False (--lxcfs/--no-lxcfs, default None); `bare`: the value of the flag
    given without one (`--watch` or `--watch 5`: left to click, whose rule it is)."""

    def __init__(self, flags, dest, value=True, multiple=False, default=None, help=None,
                 metavar=None, off=None, kind=str, choices=None, required=False, bare=None):
        self.bare = bare
        self.flags = tuple(flags)
        self.dest = dest
        self.value = value
        self.multiple = multiple
        self.off = off
        self.kind = kind
        self.choices = choices
        self.required = required
        self.help = help
        self.metavar = metavar
        if default is None and not value and off is None:
            default = False
        self.default = () if multiple else default


class Argument:
    """`nargs`: 1 or -1 (all that are left); `rest`: the trailing command of `cvm exec`,
    taken as it is (options in it belong to it)."""

    def __init__(self, dest, nargs=1, required=True, rest=False, metavar=None):
        self.dest = dest
        self.nargs = nargs
        self.required = required
        self.rest = rest
        self.metavar = metavar


class Command:
    """`path`: ("net", "attach"); `run(params)` returns the exit code."""

    def __init__(self, path, params, help, run):
        self.path = tuple(path)
        self.params = list(params)
        self.help = help
        self.run = run

    @property
    def options(self):
        return [p for p in self.params if isinstance(p, Option)]

    @property
    def arguments(self):
        return [p for p in self.params if isinstance(p, Argument)]


def _convert(option, text):
    if option.choices is not None and text not in option.choices:
        raise ValueError(text)
    return option.kind(text)


def parse(command, argv):
    """{dest: value} as click would give for `argv` (the words after the command's
    path), or None to leave it to click."""
    flags = {}
    for option in command.options:
        for flag in option.flags:
            flags[flag] = (option, True)
        if option.off:
            flags[option.off] = (option, False)
    values = {option.dest: option.default for option in command.options}
    positionals, rest_from = [], None
    fixed = [a for a in command.arguments if not a.rest and a.nargs == 1]
    takes_rest = any(a.rest for a in command.arguments)
    index = 0
    while index < len(argv):
        token = argv[index]
        if token == "--":
            if takes_rest:
                rest_from = index + 1
            else:  # no more options: the words left are arguments
                positionals.extend(argv[index + 1:])
            break
        if token.startswith("-") and token != "-":
            if token in ("-h", "--help"):
                return None
            if token.startswith("--"):
                name, equals, inline = token.partition("=")
            else:
                name, inline = token[:2], token[2:]
                equals = inline
            found = flags.get(name)
            if found is None:
                return None  # unknown to us: click decides what it is
            if takes_rest and len(positionals) >= len(fixed):
                return None  # inside `cvm exec NAME ...`: click's rules, not ours
            option, on = found
            if option.bare is not None:
                return None
            if option.value:
                if not equals:
                    index += 1
                    if index >= len(argv):
                        return None
                    inline = argv[index]
                try:
                    value = _convert(option, inline)
                except ValueError:
                    return None
            elif equals:
                return None  # a flag given a value, or a cluster of short flags
            else:
                value = on
            if option.multiple:
                values[option.dest] = values[option.dest] + (value,)
            else:
                values[option.dest] = value
        else:
            positionals.append(token)
            if takes_rest and len(positionals) > len(fixed):
                if any(word.startswith("-") for word in argv[index:]):
                    return None  # `cvm exec NAME ls -t`: is -t its or ours? click's rules
                rest_from = index
                positionals.pop()
                break
        index += 1
    rest = tuple(argv[rest_from:]) if rest_from is not None else ()
    if any(option.required and values[option.dest] in (None, ()) for option in
           command.options):
        return None
    return _bind_arguments(command, positionals, rest, values)


def _bind_arguments(command, positionals, rest, values):
    """Arguments from the left, as click binds them (one of nargs -1 takes what is left)."""
    for argument in command.arguments:
        if argument.rest:
            values[argument.dest] = rest
        elif argument.nargs == -1:
            values[argument.dest], positionals = tuple(positionals), []
        elif positionals:
            values[argument.dest] = positionals.pop(0)
        elif argument.required:
            return None
        else:
            values[argument.dest] = None
        if argument.required and values[argument.dest] in ((), None):
            return None
    return None if positionals else values


def find(commands, argv):
    """(command, params) for a command line, or None to leave it to click."""
    for command in commands:
        depth = len(command.path)
        if tuple(argv[:depth]) == command.path:
            params = parse(command, list(argv[depth:]))
            return (command, params) if params is not None else None
    return None
