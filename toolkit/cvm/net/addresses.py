"""Address bookkeeping across every VM of a host: no two VMs get the same address or
MAC, `ip=auto` draws from a bridge's pool, and SR-IOV NICs get a free VF. Runs under
the store's host-wide lock, so racing `cvm create`s see each other's claims."""

import dataclasses
import ipaddress

from ..errors import Conflict, NetError, SpecError


def _claims(records, exclude, host_addresses=()):
    """{('ip', '198.51.100.10'): 'VM web1 (eth0)', ('mac', ...): ..., ('vf', pf, n): ...},
    the host's own addresses among them ('this host (br0)')."""
    claims = {("ip", str(iface.ip)): "this host (%s)" % ifname
              for iface, ifname in host_addresses}
    for vm_name, record in records.items():
        if vm_name == exclude:
            continue
        for index, raw in enumerate(record.get("spec", {}).get("nics", [])):
            holder = "VM %s (%s)" % (vm_name, raw.get("name", "eth%d" % index))
            for key in ("ip", "ip6"):
                if raw.get(key) and raw[key] != "auto":
                    claims[("ip", str(ipaddress.ip_interface(raw[key]).ip))] = holder
            if raw.get("mac"):
                claims[("mac", raw["mac"])] = holder
            if raw.get("mode") == "sriov" and raw.get("vf") is not None:
                claims[("vf", raw.get("link"), int(raw["vf"]))] = holder
    return claims


def parse_pool(text):
    """'198.51.100.100-198.51.100.199' or a CIDR -> (first, last) addresses."""
    text = str(text).strip()
    if "-" in text:
        first, last = (ipaddress.ip_address(p.strip()) for p in text.split("-", 1))
    else:
        network = ipaddress.ip_network(text, strict=False)
        first, last = network.network_address + 1, network.broadcast_address - 1
    if first.version != last.version or first > last:
        raise ValueError("%r is not a range of addresses" % text)
    return first, last


def claim(spec, records, bridges, sysfs=None, where="nics", host_addresses=()):
    """A copy of `spec` with ip=auto and free VFs filled in; Conflict on any clash with
    another VM or an address of the host's (`host_addresses`: [(ip_interface, ifname)])."""
    claims = _claims(records, spec.name, host_addresses)
    nics = []
    for index, nic in enumerate(spec.nics):
        field = "%s[%d]" % (where, index)
        if nic.ip == "auto":
            nic = _auto_ip(nic, field, bridges, claims)
        for key in ("ip", "ip6"):
            value = getattr(nic, key)
            if value:
                address = str(ipaddress.ip_interface(value).ip)
                holder = claims.get(("ip", address))
                if holder:
                    raise Conflict("%s.%s: %s is already used by %s" % (
                        field, key, address, holder))
        if nic.mac and ("mac", nic.mac) in claims:
            raise Conflict("%s.mac: %s is already used by %s" % (
                field, nic.mac, claims[("mac", nic.mac)]))
        if nic.mode == "sriov":
            nic = _claim_vf(nic, field, claims, sysfs)
        nics.append(nic)
    return dataclasses.replace(spec, nics=nics)


def _auto_ip(nic, field, bridges, claims):
    bridge = bridges.get(nic.link)
    if not bridge or not (bridge.get("pool") or bridge.get("address")):
        raise SpecError(field + ".ip", "ip=auto needs an address pool on bridge %s (cvm bridge "
                        "add %s --address CIDR [--pool FIRST-LAST])" % (nic.link, nic.link))
    gateway = ipaddress.ip_interface(bridge["address"]) if bridge.get("address") else None
    first, last = parse_pool(bridge.get("pool") or str(gateway.network))
    prefix = gateway.network.prefixlen if gateway else 24
    candidate = first
    while candidate <= last:
        if ("ip", str(candidate)) not in claims and (gateway is None or candidate != gateway.ip):
            ip = "%s/%d" % (candidate, prefix)
            gw = nic.gw or (str(gateway.ip) if gateway else None)
            return dataclasses.replace(nic, ip=ip, gw=gw)
        candidate += 1
    raise Conflict("%s.ip: the pool of bridge %s (%s-%s) has no free address" % (
        field, nic.link, first, last))


def _claim_vf(nic, field, claims, sysfs):
    from .sriov import Sysfs
    sysfs = sysfs or Sysfs()
    given = nic.option("vf")
    if given is not None:
        holder = claims.get(("vf", nic.link, given))
        if holder:
            raise Conflict("%s.vf: VF %d of %s is already used by %s" % (
                field, given, nic.link, holder))
        return nic
    for vf in sysfs.free_vfs(nic.link):
        if ("vf", nic.link, vf) not in claims:
            return dataclasses.replace(nic, options=dict(nic.options, vf=vf))
    raise NetError("%s.link: %s has no free virtual function (all %d are in use)" % (
        field, nic.link, sysfs.num_vfs(nic.link)))

