# -*- coding: utf-8 -*-
# Copyright: cvm maintainers. Apache-2.0.
"""What every cvm.toolkit module shares: importing cvm, and the VM spec fields."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

SPEC_OPTIONS = dict(
    image=dict(type="str"),
    hostname=dict(type="str"),
    cpus=dict(type="float"),
    cpuset=dict(type="str"),
    cpu_shares=dict(type="int"),
    memory=dict(type="str"),
    swap=dict(type="str"),
    pids=dict(type="raw"),
    device_read_bps=dict(type="list", elements="str"),
    device_write_bps=dict(type="list", elements="str"),
    device_read_iops=dict(type="list", elements="str"),
    device_write_iops=dict(type="list", elements="str"),
    blkio_weight=dict(type="int"),
    volumes=dict(type="list", elements="str"),
    init=dict(type="str", choices=["auto", "systemd", "compat", "none"]),
    command=dict(type="raw"),
    env=dict(type="dict"),
    labels=dict(type="dict"),
    restart=dict(type="str"),
    dns=dict(type="list", elements="str"),
    search=dict(type="list", elements="str"),
    ssh_keys=dict(type="list", elements="str", no_log=False),
    nics=dict(type="list", elements="raw"),
    lxcfs=dict(type="bool"),
    tune=dict(type="list", elements="str"),
    snapshots=dict(type="raw"),
)


# VM fields a container host may default for all its VMs (host var, built-in default).
HOST_DEFAULTS = dict(
    image=("cvm_default_image", "cvm/debian12"),
    dns=("cvm_dns", None),
    search=("cvm_search", None),
    ssh_keys=("cvm_ssh_keys", None),
)

# Keys of a cvm_vms entry that are about the inventory, not the VM's spec.
INVENTORY_KEYS = ("tags", "state", "recreate", "connection", "ssh_private_key_file")


def declared_spec(vm, host_vars):
    """A cvm_vms entry as a raw VM spec, with its host's defaults filled in."""
    raw = dict((k, v) for k, v in vm.items() if k not in INVENTORY_KEYS)
    for field, (host_var, default) in HOST_DEFAULTS.items():
        if raw.get(field) is None:
            value = host_vars.get(host_var, default)
            if value is not None:
                raw[field] = value
    return raw


def import_cvm(module):
    """The cvm package, or a clear failure saying how to get it."""
    try:
        import cvm  # noqa: F401
        from cvm import api, spec  # noqa: F401
    except ImportError as exc:
        module.fail_json(msg="cvm is not importable by %s (%s): prepare the host with "
                         "playbooks/host.yml and use ansible_python_interpreter: "
                         "/opt/cvm/venv/bin/python" % (module._name, exc))
    import cvm
    return cvm


def raw_spec(params):
    """The VM spec fields the task gave (unset ones are left to cvm's defaults)."""
    raw = {"name": params["name"]}
    for key in SPEC_OPTIONS:
        if params.get(key) is not None:
            raw[key] = params[key]
    return raw


def context(module):
    from cvm.api import Context
    return Context(state_root=module.params.get("state_dir") or None)
