"""Readers of /proc files. Standard library only, Python 3.6-compatible: copied
into VMs with procview, and used on the host by ls, the tools and the monitor."""

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")
CHUNK = 65536


def read(path, one_record=False):
    """A kernel file's text (/proc, /sys/fs/cgroup), read with plain system calls: half
    the cost of open()'s file objects, which adds up where a tool reads a file per task.

    `one_record`: the kernel writes the file as one record (a process's stat, statm or
    status). seq_file hands such a record whole to a read that asks for more, so a
    shorter read is the end of the file: one read instead of two, for each task."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
            if one_record and len(chunk) < CHUNK:
                break
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


def read_record(path):
    return read(path, one_record=True)


def boot_time(proc="/proc"):
    """Seconds since the epoch at which the kernel booted."""
    for line in read(proc + "/stat").splitlines():
        if line.startswith("btime "):
            return int(line.split()[1])
    raise IOError("no btime in %s/stat" % proc)


def process_stat(pid, proc="/proc", reader=read_record):
    """Fields of /proc/<pid>/stat, indexed as in proc(5) from 1 (comm unparsed safely)."""
    text = reader("%s/%s/stat" % (proc, pid))
    left, right = text.find("("), text.rfind(")")
    fields = [text[:left].strip(), text[left + 1:right]] + text[right + 2:].split()
    return [None] + fields  # fields[1] = pid, fields[2] = comm, fields[3] = state ...


def start_ticks(pid):
    """When process `pid` started, in clock ticks since boot: with its pid, it names the
    process (a pid alone may be reused); None if it is gone."""
    try:
        return process_stat(pid)[22]
    except (OSError, IndexError):
        return None


def status_field(status, name):
    """The value of field `name` (after its line's first field, Name) in the text of a
    /proc/<pid>/status, or "" when the kernel writes no such line."""
    key = "\n%s:" % name
    at = status.find(key)
    if at < 0:
        return ""
    end = status.find("\n", at + len(key))
    return status[at + len(key):end if end >= 0 else len(status)].strip()


def takes_signal(pid, signum):
    """Does process `pid` take signal `signum` now: block it (it waits, queued, for a
    signalfd as systemd's do) or catch it? One that does neither as a namespace's PID 1
    is dropped."""
    try:
        status = read_record("/proc/%d/status" % pid)
    except OSError:
        return False
    bit = 1 << (signum - 1)
    return any(int(status_field(status, mask) or "0", 16) & bit
               for mask in ("SigBlk", "SigCgt"))


def process_start_time(pid, proc="/proc"):
    """Epoch seconds at which process `pid` started."""
    return boot_time(proc) + int(process_stat(pid, proc)[22]) / float(CLK_TCK)


def process_age(pid, proc="/proc"):
    import time
    return max(0.0, time.time() - process_start_time(pid, proc))


def meminfo(proc="/proc"):
    """/proc/meminfo as {key: bytes}."""
    result = {}
    for line in read(proc + "/meminfo").splitlines():
        parts = line.split()
        if len(parts) >= 2:
            value = int(parts[1])
            result[parts[0].rstrip(":")] = value * 1024 if len(parts) > 2 else value
    return result
