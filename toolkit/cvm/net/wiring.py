"""Wiring whole VMs: every NIC of a VM, each by its mode's driver.

The lifecycle calls, in order:
    check_host(spec)               host checks before anything is touched
    claim_addresses(ctx, spec)     under the host-wide lock: no clashes, fill ip=auto/vf
    wire_vm(ctx, name, spec, pid)  make the running VM's NICs match the spec (idempotent)
    unwire_vm(ctx, name, spec, pid)  remove everything the NICs left on the host
Every NIC is wired in a transaction; if NIC k fails, NICs 1..k-1 of this call are
undone too, so a VM is wired completely or not at all.
"""

import os

from ..errors import CvmError
from ..spec import parse_spec
from . import DRIVERS, addresses, filtering, inside, kernel
from .base import HostView, Transaction, Wiring, parse_tag
from .netlink import Netlink, open_netns
from .sriov import Sysfs
from .veth import port_name
from .vlan import remove_unused

def check_host(spec, host=None):
    """Validate every NIC against this host before anything changes."""
    own = host is None
    host = host or Netlink.open()
    try:
        needed = {f for nic in spec.nics for f in DRIVERS[nic.mode].needed_features(nic)}
        view = HostView(host, kernel.features() if needed else {}, Sysfs())
        for index, nic in enumerate(spec.nics):
            DRIVERS[nic.mode].validate(nic, view, "nics[%d]" % index)
    finally:
        if own:
            host.close()


def claim_addresses(ctx, spec, records=None):
    """Call with ctx.store.lock() held. Returns the spec with ip=auto and VFs filled in;
    no address another VM (of `records`, default the store's) or the host has."""
    from .hostbridge import host_addresses
    with Netlink.open() as host:
        taken = host_addresses(host)
    return addresses.claim(spec, ctx.store.vm_records() if records is None else records,
                           ctx.store.bridge_records(), Sysfs(), host_addresses=taken)


def _persist_saved(ctx, name, index):
    def persist(saved):
        record = ctx.store.read_vm(name)
        if record is None:
            return
        net = dict(record.get("net") or {})
        if saved:
            net[str(index)] = saved
        else:
            net.pop(str(index), None)
        ctx.store.write_vm(name, dict(record, net=net))
    return persist


def wiring_for(ctx, host, vm, name, index, spec=None, record=None):
    """`record`: the VM's as just read, if the caller has it."""
    record = (ctx.store.read_vm(name) if record is None else record) or {}
    saved = (record.get("net") or {}).get(str(index))
    return Wiring(host, vm, name, index, ctx.realm, saved, _persist_saved(ctx, name, index),
                  Sysfs(), spec)


def start_probes(ctx, nics):
    """Probe the segments of `nics` for their addresses from the host, in the
    background."""
    return inside.EarlyProbes(nics, DRIVERS, ctx.realm)


def wire_vm(ctx, name, spec, pid, probe=False, early=None):
    """Make VM `name`'s NICs match `spec`. Returns the names of the NICs it (re)wired.

    `probe` asks the segment whether each address is free first (on create and
    attach; a restarting VM keeps its addresses without waiting for probes). `early`
    holds probes already under way from start_probes()."""
    netns_fd = open_netns(pid)
    done = []
    try:
        with Netlink.open() as host, Netlink.open(netns_fd, "VM %s" % name) as vm:
            try:
                for index, nic in enumerate(spec.nics):
                    driver = DRIVERS[nic.mode]
                    w = wiring_for(ctx, host, vm, name, index, spec)
                    inner = vm.link(nic.name)
                    if inner is not None:  # a fresh namespace (the usual restart) skips this
                        if inside.configured(w, nic, driver, inner) and driver.plugged(w, nic):
                            driver.ensure_filter(w, nic)  # netd's reconcile re-applies them
                            continue
                        _clear(w, nic, driver)  # half-wired (a crash mid-way): start afresh
                    tx = Transaction("%s: %s" % (name, nic.name))
                    done.append((tx, nic.name))
                    try:
                        driver.plug(tx, w, nic)
                        inside.configure(tx, w, nic, driver, probe=probe, early=early)
                        driver.after_configure(tx, w, nic)
                    except BaseException:
                        tx.rollback()
                        done.pop()
                        raise
            except BaseException:
                for tx, _ in reversed(done):
                    tx.rollback()
                raise
    finally:
        os.close(netns_fd)
    return [nic_name for _, nic_name in done]


def _clear(w, nic, driver):
    """Remove the pieces of a half-wired NIC, and only ours: a foreign interface with the
    NIC's name inside the VM is a clash to report, not something to delete."""
    try:
        driver.unplug(w, nic)
    except Exception:
        pass
    inner = w.vm.link(nic.name) if w.vm is not None else None
    if inner is not None and inner.get("ifalias") == w.tag and nic.mode != "sriov":
        try:
            w.vm.request("link", "del", index=inner["index"])
        except Exception:
            pass


