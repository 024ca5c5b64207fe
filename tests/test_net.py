"""Static-IP networking against the real kernel and engine: real traffic between VMs,
host and LAN peers, wiring that survives restarts, and clean failures."""

import json
import os
import signal
import subprocess
import time

import pytest

from cvm import api, nics
from cvm.errors import Conflict, NetError
from cvm.net import filtering, kernel
from cvm.net.wiring import sweep
from cvm.net.netlink import Netlink
from cvm.net.base import Transaction
from cvm.spec import parse_spec

from .conftest import BUSYBOX, residue, wait_for
from .nethelpers import (SUBNET, host_links, host_snapshot, ip, ping, tcp_connect,
                         wait_pingable)

pytestmark = pytest.mark.engine


def vm_spec(name, *nics, **fields):
    raw = {"name": name, "image": BUSYBOX, "init": "none",
           "command": ["sh", "-c", "echo hello-from-$(hostname) > /tmp/banner; "
                                   "while true; do nc -l -p 7000 < /tmp/banner; done"],
           "nics": list(nics)}
    raw.update(fields)
    return parse_spec(raw)


def bridge_nic(bridge, host_octet, **extra):
    return dict({"mode": "bridge", "link": bridge, "ip": "%s.%d/24" % (SUBNET, host_octet),
                 "gw": "%s.1" % SUBNET}, **extra)


def in_vm(vm, *argv):
    code, out, err = vm.exec(list(argv))
    return code, out.decode(), err.decode()


def test_bridge_mode_traffic_between_vms_host_and_lan(ctx, images, lab, name):
    bridge = lab.bridge("%s.1/24" % SUBNET)
    peer = lab.peer(bridge, "%s.200/24" % SUBNET)
    one = api.create(vm_spec(name + "a", bridge_nic(bridge, 11)), ctx=ctx)
    two = api.create(vm_spec(name + "b", bridge_nic(bridge, 12, ip6="2001:db8:c0::12/64")),
                     ctx=ctx)
    assert ping("%s.11" % SUBNET) and ping("%s.12" % SUBNET)            # host -> VM
    assert ping("%s.11" % SUBNET, netns=peer)                           # LAN peer -> VM
    assert in_vm(one, "ping", "-c1", "-W2", "%s.12" % SUBNET)[0] == 0   # VM -> VM
    assert in_vm(one, "ping", "-c1", "-W2", "%s.1" % SUBNET)[0] == 0    # VM -> gateway
    assert wait_for(lambda: _try_tcp("%s.12" % SUBNET, 7000), timeout=10) == \
        b"hello-from-%s\n" % (name + "b").encode()
    code, routes, _ = in_vm(two, "ip", "route")
    assert "default via %s.1 dev eth0" % SUBNET in routes
    code, addresses, _ = in_vm(two, "ip", "-6", "addr", "show", "eth0")
    (line,) = [entry for entry in addresses.splitlines() if "2001:db8:c0::12/64" in entry]
    assert "tentative" not in line and "dadfailed" not in line
    code, hosts, _ = in_vm(two, "cat", "/etc/hosts")
    assert "%s.12\t%s" % (SUBNET, name + "b") in hosts
    code, env, _ = in_vm(one, "cat", "/etc/cvm/network.env")
    assert "CVM_IP=%s.11\nCVM_MAC=%s\nCVM_NETMASK=255.255.255.0\n" % (
        SUBNET, one.spec.nics[0].mac) in env or ("CVM_IP=%s.11" % SUBNET in env and
                                                 "CVM_NETMASK=255.255.255.0" in env)
    assert in_vm(one, "sh", "-c", "echo $CVM_GATEWAY")[1].strip() == "%s.1" % SUBNET
    for key, value in (("ipv4/conf/eth0/arp_notify", "1"), ("ipv6/conf/eth0/ndisc_notify", "1")):
        assert in_vm(two, "cat", "/proc/sys/net/" + key)[1].strip() == value
    # IPv6 only where the NIC has ip6: no link-local address, no router advertisements
    # taken from the LAN on an IPv4 NIC. lo keeps ::1.
    assert in_vm(one, "cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6")[1].strip() == "1"
    assert in_vm(two, "cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6")[1].strip() == "0"
    assert "::1/128" in in_vm(one, "ip", "-6", "addr")[1] and \
        "fe80::" not in in_vm(one, "ip", "-6", "addr", "show", "eth0")[1]
    info = json.loads(subprocess.run(["ip", "-j", "-d", "link", "show", name + "a-e0"],
                                     capture_output=True, text=True).stdout)[0]
    assert info["master"] == bridge and info["ifalias"].startswith("cvm:%s:" % ctx.realm)
    # The host end, a bridge port, makes no IPv6 link-local address: it needs none.
    assert info["inet6_addr_gen_mode"] == "none"
    assert ip("-6", "addr", "show", "dev", name + "b-e0").strip() == ""


