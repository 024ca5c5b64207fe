"""Host bridges: `cvm bridge add|rm|ls`. Bridges cvm made are persisted and recreated
by the daemon at boot. With --uplink, the uplink is enslaved and its addresses, MAC
and routes move to the bridge (how a LAN-attached bridge br0 is made on a host).

With `vxlan`, the bridge is an overlay: one L2 segment across the hosts that declare
it. A VXLAN port (`vxlan<ID>`) joins it, sending from this host's underlay address to
each remote host by head-end replication (static all-zeros FDB entries, no multicast);
its MTU, and the bridge's, is the underlay's minus the 50 bytes VXLAN adds, and VMs'
NICs on the bridge take that MTU unless told otherwise."""

import ipaddress
import re

from ..errors import Conflict, NotFound, SpecError
from .addresses import parse_pool
from .base import Transaction
from .netlink import Netlink, link_kind

_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def bridge_tag(realm):
    return "cvm:%s:bridge" % realm


VXLAN_OVERHEAD = 50  # outer Ethernet, IPv4, UDP and VXLAN headers
VXLAN_DEFAULT_PORT = 4789
ZERO_MAC = "00:00:00:00:00:00"


def vxlan_name(vni):
    return "vxlan%d" % vni


def validate_vxlan(vxlan):
    """{"id", "port", "local", "remotes"} checked, or a SpecError naming the field."""
    if not isinstance(vxlan, dict):
        raise SpecError("vxlan", "give id (and port, local, remotes) as a mapping")
    unknown = set(vxlan) - {"id", "port", "local", "remotes"}
    if unknown:
        raise SpecError("vxlan.%s" % sorted(unknown)[0], "unknown key; use id, port, local, "
                        "remotes")
    result = {}
    for key, low, high in (("id", 1, 16777215), ("port", 1, 65535)):
        value = vxlan.get(key, VXLAN_DEFAULT_PORT if key == "port" else None)
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise SpecError("vxlan.%s" % key, "%r is not a number from %d to %d" % (
                value, low, high)) from None
        if not low <= number <= high:
            raise SpecError("vxlan.%s" % key, "%d is out of range; use %d to %d" % (
                number, low, high))
        result[key] = number
    for key in ("local",):
        try:
            result[key] = str(ipaddress.ip_address(str(vxlan.get(key))))
        except ValueError:
            raise SpecError("vxlan.local", "%r is not this host's underlay address" % (
                vxlan.get(key),)) from None
    remotes = []
    for index, remote in enumerate(vxlan.get("remotes") or []):
        try:
            remotes.append(str(ipaddress.ip_address(str(remote))))
        except ValueError:
            raise SpecError("vxlan.remotes[%d]" % index, "%r is not an address" % (
                remote,)) from None
    result["remotes"] = sorted(set(remotes) - {result["local"]})
    return result


def validate(name, address=None, pool=None, mtu=None, vxlan=None):
    if not _IFNAME.match(name or ""):
        raise SpecError("name", "%r is not an interface name (1-15 of A-Z a-z 0-9 _ . -)" % name)
    record = {"name": name, "address": None, "pool": None, "uplink": None, "mtu": mtu,
              "vxlan": validate_vxlan(vxlan) if vxlan else None}
    if address:
        try:
            iface = ipaddress.ip_interface(address)
        except ValueError:
            raise SpecError("address", "%r is not a CIDR like 198.51.100.1/24" % address) \
                from None
        if "/" not in address:
            raise SpecError("address", "%r has no prefix length (e.g. /24)" % address)
        network = iface.network
        if iface.version == 4 and network.num_addresses > 2 and iface.ip in (
                network.network_address, network.broadcast_address):
            raise SpecError("address", "%s is the %s address of %s; give the host an address "
                            "inside it (e.g. %s/%d)" % (
                                iface.ip, "network" if iface.ip == network.network_address
                                else "broadcast", network, network.network_address + 1,
                                network.prefixlen))
        if iface.ip.is_loopback or iface.ip.is_multicast or iface.ip.is_unspecified or \
                iface.ip.is_link_local:
            raise SpecError("address", "%s cannot be a bridge's address" % iface.ip)
        record["address"] = str(iface)
    if pool:
        if not record["address"]:
            raise SpecError("pool", "needs --address: the bridge's address is the VMs' "
                            "gateway and gives the pool its subnet")
        try:
            first, last = parse_pool(pool)
        except ValueError as exc:
            raise SpecError("pool", str(exc)) from None
        network = ipaddress.ip_interface(record["address"]).network
        if first not in network or last not in network:
            raise SpecError("pool", "%s is outside the bridge's subnet %s" % (pool, network))
        record["pool"] = "%s-%s" % (first, last)
    if mtu is not None and not 68 <= int(mtu) <= 65535:
        raise SpecError("mtu", "%s is out of range; use 68 to 65535" % mtu)
    return record


