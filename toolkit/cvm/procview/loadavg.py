"""Load averages of a VM's own tasks.

The kernel's 1/5/15-minute averages are exponentially smoothed counts of runnable and
uninterruptible tasks, sampled every 5 s, for the whole machine. A VM gets the same
smoothing over its own tasks: each run of a tool adds a sample and decays the previous
averages by the time since the last one (state.py keeps them between runs). Inside a
VM whose /proc/loadavg is LXCFS's (lxcfs -l samples every VM continuously), that file
is already the VM's and is read as is.
"""

import math
import os
import time

from . import state

WINDOWS = (60.0, 300.0, 900.0)


def lxcfs_file(path):
    """Is `path` provided by LXCFS in this mount namespace?"""
    try:
        with open("/proc/self/mountinfo") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) > 4 and fields[4] == path and "lxcfs" in line:
                    return True
    except (IOError, OSError):
        pass
    return False


def decay(previous, sample, elapsed):
    """The kernel's calc_load step, applied over `elapsed` seconds at once."""
    return tuple(old * math.exp(-elapsed / window) + sample * (1 - math.exp(-elapsed / window))
                 for old, window in zip(previous, WINDOWS))


def vm_loadavg(source):
    if not source.host_side and lxcfs_file("/proc/loadavg"):
        with open("/proc/loadavg") as handle:
            return tuple(float(v) for v in handle.read().split()[:3])
    running, blocked, _ = source.activity()
    if not source.host_side:
        running = max(0, running - 1)  # this tool itself is running now; the kernel would
        # not usually have caught it on a 5 s tick
    sample = float(running + blocked)
    key = "load-" + state.key_for(source)
    now = time.time()
    saved = state.load(key)
    if saved and saved.get("boot") == source.start_time() and now >= saved["time"]:
        averages = decay(saved["loads"], sample, now - saved["time"])
    else:
        averages = (sample, sample, sample)
    state.save(key, {"time": now, "loads": list(averages), "boot": source.start_time(),
                     "pid": os.getpid()})
    return averages
