"""mpstat(1) for a VM: sysstat 12.6.1's layout, the VM's CPUs.

The VM has min(CPUs in its cpuset, ceil(quota/period)) CPUs. On cgroup v1 each maps to
a CPU of its cpuset with that CPU's own usage (cpuacct); when the quota allows fewer
CPUs than the cpuset has, and always on cgroup v2 (which keeps no per-CPU usage), the
VM's total usage is spread evenly over its CPUs. %steal is the time the quota held the
VM back (cpu.stat throttled time): the one honest analogue of a hypervisor's steal.
Without an interval the report covers the time since the VM started.
"""

import _locale  # the locale module would load re: 9 ms in a throttled VM
import os
import sys
import time

from .common import VERSION, fail, parse, run
from .sources import default_source

FIELDS = ("usr", "nice", "sys", "iowait", "irq", "soft", "steal", "guest", "gnice", "idle")


def usage(out):
    out.write("Usage: mpstat [ options ] [ <interval> [ <count> ] ]\n"
              "Options are:\n"
              "[ -A ] [ -u ] [ -V ] [ --dec={ 0 | 1 | 2 } ] [ -P { <cpu_list> | ALL } ]\n"
              "cvm: CPUs and usage are the VM's; -I, -n, -N and -T describe the host and are\n"
              "not shown for a VM.\n")


def percentages(now, before):
    """{field: percent} of one CPU (or all) between two samples of cumulative times."""
    delta = dict((k, now[k] - (before[k] if before else 0.0)) for k in now)
    total = sum(delta[k] for k in ("user", "nice", "system", "idle", "iowait", "irq",
                                   "softirq", "steal"))
    if total <= 0:
        return dict((f, 0.0) for f in FIELDS)
    scale = 100.0 / total
    values = {
        "usr": max(0.0, delta["user"] - delta["guest"]) * scale,
        "nice": max(0.0, delta["nice"] - delta["guest_nice"]) * scale,
        "sys": delta["system"] * scale, "iowait": delta["iowait"] * scale,
        "irq": delta["irq"] * scale, "soft": delta["softirq"] * scale,
        "steal": delta["steal"] * scale, "guest": delta["guest"] * scale,
        "gnice": delta["guest_nice"] * scale, "idle": delta["idle"] * scale,
    }
    return values


def parse_cpu_list(text, count):
    if text.upper() == "ALL":
        return list(range(count))
    cpus = []
    for part in text.split(","):
        if "-" in part:
            first, last = part.split("-", 1)
            cpus.extend(range(int(first), int(last) + 1))
        else:
            cpus.append(int(part))
    for cpu in cpus:
        if cpu >= count or cpu < 0:
            raise ValueError(cpu)
    return sorted(set(cpus))


def main(argv=None, source=None):
    argv = sys.argv[1:] if argv is None else argv
    options, extra = parse(argv, "AuP:VInNTo:", ["dec="], usage, "mpstat")
    want_cpus, decimals = None, 2
    for option, value in options:
        if option == "-A":
            want_cpus = "ALL"
        elif option == "-u":
            pass
        elif option == "-P":
            want_cpus = value
        elif option == "--dec":
            if value not in ("0", "1", "2"):
                usage(sys.stderr)
                return 1
            decimals = int(value)
        elif option == "-V":
            sys.stdout.write("sysstat version 12.6.1 (%s)\n" % VERSION)
            return 0
        else:
            fail("mpstat", "%s describes the host's interrupts, NUMA nodes or topology; it is "
                 "not available for a VM" % option)
    try:
        interval = int(extra[0]) if extra else None
        count = int(extra[1]) if len(extra) > 1 else None
    except ValueError:
        usage(sys.stderr)
        return 1
    if len(extra) > 2 or (interval is not None and interval < 0):
        usage(sys.stderr)
        return 1
    if interval == 0:
        interval = None
    try:
        _locale.setlocale(_locale.LC_TIME, "")
    except _locale.Error:
        pass
    iso = os.environ.get("S_TIME_FORMAT") == "ISO"
    time_format = "%H:%M:%S" if iso else "%X"

    def body():
        reader = source or default_source()
        ncpu = reader.cpu_count()
        # sysstat shows the "all" row unless -P names only some CPUs.
        show_all = not want_cpus or want_cpus.upper() == "ALL"
        try:
            cpus = parse_cpu_list(want_cpus, ncpu) if want_cpus else []
        except ValueError:  # sysstat answers a CPU the VM lacks with its usage
            usage(sys.stderr)
            return 1
        uname = os.uname()
        date = time.strftime("%Y-%m-%d" if iso else "%x")
        sys.stdout.write("%s %s (%s) \t%s \t_%s_\t(%d CPU)\n" % (
            uname[0], uname[2], reader.hostname(), date, uname[4], ncpu))
        cell = "  %6." + str(decimals) + "f"

        def report(label_before, label_now, now, before):
            sys.stdout.write("\n%-11s  CPU    %%usr   %%nice    %%sys %%iowait    %%irq   "
                             "%%soft  %%steal  %%guest  %%gnice   %%idle\n" % label_before)
            rows = [("all", now[0], before[0] if before else None)] if show_all else []
            rows += [(cpu, now[1].get(cpu), before[1].get(cpu) if before else None)
                     for cpu in cpus]
            for name, times, previous in rows:
                if times is None:
                    continue
                values = percentages(times, previous)
                prefix = "%-11s  all" % label_now if name == "all" else "%-11s %4d" % (
                    label_now, name)
                sys.stdout.write(prefix + "".join(cell % values[f] for f in FIELDS) + "\n")
            sys.stdout.flush()

        first = reader.cpu_times()
        stamp = time.strftime(time_format)
        if interval is None:
            report(stamp, stamp, first, None)
            return 0
        previous, previous_stamp = first, stamp
        remaining = count
        reports = 0
        try:
            while remaining is None or remaining > 0:
                time.sleep(interval)
                now = reader.cpu_times()
                now_stamp = time.strftime(time_format)
                report(previous_stamp, now_stamp, now, previous)
                previous, previous_stamp = now, now_stamp
                reports += 1
                if remaining is not None:
                    remaining -= 1
        except KeyboardInterrupt:
            pass
        if reports:
            report("Average:", "Average:", previous, first)
        return 0

    return run("mpstat", body)


if __name__ == "__main__":
    sys.exit(main())
