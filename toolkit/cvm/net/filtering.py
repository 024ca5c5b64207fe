"""What a VM may send: only from its own MAC and its own addresses (nftables, in the kernel).

Static addresses are cvm's point, so a VM must not take another's on the segment: with
only the default CAP_NET_RAW, root in a VM can forge ARP replies, IPv4 or IPv6 sources,
router advertisements or DHCP replies. As Incus's security.mac_filtering,
ipv4_filtering and ipv6_filtering do, every NIC with a static address (unless its spec
says `filtering: false`) gets a chain of rules on the frames it sends:

- bridge NICs: table `bridge cvm_<realm>` on the host, hook prerouting of the bridge,
  looked up by the host-side port's name (a verdict map `ports`: one lookup per frame
  whatever the number of VMs);
- routed NICs: table `inet cvm_<realm>`, hook prerouting, the same map by the veth's
  host end (no layer 2 there: sources only);
- macvlan and ipvlan NICs: table `netdev cvm` inside the VM's own network namespace,
  a chain on the device's egress hook (Linux 5.16+; the VM lacks CAP_NET_ADMIN, so it
  cannot touch it). ipvlan shares its parent's MAC: no MAC rule.
SR-IOV VFs are filtered by the NIC itself (spoofchk, on by default).

Rules are made and removed with the wiring, in the same transaction, and re-applied by
cvm netd on every start and at its own start; chains are named `port_<interface>` so
that `cvm doctor` can list missing and stale ones. nftables is driven in-process through
libnftables (Debian's python3-nftables), in the netns the rules belong to.
"""

import ipaddress
import json
import threading

from ..errors import NetError

TABLE_PREFIX = "cvm_"
CHAIN_PREFIX = "port_"
ALLOWED_V6_ALWAYS = ("::", "fe80::/10")  # duplicate address detection, link-local
_LINK_LOCAL_FIRST_16_MASK, _LINK_LOCAL_FIRST_16 = 0xffc0, 0xfe80
# One libnftables context is not safe to share between threads; and a port's removal
# looks, then deletes (the realm's last port takes the table with it) under this lock, so
# that netd's parallel removals cannot each leave the table to another.
_lock = threading.RLock()


def wanted(nic):
    """Is this NIC filtered: `filtering` from its spec, by default when it has a static
    address."""
    if nic.mode == "sriov":
        return False
    chosen = nic.option("filtering")
    return chosen if chosen is not None else bool(nic.addresses())


def rules(nic, mac, layer2=True, addresses=None):
    """The nft rules (text, one per line) that drop what `nic` may not send: frames not
    from `mac`, packets not from `addresses` (default: the NIC's own)."""
    addresses = nic.addresses() if addresses is None else addresses
    v4 = sorted(set(str(a.ip) for a in addresses if a.version == 4))
    v6 = sorted(set(str(a.ip) for a in addresses if a.version == 6))
    ip4, ip6 = ("ether type ip ", "ether type ip6 ") if layer2 else (
        "meta nfproto ipv4 ", "meta nfproto ipv6 ")
    lines = []
    if layer2:
        if mac:
            lines += ["ether saddr != %s drop" % mac,
                      "ether type arp arp saddr ether != %s drop" % mac]
        # 0.0.0.0: an ARP probe (RFC 5227) asks about an address without claiming one.
        lines.append("ether type arp arp saddr ip != %s drop" % _set(["0.0.0.0"] + v4))
    lines.append(ip4 + ("ip saddr != %s drop" % _set(v4) if v4 else "drop"))
    lines.append(ip6 + "ip6 saddr != %s drop" % _set(list(ALLOWED_V6_ALWAYS) + v6))
    lines.append("udp sport { 67, 547 } drop")  # DHCP and DHCPv6 server replies
    lines.append("icmpv6 type { nd-router-advert, nd-redirect } drop")
    # A neighbour advertisement may only claim the VM's own addresses (or a link-local
    # one): the target address is 8 bytes into the ICMPv6 header.
    target_rule = "icmpv6 type nd-neighbor-advert @th,64,16 & 0x%x != 0x%x" % (
        _LINK_LOCAL_FIRST_16_MASK, _LINK_LOCAL_FIRST_16)
    if v6:
        target_rule += " @th,64,128 != %s" % _set(
            ["0x%032x" % int(ipaddress.IPv6Address(a)) for a in v6])
    lines.append(target_rule + " drop")
    if layer2 and mac:
        # ... and its target link-layer address option (type 2, 24 bytes in) is its MAC.
        lines.append("icmpv6 type nd-neighbor-advert @th,192,8 2 @th,208,48 != 0x%s drop"
                     % mac.replace(":", ""))
    return lines


def _set(items):
    return "{ %s }" % ", ".join(items)


def host_nft():
    """The host's libnftables context, made once per process: freeing one costs ~5 ms
    (its copy of the ruleset), which every wiring paid."""
    global _host_nft
    with _lock:
        if _host_nft is None:
            _host_nft = Nft()
        return _host_nft


_host_nft = None


