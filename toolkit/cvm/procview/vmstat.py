"""vmstat(8) for a VM: procps-ng 4.0.2's layout, the VM's processes, memory, IO and CPU.

r/b count the VM's runnable and uninterruptible threads; memory comes from its cgroup
(as free shows it); bi/bo from its block IO counters; cs from its tasks' context
switches; us/sy/id/st from its CPU time and throttling (st: time the quota held it
back). `in` (interrupts) and si/so are the host kernel's alone: a VM shows 0.
The first line averages since the VM started; the next ones cover each interval.
"""

import sys
import time

from .common import VERSION, fail, parse, run
from .sources import default_source

HEADER = ("procs -----------memory---------- ---swap-- -----io---- -system-- ------cpu-----",
          " r  b   swpd   free   buff  cache   si   so    bi    bo   in   cs us sy id wa st")
HEADER_ACTIVE = " r  b   swpd   free  inact active   si   so    bi    bo   in   cs us sy id wa st"
HEADER_WIDE = ("--procs-- -----------------------memory---------------------- ---swap-- -----io----"
               " -system-- ----------cpu----------",
               "   r    b         swpd         free         buff        cache   si   so    bi    bo"
               "   in   cs  us  sy  id  wa  st  gu")
HEADER_WIDE_ACTIVE = ("   r    b         swpd         free        inact       active   si   so    bi"
                      "    bo   in   cs  us  sy  id  wa  st  gu")
ROW = "%2d %2d %6d %6d %6d %6d %4d %4d %5d %5d %4d %4d %2d %2d %2d %2d %2d"
ROW_WIDE = "%4d %4d %12d %12d %12d %12d %4d %4d %5d %5d %4d %4d %3d %3d %3d %3d %3d %3d"
UNITS = {"k": 1000, "K": 1024, "m": 1000 * 1000, "M": 1024 * 1024}
HEADER_EVERY = 22  # rows between repeated headers, as vmstat does off a terminal


def usage(out):
    out.write("""
Usage:
 vmstat [options] [delay [count]]

Options:
 -a, --active           active/inactive memory
 -n, --one-header       do not redisplay header
 -S, --unit <char>      define display unit
 -w, --wide             wide output
 -t, --timestamp        show timestamp
 -y, --no-first         skips first line of output

 -h, --help     display this help and exit
 -V, --version  output version information and exit

cvm: the numbers are the VM's. -f, -m, -s, -d, -D and -p describe the host kernel
and are not shown for a VM.

For more details see vmstat(8).
""")


class Sample(object):
    def __init__(self, source):
        self.when = time.time()
        self.memory = source.memory()
        self.running, self.blocked, self.switches = source.activity()
        self.cpu = source.cpu_times()[0]
        self.blocks = source.disk_blocks()
        self.swap = source.swap_pages()
        self.interrupts = source.interrupts()


CPU_KEYS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def cpu_percent(now, before):
    delta = dict((k, now[k] - (before[k] if before else 0.0)) for k in CPU_KEYS)
    total = sum(delta.values()) or 1.0

    def pct(value):
        return int(100.0 * value / total + 0.5)

    return (pct(delta["user"] + delta["nice"]), pct(delta["system"] + delta["irq"] +
                                                    delta["softirq"]),
            pct(delta["idle"]), pct(delta["iowait"]), pct(delta["steal"]))


def row(now, before, seconds, unit, wide, active, source):
    def per_second(current, previous):
        return int((current - previous) / seconds) if seconds > 0 else 0

    memory = now.memory

    def scale(kib):
        return int(kib * 1024 // unit)

    if active:
        third, fourth = source.memory_active()
    else:
        third, fourth = memory.buffers, memory.cache
    base = before or None
    us, sy, idle, wa, st = cpu_percent(now.cpu, base.cpu if base else None)
    values = [now.running, now.blocked, scale(memory.swap_used), scale(memory.free),
              scale(third), scale(fourth),
              per_second(now.swap[0], base.swap[0] if base else 0) * 4,
              per_second(now.swap[1], base.swap[1] if base else 0) * 4,
              per_second(now.blocks[0], base.blocks[0] if base else 0),
              per_second(now.blocks[1], base.blocks[1] if base else 0),
              per_second(now.interrupts, base.interrupts if base else 0),
              per_second(now.switches, base.switches if base else 0), us, sy, idle, wa, st]
    if wide:
        return ROW_WIDE % tuple(values + [0])
    return ROW % tuple(values)


def main(argv=None, source=None):
    argv = sys.argv[1:] if argv is None else argv
    options, extra = parse(argv, "afmnsdDp:S:wtyhV",
                           ["active", "forks", "slabs", "one-header", "stats", "disk",
                            "disk-sum", "partition=", "unit=", "wide", "timestamp", "no-first",
                            "help", "version"], usage, "vmstat")
    settings = {"active": False, "unit": 1024, "wide": False, "timestamp": False,
                "first": True, "headers": True}
    for option, value in options:
        if option in ("-a", "--active"):
            settings["active"] = True
        elif option in ("-n", "--one-header"):
            settings["headers"] = False
        elif option in ("-S", "--unit"):
            if value not in UNITS:
                fail("vmstat", "-S requires k, K, m or M (default is KiB)")
            settings["unit"] = UNITS[value]
        elif option in ("-w", "--wide"):
            settings["wide"] = True
        elif option in ("-t", "--timestamp"):
            settings["timestamp"] = True
        elif option in ("-y", "--no-first"):
            settings["first"] = False
        elif option in ("-h", "--help"):
            usage(sys.stdout)
            return 0
        elif option in ("-V", "--version"):
            sys.stdout.write("vmstat from %s\n" % VERSION)
            return 0
        else:
            fail("vmstat", "%s describes the host kernel; it is not available for a VM" % option)
    try:
        delay = float(extra[0]) if extra else None
        count = int(extra[1]) if len(extra) > 1 else None
    except ValueError:
        usage(sys.stderr)
        return 1
    if delay is not None and delay <= 0:
        fail("vmstat", "delay must be positive integer")
    if len(extra) > 2:
        usage(sys.stderr)
        return 1

    def header():
        if settings["wide"]:
            top, columns = HEADER_WIDE[0], (HEADER_WIDE_ACTIVE if settings["active"]
                                            else HEADER_WIDE[1])
        else:
            top, columns = HEADER[0], HEADER_ACTIVE if settings["active"] else HEADER[1]
        if settings["timestamp"]:
            top += " -----timestamp-----"
            columns += " %19s" % time.strftime("%Z")
        sys.stdout.write(top + "\n" + columns + "\n")

    def emit(reader, now, before, seconds):
        line = row(now, before, seconds, settings["unit"], settings["wide"],
                   settings["active"], reader)
        if settings["timestamp"]:
            line += " " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now.when))
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def body():
        reader = source or default_source()
        header()
        previous = Sample(reader)
        remaining = count
        if settings["first"]:
            # As vmstat does, the first line divides by the CPU time of all CPUs together.
            emit(reader, previous, None, sum(previous.cpu[k] for k in CPU_KEYS))
            if remaining is not None:
                remaining -= 1
        if delay is None:
            return 0
        printed = 0
        while remaining is None or remaining > 0:
            time.sleep(delay)
            now = Sample(reader)
            printed += 1
            if settings["headers"] and printed % HEADER_EVERY == 0:
                header()
            emit(reader, now, previous, now.when - previous.when)
            previous = now
            if remaining is not None:
                remaining -= 1
        return 0

    return run("vmstat", body)


if __name__ == "__main__":
    sys.exit(main())