def _try_tcp(address, port):
    try:
        return tcp_connect(address, port)
    except OSError:
        return None


def test_gratuitous_arp_is_sent_when_wired(ctx, images, lab, name):
    import socket
    bridge = lab.bridge("%s.1/24" % SUBNET)
    sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    sniffer.bind((bridge, 0x0806))
    sniffer.settimeout(5)
    vm = api.create(vm_spec(name, bridge_nic(bridge, 21)), ctx=ctx)
    seen = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(seen) < 1:
        frame = sniffer.recv(128)
        sender_ip, target_ip = frame[28:32], frame[38:42]
        if sender_ip == target_ip == bytes([198, 51, 100, 21]):
            seen.append(frame[22:28].hex(":"))
    sniffer.close()
    assert seen and seen[0] == vm.spec.nics[0].mac


def test_address_in_use_on_the_segment_is_refused(ctx, images, lab, name):
    bridge = lab.bridge("%s.1/24" % SUBNET)
    lab.peer(bridge, "%s.30/24" % SUBNET)
    before = host_snapshot()
    with pytest.raises(Conflict, match="address %s.30 answered an ARP probe from" % SUBNET):
        api.create(vm_spec(name, bridge_nic(bridge, 30)), ctx=ctx)
    assert residue(ctx, name) == [] and host_snapshot() == before
    api.create(vm_spec(name, bridge_nic(bridge, 31)), ctx=ctx)
    with pytest.raises(Conflict, match="address %s.30 answered an ARP probe from" % SUBNET):
        nics.attach(ctx, name, bridge_nic(bridge, 30, name="eth1", gw=None))
    assert [nic.name for nic in api.get(name, ctx).spec.nics] == ["eth0"]
    assert name + "-e1" not in host_links()


def arp_probes_seen(bridge, target, during):
    """How many ARP probes (sender 0.0.0.0) for `target` cross `bridge` while `during`
    runs (sent by the host on it, or by a VM through a port)."""
    import socket
    # ETH_P_ALL: a socket bound to one protocol sees only frames received, not sent
    sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    sniffer.bind((bridge, 0x0003))
    sniffer.setblocking(False)
    try:
        during()
        time.sleep(0.2)
        probes = 0
        while True:
            try:
                frame = sniffer.recv(128)
            except BlockingIOError:
                return probes
            probes += frame[12:14] == b"\x08\x06" and frame[28:32] == bytes(4) and \
                frame[38:42] == bytes(int(part) for part in target.split("."))
    finally:
        sniffer.close()


def test_no_probe_where_cvm_knows_every_holder(ctx, images, lab, name):
    """On a bridge whose every port is a filtered NIC of this realm, only the host and
    those NICs could hold an address, and claim_addresses checks them: no ARP probe is
    sent. A port that is not cvm's, a NIC with filtering off, another realm's NIC or
    anything stacked on the bridge brings the probe back."""
    from cvm.net import DRIVERS
    bridge = lab.bridge("%s.1/24" % SUBNET)
    driver = DRIVERS["bridge"]
    nic = vm_spec(name, bridge_nic(bridge, 40)).nics[0]
    assert driver.holders_known(ctx.realm, nic)  # no port at all
    api.create(vm_spec(name, bridge_nic(bridge, 41)), ctx=ctx)
    assert driver.holders_known(ctx.realm, nic)
    assert not driver.holders_known(ctx.realm + "x", nic)
    address = "%s.42" % SUBNET
    assert arp_probes_seen(bridge, address, lambda: nics.attach(
        ctx, name, bridge_nic(bridge, 42, name="eth1", gw=None, ip6="2001:db8:42::42/64"))) == 0
    assert ping(address)
    assert v6_flags(ctx, name, "eth1", "2001:db8:42::42") == {"nodad"}  # no IPv6 DAD either

    unfiltered = api.create(vm_spec(name + "u", bridge_nic(bridge, 43, filtering=False)),
                            ctx=ctx)
    assert not driver.holders_known(ctx.realm, nic)
    unfiltered.remove(force=True)
    assert driver.holders_known(ctx.realm, nic)
    ip("link", "add", "link", bridge, "name", name + "mv", "type", "macvlan", "mode",
       "bridge")
    try:
        assert not driver.holders_known(ctx.realm, nic)
    finally:
        ip("link", "del", name + "mv")
    lab.peer(bridge, "%s.44/24" % SUBNET)
    assert not driver.holders_known(ctx.realm, nic)
    address = "%s.45" % SUBNET
    assert arp_probes_seen(bridge, address, lambda: nics.attach(
        ctx, name, bridge_nic(bridge, 45, name="eth2", gw=None, ip6="2001:db8:42::45/64"))) >= 1
    assert ping(address)
    assert v6_flags(ctx, name, "eth2", "2001:db8:42::45") == set()  # DAD ran, and passed


