"""top(1) for a VM: procps-ng 4.0.2's summary and task table, the VM's numbers only.

The summary's CPU line is the VM's CPU time (steal: time its quota held it back);
its memory lines are free's; the table lists the VM's own processes, with %MEM of the
VM's memory. Batch mode (-b) takes -n, -d, -p, -c, -o, -w and -1 as top does; without
-b, top runs interactively (curses): q quits, P/M/T/N sort by CPU, memory, time, PID,
1 shows each CPU, c shows command lines, any other key refreshes.

The first frame's %CPU needs an earlier sample: it is the one a previous run left
(if under a minute old), or one taken 50 ms earlier (top itself waits ~150 ms).
"""

import os
import sys
import time

from . import state
from .common import VERSION, fail, float32, number, parse, run
from .sources import CLK_TCK, default_source, task_ticks
from .uptime import uptime_line

HEADER_FIELDS = "PID USER      PR  NI    VIRT    RES    SHR S  %CPU  %MEM     TIME+ COMMAND"
FIRST_SAMPLE_GAP = 0.05
SNAPSHOT_MAX_AGE = 60.0
SNAPSHOT_FORMAT = 1
SORTS = {"P": "%CPU", "M": "%MEM", "T": "TIME+", "N": "PID"}


def usage(out):
    out.write("""
Usage:
 top [options]

Options:
 -b, --batch-mode                run in non-interactive batch mode
 -c, --cmdline-toggle            reverse last remembered 'c' state
 -d, --delay =SECS [.TENTHS]     iterative delay as SECS [.TENTHS]
 -n, --iterations =NUMBER        exit on maximum iterations NUMBER
 -o, --sort-override =FIELD      force sorting on this named FIELD
 -p, --pid =PIDLIST              monitor only the tasks in PIDLIST
 -w, --width [=COLUMNS]          change print width [,use COLUMNS]
 -1, --single-cpu-toggle         reverse last remembered '1' state

 -h, --help                      display this help text, then exit
 -V, --version                   output version information & exit

cvm: the summary and the tasks are the VM's; %MEM is of the VM's memory; st is the
time its CPU quota held it back. On cgroup v2 the per-CPU lines ('1') share the VM's
total evenly: v2 keeps no per-CPU usage.

For more details see top(1).
""")


def cpu_time(task, proc=None):
    """CPU seconds of a whole process, all its threads (as top counts them)."""
    return task.ticks / float(CLK_TCK)


def scale_mem(kib, width):
    """top's scale_mem(): KiB if it fits, else m/g/t/p with one decimal."""
    text = "%.0f" % kib
    if len(text) <= width:
        return text
    value = float(kib)
    for suffix in "mgtp":
        value /= 1024.0
        text = "%.1f%s" % (float32(value), suffix)
        if len(text) <= width:
            return text
    return "?"


def scale_pcnt(value, width=5):
    text = "%.1f" % value
    if len(text) > width:
        text = "%.0f" % value
    return text if len(text) <= width else "?"