def add(ctx, name, address=None, uplink=None, pool=None, mtu=None, vxlan=None,
        allow_overlap=False):
    """Make (or adopt) bridge `name`. Its address and pool may not collide with the
    host's other interfaces, other cvm bridges or VMs; `allow_overlap` lets a subnet
    overlap on purpose (never an address that is taken)."""
    record = validate(name, address, pool, mtu, vxlan)
    record["uplink"] = uplink
    with ctx.store.lock(), Netlink.open() as host:
        existing = host.link(name)
        if existing is not None and link_kind(existing) != "bridge":
            raise Conflict("name: %s exists and is not a bridge" % name)
        if uplink is not None and host.link(uplink) is None:
            raise SpecError("uplink", "interface %s does not exist" % uplink)
        _check_collisions(ctx, host, record, allow_overlap)
        if record["vxlan"]:
            underlay = _underlay(host, record["vxlan"]["local"])
            if record["mtu"] is None:
                record["mtu"] = underlay.get("mtu") - VXLAN_OVERHEAD
        record["created"] = existing is None or (existing.get("ifalias") == bridge_tag(ctx.realm))
        with Transaction("bridge %s" % name) as tx:
            _make(tx, host, record, ctx.realm)
        ctx.store.write_bridge(name, record)
    return record


def host_addresses(host, skip=()):
    """[(ip_interface, interface name)] of the host's addresses, link-local ones aside.
    Names come from the kernel one address at a time: a dump of every link (hundreds of
    VMs' veths) would cost more than the whole claim."""
    found = []
    for message in host.addresses():
        address = message.get("local") or message.get("address")  # local: IPv4's own
        if not address:
            continue
        iface = ipaddress.ip_interface("%s/%d" % (address, message["prefixlen"]))
        if iface.ip.is_link_local:
            continue
        ifname = host.link_name(message["index"])
        if ifname is not None and ifname not in skip:  # None: gone since the dump
            found.append((iface, ifname))
    return found


def check_collisions(ctx, record, allow_overlap=False):
    """The collision checks of add() for a validated record, before anything changes (the
    Ansible module checks a changed bridge before it removes the old one)."""
    with Netlink.open() as host:
        _check_collisions(ctx, host, record, allow_overlap)


def _check_collisions(ctx, host, record, allow_overlap):
    """Refuse an address, subnet or pool that another interface, bridge or VM has: a
    bridge given the uplink's subnet would take the host off its own network."""
    mine = {record["name"]} | ({record["uplink"]} if record.get("uplink") else set())
    if record["address"]:
        wanted = ipaddress.ip_interface(record["address"])
        for iface, ifname in host_addresses(host, skip=mine):
            if iface.ip == wanted.ip:
                raise Conflict("address: %s is already %s's address" % (wanted.ip, ifname))
            if not allow_overlap and iface.network.overlaps(wanted.network):
                raise Conflict("address: %s overlaps %s's subnet %s (%s); give another "
                               "subnet, or --allow-overlap if that is meant" % (
                                   wanted.network, ifname, iface.network, iface))
        for other, other_record in ctx.store.bridge_records().items():
            theirs = other_record.get("address")
            if other in mine or not theirs:
                continue
            if not allow_overlap and ipaddress.ip_interface(theirs).network.overlaps(
                    wanted.network):
                raise Conflict("address: %s overlaps the subnet of cvm bridge %s (%s)" % (
                    wanted.network, other, theirs))
        for vm, nic_name, ip in _vm_addresses(ctx):
            if ip == wanted.ip:
                raise Conflict("address: %s is VM %s's address (%s)" % (ip, vm, nic_name))
    if record["pool"]:
        first, last = parse_pool(record["pool"])
        for other, other_record in ctx.store.bridge_records().items():
            if other == record["name"] or not other_record.get("pool"):
                continue
            their_first, their_last = parse_pool(other_record["pool"])
            if first <= their_last and their_first <= last:
                raise Conflict("pool: %s overlaps the pool of cvm bridge %s (%s)" % (
                    record["pool"], other, other_record["pool"]))