def v6_flags(ctx, vm_name, ifname, address):
    """The flags iproute2 shows on one IPv6 address in a VM (nodad, tentative, ...)."""
    pid = str(api.get(vm_name, ctx).pid)
    out = subprocess.run(["nsenter", "-t", pid, "-n", "ip", "-6", "-o", "addr", "show", "dev",
                          ifname], capture_output=True, text=True, check=True).stdout
    (line,) = [line for line in out.splitlines() if " %s/" % address in line]
    words = line.split("\\")[0].split()
    return set(words[words.index("scope") + 2:]) - {"noprefixroute"}


def test_routed_mode(ctx, images, lab, name):
    uplink = lab.bridge("198.51.100.129/25", prefix="cvu")
    peer = lab.peer(uplink, "198.51.100.178/25")
    vm = api.create(vm_spec(name, {"mode": "routed", "link": uplink, "ip": "198.51.100.168/32",
                                   "ip6": "2001:db8:c1::40/128"}), ctx=ctx)
    assert ping("198.51.100.168")                                     # host -> VM, /32 route
    code, routes, _ = in_vm(vm, "ip", "route")
    assert "default via 169.254.0.1 dev eth0" in routes and "onlink" in routes
    assert "198.51.100.168 dev %s-e0" % name in ip("route")
    assert "198.51.100.168 dev %s proxy" % uplink in ip("neigh", "show", "proxy")
    assert ping("198.51.100.168", netns=peer)                         # LAN -> VM via proxy ARP
    assert in_vm(vm, "ping", "-c1", "-W2", "198.51.100.178")[0] == 0  # VM -> LAN via the host
    api.get(name, ctx).remove(force=True)
    assert "198.51.100.168" not in ip("neigh", "show", "proxy")
    assert "198.51.100.168" not in ip("route")


def test_macvlan_mode(ctx, images, lab, name):
    parent = lab.bridge(prefix="cvm")  # any up interface can be a macvlan parent
    peer = lab.peer(parent, "%s.60/24" % SUBNET)
    vm = api.create(vm_spec(name, {"mode": "macvlan", "link": parent,
                                   "ip": "%s.61/24" % SUBNET}), ctx=ctx)
    assert ping("%s.61" % SUBNET, netns=peer)
    assert in_vm(vm, "cat", "/sys/class/net/eth0/address")[1].strip() == vm.spec.nics[0].mac
    assert name + "-e0" not in host_links()  # nothing on the host side


def needs_kernel(feature):
    """Skip, saying why, where this kernel lacks a NIC feature. The netlink requests
    such tests would send are asserted in test_net_unit.py on every kernel."""
    if not kernel.features().get(feature):
        pytest.skip("this kernel lacks %s; its netlink requests are proven in test_net_unit.py"
                    % kernel.FEATURES[feature])


