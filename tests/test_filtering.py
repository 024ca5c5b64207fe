"""A VM speaks only with its own MAC and addresses: forged frames from inside a VM reach
neither the host nor another VM, while its own traffic flows (cvm.net.filtering).

The forger is a program run in the VM's network namespace with the VM's capabilities
(`cvm nsrun`, which drops to them): what root in the VM can do with CAP_NET_RAW.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

from cvm import api, doctor
from cvm.net import filtering
from cvm.net.wiring import filter_report
from cvm.net.netlink import Netlink
from cvm.spec import parse_spec

from . import frames
from .conftest import BUSYBOX, wait_for
from .nethelpers import SUBNET, ip, ping, wait_pingable

pytestmark = pytest.mark.engine

FORGER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "frames.py")


def vm_spec(name, nic):
    return parse_spec({"name": name, "image": BUSYBOX, "init": "none",
                       "command": ["sleep", "100000"], "nics": [nic]})


def forge(cvm, vm, *forged, ifname="eth0"):
    """Send raw frames from inside `vm` (its netns, its capabilities)."""
    cvm("nsrun", vm.name, "--", sys.executable, FORGER, "send", ifname,
        *[frame.hex() for frame in forged], check=True)


def mac_of(ifname, netns_pid=None):
    argv = ["cat", "/sys/class/net/%s/address" % ifname]
    if netns_pid:
        argv = ["nsenter", "-t", str(netns_pid), "-n", "-m"] + argv
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def neighbour_mac(address, device):
    shown = ip("-j", "neigh", "show", address, "dev", device)
    entries = json.loads(shown or "[]")
    return entries[0].get("lladdr") if entries else None


class UdpListener:
    def __init__(self, address):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]

    def received(self):
        got = []
        try:
            while True:
                got.append(self.sock.recv(2048))
        except socket.timeout:
            return got

    def close(self):
        self.sock.close()


@pytest.fixture
def segment(ctx, images, lab, name):
    """A bridge with the host at .1, VM a (.10, filtered, the forger) and VM b (.11)."""
    bridge = lab.bridge("%s.1/24" % SUBNET)
    nic = {"mode": "bridge", "link": bridge, "gw": "%s.1" % SUBNET}
    one = api.create(vm_spec(name + "a", dict(nic, ip="%s.10/24" % SUBNET,
                                               ip6="2001:db8:f0::10/64")), ctx=ctx)
    two = api.create(vm_spec(name + "b", dict(nic, ip="%s.11/24" % SUBNET)), ctx=ctx)
    return {"bridge": bridge, "a": one, "b": two, "bridge_mac": mac_of(bridge),
            "a_mac": one.spec.nics[0].mac, "b_mac": two.spec.nics[0].mac}


def _forgeries(segment, listener):
    a_mac, bridge_mac = segment["a_mac"], segment["bridge_mac"]
    return {
        "forged ARP reply": frames.arp_reply(a_mac, a_mac, "%s.11" % SUBNET, bridge_mac,
                                             "%s.1" % SUBNET),
        "forged IPv4 source": frames.udp4(a_mac, bridge_mac, "%s.11" % SUBNET,
                                          "%s.1" % SUBNET, listener.port, b"forged-ip"),
        "changed MAC": frames.udp4("02:00:5e:00:53:99", bridge_mac, "%s.10" % SUBNET,
                                   "%s.1" % SUBNET, listener.port, b"forged-mac"),
        "IPv6 router advertisement": frames.router_advertisement(a_mac, "fe80::1"),
    }


def _seen(captured, forged):
    return [frame for frame in captured if frame[:len(forged)] == forged]


def test_forged_frames_reach_neither_the_host_nor_another_vm(cvm, segment):
    listener = UdpListener("%s.1" % SUBNET)
    try:
        assert ping("%s.11" % SUBNET)  # the host's neighbour entry for b: b's MAC
        assert neighbour_mac("%s.11" % SUBNET, segment["bridge"]) == segment["b_mac"]
        forged = _forgeries(segment, listener)
        on_host = frames.Sniffer(segment["bridge"])
        with _sniffing_in(segment["b"]) as on_b:
            forge(cvm, segment["a"], *(list(forged.values()) * 3))
        captured = on_host.stop()
        for what, frame in forged.items():
            assert not _seen(captured, frame), "%s reached the host" % what
            assert not _seen(on_b(), frame), "%s reached VM b" % what
        assert listener.received() == []
        assert neighbour_mac("%s.11" % SUBNET, segment["bridge"]) == segment["b_mac"]
        assert not any(" via fe80::1 " in line for line in ip("-6", "route").splitlines())
        # What a's own traffic looks like still flows: its MAC, its address.
        own = frames.udp4(segment["a_mac"], segment["bridge_mac"], "%s.10" % SUBNET,
                          "%s.1" % SUBNET, listener.port, b"own")
        forge(cvm, segment["a"], own)
        assert listener.received() == [b"own"]
        assert segment["a"].exec(["ping", "-c1", "-W2", "%s.11" % SUBNET])[0] == 0
        assert ping("%s.10" % SUBNET)
    finally:
        listener.close()


class _sniffing_in:
    """A Sniffer on eth0 inside a VM's network namespace (a thread there)."""

    def __init__(self, vm):
        self.vm = vm

    def __enter__(self):
        from cvm.net.netlink import in_netns, open_netns
        fd = open_netns(self.vm.pid)
        try:
            with in_netns(fd):
                self.sniffer = frames.Sniffer("eth0")
        finally:
            os.close(fd)
        return lambda: self.frames

    def __exit__(self, *exc):
        self.frames = self.sniffer.stop()
        return False


