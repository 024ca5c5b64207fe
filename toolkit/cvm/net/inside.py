"""The VM side of a NIC, the same for every mode: sysctls, probe, addresses, link up,
routes, and announcements so that the segment learns the MAC at once."""

import ipaddress
import os
import time

from ..errors import Conflict, NetError
from . import arp
from .netlink import write_sysctl

PROBE_TIMEOUT = float(os.environ.get("CVM_PROBE_TIMEOUT", "0.1"))
IFA_F_NODAD = 0x02
IFA_F_TENTATIVE = 0x40
IFA_F_DADFAILED = 0x08


def configure(tx, w, nic, driver, probe=True):
    """Bring up the VM-side interface `nic.name` (already in the VM's namespace)."""
    link = w.vm.link(nic.name)
    if link is None:
        raise NetError("%s: the interface did not appear inside the VM" % nic.name)
    index = link["index"]
    mac = link.get("address")
    tx.step("tag %s" % nic.name, lambda: w.vm.request("link", "set", index=index, ifalias=w.tag))
    addresses = driver.inside_addresses(nic)
    v4 = [a for a in addresses if a.version == 4]
    v6 = [a for a in addresses if a.version == 6]
    if v4:
        tx.step("arp_notify on %s" % nic.name, lambda: write_sysctl(
            w.vm.netns_fd, "net/ipv4/conf/%s/arp_notify" % nic.name, 1))
    if v6:
        # Docker turns IPv6 off in namespaces it did not give an IPv6 network.
        tx.step("IPv6 on %s" % nic.name, lambda: write_sysctl(
            w.vm.netns_fd, "net/ipv6/conf/%s/disable_ipv6" % nic.name, 0))
        tx.step("ndisc_notify on %s" % nic.name, lambda: write_sysctl(
            w.vm.netns_fd, "net/ipv6/conf/%s/ndisc_notify" % nic.name, 1))
        if probe:
            # Duplicate address detection in ~0.1 s instead of the default 1 s.
            tx.step("fast DAD on %s" % nic.name, lambda: write_sysctl(
                w.vm.netns_fd, "net/ipv6/neigh/%s/retrans_time_ms" % nic.name, 100))
    tx.step("link %s up" % nic.name,
            lambda: w.vm.request("link", "set", index=index, state="up"))
    if probe and v4:
        target = driver.probe_target(w, nic, mac)
        if target is not None:
            netns_fd, ifname, probe_mac = target
            for address in v4:
                holder = tx.step("probe %s" % address.ip, lambda a=address: arp.probe(
                    netns_fd, ifname, probe_mac, str(a.ip), PROBE_TIMEOUT))
                if holder:
                    raise Conflict("%s: address %s answered an ARP probe from %s; it is in use "
                                   "on the segment" % (nic.name, address.ip, holder))
    for address in addresses:
        flags = {} if (probe and address.version == 6) else (
            {"IFA_FLAGS": IFA_F_NODAD} if address.version == 6 else {})
        tx.step("address %s on %s" % (address, nic.name),
                lambda a=address, f=flags: w.vm.request(
                    "addr", "replace", index=index, address=str(a.ip),
                    prefixlen=a.network.prefixlen, **f))
    if probe and v6:
        tx.step("duplicate address detection", lambda: _wait_dad(w, index, nic, v6))
    for route in driver.inside_routes(nic):
        tx.step("route %s" % route.get("dst", "default"),
                lambda r=route: w.vm.request("route", "replace", oif=index, **r))
    for address in v4:
        tx.step("announce %s" % address.ip,
                lambda a=address: arp.announce(w.vm.netns_fd, nic.name, mac, str(a.ip)))
    for address in v6:
        tx.step("advertise %s" % address.ip,
                lambda a=address: arp.advertise6(w.vm.netns_fd, nic.name, mac, str(a.ip)))


def _wait_dad(w, index, nic, v6, timeout=2.0):
    wanted = {str(a.ip) for a in v6}
    deadline = time.monotonic() + timeout
    while True:
        pending = []
        for message in w.vm.addresses(index):
            address = message.get("address")
            if address not in wanted:
                continue
            flags = message.get("IFA_FLAGS") or message["flags"]
            if flags & IFA_F_DADFAILED:
                raise Conflict("%s: address %s failed duplicate address detection; it is in "
                               "use on the segment" % (nic.name, address))
            if flags & IFA_F_TENTATIVE:
                pending.append(address)
        if not pending or time.monotonic() > deadline:
            return
        time.sleep(0.01)


def configured(w, nic, driver):
    """Is the VM side complete: present, up, right MAC, all addresses and routes?"""
    link = w.vm.link(nic.name)
    if link is None or not link["flags"] & 1 or link.get("ifalias") != w.tag:
        return False
    if nic.mac and driver.sets_mac and link.get("address") != nic.mac:
        return False
    present = {(m.get("address"), m["prefixlen"]) for m in w.vm.addresses(link["index"])}
    for address in driver.inside_addresses(nic):
        if (str(address.ip), address.network.prefixlen) not in present:
            return False
    for route in driver.inside_routes(nic):
        dst = route.get("dst", "0.0.0.0/0")
        family = 6 if ":" in dst or ":" in str(route.get("gateway", "")) else 4
        net = ipaddress.ip_network(dst)
        found = [r for r in w.vm.routes(10 if family == 6 else 2, oif=link["index"])
                 if r["dst_len"] == net.prefixlen and (r.get("dst") or
                                                      str(net.network_address)) ==
                 str(net.network_address)]
        if not found:
            return False
    return True