def scale_tics(seconds, width=9):
    """TIME+: minutes:seconds.hundredths, coarser when it does not fit."""
    hundredths = int(seconds * 100)
    minutes, rest = divmod(hundredths, 6000)
    text = "%d:%02d.%02d" % (minutes, rest // 100, rest % 100)
    if len(text) <= width:
        return text
    text = "%d:%02d" % (minutes, rest // 100)
    if len(text) <= width:
        return text
    hours = minutes // 60
    text = "%d,%02d" % (hours, minutes % 60)
    if len(text) <= width:
        return text
    return "%dh" % hours


def priority(task):
    return "rt" if task.priority < -99 else "%d" % task.priority


class Frame(object):
    """One refresh: the summary figures and the task rows."""

    def __init__(self, reader, previous, pids=None, cmdline=False):
        self.when = time.time()
        self.reader = reader
        self.memory = reader.memory()
        self.cpu = reader.cpu_times()
        self.tasks = [t for t in reader.tasks() if not pids or t.pid in pids]
        self.cpu_seconds = dict((t.host_pid, cpu_time(t, reader.proc)) for t in self.tasks)
        elapsed = max(1e-3, self.when - previous["when"]) if previous else 0.0
        self.usage = {}
        for task in self.tasks:
            before = previous["tasks"].get(str(task.host_pid)) if previous else None
            used = self.cpu_seconds[task.host_pid] - before if before is not None else 0.0
            self.usage[task.host_pid] = 100.0 * max(0.0, used) / elapsed if elapsed else 0.0
        self.previous_cpu = previous.get("cpu") if previous else None
        if cmdline:
            for task in self.tasks:
                task.cmdline = read_cmdline(reader.proc, task.host_pid)

    def snapshot(self):
        return {"format": SNAPSHOT_FORMAT, "when": self.when, "tasks": dict((str(k), v) for k, v in
                                                 self.cpu_seconds.items()),
                "cpu": [self.cpu[0], dict((str(k), v) for k, v in self.cpu[1].items())]}


def read_cmdline(proc, pid):
    try:
        with open("%s/%d/cmdline" % (proc, pid), "rb") as handle:
            text = handle.read().replace(b"\0", b" ").strip().decode("utf-8", "replace")
    except (IOError, OSError):
        return None
    return text or None


def cpu_line(label, now, before):
    keys = ("user", "system", "nice", "idle", "iowait", "irq", "softirq", "steal")
    delta = dict((k, now[k] - (before.get(k, 0.0) if before else 0.0)) for k in keys)
    total = sum(delta.values()) or 1.0
    pct = dict((k, 100.0 * v / total) for k, v in delta.items())
    return ("%s%5.1f us,%5.1f sy,%5.1f ni,%5.1f id,%5.1f wa,%5.1f hi,%5.1f si,%5.1f st " % (
        label, pct["user"], pct["system"], pct["nice"], pct["idle"], pct["iowait"], pct["irq"],
        pct["softirq"], pct["steal"]))


def tasks_line(states):
    """procps' line of task counts (" %3u " each: wider counts push the line right)."""
    running = states.count("R")
    stopped = states.count("T") + states.count("t")
    zombie = states.count("Z")
    return "Tasks: %3d total, %3d running, %3d sleeping, %3d stopped, %3d zombie" % (
        len(states), running, len(states) - running - stopped - zombie, stopped, zombie)


def summary(frame, per_cpu):
    lines = ["top - " + uptime_line(frame.reader, frame.when).lstrip(),
             tasks_line([t.state for t in frame.tasks])]
    before = frame.previous_cpu
    if per_cpu:
        for cpu in sorted(frame.cpu[1]):
            prior = before[1].get(str(cpu)) if before else None
            lines.append(cpu_line("%%Cpu%-3d:" % cpu, frame.cpu[1][cpu], prior))
    else:
        lines.append(cpu_line("%Cpu(s):", frame.cpu[0], before[0] if before else None))
    memory = frame.memory
    mib = lambda kib: kib / 1024.0  # noqa: E731
    lines.append("MiB Mem :%9.1f total,%9.1f free,%9.1f used,%9.1f buff/cache     " % (
        mib(memory.total), mib(memory.free), mib(memory.used), mib(memory.buffers + memory.cache)))
    lines.append("MiB Swap:%9.1f total,%9.1f free,%9.1f used.%9.1f avail Mem " % (
        mib(memory.swap_total), mib(memory.swap_free), mib(memory.swap_used),
        mib(memory.available)))
    return lines


def sort_key(frame, field):
    if field == "%MEM":
        return lambda t: -t.rss_kib
    if field == "TIME+":
        return lambda t: -frame.cpu_seconds[t.host_pid]
    if field == "PID":
        return lambda t: t.pid
    return lambda t: -frame.usage[t.host_pid]


def task_table(frame, width, sort_field, cmdline, limit=None):
    names = frame.reader.user_names()
    pid_width = frame.reader.pid_width()
    total = frame.memory.total or 1
    lines = [("%*s " % (pid_width, "PID") + HEADER_FIELDS[4:])[:width]]
    tasks = sorted(frame.tasks, key=lambda t: t.pid)
    tasks.sort(key=sort_key(frame, sort_field))
    for task in tasks[:limit]:
        user = names.get(task.uid, str(task.uid))
        if len(user) > 8:
            user = user[:7] + "+"
        line = "%*d %-8s %3s %3d %7s %6s %6s %s %5s %5s %9s " % (
            pid_width, task.pid, user, priority(task), task.nice, scale_mem(task.vsize_kib, 7),
            scale_mem(task.rss_kib, 6), scale_mem(task.shared_kib, 6), task.state,
            scale_pcnt(frame.usage[task.host_pid]),
            scale_pcnt(100.0 * task.rss_kib / total), scale_tics(frame.cpu_seconds[
                task.host_pid]))
        command = (task.cmdline if cmdline and task.cmdline else task.comm)
        room = width - 1 - len(line)  # top leaves the last column empty
        if room > 0 and len(command) > room:
            command = command[:room - 1] + "+"
        lines.append((line + command)[:width] if room > 0 else line[:width])
    return lines


def screen_width(requested):
    if requested:
        return requested
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    if sys.stdout.isatty():
        try:
            return os.get_terminal_size().columns
        except OSError:
            pass
    return 80


def first_previous(reader, key):
    """A recent sample from an earlier run, or a fresh one FIRST_SAMPLE_GAP ago."""
    saved = state.load(key)
    if saved and saved.get("format") == SNAPSHOT_FORMAT and \
            0 < time.time() - saved.get("when", 0) < SNAPSHOT_MAX_AGE:
        return saved
    ticks = task_ticks(reader.proc, reader.host_pids())
    cpu = reader.cpu_times()
    sample = {"format": SNAPSHOT_FORMAT, "when": time.time(),
              "tasks": dict((str(pid), value / float(CLK_TCK)) for pid, value in ticks.items()),
              "cpu": [cpu[0], dict((str(k), v) for k, v in cpu[1].items())]}
    time.sleep(FIRST_SAMPLE_GAP)
    return sample


def main(argv=None, source=None):
    argv = sys.argv[1:] if argv is None else argv
    options, extra = parse(argv, "bcd:n:o:p:w:1hVsSiHE:e:U:u:O", [
        "batch-mode", "cmdline-toggle", "delay=", "iterations=", "sort-override=", "pid=",
        "width=", "single-cpu-toggle", "help", "version"], usage, "top")
    if extra:
        fail("top", "unknown option '%s'" % extra[0])
    batch, delay, iterations, per_cpu, cmdline = False, 3.0, None, False, False
    sort_field, pids, width = "%CPU", None, None
    for option, value in options:
        if option in ("-b", "--batch-mode"):
            batch = True
        elif option in ("-c", "--cmdline-toggle"):
            cmdline = not cmdline
        elif option in ("-d", "--delay"):
            delay = number(float, value, "top", "bad delay interval '%s'" % value)
            if delay < 0:
                fail("top", "delay interval '%s' can't be negative" % value)
        elif option in ("-n", "--iterations"):
            iterations = number(int, value, "top", "bad iterations argument '%s'" % value)
        elif option in ("-o", "--sort-override"):
            field = value.lstrip("+-").upper()
            if field not in ("%CPU", "%MEM", "TIME+", "PID", "TIME"):
                fail("top", "unrecognized field name '%s'" % value)
            sort_field = "TIME+" if field == "TIME" else field
        elif option in ("-p", "--pid"):
            pids = number(lambda text: set(int(p) for p in text.split(",") if p), value, "top",
                          "bad pid '%s'" % value)
        elif option in ("-w", "--width"):
            width = number(int, value, "top", "bad width arg '%s'" % value)
        elif option in ("-1", "--single-cpu-toggle"):
            per_cpu = not per_cpu
        elif option in ("-h", "--help"):
            usage(sys.stdout)
            return 0
        elif option in ("-V", "--version"):
            sys.stdout.write("top from %s\n" % VERSION)
            return 0
        # -s -S -i -H -E -e -U -u -O are accepted and ignored, as harmless to scripts

    settings = {"sort": sort_field, "per_cpu": per_cpu, "cmdline": cmdline}

    def body():
        reader = source or default_source()
        key = "top-" + state.key_for(reader)
        previous = first_previous(reader, key)
        if not batch and sys.stdout.isatty():
            return interactive(reader, previous, delay, settings, pids, key)
        count = 0
        while iterations is None or count < iterations:
            if count:
                time.sleep(delay)
            frame = Frame(reader, previous, pids, settings["cmdline"])
            columns = screen_width(width)
            lines = summary(frame, settings["per_cpu"]) + [""] + task_table(
                frame, columns, settings["sort"], settings["cmdline"])
            if count:
                sys.stdout.write("\n")
            sys.stdout.write("\n".join(lines) + "\n\n")
            sys.stdout.flush()
            previous = frame.snapshot()
            count += 1
        state.save(key, previous)
        return 0

    return run("top", body)


def interactive(reader, previous, delay, settings, pids, key):
    try:
        import curses
    except ImportError:
        fail("top", "interactive mode needs python3's curses module; use top -b")

    def screen(window):
        nonlocal_previous = [previous]
        curses.curs_set(0)
        window.timeout(int(delay * 1000))
        while True:
            frame = Frame(reader, nonlocal_previous[0], pids, settings["cmdline"])
            height, columns = window.getmaxyx()
            lines = summary(frame, settings["per_cpu"]) + [""]
            lines += task_table(frame, columns - 1, settings["sort"], settings["cmdline"],
                                limit=max(0, height - len(lines) - 1))
            window.erase()
            for row, line in enumerate(lines[:height - 1]):
                window.addstr(row, 0, line[:columns - 1],
                              curses.A_REVERSE if row == len(lines) - len(lines) + 6 else 0)
            window.refresh()
            nonlocal_previous[0] = frame.snapshot()
            key_pressed = window.getch()
            if key_pressed in (ord("q"), ord("Q")):
                state.save(key, nonlocal_previous[0])
                return 0
            character = chr(key_pressed) if 0 <= key_pressed < 256 else ""
            if character in SORTS:
                settings["sort"] = SORTS[character]
            elif character == "1":
                settings["per_cpu"] = not settings["per_cpu"]
            elif character == "c":
                settings["cmdline"] = not settings["cmdline"]

    return curses.wrapper(screen)


if __name__ == "__main__":
    sys.exit(main())
