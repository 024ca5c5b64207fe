"""Interfaces, bridges and namespaces that network tests make (and always remove).

Only documentation ranges are used: 198.51.100.0/24, 203.0.113.224/27 (the fleet tests'
lab), 2001:db8::/32. 192.0.2.0/24 is this host's own uplink here, and the package
registries may be reached at an address in 203.0.113.0/25: a bridge or route covering
either cuts the machine off. The rest of 203.0.113.128/25 is the demo's (.128/26) and
the default lab's (.192/27), which may run beside the tests.
"""

import contextlib
import secrets
import socket
import subprocess
import time

SUBNET = "198.51.100"
SUBNET6 = "2001:db8:c0::"


def ip(*args, check=True, netns=None):
    """iproute2 for test scaffolding only (cvm's wiring path never shells out)."""
    argv = (["ip", "netns", "exec", netns] if netns else []) + ["ip"] + list(args)
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError("ip %s: %s" % (" ".join(args), result.stderr.strip()))
    return result.stdout


class Lab:
    """Scaffolding made by one test, torn down in reverse order whatever happens."""

    def __init__(self):
        self.token = secrets.token_hex(3)
        self.links = []
        self.namespaces = []

    def name(self, prefix):
        return "%s%s" % (prefix, self.token)

    def bridge(self, address=None, prefix="cvb", up=True):
        name = self.name(prefix)
        ip("link", "add", name, "type", "bridge")
        self.links.append(name)
        if address:
            ip("addr", "add", address, "dev", name)
        if up:
            ip("link", "set", name, "up")
        return name

    def veth(self, prefix="cvv"):
        name = self.name(prefix)
        ip("link", "add", name, "type", "veth", "peer", "name", name + "p")
        self.links.append(name)
        return name, name + "p"

    def netns(self, prefix="cvn"):
        name = self.name(prefix)
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("link", "set", "lo", "up", netns=name)
        return name

    def peer(self, bridge, address, address6=None, prefix="cvp", vlan=None):
        """A 'machine on the LAN': a namespace with a veth into `bridge` (its port is
        lab.name(prefix)); with `vlan`, its address is on the tagged lan0.VLAN."""
        namespace = self.netns(prefix + "n")
        outside = self.name(prefix)
        ip("link", "add", outside, "type", "veth", "peer", "name", "lan0", "netns", namespace)
        self.links.append(outside)
        ip("link", "set", outside, "master", bridge, "up")
        ip("link", "set", "lan0", "up", netns=namespace)
        device = "lan0"
        if vlan:
            device = "lan0.%d" % vlan
            ip("link", "add", "link", "lan0", "name", device, "type", "vlan", "id", str(vlan),
               netns=namespace)
            ip("link", "set", device, "up", netns=namespace)
        ip("addr", "add", address, "dev", device, netns=namespace)
        if address6:
            ip("addr", "add", address6, "dev", device, "nodad", netns=namespace)
        return namespace

    def cleanup(self):
        for name in reversed(self.links):
            ip("link", "del", name, check=False)
        for name in reversed(self.namespaces):
            ip("netns", "del", name, check=False)


def ping(target, netns=None, count=1, timeout=1):
    argv = ["ping", "-6" if ":" in target else "-4", "-c", str(count), "-W", str(timeout),
            target]
    if netns:
        argv = ["ip", "netns", "exec", netns] + argv
    return subprocess.run(argv, capture_output=True).returncode == 0


def wait_pingable(target, timeout=10.0, netns=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping(target, netns=netns, timeout=1):
            return True
        time.sleep(0.02)
    return False


def tcp_connect(address, port, timeout=2.0):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with contextlib.closing(socket.socket(family, socket.SOCK_STREAM)) as sock:
        sock.settimeout(timeout)
        sock.connect((address, port))
        return sock.recv(64)


def host_links():
    return {line.split(":")[1].strip().split("@")[0]
            for line in ip("-o", "link").splitlines()}


def host_routes():
    """Routes, without the carrier flag that a bridge's port changes toggle."""
    lines = ip("route").splitlines() + ip("-6", "route").splitlines()
    return {line.replace(" linkdown", "").strip() for line in lines}


def proxy_entries():
    return set(ip("neigh", "show", "proxy").splitlines()) | \
        set(ip("-6", "neigh", "show", "proxy").splitlines())


def host_snapshot():
    """What a failed attach must leave exactly as it found."""
    return {"links": host_links(), "routes": host_routes(), "proxies": proxy_entries()}
