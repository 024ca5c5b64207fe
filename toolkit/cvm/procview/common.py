"""What the tools share: GNU-style option errors, one-line failures, float32 rounding."""

import getopt
import os
import struct
import sys

from .sources import SourceError

VERSION = "cvm procview 0.1.0 (procps-ng 4.0.2 / sysstat 12.6.1 compatible)"


def prog():
    return os.path.basename(sys.argv[0]) or "tool"


def parse(argv, short, long_options, usage, name):
    """getopt_long as the originals use it: GNU messages, then usage on stderr, exit 1."""
    try:
        return getopt.gnu_getopt(argv, short, long_options)
    except getopt.GetoptError as exc:
        option = exc.opt or ""
        if "requires argument" in exc.msg:
            if len(option) > 1:
                sys.stderr.write("%s: option '--%s' requires an argument\n" % (name, option))
            else:
                sys.stderr.write("%s: option requires an argument -- '%s'\n" % (name, option))
        elif "not a unique prefix" in exc.msg:
            sys.stderr.write("%s: option '--%s' is ambiguous\n" % (name, option))
        elif "must not have an argument" in exc.msg:
            sys.stderr.write("%s: option '--%s' doesn't allow an argument\n" % (name, option))
        elif len(option) > 1:
            sys.stderr.write("%s: unrecognized option '--%s'\n" % (name, option))
        else:
            sys.stderr.write("%s: invalid option -- '%s'\n" % (name, option))
        usage(sys.stderr)
        sys.exit(1)


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
