"""What the tools share: GNU-style option errors, one-line failures, float32 rounding."""

import os
import struct
import sys

from .sources import SourceError

VERSION = "cvm procview 0.1.0 (procps-ng 4.0.2 / sysstat 12.6.1 compatible)"


def prog():
    return os.path.basename(sys.argv[0]) or "tool"


def parse(argv, short, long_options, usage, name):
    """getopt_long as the originals use it: options and operands in any order, "--" ends
    options; GNU's messages, then usage on stderr, exit 1. (Not the getopt module: it
    imports gettext and re, a third of a tool's start-up in a throttled VM.)"""
    try:
        return _gnu_getopt(list(argv), short, long_options)
    except _OptionError as exc:
        sys.stderr.write("%s: %s\n" % (name, exc))
        usage(sys.stderr)
        sys.exit(1)


class _OptionError(Exception):
    pass


def _gnu_getopt(argv, short, long_options):
    options, operands = [], []
    while argv:
        arg = argv.pop(0)
        if arg == "--":
            operands.extend(argv)
            break
        if arg.startswith("--"):
            options.append(_long_option(arg[2:], argv, long_options))
        elif arg.startswith("-") and arg != "-":
            cluster = arg[1:]
            while cluster:
                letter, cluster = cluster[0], cluster[1:]
                at = short.find(letter)
                if letter == ":" or at < 0:
                    raise _OptionError("invalid option -- '%s'" % letter)
                if short[at + 1:at + 2] != ":":
                    options.append(("-" + letter, ""))
                    continue
                if not cluster:
                    if not argv:
                        raise _OptionError("option requires an argument -- '%s'" % letter)
                    cluster = argv.pop(0)
                options.append(("-" + letter, cluster))
                cluster = ""
        else:
            operands.append(arg)
    return options, operands


def _long_option(text, argv, long_options):
    """('--name', value) for `--text`: a unique prefix of a long option will do."""
    given, has_value, value = text.partition("=")
    names = [o.rstrip("=") for o in long_options]
    matches = [n for n in names if n == given] or [n for n in names if n.startswith(given)]
    if not matches:
        raise _OptionError("unrecognized option '--%s'" % given)
    if len(matches) > 1:
        raise _OptionError("option '--%s' is ambiguous" % given)
    option = matches[0]
    if option + "=" not in long_options:
        if has_value:
            raise _OptionError("option '--%s' doesn't allow an argument" % option)
        return "--" + option, ""
    if not has_value:
        if not argv:
            raise _OptionError("option '--%s' requires an argument" % option)
        value = argv.pop(0)
    return "--" + option, value


def fail(name, message, code=1):
    sys.stderr.write("%s: %s\n" % (name, message))
    sys.exit(code)


def number(convert, text, name, message):
    """`convert(text)`, or the tool's own error line (procps words it differently per tool)."""
    try:
        return convert(text)
    except ValueError:
        fail(name, message)


def run(name, body):
    """Run a tool's body; data errors become one line on stderr, never a traceback."""
    try:
        return body()
    except SourceError as exc:
        fail(name, str(exc))
    except (IOError, OSError) as exc:
        fail(name, "%s%s" % (exc.strerror or exc, ": %s" % exc.filename if getattr(
            exc, "filename", None) else ""))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141


def float32(value):
    """C's (float) cast: the originals round single-precision values for %.1f."""
    return struct.unpack("f", struct.pack("f", value))[0]
