"""nproc(1) for a VM: the CPUs it may use -- its cpuset, at most its CPU quota rounded up
-- where coreutils' nproc counts the host's affinity mask (a VM with `cpus: 0.5` on a
2-core host would say 2, and `make -j$(nproc)` would oversubscribe it). What
`getconf _NPROCESSORS_ONLN` prints in a VM that LXCFS serves."""

import os
import sys

from .common import run
from .sources import default_source

USAGE = """Usage: nproc [OPTION]...
Print the number of processing units available to the current process,
which may be less than the number of online processors

      --all      print the number of installed processors
      --ignore=N  if possible, exclude N processing units
      --help        display this help and exit
      --version     output version information and exit

cvm: the VM's CPUs (its cpuset, at most its CPU quota rounded up).
"""


def main(argv=None, source=None):
    argv = sys.argv[1:] if argv is None else argv
    installed, ignore = False, 0
    for arg in argv:
        if arg == "--all":
            installed = True
        elif arg.startswith("--ignore="):
            value = arg[len("--ignore="):]
            if not value.isdigit():
                sys.stderr.write("nproc: invalid number: '%s'\n" % value)
                return 1
            ignore = int(value)
        elif arg == "--help":
            sys.stdout.write(USAGE)
            return 0
        elif arg == "--version":
            sys.stdout.write("nproc (cvm) 9.1\n")
            return 0
        else:
            sys.stderr.write("nproc: unrecognized option '%s'\nTry 'nproc --help' for more "
                             "information.\n" % arg)
            return 1

    def body():
        count = os.sysconf("SC_NPROCESSORS_CONF") if installed else \
            (source or default_source()).cpu_count()
        sys.stdout.write("%d\n" % max(1, count - ignore))
        return 0
    return run("nproc", body)


if __name__ == "__main__":
    sys.exit(main())