@pytest.mark.parametrize("ipvlan_mode", ["l2", "l3"])
def test_ipvlan_mode(ctx, images, lab, name, ipvlan_mode):
    needs_kernel("ipvlan")
    parent = lab.bridge(prefix="cvi")
    peer = lab.peer(parent, "%s.62/24" % SUBNET)
    vm = api.create(vm_spec(name, {"mode": "ipvlan", "link": parent, "ipvlan_mode": ipvlan_mode,
                                   "ip": "%s.63/24" % SUBNET}), ctx=ctx)
    if ipvlan_mode == "l2":  # l3 answers no ARP: the LAN reaches it through a route
        assert ping("%s.63" % SUBNET, netns=peer)
    assert in_vm(vm, "cat", "/sys/class/net/eth0/address")[1].strip() == \
        open("/sys/class/net/%s/address" % parent).read().strip()  # ipvlan shares the parent's MAC
    api.get(name, ctx).remove(force=True)
    assert residue(ctx, name) == []


def test_macvlan_on_a_vlan(ctx, images, lab, name):
    needs_kernel("8021q")
    parent = lab.bridge(prefix="cvl")
    untagged_peer = lab.peer(parent, "%s.250/24" % SUBNET)
    tagged_peer = lab.peer(parent, "%s.64/24" % SUBNET, prefix="cvt", vlan=10)
    api.create(vm_spec(name, {"mode": "macvlan", "link": parent, "vlan": 10,
                              "ip": "%s.65/24" % SUBNET}), ctx=ctx)
    assert "%s.10" % parent in host_links()  # the 802.1Q sub-interface cvm made
    assert ping("%s.65" % SUBNET, netns=tagged_peer)
    assert not ping("%s.65" % SUBNET, netns=untagged_peer)
    api.get(name, ctx).remove(force=True)
    assert "%s.10" % parent not in host_links()  # made by cvm, removed with its last user


def test_bridge_port_vlan(ctx, images, lab, name):
    needs_kernel("bridge_vlan_filtering")
    bridge = lab.bridge(prefix="cvf")
    ip("link", "set", bridge, "type", "bridge", "vlan_filtering", "1")
    same_vlan = lab.peer(bridge, "%s.66/24" % SUBNET, prefix="cvs")
    other_vlan = lab.peer(bridge, "%s.67/24" % SUBNET, prefix="cvo")
    for port, vid in ((lab.name("cvs"), "20"), (lab.name("cvo"), "30")):
        subprocess.run(["bridge", "vlan", "del", "dev", port, "vid", "1"], check=True)
        subprocess.run(["bridge", "vlan", "add", "dev", port, "vid", vid, "pvid", "untagged"],
                       check=True)
    api.create(vm_spec(name, bridge_nic(bridge, 68, vlan=20)), ctx=ctx)
    assert ping("%s.68" % SUBNET, netns=same_vlan)
    assert not ping("%s.68" % SUBNET, netns=other_vlan)
    api.get(name, ctx).remove(force=True)
    assert residue(ctx, name) == []


def test_sriov_mode(ctx, images, name):
    pf = os.environ.get("CVM_TEST_SRIOV_PF")
    if not pf:
        pytest.skip("no SR-IOV PF offered to the tests (set CVM_TEST_SRIOV_PF to one whose VFs "
                    "they may take); requests and restore are proven in test_net_unit.py")
    before = host_snapshot()
    vm = api.create(vm_spec(name, {"mode": "sriov", "link": pf, "ip": "%s.69/24" % SUBNET}),
                    ctx=ctx)
    assert in_vm(vm, "cat", "/sys/class/net/eth0/address")[1].strip() == vm.spec.nics[0].mac
    api.get(name, ctx).remove(force=True)
    assert host_snapshot() == before  # the VF is back under its name, settings restored


def test_unsupported_modes_fail_clearly_here(cvm, ctx, images, lab, name):
    features = kernel.features()
    parent = lab.bridge(prefix="cvq")
    cases = [("mode=ipvlan,link=%s,ip=%s.70/24" % (parent, SUBNET), "ipvlan",
              "this kernel lacks ipvlan, which nics[0] (mode ipvlan) needs"),
             ("mode=macvlan,link=%s,vlan=10,ip=%s.71/24" % (parent, SUBNET), "8021q",
              "this kernel lacks 802.1Q VLANs (8021q), which nics[0] (mode macvlan with vlan=)"),
             ("mode=bridge,link=%s,vlan=10,ip=%s.72/24" % (parent, SUBNET),
              "bridge_vlan_filtering", "this kernel lacks bridge VLAN filtering")]
    for nic, feature, message in cases:
        if features.get(feature):
            print("skipped: this kernel has %s; its error case cannot be shown here" % feature)
            continue
        result = cvm("create", name, "--image", BUSYBOX, "--nic", nic)
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert len(result.stderr.splitlines()) == 1
        assert residue(ctx, name) == []
    result = cvm("create", name, "--image", BUSYBOX, "--nic", "mode=sriov,link=%s" % parent)
    if not kernel.sriov_pfs():
        assert "this kernel lacks SR-IOV" in result.stderr or "not an SR-IOV" in result.stderr