def unwire_vm(ctx, name, spec, pid=None):
    """Remove what VM `name`'s NICs left on the host (and in its namespace, if alive).
    Safe to call on a VM that is stopped, half-wired or already unwired."""
    netns_fd = None
    if pid:
        try:
            netns_fd = open_netns(pid)
        except CvmError:
            netns_fd = None
    try:
        with Netlink.open() as host:
            vm = Netlink.open(netns_fd, "VM %s" % name) if netns_fd is not None else None
            try:
                for index, nic in enumerate(spec.nics):
                    w = wiring_for(ctx, host, vm, name, index, spec)
                    DRIVERS[nic.mode].unplug(w, nic)
            finally:
                if vm is not None:
                    vm.close()
            if any(_on_vlan(nic.to_dict()) for nic in spec.nics):
                # A dump of every host link and a read of every VM's record: only for
                # the NICs that may leave a VLAN unused (netd's sweep catches the rest).
                remove_unused(host, ctx.realm, _vlans_in_use(ctx, exclude=name))
    finally:
        if netns_fd is not None:
            os.close(netns_fd)


def _vlans_in_use(ctx, exclude=None, only=None):
    """(parent, vid) pairs that NICs of the VMs (all, or `only` these) stack on."""
    used = set()
    for vm_name, record in ctx.store.vm_records().items():
        if vm_name == exclude or (only is not None and vm_name not in only):
            continue
        for nic in record["spec"].get("nics", []):
            if _on_vlan(nic):
                used.add((nic.get("link"), int(nic["vlan"])))
    return used


def _on_vlan(raw_nic):
    """Does this NIC (as stored) stack on a VLAN sub-interface that cvm makes?"""
    return bool(raw_nic.get("vlan")) and raw_nic.get("mode") in ("macvlan", "ipvlan")


def sweep(ctx, running):
    """Remove host-side leftovers: interfaces tagged for VMs that no longer exist, and
    the host pieces (proxy entries, VFs, filters) of VMs that are not running. `running`
    is the set of VM names whose containers ran when the caller looked; VMs started
    since (by a recovery, a user, an event) are kept too, from one more look. That look
    is Docker's list, never an inspect: an inspect waits for a container that Docker is
    stopping, and its stop may be waiting for netd (see cvm.stopsignal).
    Returns what it removed."""
    removed = []
    records = ctx.store.vm_records()
    with Netlink.open() as host:
        for link in host.links():
            tag = parse_tag(link.get("ifalias"))
            if tag and tag[0] == ctx.realm and tag[1] not in records:
                host.delete_link(index=link["index"])
                removed.append(link.get("ifname"))
    running = set(running) | ctx.engine.running_vms(ctx.realm)
    for name, record in records.items():
        if name in running or record.get("phase") != "ready":
            continue
        spec = parse_spec(record["spec"])
        if spec.nics:
            with ctx.store.vm_lock(name):
                unwire_vm(ctx, name, spec, None)
    with Netlink.open() as host:
        removed += remove_unused(host, ctx.realm, _vlans_in_use(ctx, only=running))
    with Netlink.open() as host:
        for family, port in filter_report(ctx, running, host.nft())["stale"]:
            filtering.HostPortFilter(host.nft(), ctx.realm, family, port).remove()
            removed.append("filter of %s" % port)
    return removed


def _filtered_ports(records):
    """{(family, host port): (VM, NIC)} of every filtered NIC of the ready VMs in `records`."""
    ports = {}
    for name, record in records.items():
        if record.get("phase") != "ready":
            continue
        spec = parse_spec(record["spec"])
        for index, nic in enumerate(spec.nics):
            family = {"bridge": "bridge", "routed": "inet"}.get(nic.mode)
            if family and filtering.wanted(nic):
                ports[(family, port_name(name, index, nic))] = (name, nic.name)
    return ports


def filter_report(ctx, running, nft):
    """{"missing": [(vm, nic, port)], "stale": [(family, port)]}: host-side filters that
    running VMs' NICs should have and lack, and filters of ports no running VM has."""
    expected = {port: owner for port, owner in _filtered_ports(ctx.store.vm_records()).items()
                if owner[0] in running}
    present = {(family, port) for family, ports in filtering.host_ports(nft, ctx.realm).items()
               for port in ports}
    return {"missing": sorted((vm, nic, port) for (family, port), (vm, nic) in expected.items()
                              if (family, port) not in present),
            "stale": sorted(present - set(expected))}


def reconcile(ctx, name, old_spec, new_spec, pid):
    """NICs changed in a spec (cvm apply): unwire the old set, wire the new one."""
    with ctx.store.vm_lock(name):
        unwire_vm(ctx, name, old_spec, pid)
        if pid:
            wire_vm(ctx, name, new_spec, pid, probe=True)
