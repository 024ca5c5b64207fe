"""The `cvm` command's entry point (pip's console script, the `cvm` on PATH).

A command that netd serves (cvm.cli.served) is parsed here without click (~20 ms to
import), its operation sent to cvm netd (or run here when none of the same code
answers) and its result rendered: `cvm ls` through netd costs little more than
Python's own start. So are the host-side tools (`cvm free NAME`: cvm.cli.hosttools).
Everything else, and every command line this parser is not sure of (help, an unknown
option...), goes to the click CLI (cvm.cli.main).
"""

import os
import sys


def main():
    argv = sys.argv[1:]
    from .cli import args, calls, hosttools, served
    verbose = argv[:1] == ["--verbose"]
    words = argv[1:] if verbose else argv
    calls.verbose = verbose
    if words[:1] and words[0] in hosttools.TOOLS and hosttools.CLICK_HELP not in words:
        code = calls.guarded(lambda: hosttools.run(words[0], words[1:]))
    else:
        found = args.find(served.COMMANDS, words)
        if found is None:
            from .cli.main import main as click_main
            click_main()
            return
        command, params = found
        code = calls.guarded(lambda: command.run(params))
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # `cvm ls | head -1`
        pass
    # Nothing is left to tear down: skipping the interpreter's finalization saves ~3 ms.
    os._exit(code)