# (NIC, exit code: 2 for bad input, 1 for a host that is not ready, message)
BAD_NICS = [
    ("mode=bridge,link=cvnope0,ip=198.51.100.80/24", 2,
     "nics[0].link: bridge cvnope0 does not exist"),
    ("mode=bridge,link={down},ip=198.51.100.80/24", 1, "nics[0].link: bridge {down} is down"),
    ("mode=bridge,link={veth},ip=198.51.100.80/24", 2, "nics[0].link: {veth} is not a bridge"),
    ("mode=bridge,link=lo,ip=198.51.100.80/24", 2, "nics[0].link: lo is the loopback"),
    ("mode=macvlan,link=lo,ip=198.51.100.80/24", 2, "nics[0].link: lo is the loopback"),
    ("mode=bridge,link={bridge},ip=198.51.100.80/24,mtu=9000", 2,
     "nics[0].mtu: 9000 is above the MTU of {bridge} (1500)"),
    ("mode=macvlan,link=cvnope0", 2, "nics[0].link: parent interface cvnope0 does not exist"),
    ("mode=bridge,link={bridge},ip=198.51.100.80/24,gw=203.0.113.1", 2,
     "nics[0].gw: gateway 203.0.113.1 is outside the NIC's subnet 198.51.100.0/24"),
    ("mode=bridge,link={bridge},ip6=2001:db8::80/64,gw=198.51.100.1", 2,
     "nics[0].gw: an IPv4 gateway needs an IPv4 address on the NIC"),
    ("mode=bridge,link={bridge},ip=198.51.100.800/24", 2, "is not a valid IPv4 CIDR"),
    ("mode=bridge,link={bridge},ip6=fe80::1/64", 2, "nics[0].ip6: fe80::1 is link-local"),
    ("mode=macvlan,link={bridge},vlan=4095", 2, "nics[0].vlan: 4095 is out of range"),
]


@pytest.mark.parametrize("nic,code,message", BAD_NICS, ids=[str(i) for i in range(len(BAD_NICS))])
def test_bad_nics_leave_nothing(cvm, ctx, images, lab, name, nic, code, message):
    names = {"bridge": lab.bridge(prefix="cvx"), "down": lab.bridge(prefix="cvd", up=False),
             "veth": lab.veth()[0]}
    ip("link", "set", names["veth"], "up")
    before = host_snapshot()
    result = cvm("create", name, "--image", BUSYBOX, "--nic", nic.format(**names))
    assert result.returncode == code, result.stderr
    assert result.stderr.splitlines() == ["cvm: " + message.format(**names)] or \
        message.format(**names) in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert residue(ctx, name) == [] and host_snapshot() == before


def test_duplicate_addresses_and_macs_across_vms(ctx, images, lab, name):
    bridge = lab.bridge("%s.1/24" % SUBNET)
    api.create(vm_spec(name + "a", bridge_nic(bridge, 90, mac="02:00:00:00:90:01")), ctx=ctx)
    with pytest.raises(Conflict, match=r"nics\[0\].ip: %s.90 is already used by VM %sa \(eth0\)"
                       % (SUBNET, name)):
        api.create(vm_spec(name + "b", bridge_nic(bridge, 90)), ctx=ctx)
    with pytest.raises(Conflict, match="mac: 02:00:00:00:90:01 is already used by VM %sa" % name):
        api.create(vm_spec(name + "b", bridge_nic(bridge, 91, mac="02:00:00:00:90:01")),
                   ctx=ctx)
    assert residue(ctx, name + "b") == []


