"""What one cvm invocation works against: a state store (a realm) and a Docker engine."""

from .engine import Engine
from .state import Store


class Context:
    sampler = None  # a monitor.Sampler, where a process that runs anyway keeps one (netd)
    container_states = None  # a containerstates.ContainerStates, likewise

    def __init__(self, state_root=None, docker_url=None):
        self.store = Store(state_root)
        self.engine = Engine(docker_url)

    @property
    def realm(self):
        return self.store.realm


_default_context = None


def default_context():
    """The context of this host's own state (CVM_STATE_DIR or /var/lib/cvm)."""
    global _default_context
    if _default_context is None:
        _default_context = Context()
    return _default_context
