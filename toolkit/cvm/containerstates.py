"""The state of each of a realm's VM containers as Docker's events leave it, so that
listings need not ask Docker to list every container (with 480 running VMs that list
costs Docker about 100 ms, more than all the rest of `cvm ls`).

cvm netd keeps one, fed by the event stream it follows anyway, and seeded by one list
whenever the stream was (re)opened. Before each answer it also reads the events from
the last one the stream brought up to now, a call that costs Docker the same at any
number of containers: a container that started or stopped a moment ago shows so, even
if the stream has not brought that event yet. Each container keeps the time of what
set its state, so events applied twice or out of order never set an older state."""

import threading
import time

OVERLAP_NS = 1_000_000_000  # catch-ups read again the second before the last one's end
STATE_AFTER = {"create": "created", "start": "running", "restart": "running",
               "unpause": "running", "pause": "paused", "die": "exited"}


class ContainerStates:
    def __init__(self, engine, realm):
        self.engine, self.realm = engine, realm
        self.lock = threading.Lock()
        self.states = None  # {container id: (state, time in ns it held from)}; None: unseeded
        self.followed_ns = 0  # the stream's last event, or the seeding list's start
        self.caught_up_ns = 0  # the end of the last catch-up read

    def lose_track(self):
        """The event stream broke: the next use lists the containers again."""
        with self.lock:
            self.states = None

    def apply(self, event):
        """One container event, from the stream or a catch-up read."""
        action = event.get("Action") or event.get("status")
        container, when = event.get("id"), event.get("timeNano", 0)
        if not container or (action not in STATE_AFTER and action != "destroy"):
            return
        with self.lock:
            if self.states is None:
                return
            held = self.states.get(container)
            if held is not None and held[1] > when:
                return
            self.states[container] = (STATE_AFTER.get(action, "removed"), when)

    def followed(self, event):
        """The stream brought `event`: apply it, and catch-ups start after it."""
        self.apply(event)
        with self.lock:
            self.followed_ns = max(self.followed_ns, event.get("timeNano", 0))

    def current(self):
        """{container id: state}, true as of this call."""
        with self.lock:
            seeded = self.states is not None
            since_ns = max(self.followed_ns, self.caught_up_ns - OVERLAP_NS)
        if not seeded:
            self._seed()
        else:
            now_ns = time.time_ns()
            for event in self.engine.events(self.realm, since=_timestamp(since_ns),
                                            until=_timestamp(now_ns)):
                self.apply(event)
            with self.lock:
                self.caught_up_ns = max(self.caught_up_ns, now_ns)
        with self.lock:
            return {container: state for container, (state, _) in self.states.items()
                    if state != "removed"}

    def _seed(self):
        listed_ns = time.time_ns()
        states = {c["Id"]: (c["State"], listed_ns)
                  for c in self.engine.vm_containers(self.realm)}
        with self.lock:
            self.states, self.followed_ns = states, max(self.followed_ns, listed_ns)


def _timestamp(ns):
    """Docker's form of a time: seconds.nanoseconds."""
    return "%d.%09d" % divmod(ns, 1_000_000_000)