def test_eight_racing_creates_for_one_address(cvm, ctx, images, lab, name):
    bridge = lab.bridge("%s.1/24" % SUBNET)
    nic = "mode=bridge,link=%s,ip=%s.95/24" % (bridge, SUBNET)
    processes = [cvm.popen("create", "%s%d" % (name, i), "--image", BUSYBOX, "--init", "none",
                           "--nic", nic, "--", "sleep", "100000", stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True) for i in range(8)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in processes]
    winners = [r for r in results if r[0] == 0]
    losers = [r for r in results if r[0] != 0]
    assert len(winners) == 1, results
    assert all("198.51.100.95 is already used by VM" in err and len(err.splitlines()) == 1
               for _, err in losers), losers
    assert len(api.ls(ctx)) == 1


def test_interface_name_clash_inside_the_vm(cvm, ctx, images, lab, name):
    bridge = lab.bridge("%s.1/24" % SUBNET)
    vm = api.create(vm_spec(name, bridge_nic(bridge, 100)), ctx=ctx)
    # Something inside the VM already has the name eth1.
    subprocess.run(["nsenter", "-t", str(vm.pid), "-n", "ip", "link", "add", "eth1", "type",
                    "veth", "peer", "name", "other"], check=True)
    before = host_snapshot()
    result = cvm("net", "attach", name, "--nic", "mode=bridge,link=%s,ip=%s.101/24" % (bridge,
                                                                                        SUBNET))
    assert result.returncode != 0 and "eth1" in result.stderr and "File exists" in result.stderr
    assert host_snapshot() == before
    assert len(api.get(name, ctx).spec.nics) == 1  # the spec is unchanged


def test_too_many_nics(cvm, ctx, images, name):
    nics = sum([["--nic", "mode=routed,ip=198.51.100.%d/32" % (140 + i)] for i in range(9)], [])
    result = cvm("create", name, "--image", BUSYBOX, *nics)
    assert result.returncode == 2 and "nics: 9 NICs; a VM has at most 8" in result.stderr


def _nic_steps(spec):
    """How many transaction steps wiring `spec` takes (counted on a dry run)."""
    counted = []
    original = Transaction.step

    def counting(self, description, do, undo=None):
        counted.append(description)
        return original(self, description, do, undo)

    return counted, counting


@pytest.mark.parametrize("mode", ["bridge", "routed"])
def test_failure_at_every_step_undoes_the_steps_before(ctx, images, lab, name, mode,
                                                       monkeypatch):
    bridge = lab.bridge("%s.1/24" % SUBNET)
    uplink = lab.bridge("198.51.100.129/25", prefix="cvu")
    nics = {"bridge": [bridge_nic(bridge, 110, ip6="2001:db8:c0::110/64",
                                  routes=["203.0.113.0/24 via %s.254" % SUBNET],
                                  hairpin=True)],
            "routed": [{"mode": "routed", "link": uplink, "ip": "198.51.100.211/32",
                        "ip6": "2001:db8:c1::111/128"}]}[mode]
    counted, counting = _nic_steps(None)
    monkeypatch.setattr(Transaction, "step", counting)
    api.create(vm_spec(name, *nics), ctx=ctx).remove(force=True)
    total = len(counted)
    assert total >= 8, counted
    before = host_snapshot()
    for k in range(1, total + 1):
        monkeypatch.setattr(Transaction, "inject_failure_at", k)
        with pytest.raises(NetError, match="injected failure at step %d" % k):
            api.create(vm_spec(name, *nics), ctx=ctx)
        assert residue(ctx, name) == [], "after a failure at step %d" % k
        after = host_snapshot()
        assert after == before, "after a failure at step %d (%s): %s" % (
            k, counted[k - 1], {key: after[key] ^ before[key] for key in after})


def test_restarts_are_rewired_by_netd(netd, ctx, images, lab, name, engine):
    bridge = lab.bridge("%s.1/24" % SUBNET)
    vm = api.create(vm_spec(name, bridge_nic(bridge, 120)), ctx=ctx)
    for how in ("docker restart", "crash"):
        if how == "docker restart":
            engine.restart(vm.container_id, timeout=1)
        else:  # its init dies: the restart policy brings it back
            os.kill(api.get(name, ctx).pid, signal.SIGKILL)
        started = time.monotonic()
        assert wait_pingable("%s.120" % SUBNET, timeout=15), how
        print("%s: pingable again %.2fs after" % (how, time.monotonic() - started))
    assert "wired %s" % name in netd.log()


