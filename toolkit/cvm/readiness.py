"""Waiting for file descriptors to be readable, with poll(2): select(2) aborts the whole
process on a descriptor numbered 1024 or more, and cvm netd holds thousands (the
sampler keeps every VM's cgroup files open)."""

import select


def readable(watched, timeout=None):
    """Those of `watched` (sockets or fd numbers) that can be read now or become so
    within `timeout` seconds (None: wait as long as it takes)."""
    poller = select.poll()
    by_fd = {}
    for item in watched:
        fd = item if isinstance(item, int) else item.fileno()
        by_fd[fd] = item
        poller.register(fd, select.POLLIN | select.POLLPRI)
    events = poller.poll(None if timeout is None else max(0, int(timeout * 1000)))
    return [by_fd[fd] for fd, _ in events]
