"""The VM side of a NIC, the same for every mode: sysctls, probe, addresses, link up,
routes, and announcements so that the segment learns the MAC at once."""

import ipaddress
import time

from ..errors import Conflict, NetError
from . import arp
from .netlink import write_sysctl

# How long an ARP probe listens for a holder of the address. RFC 5227's timings take
# seconds; on a LAN an answer comes in about a millisecond, and the probe is sent again
# halfway through. One value for netd and for in-process cvm alike.
PROBE_TIMEOUT = 0.1
IFA_F_NODAD = 0x02
IFA_F_TENTATIVE = 0x40
IFA_F_DADFAILED = 0x08


class EarlyProbes:
    """ARP probes sent from the host side of the segment (the bridge, the uplink) while
    Docker is still creating and starting the container, so that create pays nothing
    for them. NICs whose segment the host cannot reach are probed from inside later;
    those whose every possible holder cvm knows (`holders_known`) are not probed."""

    def __init__(self, nics, drivers, realm):
        import concurrent.futures
        self.futures = {}
        self.known = set()  # NICs whose every possible holder cvm knows
        jobs = []
        for nic in nics:
            driver = drivers[nic.mode]
            if driver.holders_known(realm, nic):
                self.futures[nic.name] = []  # proven free by claim_addresses
                self.known.add(nic.name)
                continue
            target = driver.host_probe_target(nic)
            v4 = [a for a in nic.addresses() if a.version == 4]
            if target is not None and v4:
                jobs.append((nic, target, v4))
        if not jobs:
            return
        pool = concurrent.futures.ThreadPoolExecutor(len(jobs), thread_name_prefix="probe")
        for nic, (ifname, mac), v4 in jobs:
            self.futures[nic.name] = [(a, pool.submit(arp.probe, None, ifname, mac, str(a.ip),
                                                      PROBE_TIMEOUT)) for a in v4]
        pool.shutdown(wait=False)

    def covers(self, nic):
        return nic.name in self.futures

    def holders_known(self, nic):
        """Nothing on the segment can answer that claim_addresses did not check: no
        duplicate address detection either (IPv6's, ~0.1-1 s)."""
        return nic.name in self.known

    def check(self, nic):
        """Wait for this NIC's probes; Conflict if an address answered."""
        for address, future in self.futures.get(nic.name, []):
            holder = future.result()
            if holder:
                raise Conflict("%s: address %s answered an ARP probe from %s; it is in use on "
                               "the segment" % (nic.name, address.ip, holder))

    def wait(self):
        for futures in self.futures.values():
            for _, future in futures:
                future.exception()


def configure(tx, w, nic, driver, probe=True, early=None):
    """Bring up the VM-side interface `nic.name` (already in the VM's namespace).

    `probe` asks that the addresses be proven free first; `early` holds the probes
    already sent from the host side, if any."""
    link = w.vm.link(nic.name)
    if link is None:
        raise NetError("%s: the interface did not appear inside the VM" % nic.name)
    index = link["index"]
    mac = link.get("address")
    addresses = driver.inside_addresses(nic)
    v4 = [a for a in addresses if a.version == 4]
    v6 = [a for a in addresses if a.version == 6]
    if probe and early is not None and early.covers(nic):
        tx.step("probes of %s" % nic.name, lambda: early.check(nic))
        # IPv4 is proven free; IPv6 still needs DAD inside, unless nothing could answer.
        probe = bool(v6) and not early.holders_known(nic)
        v4_probed = True
    else:
        v4_probed = False
    if v4:
        tx.step("arp_notify on %s" % nic.name, lambda: write_sysctl(
            w.vm.netns_fd, "net/ipv4/conf/%s/arp_notify" % nic.name, 1))
    if not v6:
        # A namespace Docker did not make has IPv6 on: set before the link is up, this
        # keeps an IPv4 NIC from taking addresses from the LAN's router advertisements.
        tx.step("IPv6 off on %s" % nic.name, lambda: _ipv6_off(w.vm.netns_fd, nic.name))
    else:
        tx.step("IPv6 on %s" % nic.name, lambda: write_sysctl(
            w.vm.netns_fd, "net/ipv6/conf/%s/disable_ipv6" % nic.name, 0))
        tx.step("ndisc_notify on %s" % nic.name, lambda: write_sysctl(
            w.vm.netns_fd, "net/ipv6/conf/%s/ndisc_notify" % nic.name, 1))
        if probe:
            # Duplicate address detection in ~0.1 s instead of the default 1 s.
            tx.step("fast DAD on %s" % nic.name, lambda: write_sysctl(
                w.vm.netns_fd, "net/ipv6/neigh/%s/retrans_time_ms" % nic.name, 100))
    # The tag goes on with "up": it marks the VM side as cvm's (see net._clear).
    up = ("link %s up" % nic.name, lambda: w.vm.request("link", "set", index=index, state="up",
                                                        ifalias=w.tag))
    if probe:
        # Probing needs the link up and the address not yet taken; then cvm announces
        # the addresses itself.
        tx.step(*up)
        if not v4_probed:
            _probe(tx, w, nic, driver, mac, v4)
        _add_addresses(tx, w, nic, index, addresses, dad=True)
        if v6:
            tx.step("duplicate address detection", lambda: _wait_dad(w, index, nic, v6))
    else:
        # Addresses first, then up: with arp_notify and ndisc_notify set, the kernel
        # announces them (gratuitous ARP, unsolicited NA) as the link comes up.
        _add_addresses(tx, w, nic, index, addresses, dad=False)
        tx.step(*up)
    for route in driver.inside_routes(nic):
        tx.step("route %s" % route.get("dst", "default"),
                lambda r=route: w.vm.request("route", "replace", oif=index, **r))
    # Announced on every start, once the NIC is wired end to end: the kernel's own
    # announcement (without a probe) goes as the link comes up, and switches and VXLAN
    # peers that learnt this MAC on another host (a moved VM) may not have it yet.
    for address in v4:
        tx.step("announce %s" % address.ip,
                lambda a=address: arp.announce(w.vm.netns_fd, nic.name, mac, str(a.ip)))
    if probe:
        for address in v6:
            tx.step("advertise %s" % address.ip,
                    lambda a=address: arp.advertise6(w.vm.netns_fd, nic.name, mac, str(a.ip)))


def _ipv6_off(netns_fd, ifname):
    try:
        write_sysctl(netns_fd, "net/ipv6/conf/%s/disable_ipv6" % ifname, 1)
    except FileNotFoundError:
        pass  # a host without IPv6: nothing to turn off


def _probe(tx, w, nic, driver, mac, v4):
    target = driver.probe_target(w, nic, mac) if v4 else None
    if target is None:
        return
    netns_fd, ifname, probe_mac = target
    for address in v4:
        holder = tx.step("probe %s" % address.ip, lambda a=address: arp.probe(
            netns_fd, ifname, probe_mac, str(a.ip), PROBE_TIMEOUT))
        if holder:
            raise Conflict("%s: address %s answered an ARP probe from %s; it is in use "
                           "on the segment" % (nic.name, address.ip, holder))


def _add_addresses(tx, w, nic, index, addresses, dad):
    for address in addresses:
        flags = {"IFA_FLAGS": IFA_F_NODAD} if address.version == 6 and not dad else {}
        tx.step("address %s on %s" % (address, nic.name),
                lambda a=address, f=flags: w.vm.request(
                    "addr", "replace", index=index, address=str(a.ip),
                    prefixlen=a.network.prefixlen, **f))


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


def configured(w, nic, driver, link):
    """Is the VM side (`link`) complete: ours, up, right MAC, all addresses and routes?"""
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