def test_filtering_false_lets_forged_frames_through(cvm, ctx, images, lab, name):
    """The control: the same forgery from a VM whose NIC says filtering: false."""
    bridge = lab.bridge("%s.1/24" % SUBNET)
    nic = {"mode": "bridge", "link": bridge, "filtering": False}
    vm = api.create(vm_spec(name, dict(nic, ip="%s.20/24" % SUBNET)), ctx=ctx)
    listener = UdpListener("%s.1" % SUBNET)
    try:
        forge(cvm, vm, frames.udp4(vm.spec.nics[0].mac, mac_of(bridge), "%s.21" % SUBNET,
                                   "%s.1" % SUBNET, listener.port, b"unfiltered"))
        assert listener.received() == [b"unfiltered"]
    finally:
        listener.close()


def test_rules_go_with_detach_and_rm_and_come_back_with_every_start(cvm, ctx, segment, netd):
    with Netlink.open() as host:
        nft = host.nft()
        ports = lambda: filtering.host_ports(nft, ctx.realm)["bridge"]  # noqa: E731
        a, b = segment["a"].name + "-e0", segment["b"].name + "-e0"
        assert ports() == {a, b}
        # netd re-applies a filter that went missing, at its own start... (the netd just
        # started may still be re-wiring the VMs, whose start events it replays: remove
        # the filter again until doctor sees it missing)
        def removed_and_reported():
            filtering.HostPortFilter(nft, ctx.realm, "bridge", a).remove()
            rows = {row.name: row for row in doctor.run_checks(ctx)}
            return filter_report(ctx, {segment["a"].name, segment["b"].name}, nft)[
                "missing"] == [(segment["a"].name, "eth0", a)] and \
                rows["NIC filters"].status == "WARN" and a in rows["NIC filters"].detail
        wait_for(removed_and_reported, timeout=20, what="doctor to report the missing filter")
        netd.stop()
        netd.start()
        assert ports() == {a, b}
        # ... and on every start of the VM.
        filtering.HostPortFilter(nft, ctx.realm, "bridge", a).remove()
        subprocess.run(["docker", "restart", segment["a"].name], check=True,
                       capture_output=True)
        wait_for(lambda: ports() == {a, b}, timeout=20, what="the filter back after a restart")
        assert wait_pingable("%s.10" % SUBNET)
        cvm("net", "detach", segment["a"].name, "eth0", check=True)
        assert ports() == {b}
        cvm("rm", "-f", segment["b"].name, check=True)
        assert nft.table("bridge", filtering.TABLE_PREFIX + ctx.realm) is None  # nothing left


def test_removing_many_filtered_vms_at_once_leaves_no_table(cvm, ctx, images, lab, name,
                                                           netd):
    """netd removes VMs in parallel; the realm's last filtered port takes the table with
    it even when the last ones go at the same moment."""
    bridge = lab.bridge("%s.1/24" % SUBNET)
    names = ["%s%d" % (name, i) for i in range(10)]
    for i, vm_name in enumerate(names):
        api.create(vm_spec(vm_name, {"mode": "bridge", "link": bridge,
                                     "ip": "%s.%d/24" % (SUBNET, 20 + i)}), ctx=ctx)
    cvm("rm", "-f", *names, check=True)
    with Netlink.open() as host:
        assert host.nft().table("bridge", filtering.TABLE_PREFIX + ctx.realm) is None