def _vm_addresses(ctx):
    for vm, vm_record in ctx.store.vm_records().items():
        for index, nic in enumerate(vm_record["spec"].get("nics", [])):
            for key in ("ip", "ip6"):
                if nic.get(key) and nic[key] != "auto":
                    yield vm, nic.get("name", "eth%d" % index), \
                        ipaddress.ip_interface(nic[key]).ip


def _make(tx, host, record, realm):
    name = record["name"]
    if host.link(name) is None:
        options = {"mtu": record["mtu"]} if record["mtu"] else {}
        tx.step("create bridge %s" % name,
                lambda: host.request("link", "add", ifname=name, kind="bridge", **options),
                lambda: host.request("link", "del", ifname=name))
    index = host.index(name)
    settings = {"state": "up"}
    if record.get("created"):
        settings["ifalias"] = bridge_tag(realm)
    if record.get("uplink"):
        settings["address"] = host.link(record["uplink"]).get("address")
    tx.step("raise %s" % name, lambda: host.request("link", "set", index=index, **settings))
    if record["address"]:
        iface = ipaddress.ip_interface(record["address"])
        tx.step("address %s on %s" % (iface, name),
                lambda: host.request("addr", "replace", index=index, address=str(iface.ip),
                                     prefixlen=iface.network.prefixlen),
                lambda: host.request("addr", "del", index=index, address=str(iface.ip),
                                     prefixlen=iface.network.prefixlen))
    if record.get("uplink"):
        _take_uplink(tx, host, index, record["uplink"])
    if record.get("vxlan"):
        _make_vxlan(tx, host, index, record, realm)


def _underlay(host, local):
    """The host link that holds the underlay address `local`."""
    for link in host.links():
        if any(a.get("address") == local for a in host.addresses(link["index"])):
            return link
    raise NotFound("vxlan.local: no interface of this host has %s (the host's address in the "
                   "inventory is its underlay address)" % local)


def _make_vxlan(tx, host, bridge, record, realm):
    vxlan = record["vxlan"]
    name = vxlan_name(vxlan["id"])
    existing = host.link(name)
    if existing is None:
        underlay = _underlay(host, vxlan["local"])
        tx.step("create %s (VNI %d, from %s)" % (name, vxlan["id"], vxlan["local"]),
                lambda: host.request("link", "add", ifname=name, kind="vxlan",
                                     vxlan_id=vxlan["id"], vxlan_port=vxlan["port"],
                                     vxlan_local=vxlan["local"],
                                     vxlan_link=underlay["index"], vxlan_learning=1,
                                     mtu=record["mtu"]),
                lambda: host.request("link", "del", ifname=name))
    elif existing.get("ifalias") != bridge_tag(realm):
        raise Conflict("vxlan.id: %s exists and is not this bridge's (VNI %d is taken on "
                       "this host)" % (name, vxlan["id"]))
    index = host.index(name)
    tx.step("%s into the bridge" % name, lambda: host.request(
        "link", "set", index=index, master=bridge, state="up", ifalias=bridge_tag(realm)))
    _sync_remotes(tx, host, index, vxlan["remotes"])


def _sync_remotes(tx, host, index, remotes):
    """The VXLAN port floods to exactly `remotes` (all-zeros FDB entries)."""
    present = set(host.flood_remotes(index))
    for remote in sorted(set(remotes) - present):
        tx.step("flood to %s" % remote,
                lambda r=remote: host.request("fdb", "append", ifindex=index, lladdr=ZERO_MAC,
                                              dst=r),
                lambda r=remote: host.request("fdb", "del", ifindex=index, lladdr=ZERO_MAC,
                                              dst=r))
    for remote in sorted(present - set(remotes)):
        tx.step("stop flooding to %s" % remote,
                lambda r=remote: host.request("fdb", "del", ifindex=index, lladdr=ZERO_MAC,
                                              dst=r))


