"""Ethernet frames a hostile VM would forge, and a sniffer that sees what arrives.

Run as a program inside a VM's network namespace (through `cvm nsrun`, with the VM's
capabilities: CAP_NET_RAW is all it takes):
    python3 frames.py send IFNAME HEX [HEX...]
"""

import ipaddress
import select
import socket
import struct
import sys
import threading
import time

ETH_P_ALL, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6 = 0x0003, 0x0806, 0x0800, 0x86DD
BROADCAST = "ff:ff:ff:ff:ff:ff"


def mac_bytes(mac):
    return bytes(int(part, 16) for part in mac.split(":"))


def ether(dst, src, ethertype, payload):
    return mac_bytes(dst) + mac_bytes(src) + struct.pack("!H", ethertype) + payload


def _checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def arp_reply(src_mac, sender_mac, sender_ip, target_mac, target_ip):
    body = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 2, mac_bytes(sender_mac),
                       ipaddress.IPv4Address(sender_ip).packed, mac_bytes(target_mac),
                       ipaddress.IPv4Address(target_ip).packed)
    return ether(target_mac, src_mac, ETH_P_ARP, body)


def udp4(src_mac, dst_mac, src_ip, dst_ip, dport, payload, sport=40000):
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                         ipaddress.IPv4Address(src_ip).packed,
                         ipaddress.IPv4Address(dst_ip).packed)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return ether(dst_mac, src_mac, ETH_P_IP, header + udp)


def router_advertisement(src_mac, src_ip6):
    """An RA from `src_ip6` to all nodes, announcing itself as a default router."""
    source = ipaddress.IPv6Address(src_ip6).packed
    destination = ipaddress.IPv6Address("ff02::1").packed
    body = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
    pseudo = source + destination + struct.pack("!I3xB", len(body), 58)
    body = body[:2] + struct.pack("!H", _checksum(pseudo + body)) + body[4:]
    header = struct.pack("!IHBB16s16s", 6 << 28, len(body), 58, 255, source, destination)
    return ether("33:33:00:00:00:01", src_mac, ETH_P_IPV6, header + body)


def send(ifname, frames):
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((ifname, 0))
    for frame in frames:
        try:
            sock.send(frame)
        except OSError:  # ENOBUFS: an egress filter dropped it on the way out
            pass
        time.sleep(0.01)
    sock.close()


class Sniffer:
    """Every frame `ifname` receives (in this process's network namespace) from now on."""

    def __init__(self, ifname):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((ifname, ETH_P_ALL))
        self.frames = []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                if select.select([self.sock], [], [], 0.05)[0]:
                    self.frames.append(self.sock.recv(65536))
            except OSError:  # the interface went away
                return

    def stop(self, settle=0.3):
        time.sleep(settle)
        self.stopping = True
        self.thread.join()
        self.sock.close()
        return self.frames


def main(argv):
    if argv[:1] == ["send"]:
        send(argv[1], [bytes.fromhex(frame) for frame in argv[2:]])
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