def test_netd_killed_mid_flight_loses_nothing(netd, ctx, images, lab, name, engine):
    bridge = lab.bridge("%s.1/24" % SUBNET)
    names = ["%s%d" % (name, i) for i in range(6)]
    vms = [api.create(vm_spec(n, bridge_nic(bridge, 130 + i)), ctx=ctx)
           for i, n in enumerate(names)]
    netd.kill(signal.SIGKILL)
    for vm in vms:
        engine.restart(vm.container_id, timeout=1)  # restarted while nobody wires them
    assert not any(ping("%s.%d" % (SUBNET, 130 + i), timeout=1) for i in range(6))
    netd.start()
    for vm in vms:  # another restart, killed while it is being wired
        engine.restart(vm.container_id, timeout=1)
    time.sleep(0.05)
    netd.kill(signal.SIGKILL)
    netd.start()
    for i in range(6):
        assert wait_pingable("%s.%d" % (SUBNET, 130 + i), timeout=15), names[i]


def test_leftovers_are_swept(cvm, ctx, images, lab, name):
    """A host end tagged for a VM that no longer exists is removed by netd --once."""
    ghost = name[:9] + "-e0"
    ip("link", "add", ghost, "type", "veth", "peer", "name", ghost + "p")
    try:
        ip("link", "set", ghost, "alias", "cvm:%s:%s:0" % (ctx.realm, "gone"))
        cvm("netd", "--once", check=True)
        assert ghost not in host_links()
    finally:
        ip("link", "del", ghost, check=False)


def test_the_sweep_keeps_a_vm_started_after_its_look(ctx, images, lab, name):
    """The sweep removes the host pieces of VMs that were not running when the caller
    looked; a VM started since (by a recovery or a user while netd reconciled) keeps its
    wiring and its filter."""
    bridge = lab.bridge("%s.1/24" % SUBNET)
    api.create(vm_spec(name, bridge_nic(bridge, 151)), ctx=ctx)
    sweep(ctx, running=set())  # as if it started just after the look
    assert name + "-e0" in host_links()
    with Netlink.open() as host:
        assert name + "-e0" in filtering.host_ports(host.nft(), ctx.realm)["bridge"]
    assert wait_pingable("%s.151" % SUBNET, timeout=10)


def test_a_pair_a_killed_wiring_left_untagged_is_taken_back(cvm, ctx, images, lab, name):
    """A wiring killed after creating its veth pair and before tagging the host end leaves
    an untagged pair whose VM end is the NIC: the next wiring removes it and wires the VM.
    An untagged interface of that name that is not paired with the VM is not cvm's."""
    bridge = lab.bridge("%s.1/24" % SUBNET)
    vm = api.create(vm_spec(name, bridge_nic(bridge, 150)), ctx=ctx)
    host_end = name + "-e0"
    ip("link", "del", host_end)
    ip("link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", str(vm.pid))
    cvm("netd", "--once", check=True)
    assert wait_pingable("%s.150" % SUBNET, timeout=10)
    assert "alias cvm:%s:%s:0" % (ctx.realm, name) in ip("link", "show", host_end)

    ip("link", "del", host_end)
    ip("link", "add", host_end, "type", "veth", "peer", "name", host_end + "p")
    try:
        result = cvm("netd", "--once")
        assert "a host interface named %s already exists and is not this VM's" % host_end \
            in result.stderr + result.stdout
        assert host_end + "p" in host_links()
    finally:
        ip("link", "del", host_end, check=False)


