"""cvm's in-VM tools (free, top, mpstat, uptime, vmstat, nproc): the files that carry
them into a VM, each tool's wrapper on PATH, and their installation into any running
container. Images get the same files at build (cvm.images)."""

import os

from .errors import CvmError

TOOLS = ("free", "top", "mpstat", "uptime", "vmstat", "nproc")
TOOLS_LIBRARY = "/usr/lib/cvm/python"  # where the tools' modules go in a VM
# Compiled where they land, by the VM's own python3: a user who cannot write __pycache__
# would otherwise compile cvm's modules on every run (a third of vmstat's CPU time).
COMPILE_TOOLS = ["python3", "-m", "compileall", "-q", TOOLS_LIBRARY]


def tools_files():
    """{path in the VM: (bytes, mode)}: cvm's procview tools and the modules they need.

    The same tree goes into images and, through `cvm tools install`, into any container.
    """
    package = os.path.dirname(os.path.abspath(__file__))
    library = TOOLS_LIBRARY + "/cvm/"
    files = {library + "__init__.py": (b'"""cvm in-VM tools."""\n', 0o644)}
    for module in ("cgroups.py", "procfs.py", "sizes.py"):
        with open(os.path.join(package, module), "rb") as handle:
            files[library + module] = (handle.read(), 0o644)
    procview = os.path.join(package, "procview")
    if os.path.isdir(procview):
        for name in sorted(os.listdir(procview)):
            if name.endswith(".py"):
                with open(os.path.join(procview, name), "rb") as handle:
                    files[library + "procview/" + name] = (handle.read(), 0o644)
        for tool in TOOLS:
            if os.path.exists(os.path.join(procview, tool + ".py")):
                files["/usr/local/bin/" + tool] = (_tool_wrapper(tool).encode(), 0o755)
    return files


def install_tools(container, ctx=None):
    """Copy cvm's tools into running `container` and compile them there with its python3,
    which they need: a container without one is refused and gets nothing."""
    from .context import default_context
    engine = (ctx or default_context()).engine
    code, said = _run_in(engine, container, ["python3", "-c", ""])
    if code != 0:
        raise CvmError("%s has no python3 that runs (%s), and cvm's tools need one; nothing "
                       "was copied" % (container, said or "exit %s" % code))
    engine.put_files(container, tools_files())
    code, said = _run_in(engine, container, COMPILE_TOOLS)
    if code != 0:
        raise CvmError("%s: `%s` failed (%s)" % (container, " ".join(COMPILE_TOOLS),
                                                 said or "exit %s" % code))


def _run_in(engine, container, argv, timeout=60):
    """(exit code, the last line it printed) of `argv` run in `container`."""
    result = engine.run(container, argv, timeout=timeout)
    if result is None:
        return None, "it did not finish within %d s" % timeout
    code, out, err = result
    said = (out + err).decode(errors="replace").strip().splitlines()
    return code, said[-1] if said else ""


# Tools whose every number LXCFS's /proc files already make the VM's: there procps' own
# binary answers, at its speed (no Python start, which a VM's CPU quota throttles), from
# the files it needs. vmstat is not one: LXCFS serves neither /proc/vmstat nor the task
# and interrupt counts of /proc/stat, and mpstat/top need per-CPU lines and steal.
NATIVE_UNDER_LXCFS = {"free": ("/usr/bin/free", ["/proc/meminfo"]),
                      "uptime": ("/usr/bin/uptime", ["/proc/uptime", "/proc/loadavg"])}


def _tool_wrapper(tool):
    from .engine import LXCFS_MARKER
    run_cvms = ("import sys; sys.argv[0] = '%s'; sys.path.insert(0, '%s'); "
                "from cvm.procview.%s import main; sys.exit(main())" % (tool, TOOLS_LIBRARY, tool))
    if tool not in NATIVE_UNDER_LXCFS:
        return ("#!/usr/bin/python3 -IS\n# cvm: %s from the VM's cgroup; the original is at "
                "its usual path.\n%s\n" % (tool, run_cvms))
    native, files = NATIVE_UNDER_LXCFS[tool]
    # A dead LXCFS fails the -r tests (ENOTCONN): cvm's own tool answers then.
    readable = " ".join("[ -r %s ] &&" % path for path in files)
    return ("#!/bin/sh\n"
            "# cvm: %(tool)s with the VM's numbers. Where cvm bound LXCFS's /proc files into\n"
            "# this VM (%(marker)s), procps' own reads them; elsewhere, or with CVM_PROCVIEW\n"
            "# set, cvm's reads the VM's cgroup.\n"
            "if [ -z \"$CVM_PROCVIEW\" ] && [ -e %(marker)s ] && %(readable)s [ -x %(native)s ]; "
            "then\n    exec %(native)s \"$@\"\nfi\n"
            "exec /usr/bin/python3 -IS -c \"%(run_cvms)s\" \"$@\"\n"
            % dict(tool=tool, marker=LXCFS_MARKER, readable=readable, native=native,
                   run_cvms=run_cvms))
