"""free(1) for a VM: procps-ng 4.0.2's layout, the VM's memory.

total is the VM's memory limit (the smallest on its cgroup and ancestors), used is
total - available (procps-ng >= 4.0.1), free/shared/buff/cache/available are computed
from the cgroup as LXCFS computes /proc/meminfo, swap from memsw (v1) or swap (v2).
"""

import sys
import time

from .common import VERSION, fail, float32, number, parse, run
from .sources import default_source

SHORT = "bkmghltvc:ws:V"
LONG = ["bytes", "kilo", "mega", "giga", "tera", "peta", "kibi", "mebi", "gibi", "tebi",
        "pebi", "human", "si", "lohi", "total", "committed", "seconds=", "count=", "wide",
        "help", "version"]
UNITS = {"-b": (1, False), "--bytes": (1, False), "-k": (2, False), "--kibi": (2, False),
         "-m": (3, False), "--mebi": (3, False), "-g": (4, False), "--gibi": (4, False),
         "--tebi": (5, False), "--pebi": (6, False), "--kilo": (2, True), "--mega": (3, True),
         "--giga": (4, True), "--tera": (5, True), "--peta": (6, True)}
HEADER = "               total        used        free      shared  buff/cache   available"
HEADER_WIDE = ("               total        used        free      shared     buffers       cache"
               "   available")


def usage(out):
    out.write("""
Usage:
 free [options]

Options:
 -b, --bytes         show output in bytes
     --kilo          show output in kilobytes
     --mega          show output in megabytes
     --giga          show output in gigabytes
     --tera          show output in terabytes
     --peta          show output in petabytes
 -k, --kibi          show output in kibibytes
 -m, --mebi          show output in mebibytes
 -g, --gibi          show output in gibibytes
     --tebi          show output in tebibytes
     --pebi          show output in pebibytes
 -h, --human         show human-readable output
     --si            use powers of 1000 not 1024
 -l, --lohi          show detailed low and high memory statistics
 -t, --total         show total for RAM + swap
 -v, --committed     show committed memory and commit limit
 -s N, --seconds N   repeat printing every N seconds
 -c N, --count N     repeat printing N times, then exit
 -w, --wide          wide output

     --help     display this help and exit
 -V, --version  output version information and exit

cvm: the numbers are the VM's, read from its cgroup (memory limit, usage, page cache).

For more details see free(1).
""")


def scale(kib, exponent, si, human):
    """procps-ng's scale_size(): the same columns, truncation and -h rules."""
    base = 1000.0 if si else 1024.0
    nbytes = kib * 1024
    if not human:
        if exponent == 0:
            return "%d" % kib
        if exponent == 1:
            return "%d" % nbytes
        return "%d" % int(nbytes / base ** (exponent - 1))
    text = "%dB" % nbytes
    if len(text) <= 4:
        return text
    suffix, width = ("", 4) if si else ("i", 5)  # 1.5G or 1.5Gi
    for power, unit in enumerate("KMGTP", 1):
        value = nbytes / base ** power
        for text in ("%.1f%s%s" % (float32(value), unit, suffix),
                     "%d%s%s" % (int(value), unit, suffix)):
            if len(text) <= width:
                return text
    return text


def render(memory, exponent=0, si=False, human=False, wide=False, lohi=False, total=False,
           committed=False):
    def cell(value):
        return scale(value, exponent, si, human)

    def row(label, values):
        return "%-9s%11s" % (label, cell(values[0])) + "".join(" %11s" % cell(v)
                                                              for v in values[1:])

    lines = [HEADER_WIDE if wide else HEADER]
    mem = [memory.total, memory.used, memory.free, memory.shared]
    mem += [memory.buffers, memory.cache] if wide else [memory.buffers + memory.cache]
    lines.append(row("Mem:", mem + [memory.available]))
    if lohi:
        lines.append(row("Low:", [memory.total, memory.total - memory.free, memory.free]))
        lines.append(row("High:", [0, 0, 0]))
    lines.append(row("Swap:", [memory.swap_total, memory.swap_used, memory.swap_free]))
    if total:
        lines.append(row("Total:", [memory.total + memory.swap_total,
                                    memory.used + memory.swap_used,
                                    memory.free + memory.swap_free]))
    if committed:
        limit = memory.total + memory.swap_total
        lines.append(row("Comm:", [limit, memory.used, limit - memory.used]))
    return "\n".join(lines) + "\n"


def main(argv=None, source=None):
    argv = sys.argv[1:] if argv is None else argv
    options, extra = parse(argv, SHORT, LONG, usage, "free")
    if extra:
        usage(sys.stderr)
        return 1
    settings = {"exponent": 0, "si": False, "human": False, "wide": False, "lohi": False,
                "total": False, "committed": False}
    interval, count, unit_set = None, None, False
    for option, value in options:
        if option in UNITS:
            if unit_set:
                fail("free", "Multiple unit options don't make sense.")
            unit_set = True
            settings["exponent"], si = UNITS[option]
            settings["si"] = settings["si"] or si
        elif option in ("-h", "--human"):
            settings["human"] = True
        elif option == "--si":
            settings["si"] = True
        elif option in ("-w", "--wide"):
            settings["wide"] = True
        elif option in ("-l", "--lohi"):
            settings["lohi"] = True
        elif option in ("-t", "--total"):
            settings["total"] = True
        elif option in ("-v", "--committed"):
            settings["committed"] = True
        elif option in ("-s", "--seconds"):
            interval = number(float, value, "free", "seconds argument failed: '%s'" % value)
            if interval * 1000000 < 1:
                fail("free", "seconds argument `%s' is not positive number" % value)
        elif option in ("-c", "--count"):
            count = number(int, value, "free", "failed to parse count argument: '%s'" % value)
            if count < 1:
                fail("free", "failed to parse count argument: '%s': Numerical result out of "
                     "range" % value)
        elif option == "--help":
            usage(sys.stdout)
            return 0
        elif option in ("-V", "--version"):
            sys.stdout.write("free from %s\n" % VERSION)
            return 0

    def body():
        reader = source or default_source()
        repeat = interval is not None or count is not None
        remaining = count
        while True:
            sys.stdout.write(render(reader.memory(), **settings))
            sys.stdout.flush()
            if remaining is not None:
                remaining -= 1
                if remaining < 1:
                    return 0
            if not repeat:
                return 0
            sys.stdout.write("\n")
            time.sleep(interval if interval is not None else 1.0)

    return run("free", body)


if __name__ == "__main__":
    sys.exit(main())
