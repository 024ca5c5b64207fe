"""ARP probes and announcements (RFC 5227), sent from inside a network namespace.

A probe asks "who has ADDRESS?" from 0.0.0.0, so that nobody's cache changes; any
answer means the address is in use on the segment. An announcement is a
gratuitous ARP: neighbours and switches learn the (new) MAC at once instead of
waiting for their caches to time out.
"""

import ipaddress
import socket
import struct
import threading
import time

from ..readiness import readable
from .netlink import in_netns

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6


def _mac_bytes(mac):
    return bytes(int(part, 16) for part in mac.split(":"))


def arp_frame(mac, sender_ip, target_ip, op=1):
    src = _mac_bytes(mac)
    header = BROADCAST + src + struct.pack("!H", ETH_P_ARP)
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, src,
                       ipaddress.IPv4Address(sender_ip).packed, b"\x00" * 6,
                       ipaddress.IPv4Address(target_ip).packed)
    return header + body


def _release(sock):
    """Close a packet socket off the caller's path: the kernel waits for an RCU grace
    period on every packet socket's close (8-16 ms here), which nobody needs to wait for."""
    threading.Thread(target=sock.close, name="close-packet-socket", daemon=True).start()


def _socket(netns_fd, ifname, receive):
    """A packet socket on `ifname`; a receiving one gets ARP frames. Made with no protocol
    and given one by bind: made with one, bind would swap the protocol hook, which waits
    for an RCU grace period (8-16 ms here)."""
    with in_netns(netns_fd):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        sock.bind((ifname, ETH_P_ARP if receive else 0))
    return sock


def probe(netns_fd, ifname, mac, address, timeout):
    """The MAC of whoever answers for `address` within `timeout`, or None."""
    target = ipaddress.IPv4Address(address).packed
    sock = _socket(netns_fd, ifname, receive=True)
    try:
        sock.send(arp_frame(mac, "0.0.0.0", address))
        deadline = time.monotonic() + timeout
        resent = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not resent and left < timeout / 2:
                sock.send(arp_frame(mac, "0.0.0.0", address))
                resent = True
            ready = readable([sock], min(left, timeout / 2))
            if not ready:
                continue
            frame = sock.recv(128)
            if len(frame) < 42:
                continue
            op = struct.unpack("!H", frame[20:22])[0]
            sender_mac, sender_ip = frame[22:28], frame[28:32]
            if sender_ip == target and sender_mac != _mac_bytes(mac) and op in (1, 2):
                return ":".join("%02x" % b for b in sender_mac)
    finally:
        _release(sock)


def announce(netns_fd, ifname, mac, address, count=2):
    """Send gratuitous ARP requests for `address` from `mac`."""
    sock = _socket(netns_fd, ifname, receive=False)
    try:
        for i in range(count):
            sock.send(arp_frame(mac, address, address))
    finally:
        _release(sock)



def advertise6(netns_fd, ifname, mac, address):
    """An unsolicited neighbour advertisement (override set) for an IPv6 address to all
    nodes, so that neighbours replace a stale MAC at once (RFC 4861 7.2.6)."""
    target = ipaddress.IPv6Address(address).packed
    option = struct.pack("!BB6s", 2, 1, _mac_bytes(mac))  # target link-layer address
    message = struct.pack("!BBHI16s", 136, 0, 0, 0x20000000, target) + option
    with in_netns(netns_fd):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        with in_netns(netns_fd):
            scope = socket.if_nametoindex(ifname)
        sock.sendto(message, ("ff02::1", 0, 0, scope))
    finally:
        sock.close()
