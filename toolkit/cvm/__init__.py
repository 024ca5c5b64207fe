"""cvm: Docker containers that live like VMs.

The public API is loaded lazily so that `import cvm` stays cheap:

    import cvm
    vm = cvm.create(cvm.parse_spec({"name": "web1", "image": "cvm/debian12"}))
    cvm.get("web1").stop()
"""

__version__ = "0.1.0"

_EXPORTS = {
    "create": ("api", "create"), "get": ("api", "get"), "ls": ("api", "ls"),
    "apply": ("applying", "apply"), "plan": ("applying", "plan"), "VM": ("api", "VM"),
    "Context": ("api", "Context"), "parse_spec": ("spec", "parse_spec"),
    "load_file": ("specfile", "load_file"), "VMSpec": ("spec", "VMSpec"),
    "provision": ("provisioning", "provision"),
}


def __getattr__(name):
    if name in _EXPORTS:
        import importlib
        module, attr = _EXPORTS[name]
        return getattr(importlib.import_module("." + module, __name__), attr)
    raise AttributeError("module 'cvm' has no attribute %r" % name)