def test_attach_detach_and_ls(cvm, ctx, images, lab, name):
    bridge = lab.bridge("%s.1/24" % SUBNET)
    api.create(vm_spec(name, bridge_nic(bridge, 140)), ctx=ctx)
    cvm("net", "attach", name, "--nic", "mode=bridge,link=%s,ip=%s.141/24" % (bridge, SUBNET),
        check=True)
    assert ping("%s.141" % SUBNET)
    rows = json.loads(cvm("net", "ls", name, "--json", check=True).stdout)
    assert [(r["vm_side"], r["host_side"], r["mode"], r["state"]) for r in rows] == [
        ("eth0", name + "-e0", "bridge", "up"), ("eth1", name + "-e1", "bridge", "up")]
    assert [r["mac"] for r in rows] == [n.mac for n in api.get(name, ctx).spec.nics]
    in_netns = ["nsenter", "-t", str(api.get(name, ctx).pid), "-n", "ip", "link", "set", "eth1"]
    subprocess.run(in_netns + ["down"], check=True)
    rows = json.loads(cvm("net", "ls", name, "--json", check=True).stdout)
    assert [(r["state"], r["host_state"]) for r in rows] == [("up", "up"), ("down", "up")]
    subprocess.run(in_netns + ["up"], check=True)
    table = cvm("net", "ls", check=True).stdout
    assert "eth1" in table and "%s.141/24" % SUBNET in table
    api.get(name, ctx).exec(["sh", "-c", "echo '%s.9 db' >> /etc/hosts" % SUBNET])
    cvm("net", "detach", name, "eth0", check=True)
    assert not ping("%s.140" % SUBNET) and ping("%s.141" % SUBNET)
    assert [n.name for n in api.get(name, ctx).spec.nics] == ["eth1"]
    hosts = api.get(name, ctx).exec(["cat", "/etc/hosts"])[1].decode()
    assert "%s.141\t%s\n" % (SUBNET, name) in hosts and "%s.140" % SUBNET not in hosts
    assert "%s.9 db\n" % SUBNET in hosts  # the VM's own line stays
    missing = cvm("net", "detach", name, "eth9")
    assert missing.returncode == 2 and "VM %s has no NIC eth9 (it has eth1)" % name in \
        missing.stderr


def test_bridges_and_pools(cvm, ctx, images, lab, name):
    bridge = lab.name("cvk")
    lab.links.append(bridge)
    cvm("bridge", "add", bridge, "--address", "198.51.100.1/24", "--pool",
        "198.51.100.10-198.51.100.11", check=True)
    assert "198.51.100.1/24" in ip("addr", "show", bridge)
    for i in range(2):
        cvm("create", "%s%d" % (name, i), "--image", BUSYBOX, "--init", "none", "--nic",
            "mode=bridge,link=%s,ip=auto" % bridge, "--", "sleep", "100000", check=True)
    assert [v.spec.nics[0].ip for v in sorted(api.ls(ctx), key=lambda v: v.name)] == [
        "198.51.100.10/24", "198.51.100.11/24"]
    assert api.get(name + "0", ctx).spec.nics[0].gw == "198.51.100.1"
    full = cvm("create", name + "x", "--image", BUSYBOX, "--nic",
               "mode=bridge,link=%s,ip=auto" % bridge)
    assert full.returncode == 2 and "has no free address" in full.stderr
    busy = cvm("bridge", "rm", bridge)
    assert busy.returncode == 2 and "is used by %s0 (eth0), %s1 (eth0)" % (name, name) in \
        busy.stderr
    listing = json.loads(cvm("bridge", "ls", "--json", check=True).stdout)
    assert [(b["name"], b["state"], len(b["ports"])) for b in listing] == [(bridge, "up", 2)]
    # The daemon recreates a persisted bridge that vanished (a host reboot).
    for i in range(2):
        api.get("%s%d" % (name, i), ctx).remove(force=True)
    ip("link", "del", bridge)
    cvm("netd", "--once", check=True)
    assert "198.51.100.1/24" in ip("addr", "show", bridge)
    cvm("bridge", "rm", bridge, check=True)
    assert bridge not in host_links()


def test_bridge_on_an_uplink_takes_its_address(cvm, ctx, lab, name):
    uplink, far_end = lab.veth(prefix="cvl")
    far = lab.netns("cvf")
    ip("link", "set", far_end, "netns", far)
    ip("addr", "add", "198.51.100.2/24", "dev", far_end, netns=far)
    ip("link", "set", far_end, "up", netns=far)
    ip("addr", "add", "198.51.100.3/24", "dev", uplink)
    ip("link", "set", uplink, "up")
    assert ping("198.51.100.2")
    bridge = lab.name("cvbu")
    lab.links.insert(0, bridge)
    cvm("bridge", "add", bridge, "--uplink", uplink, check=True)
    assert "198.51.100.3/24" in ip("addr", "show", bridge)
    assert "198.51.100.3" not in ip("addr", "show", uplink)
    assert "master %s" % bridge in ip("link", "show", uplink)
    assert ping("198.51.100.2")  # the host still reaches the LAN, now through the bridge
    cvm("bridge", "rm", bridge, check=True)
    assert "198.51.100.3/24" in ip("addr", "show", uplink) and bridge not in host_links()