def test_macvlan_egress_is_filtered_inside_the_vm(cvm, ctx, images, lab, name):
    """macvlan: the chain sits on the device's egress hook in the VM's own namespace."""
    if not filtering_egress_supported():
        pytest.skip("this kernel has no nf_tables netdev egress hook (Linux 5.16+)")
    outside, inside = lab.veth()
    lan = lab.netns("cvf")
    ip("link", "set", inside, "netns", lan)
    ip("addr", "add", "%s.1/24" % SUBNET, "dev", inside, netns=lan)
    ip("link", "set", inside, "up", netns=lan)
    ip("link", "set", outside, "up")
    vm = api.create(vm_spec(name, {"mode": "macvlan", "link": outside,
                                   "ip": "%s.30/24" % SUBNET}), ctx=ctx)
    assert ping("%s.30" % SUBNET, netns=lan)
    listed = subprocess.run(["nsenter", "-t", str(vm.pid), "-n", "nft", "list", "table",
                             "netdev", "cvm"], capture_output=True, text=True).stdout
    assert "hook egress device \"eth0\"" in listed and vm.spec.nics[0].mac in listed
    mac = vm.spec.nics[0].mac
    forged = [frames.arp_reply(mac, mac, "%s.31" % SUBNET, BROADCAST, "%s.1" % SUBNET),
              frames.udp4("02:00:5e:00:53:98", BROADCAST, "%s.30" % SUBNET, "%s.1" % SUBNET,
                          9, b"forged-mac")]
    captured = _sniff_in_netns(lan, inside, lambda: forge(cvm, vm, *forged))
    for frame in forged:
        assert not _seen(captured, frame)
    own = frames.udp4(mac, BROADCAST, "%s.30" % SUBNET, "%s.1" % SUBNET, 9, b"own")
    assert _seen(_sniff_in_netns(lan, inside, lambda: forge(cvm, vm, own)), own)


BROADCAST = frames.BROADCAST


def _sniff_in_netns(netns, ifname, action):
    from cvm.net.netlink import in_netns
    fd = os.open("/run/netns/%s" % netns, os.O_RDONLY)
    try:
        with in_netns(fd):
            sniffer = frames.Sniffer(ifname)
    finally:
        os.close(fd)
    action()
    return sniffer.stop()


def filtering_egress_supported():
    release = tuple(int(part) for part in os.uname().release.split("-")[0].split(".")[:2])
    return release >= (5, 16)


def test_the_rules_nftables_gets_are_exact():
    nic = parse_spec({"name": "web1", "image": "x", "nics": [{
        "mode": "bridge", "link": "br0", "ip": "198.51.100.10/24", "ip6": "2001:db8::10/64",
        "mac": "02:00:5e:00:53:01"}]}).nics[0]
    assert filtering.rules(nic, nic.mac) == [
        "ether saddr != 02:00:5e:00:53:01 drop",
        "ether type arp arp saddr ether != 02:00:5e:00:53:01 drop",
        "ether type arp arp saddr ip != { 0.0.0.0, 198.51.100.10 } drop",
        "ether type ip ip saddr != { 198.51.100.10 } drop",
        "ether type ip6 ip6 saddr != { ::, fe80::/10, 2001:db8::10 } drop",
        "udp sport { 67, 547 } drop",
        "icmpv6 type { nd-router-advert, nd-redirect } drop",
        "icmpv6 type nd-neighbor-advert @th,64,16 & 0xffc0 != 0xfe80 @th,64,128 != "
        "{ 0x20010db8000000000000000000000010 } drop",
        "icmpv6 type nd-neighbor-advert @th,192,8 2 @th,208,48 != 0x02005e005301 drop",
    ]
    routed = parse_spec({"name": "web1", "image": "x", "nics": [{
        "mode": "routed", "ip": "198.51.100.10/24"}]}).nics[0]
    assert filtering.rules(routed, None, layer2=False)[:2] == [
        "meta nfproto ipv4 ip saddr != { 198.51.100.10 } drop",
        "meta nfproto ipv6 ip6 saddr != { ::, fe80::/10 } drop"]
    assert not filtering.wanted(parse_spec({"name": "web1", "image": "x", "nics": [{
        "mode": "bridge", "link": "br0"}]}).nics[0])  # no static address: nothing to guard
