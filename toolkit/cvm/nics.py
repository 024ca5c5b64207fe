"""A VM's NICs as a whole: `cvm net attach`, `detach` and `ls`, above the per-NIC wiring
of cvm.net (which knows nothing of VMs' records and lifecycle)."""

import os

from . import api
from .errors import CvmError, NotFound
from .net import DRIVERS
from .net.wiring import (check_host, claim_addresses, start_probes, unwire_vm, wire_vm,
                         wiring_for)
from .net.netlink import Netlink, open_netns
from .spec import parse_spec


def attach(ctx, name, nic_raw):
    """`cvm net attach`: add a NIC to a VM (live when it runs) and persist it."""
    vm = api.get(name, ctx)
    spec = vm.spec
    raw = dict(vm.record["spec"])
    raw["nics"] = list(raw.get("nics", [])) + [nic_raw]
    new_spec = parse_spec(raw)
    nic = new_spec.nics[-1]
    check_host(parse_spec(dict(raw, nics=[nic.to_dict()])))
    # Probed from the host while the rest is made ready (as create does): at once when the
    # VM is meant to run (before Docker is asked whether it does), or once an ip=auto
    # address is claimed. A stopped VM's probes are not waited for.
    meant_to_run = vm.record.get("desired", "running") == "running"
    early = start_probes(ctx, [nic]) if meant_to_run and nic.ip != "auto" else None
    running = vm.running
    pid = vm.pid if running else None
    try:
        with ctx.store.lock():
            new_spec = claim_addresses(ctx, new_spec)
            ctx.store.write_vm(name, dict(ctx.store.read_vm(name), spec=new_spec.to_dict()))
        if running and early is None:
            early = start_probes(ctx, new_spec.nics[-1:])
        try:
            if running:
                with ctx.store.vm_lock(name):
                    wire_vm(ctx, name, new_spec, pid, probe=True, early=early)
        except BaseException:
            ctx.store.write_vm(name, dict(ctx.store.read_vm(name), spec=spec.to_dict()))
            raise
        vm.write_hosts(new_spec, pid)
    finally:
        if early is not None and running:
            early.wait()
    return new_spec.nics[-1]


def detach(ctx, name, ifname):
    """`cvm net detach`: remove a NIC from a VM and from its spec."""
    vm = api.get(name, ctx)
    spec = vm.spec
    matches = [i for i, nic in enumerate(spec.nics) if nic.name == ifname]
    if not matches:
        raise NotFound("VM %s has no NIC %s (it has %s)" % (
            name, ifname, ", ".join(n.name for n in spec.nics) or "none"))
    index = matches[0]
    pid = vm.pid if vm.running else None
    with ctx.store.vm_lock(name):
        # Unwire from the removed NIC onwards: host names and tags are positional.
        tail = parse_spec(dict(vm.record["spec"], nics=[n.to_dict() for n in spec.nics]))
        unwire_vm(ctx, name, tail, pid)
        remaining = [n.to_dict() for i, n in enumerate(spec.nics) if i != index]
        new_spec = parse_spec(dict(vm.record["spec"], nics=remaining))
        record = ctx.store.read_vm(name)
        ctx.store.write_vm(name, dict(record, spec=new_spec.to_dict(), net={}))
        if pid:
            wire_vm(ctx, name, new_spec, pid)
        vm.write_hosts(new_spec, pid)
    return new_spec


def list_nics(ctx, name=None):
    """Rows for `cvm net ls`: host side, VM side, mode, addresses, MAC, state."""
    vms = [api.get(name, ctx)] if name else api.ls(ctx)
    rows = []
    with Netlink.open() as host:
        for vm in vms:
            if not vm.record["spec"].get("nics"):
                continue
            spec = vm.spec
            inner = None
            if vm.status == "running":
                try:
                    inner = Netlink.open(open_netns(vm.pid), "VM %s" % vm.name)
                except CvmError:
                    inner = None
            try:
                for index, nic in enumerate(spec.nics):
                    w = wiring_for(ctx, host, inner, vm.name, index, spec, vm.record)
                    link = inner.link_state(nic.name) if inner is not None else None
                    row = {"vm": vm.name, "vm_side": nic.name, "mode": nic.mode,
                           "link": nic.link, "addresses": [str(a) for a in nic.addresses()],
                           "mac": (link or {}).get("address") or nic.mac,
                           "state": ("up" if link["up"] else "down") if link else
                           ("stopped" if vm.status != "running" else "missing")}
                    row.update(DRIVERS[nic.mode].describe(w, nic))
                    rows.append(row)
            finally:
                if inner is not None:
                    os.close(inner.netns_fd)
                    inner.close()
    return rows
