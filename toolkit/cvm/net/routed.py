"""mode=routed: a veth without a bridge, the VM's addresses routed to it by the host.

For hosts whose switch port allows only the host's MAC. As LXD's routed NICs do:
the VM holds its addresses as /32 and /128 and routes everything via link-local
next hops that the host end of the veth answers for (169.254.0.1 and fe80::1);
the host routes each address to the veth and, on the uplink `link`, answers ARP
and NDP for it (proxy entries), so the LAN reaches the VM through the host.
"""

import ipaddress

from ..validation import fail
from .base import FILTERING, HOST_NAME, NicDriver, interface_mac, require_link
from .filtering import HostPortFilter
from .netlink import write_sysctl
from .veth import describe_veth, host_name, plug_veth, unplug_veth, veth_plugged

GATEWAY4 = "169.254.0.1"
GATEWAY6 = "fe80::1"
RTNH_F_ONLINK = 4
NTF_PROXY = 0x08


class RoutedDriver(NicDriver):
    mode = "routed"
    features = ("veth",)
    options = {"host_name": HOST_NAME, "filtering": FILTERING}
    refused = {gateway: "mode routed sets the gateway itself (a link-local next hop on the "
               "veth); drop %s" % gateway for gateway in ("gw", "gw6")}
    link_role = "uplink"
    needs_link = False  # without one, only the host reaches the VM

    def check_options(self, nic, where):
        if nic.ip is None and nic.ip6 is None:
            fail(where + ".ip", "mode routed needs ip= or ip6= (it routes that address to "
                 "the VM)")

    def validate(self, nic, host, where):
        super().validate(nic, host, where)
        if nic.link:
            require_link(host, nic.link, where + ".link", "uplink")

    def inside_addresses(self, nic):
        return [ipaddress.ip_interface("%s/%d" % (a.ip, a.max_prefixlen))
                for a in nic.addresses()]

    def inside_routes(self, nic):
        routes = []
        if nic.ip:
            routes.append({"dst": "0.0.0.0/0", "gateway": GATEWAY4, "flags": RTNH_F_ONLINK})
        if nic.ip6:
            routes.append({"dst": "::/0", "gateway": GATEWAY6})
        return routes

    def probe_target(self, w, nic, mac):
        target = self.host_probe_target(nic)
        return (None,) + target if target else None

    def host_probe_target(self, nic):
        if not nic.link:
            return None  # nothing but the host is on the other end of the veth
        mac = interface_mac(nic.link)
        return (nic.link, mac) if mac else None

    def plug(self, tx, w, nic):
        self.filter_step(tx, w, nic)
        name = plug_veth(tx, w, nic)
        port = w.host.index(name)
        if nic.ip:
            tx.step("next hop %s on %s" % (GATEWAY4, name), lambda: w.host.request(
                "addr", "replace", index=port, address=GATEWAY4, prefixlen=32))
            tx.step("forwarding on %s" % name, lambda: write_sysctl(
                None, "net/ipv4/conf/%s/forwarding" % name, 1))
        if nic.ip6:
            tx.step("next hop %s on %s" % (GATEWAY6, name), lambda: w.host.request(
                "addr", "replace", index=port, address=GATEWAY6, prefixlen=64,
                IFA_FLAGS=0x02))
            tx.step("IPv6 forwarding on %s" % name, lambda: write_sysctl(
                None, "net/ipv6/conf/%s/forwarding" % name, 1))

    def after_configure(self, tx, w, nic):
        port = w.host.index(host_name(w, nic))
        uplink = w.host.index(nic.link) if nic.link else None
        for address in nic.addresses():
            ip = str(address.ip)
            prefix = address.max_prefixlen
            tx.step("route %s/%d to the VM" % (ip, prefix),
                    lambda ip=ip, prefix=prefix: w.host.request(
                        "route", "replace", dst="%s/%d" % (ip, prefix), oif=port),
                    lambda ip=ip, prefix=prefix: w.host.request(
                        "route", "del", dst="%s/%d" % (ip, prefix), oif=port))
            if uplink is None:
                continue
            family = "ipv4" if address.version == 4 else "ipv6"
            tx.step("forwarding on %s" % nic.link, lambda f=family: write_sysctl(
                None, "net/%s/conf/%s/forwarding" % (f, nic.link), 1))
            if address.version == 6:
                tx.step("proxy NDP on %s" % nic.link, lambda: write_sysctl(
                    None, "net/ipv6/conf/%s/proxy_ndp" % nic.link, 1))
            tx.step("answer for %s on %s" % (ip, nic.link),
                    lambda ip=ip: w.host.request("neigh", "replace", dst=ip, ifindex=uplink,
                                                 flags=NTF_PROXY),
                    lambda ip=ip: w.host.request("neigh", "del", dst=ip, ifindex=uplink,
                                                 flags=NTF_PROXY))

    def port_filter(self, w, nic):
        return HostPortFilter.of_nic(w.host.nft(), w.realm, host_name(w, nic), nic, None,
                                     layer2=False, addresses=w.addresses_on_segment(nic))

    def unplug(self, w, nic):
        unplug_veth(w, nic)  # its routes go with it
        self.unfilter(w, nic)
        uplink = w.host.index(nic.link) if nic.link else None
        if uplink is not None:
            for address in nic.addresses():
                try:
                    w.host.request("neigh", "del", dst=str(address.ip), ifindex=uplink,
                                   flags=NTF_PROXY)
                except Exception:
                    pass  # already gone

    def plugged(self, w, nic):
        if not veth_plugged(w, nic):
            return False
        port = w.host.index(host_name(w, nic))
        for address in nic.addresses():
            family = 2 if address.version == 4 else 10
            if not any(r.get("dst") == str(address.ip) for r in w.host.routes(family, oif=port)):
                return False
        return True

    def describe(self, w, nic):
        return describe_veth(w, nic)
