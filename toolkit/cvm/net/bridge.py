"""mode=bridge: a veth pair, the host end enslaved to an existing Linux bridge.

The common case: bridge br0 on the host's uplink, VMs on the LAN with their own
addresses. Options: hairpin (reflect frames back out the port), host_name, and
vlan (bridge VLAN filtering: the port gets the VLAN as PVID, untagged).
"""

import os

from ..errors import NetError, SpecError
from ..validation import as_bool
from .base import (FILTERING, HOST_NAME, VLAN, NicDriver, Option, check_mtu, interface_mac,
                   require_link)
from .filtering import HostPortFilter, filtered_bridge_ports
from .netlink import link_kind
from .veth import describe_veth, host_name, plug_veth, unplug_veth, veth_plugged


class BridgeDriver(NicDriver):
    mode = "bridge"
    features = ("veth", "bridge")
    options = {"hairpin": Option(as_bool, False), "host_name": HOST_NAME, "vlan": VLAN,
               "filtering": FILTERING}
    link_role = "bridge"
    pools_addresses = True

    def needed_features(self, nic):
        return self.features + (("bridge_vlan_filtering",) if nic.option("vlan") else ())

    def validate(self, nic, host, where):
        super().validate(nic, host, where)
        bridge = require_link(host, nic.link, where + ".link", "bridge")
        if link_kind(bridge) != "bridge":
            raise SpecError(where + ".link", "%s is not a bridge (it is %s); mode bridge needs "
                            "a Linux bridge (cvm bridge add), or use mode macvlan on it" % (
                                nic.link, link_kind(bridge) or "a physical interface"))
        check_mtu(nic, bridge, where)
        if nic.option("vlan") and not _vlan_filtering(bridge):
            raise NetError("%s.vlan: bridge %s does not filter VLANs; enable it (ip link set %s "
                           "type bridge vlan_filtering 1)" % (where, nic.link, nic.link))

    def plug(self, tx, w, nic):
        bridge = w.host.link(nic.link)
        self.filter_step(tx, w, nic)
        # The bridge's MTU unless the NIC says: an overlay bridge's is the underlay's - 50.
        port = plug_veth(tx, w, nic, dict({"master": bridge["index"]}, **no_link_local()),
                         mtu=nic.mtu or bridge.get("mtu"))
        hairpin, vlan = nic.option("hairpin"), nic.option("vlan")
        if hairpin or vlan:
            port = w.host.index(port)
        if hairpin:
            tx.step("hairpin on %s" % nic.link,
                    lambda: w.host.request("brport", "set", index=port, hairpin_mode=1))
        if vlan:
            tx.step("VLAN %d untagged on the port" % vlan,
                    lambda: w.host.request("vlan_filter", "add", index=port, vlan_info={
                        "vid": vlan, "flags": ["pvid", "untagged"]}))
            tx.step("drop the default VLAN 1 from the port",
                    lambda: w.host.request("vlan_filter", "del", index=port,
                                           vlan_info={"vid": 1}))

    def holders_known(self, realm, nic):
        # Every port the host end of a NIC of this realm whose filter drops ARP and IP
        # from addresses not its own, and nothing stacked on the bridge (macvlan, VLAN):
        # the only possible holders are the host and those NICs, whose addresses
        # claim_addresses checks. An ARP probe could learn nothing more.
        device = os.path.join("/sys/class/net", nic.link)
        try:
            ports = os.listdir(os.path.join(device, "brif"))
            stacked = [entry for entry in os.listdir(device) if entry.startswith("upper_")]
        except OSError:
            return False
        return not stacked and (not ports or set(ports) <= filtered_bridge_ports(realm))

    def host_probe_target(self, nic):
        # The bridge itself is on the segment: probe with its MAC, so replies reach the host.
        mac = interface_mac(nic.link)
        return (nic.link, mac) if mac else None

    def unplug(self, w, nic):
        unplug_veth(w, nic)
        self.unfilter(w, nic)

    def port_filter(self, w, nic):
        return HostPortFilter.of_nic(w.host.nft(), w.realm, host_name(w, nic), nic, nic.mac,
                                     layer2=True, addresses=w.addresses_on_segment(nic))

    def plugged(self, w, nic):
        return veth_plugged(w, nic, master=w.host.index(nic.link))

    def describe(self, w, nic):
        return describe_veth(w, nic)


def no_link_local():
    """Settings that keep a bridge port from making an IPv6 link-local address: it
    needs none, and without one it sends no DAD or MLD, and hundreds of VMs' ports add
    nothing to the host's address table (each address claim reads it). Only where the
    kernel has IPv6: without it the attribute is refused."""
    if not os.path.isdir("/proc/sys/net/ipv6"):
        return {}
    return {"IFLA_AF_SPEC": {"attrs": [["AF_INET6", {"attrs": [
        ["IFLA_INET6_ADDR_GEN_MODE", 1]]}]]}}  # IN6_ADDR_GEN_MODE_NONE


def _vlan_filtering(bridge):
    info = bridge.get("IFLA_LINKINFO")
    data = info.get("IFLA_INFO_DATA") if info is not None else None
    return bool(data.get("IFLA_BR_VLAN_FILTERING")) if data is not None else False
