"""Typed errors. Every message is one line a sysadmin can act on.

The CLI prints ``cvm: <message>`` and exits with ``exit_code``: 2 when the request
is refused as given (a field's value, or a name or address that does not exist or is
taken: fix the command), 1 for a fault of the host, the engine or the kernel, or one
met while acting (fix the host, or retry). The Python API raises them unchanged.
"""


class CvmError(Exception):
    """Base class for every error cvm reports to its user."""

    exit_code = 1

    def __init__(self, message):
        super().__init__(message)
        self.message = message

    def __str__(self):
        return self.message

    def to_dict(self):
        """Serialisable form, used to carry errors across the daemon socket."""
        return {"type": type(self).__name__, "message": self.message,
                "field": getattr(self, "field", None)}


class SpecError(CvmError):
    """A field of a VM, NIC or bridge spec is invalid."""

    exit_code = 2

    def __init__(self, field, problem):
        super().__init__("%s: %s" % (field, problem) if field else problem)
        self.field = field
        self.problem = problem


class NotFound(CvmError):
    """A VM, image, bridge or interface that was named does not exist."""

    exit_code = 2


class Conflict(CvmError):
    """The request collides with something that exists (name, address, MAC), or the VM
    is not in a state that allows it."""

    exit_code = 2


class EngineUnavailable(CvmError):
    """No Docker engine answers."""


class PermissionDenied(CvmError):
    """The operation needs root."""


class KernelFeatureMissing(CvmError):
    """The host kernel lacks a feature a NIC mode or option needs."""

    def __init__(self, feature, needed_for):
        super().__init__("this kernel lacks %s, which %s needs (load the module or use "
                         "another mode)" % (feature, needed_for))
        self.feature = feature


class NetError(CvmError):
    """Wiring a NIC failed; whatever was done has been undone."""


class ImageError(CvmError):
    """An image could not be built, imported or found."""

    def __init__(self, message, log_path=None):
        if log_path:
            message = "%s (build log: %s)" % (message, log_path)
        super().__init__(message)
        self.log_path = log_path


class StateError(CvmError):
    """The persisted state is unreadable or locked for too long."""


def from_dict(data):
    """Rebuild an error that crossed the daemon socket as its own type."""
    kind = {cls.__name__: cls for cls in _all_error_types()}.get(data.get("type"), CvmError)
    error = CvmError.__new__(kind)
    CvmError.__init__(error, data.get("message", "unknown error"))
    if data.get("field") is not None:
        error.field = data["field"]
    return error


def _all_error_types():
    seen, todo = [], [CvmError]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo.extend(cls.__subclasses__())
    return seen
