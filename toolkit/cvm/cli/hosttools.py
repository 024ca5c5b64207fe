"""The VM's own numbers from the host: `cvm free|top|mpstat|uptime|vmstat NAME`, with the
original's flags on either side of the name (`cvm free -m web1`, `cvm free web1 -m`).

The launcher runs these without click, and asks netd only which word names a VM and
where its init is: the numbers come from the VM's /proc and cgroup, read here. The click
commands (for `cvm --help`, and `--cvm-help`) run the same code.
"""

import sys

from .calls import call

TOOLS = ("free", "top", "mpstat", "uptime", "vmstat")
CLICK_HELP = "--cvm-help"  # the tools' own --help shows the original's options


def run(tool, args):
    """Run `tool` with `args` (the words after `cvm TOOL`) for the VM one of them names;
    its exit code. Without a VM's name, --help and --version are the tool's own."""
    import importlib
    from ..errors import NotFound, SpecError
    module = importlib.import_module("cvm.procview." + tool)
    sys.argv[0] = tool
    found = call("named_vm", words=list(args))
    if found["name"] is None:
        if any(word in ("--help", "-V", "--version") for word in args):
            return module.main(list(args))
        words = [word for word in args if not word.startswith("-")]
        if words:
            raise NotFound("no VM named %r (see `cvm ls`)" % words[0])
        raise SpecError("name", "give the VM: cvm %s [OPTIONS] NAME" % tool)
    rest = list(args)
    rest.remove(found["name"])
    from ..procview.sources import VMSource
    return module.main(rest, source=VMSource.of_pid(found["pid"]))
