"""What holds across a fleet's inventory, checked and decided on the controller before any
host is touched: overlay bridges that agree with each other, and `ip: auto` resolved
from a bridge's pool once for the whole fleet.

`hosts` is {host: its variables} as the inventory gives them (cvm_bridges, cvm_vms, ...).
Addresses given to `ip: auto` are kept in a lease file next to the inventory, so that a
VM keeps its address across runs (and across `--limit` runs that see only some hosts),
and a new VM never takes one that any host's VM holds or held.
"""

import ipaddress
import json
import os


def overlay_problems(hosts):
    """An overlay bridge must have one VNI everywhere, and a VNI one bridge."""
    problems, by_name, by_vni = [], {}, {}
    for host in sorted(hosts):
        for bridge in (hosts[host] or {}).get("cvm_bridges") or []:
            vni = (bridge.get("vxlan") or {}).get("id")
            if vni is None:
                continue
            name = bridge.get("name")
            seen = by_name.setdefault(name, (vni, host))
            if seen[0] != vni:
                problems.append("bridge %s has VXLAN id %s on %s and %s on %s" % (
                    name, seen[0], seen[1], vni, host))
            other = by_vni.setdefault(vni, (name, host))
            if other[0] != name:
                problems.append("VXLAN id %s is used by bridge %s on %s and by bridge %s on %s"
                                % (vni, other[0], other[1], name, host))
    return problems


def _pool_of(bridge):
    """(first, last, prefix length) of a bridge's pool; the subnet of its address when it
    has no pool."""
    from .net.addresses import parse_pool
    address = bridge.get("address")
    prefix = ipaddress.ip_interface(address).network.prefixlen if address else 24
    first, last = parse_pool(bridge.get("pool") or str(ipaddress.ip_interface(
        address).network))
    return first, last, prefix


def assign_addresses(hosts, leases):
    """(resolved, leases, problems): `resolved` is {host: {vm: nics}} with every `ip: auto`
    of a bridge NIC made an address of its bridge's pool; `leases` {pool: {vm: address}}
    to keep for the next run."""
    taken = set()  # every address given by hand, and every host's bridge address
    wanted = []    # (host, vm, nic index, bridge, pool key)
    for host in sorted(hosts):
        data = hosts[host] or {}
        bridges = {b.get("name"): b for b in data.get("cvm_bridges") or []}
        for bridge in bridges.values():
            if bridge.get("address"):
                taken.add(str(ipaddress.ip_interface(bridge["address"]).ip))
        for vm in data.get("cvm_vms") or []:
            if vm.get("state") == "absent":
                continue
            for index, nic in enumerate(vm.get("nics") or []):
                if not isinstance(nic, dict):
                    continue
                if str(nic.get("ip")) != "auto":
                    if nic.get("ip"):
                        taken.add(str(ipaddress.ip_interface(str(nic["ip"])).ip))
                    continue
                bridge = bridges.get(nic.get("link"))
                if bridge is None or not (bridge.get("pool") or bridge.get("address")):
                    continue  # the spec check names it: ip=auto needs a pool on the bridge
                wanted.append((host, vm, index, bridge, "%s %s" % (
                    bridge["name"], bridge.get("pool") or bridge["address"])))
    names = {vm.get("name") for _, vm, _, _, _ in wanted}
    kept = {pool: {name: address for name, address in holders.items() if name in names}
            for pool, holders in (leases or {}).items()}
    resolved, problems = {}, []
    for host, vm, index, bridge, pool in sorted(wanted, key=lambda w: (w[1].get("name"),
                                                                        w[2])):
        holders = kept.setdefault(pool, {})
        key = vm.get("name") if index == 0 else "%s/%d" % (vm.get("name"), index)
        first, last, prefix = _pool_of(bridge)
        leased = set(a for k, a in holders.items() if k != key)
        address = holders.get(key)
        if address is None or address in taken or address in leased:
            address = _first_free(first, last, taken | leased)
        if address is None:
            problems.append("the pool of bridge %s (%s-%s) has no free address for %s on %s" %
                            (bridge["name"], first, last, vm.get("name"), host))
            continue
        holders[key] = address
        nics = resolved.setdefault(host, {}).setdefault(
            vm.get("name"), [dict(n) if isinstance(n, dict) else n for n in vm["nics"]])
        nics[index]["ip"] = "%s/%d" % (address, prefix)
        if not nics[index].get("gw") and bridge.get("address"):
            nics[index]["gw"] = str(ipaddress.ip_interface(bridge["address"]).ip)
    return resolved, {pool: holders for pool, holders in kept.items() if holders}, problems


def _first_free(first, last, taken):
    candidate = first
    while candidate <= last:
        if str(candidate) not in taken:
            return str(candidate)
        candidate += 1
    return None


def read_leases(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {}


def write_leases(path, leases):
    """Write the lease file when it changed; True if it did."""
    if read_leases(path) == leases:
        return False
    with open(path + ".tmp", "w") as handle:
        json.dump(leases, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.rename(path + ".tmp", path)
    return True
