"""uptime(1) for a VM: how long its init has run, its users, its own load averages."""

import sys
import time

from .common import VERSION, parse, run
from .sources import default_source

DECADE, YEAR, WEEK, DAY = 60 * 60 * 24 * 365 * 10, 60 * 60 * 24 * 365, 60 * 60 * 24 * 7, 86400


def usage(out):
    out.write("""
Usage:
 uptime [options]

Options:
 -p, --pretty   show uptime in pretty format
 -h, --help     display this help and exit
 -s, --since    system up since
 -V, --version  output version information and exit

cvm: the VM's uptime (the age of its init) and the load of its own tasks.

For more details see uptime(1).
""")


def duration(seconds, pretty):
    """procps-ng 4.0.2's uptime component: "3 days,  1:05" or "3 days, 1 hour, 5 minutes"."""
    whole = int(seconds)
    minutes = whole // 60 % 60
    hours = whole // 3600 % 24
    if not pretty:
        days = whole // DAY
        text = "%d %s, " % (days, "days" if days > 1 else "day") if days else ""
        return text + ("%2d:%02d" % (hours, minutes) if hours else "%d min" % minutes)
    parts = []
    for count, one in ((whole // DECADE, "decade"), (whole // YEAR % 10, "year"),
                       (whole // WEEK % 52, "week"), (whole // DAY % 7, "day"),
                       (hours, "hour")):
        if count:
            parts.append("%d %s%s" % (count, one, "s" if count > 1 else ""))
    if minutes or whole < 60:
        parts.append("%d minute%s" % (minutes, "" if minutes == 1 else "s"))
    return ", ".join(parts)


def uptime_line(source, now=None):
    """' 06:20:20 up 47 min,  0 user,  load average: 0.68, 0.86, 0.69' (top uses it too)."""
    now = time.time() if now is None else now
    users = source.users()
    loads = source.loadavg()
    return " %s up %s, %2d %s,  load average: %.2f, %.2f, %.2f" % (
        time.strftime("%H:%M:%S", time.localtime(now)), duration(source.uptime(), False),
        users, "users" if users > 1 else "user", loads[0], loads[1], loads[2])


def main(argv=None, source=None):
    argv = sys.argv[1:] if argv is None else argv
    options, extra = parse(argv, "phsV", ["pretty", "help", "since", "version"], usage,
                           "uptime")
    if extra:
        usage(sys.stderr)
        return 1
    flags = set(option for option, _ in options)

    def body():
        if flags & {"-h", "--help"}:
            usage(sys.stdout)
            return 0
        if flags & {"-V", "--version"}:
            sys.stdout.write("uptime from %s\n" % VERSION)
            return 0
        reader = source or default_source()
        if flags & {"-s", "--since"}:
            since = int(time.time() - reader.uptime() + 0.5)  # rounded, as procps does
            sys.stdout.write(time.strftime("%Y-%m-%d %H:%M:%S\n", time.localtime(since)))
        elif flags & {"-p", "--pretty"}:
            sys.stdout.write("up %s\n" % duration(reader.uptime(), True))
        else:
            sys.stdout.write(uptime_line(reader) + "\n")
        return 0

    return run("uptime", body)


if __name__ == "__main__":
    sys.exit(main())