def set_remotes(ctx, name, remotes):
    """An overlay bridge's remote hosts changed (a host joined or left the fleet): follow
    them without touching the bridge or its VMs."""
    with ctx.store.lock():
        record = ctx.store.read_bridge(name)
        if record is None or not record.get("vxlan"):
            raise NotFound("no overlay bridge %s made by cvm" % name)
        vxlan = validate_vxlan(dict(record["vxlan"], remotes=remotes))
        with Netlink.open() as host, Transaction("bridge %s" % name) as tx:
            _sync_remotes(tx, host, host.index(vxlan_name(vxlan["id"])), vxlan["remotes"])
        record["vxlan"] = vxlan
        ctx.store.write_bridge(name, record)
    return record


def _take_uplink(tx, host, bridge, uplink_name):
    """Enslave the uplink and move its addresses and routes to the bridge."""
    uplink = host.index(uplink_name)
    if host.link(index=uplink).get("master") == bridge:
        return
    addresses = [(a.get("address"), a["prefixlen"]) for a in host.addresses(uplink)
                 if not (a.get("address") or "").startswith("fe80:")]
    routes = [r for family in (2, 10) for r in host.routes(family, oif=uplink)
              if r.get("proto") not in (2,) and r.get("gateway")]  # 2: kernel-made
    tx.step("enslave %s" % uplink_name,
            lambda: host.request("link", "set", index=uplink, master=bridge, state="up"),
            lambda: host.request("link", "set", index=uplink, master=0))
    for address, prefix in addresses:
        tx.step("move %s/%d to the bridge" % (address, prefix),
                lambda a=address, p=prefix: (
                    host.request("addr", "add", index=bridge, address=a, prefixlen=p),
                    host.request("addr", "del", index=uplink, address=a, prefixlen=p)),
                lambda a=address, p=prefix: (
                    host.request("addr", "add", index=uplink, address=a, prefixlen=p),
                    host.request("addr", "del", index=bridge, address=a, prefixlen=p)))
    for route in routes:
        dst = "%s/%d" % (route.get("dst") or ("::" if route["family"] == 10 else "0.0.0.0"),
                         route["dst_len"])
        tx.step("route %s via the bridge" % dst,
                lambda d=dst, r=route: host.request("route", "replace", dst=d,
                                                    gateway=r.get("gateway"), oif=bridge))


def remove(ctx, name):
    with ctx.store.lock():
        users = sorted("%s (%s)" % (vm, nic.get("name", "eth%d" % i))
                       for vm, record in ctx.store.vm_records().items()
                       for i, nic in enumerate(record["spec"].get("nics", []))
                       if nic.get("link") == name and nic.get("mode", "bridge") == "bridge")
        if users:
            raise Conflict("bridge %s is used by %s; remove or detach them first" % (
                name, ", ".join(users)))
        record = ctx.store.read_bridge(name)
        if record is None:
            raise NotFound("no bridge %s made by cvm (see `cvm bridge ls`)" % name)
        with Netlink.open() as host:
            link = host.link(name)
            if link is not None and record.get("uplink"):
                uplink = host.index(record["uplink"])
                for address in host.addresses(link["index"]):
                    if (address.get("address") or "").startswith("fe80:"):
                        continue
                    host.request("addr", "add", index=uplink, address=address.get("address"),
                                 prefixlen=address["prefixlen"])
                host.request("link", "set", index=uplink, master=0)
            if record.get("vxlan"):
                port = host.link(vxlan_name(record["vxlan"]["id"]))
                if port is not None:
                    host.request("link", "del", index=port["index"])
            if link is not None and record.get("created"):
                host.request("link", "del", index=link["index"])
        ctx.store.delete_bridge(name)


def ls(ctx):
    rows = []
    with Netlink.open() as host:
        for name, record in sorted(ctx.store.bridge_records().items()):
            link = host.link(name)
            ports = [port.get("ifname") for port in host.links()
                     if link is not None and port.get("master") == link["index"]]
            rows.append(dict(record, state=("up" if link["flags"] & 1 else "down")
                             if link else "missing", ports=ports))
    return rows


def ensure_all(ctx):
    """Recreate the persisted bridges that are missing (the daemon, at boot)."""
    made = []
    with Netlink.open() as host:
        for name, record in ctx.store.bridge_records().items():
            link = host.link(name)
            if link is not None and link["flags"] & 1:
                continue
            with Transaction("bridge %s" % name) as tx:
                _make(tx, host, record, ctx.realm)
            made.append(name)
    return made