class Nft:
    """libnftables, in the network namespace this was made in (its netlink socket stays
    there: see Netlink.nft)."""

    def __init__(self):
        try:
            import nftables
        except ImportError:
            raise NetError("nftables' Python binding is missing (apt-get install nftables "
                           "python3-nftables; ./run setup links it into cvm's venv), so NICs "
                           "cannot be filtered; or give them filtering: false") from None
        self.ctx = nftables.Nftables()
        self.ctx.set_json_output(True)
        self.ctx.set_handle_output(False)

    def run(self, commands, what):
        text = "\n".join(commands) + "\n"
        with _lock:
            code, output, error = self.ctx.cmd(text)
        if code != 0:
            raise NetError("%s: nftables refused: %s" % (what, " ".join(error.split())[:300]))
        # one JSON document per line, one line per listing command
        return [item for line in output.splitlines() if line.strip()
                for item in json.loads(line)["nftables"]]

    def table(self, family, name):
        """{"chains": set of names, "elements": set of keys of its map "ports"} of a table,
        or None when it has neither. Read without listing rules or tables (either makes
        libnftables fetch every rule: a realm's table holds every VM's)."""
        chains = {item["chain"]["name"] for item in self.run(["list chains %s" % family],
                                                              "nftables")
                  if item.get("chain", {}).get("table") == name}
        elements = self.ports(family, name)
        if elements is None:
            if not chains:
                return None
            elements = set()
        return {"chains": chains, "elements": elements}

    def ports(self, family, name):
        """The keys of table `name`'s map "ports" (the filtered ports), or None."""
        try:
            listed = self.run(["list map %s %s ports" % (family, name)], "nftables")
        except NetError:
            return None
        return {element[0] for item in listed if "map" in item
                for element in item["map"].get("elem", [])}


def filtered_bridge_ports(realm):
    """The host's bridge ports whose frames realm `realm`'s filter checks."""
    return host_nft().ports("bridge", TABLE_PREFIX + realm) or set()


class HostPortFilter:
    """The filter of one host-side port (a bridge port or a routed veth's host end)."""

    # Before the bridge's own filter hooks (bridge), before routing decisions (inet).
    HOOKS = {"bridge": "prerouting priority -200", "inet": "prerouting priority -300"}

    def __init__(self, nft, realm, family, port, lines=()):
        self.nft = nft
        self.family = family
        self.table = TABLE_PREFIX + realm
        self.port = port
        self.chain = CHAIN_PREFIX + port
        self.lines = list(lines)
        self.hook = self.HOOKS[family]

    @classmethod
    def of_nic(cls, nft, realm, port, nic, mac, layer2, addresses=None):
        return cls(nft, realm, "bridge" if layer2 else "inet", port,
                   rules(nic, mac, layer2, addresses))

    def _where(self):
        return "%s %s" % (self.family, self.table)

    def apply(self):
        """Make the port's chain hold exactly its rules (idempotent, one transaction)."""
        where, chain = self._where(), self.chain
        self.nft.run([
            "add table %s" % where,
            "add map %s ports { type ifname : verdict; }" % where,
            "add chain %s frames { type filter hook %s; policy accept; }" % (where, self.hook),
            "flush chain %s frames" % where,
            "add rule %s frames iifname vmap @ports" % where,
            "add chain %s %s" % (where, chain),
            "flush chain %s %s" % (where, chain),
        ] + ["add rule %s %s %s" % (where, chain, line) for line in self.lines] + [
            'add element %s ports { "%s" : jump %s }' % (where, self.port, chain),
        ], "filter of %s" % self.port)

    def remove(self):
        with _lock:
            current = self.nft.table(self.family, self.table)
            if current is None:
                return
            commands = []
            if self.port in current["elements"]:
                commands.append('delete element %s ports { "%s" }' % (self._where(), self.port))
            if self.chain in current["chains"]:
                commands.append("delete chain %s %s" % (self._where(), self.chain))
            if not current["elements"] - {self.port}:
                commands = ["delete table %s" % self._where()]  # the realm's last filtered port
            if commands:
                self.nft.run(commands, "filter of %s" % self.port)

    def present(self):
        current = self.nft.table(self.family, self.table)
        return bool(current) and self.port in current["elements"] and \
            self.chain in current["chains"]


class EgressFilter:
    """The filter of a macvlan or ipvlan NIC: on its egress hook, in the VM's netns."""

    TABLE = "netdev cvm"

    def __init__(self, nft, nic, mac, addresses=None):
        self.nft = nft
        self.device = nic.name
        self.chain = CHAIN_PREFIX + nic.name
        self.lines = rules(nic, mac, layer2=True, addresses=addresses)

    def apply(self):
        chain = "%s %s" % (self.TABLE, self.chain)
        try:
            self.nft.run(["add table %s" % self.TABLE,
                          'add chain %s { type filter hook egress device "%s" priority 0; '
                          'policy accept; }' % (chain, self.device),
                          "flush chain %s" % chain] +
                         ["add rule %s %s" % (chain, line) for line in self.lines],
                         "filter of %s" % self.device)
        except NetError as exc:
            if "not supported" in str(exc).lower():
                raise NetError("%s: this kernel cannot filter a device's egress (Linux 5.16+, "
                               "nf_tables netdev egress); give the NIC filtering: false" %
                               self.device) from None
            raise

    def remove(self):
        current = self.nft.table("netdev", "cvm")
        if current and self.chain in current["chains"]:
            self.nft.run(["delete chain %s %s" % (self.TABLE, self.chain)],
                         "filter of %s" % self.device)

    def present(self):
        current = self.nft.table("netdev", "cvm")
        return bool(current) and self.chain in current["chains"]


def host_ports(nft, realm):
    """{family: set of filtered port names} on the host for a realm (doctor, sweep)."""
    found = {}
    for family in HostPortFilter.HOOKS:
        current = nft.table(family, TABLE_PREFIX + realm)
        found[family] = current["elements"] if current else set()
    return found
