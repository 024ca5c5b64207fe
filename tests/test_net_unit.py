"""NIC drivers against recorded netlink and a fake sysfs: the modes this kernel lacks
(802.1Q VLANs, ipvlan, SR-IOV, bridge VLAN filtering) are proven by the exact requests
they build and by the errors a host without them gets."""

import pytest

from cvm.errors import Conflict, KernelFeatureMissing, NetError, SpecError
from cvm.net import DRIVERS, addresses
from cvm.net.base import HostView, Transaction, Wiring
from cvm.net.sriov import Sysfs
from cvm.spec import HostFacts, parse_spec

from .netfakes import FakeSysfs, RecordingNetlink, encode, fake_link

HOST = HostFacts(cpus=[0, 1], memory_bytes=8 << 30)
ALL_FEATURES = {f: True for f in ("veth", "bridge", "macvlan", "ipvlan", "8021q",
                                  "bridge_vlan_filtering", "vxlan")}
VM_NETNS = 42


def nic_of(**options):
    raw = {"name": "vm1", "image": "x", "nics": [dict({"mode": "macvlan", "link": "eth9",
                                                      "ip": "198.51.100.10/24"}, **options)]}
    return parse_spec(raw, host=HOST).nics[0]


@pytest.fixture
def world():
    host = RecordingNetlink([fake_link("eth9"), fake_link("br0", kind="bridge"),
                             fake_link("pf0", address="02:00:00:00:00:f0")])
    vm = RecordingNetlink(netns_fd=VM_NETNS, where="vm", log=host.log, world=host.world)
    return host, vm


def wiring(world, saved=None, sysfs=None, index=1):
    host, vm = world
    store = {}
    w = Wiring(host, vm, "vm1", index, "realm1", saved, store.update, sysfs)
    w.persisted = store
    return w


def test_macvlan_on_a_vlan_builds_these_requests(world):
    host, vm = world
    nic = nic_of(vlan=100, macvlan_mode="private", mtu=1400, name="eth1")
    tx = Transaction("test")
    DRIVERS["macvlan"].plug(tx, wiring(world), nic)
    (w1, c1, vlan), (w2, c2, raise_vlan), (w3, c3, macvlan) = host.requests()
    assert (w1, c1, w2, c2, w3, c3) == ("host", "add", "host", "set", "host", "add")
    message = encode("add", vlan)
    assert message.get("ifname") == "eth9.100"
    assert message.get("link") == host.index("eth9")
    assert message.get(("linkinfo", "kind")) == "vlan"
    assert message.get(("linkinfo", "data", "vlan_id")) == 100
    assert raise_vlan["ifalias"] == "cvm:realm1:vlan:100" and raise_vlan["state"] == "up"
    message = encode("add", macvlan)
    assert message.get("ifname") == "eth1"
    assert message.get("net_ns_fd") == VM_NETNS  # made inside the VM: no host name, no rename
    assert message.get("link") == host.index("eth9.100")
    assert message.get(("linkinfo", "kind")) == "macvlan"
    assert message.get(("linkinfo", "data", "macvlan_mode")) == "private"
    assert message.get("address") == nic.mac and message.get("mtu") == 1400
    assert vm.link("eth1") is not None


def test_ipvlan_egress_filter_in_the_vm_has_no_mac_rule(world):
    """ipvlan shares its parent's MAC: the VM's egress chain checks addresses only, and is
    made (before the link goes up) in the VM's namespace, never on the host."""
    host, vm = world
    tx = Transaction("t")
    DRIVERS["ipvlan"].plug(tx, wiring(world), nic_of(mode="ipvlan", name="eth1"))
    assert host.nft().batches() == []
    (batch,) = vm.nft().batches()
    assert 'add chain netdev cvm port_eth1 { type filter hook egress device "eth1" ' \
        'priority 0; policy accept; }' in batch
    rules = [c for c in batch if c.startswith("add rule")]
    assert not any("ether saddr" in rule for rule in rules)
    assert "add rule netdev cvm port_eth1 ether type ip ip saddr != { 198.51.100.10 } drop" \
        in rules
    tx.rollback()  # undone with the link
    assert vm.nft().table("netdev", "cvm")["chains"] == set()


def test_existing_vlan_sub_interface_is_reused(world):
    host, vm = world
    sub = fake_link("eth9.100", kind="vlan", link=host.index("eth9"))
    sub["IFLA_LINKINFO"]["IFLA_INFO_DATA"]["IFLA_VLAN_ID"] = 100
    host.table["eth9.100"] = sub
    DRIVERS["macvlan"].plug(Transaction("t"), wiring(world), nic_of(vlan=100))
    assert [c for _, c, _ in host.requests()] == ["add"]  # only the macvlan itself


def test_vlan_sub_interface_of_another_vlan_is_refused(world):
    host, vm = world
    sub = fake_link("eth9.100", kind="vlan", link=host.index("eth9"))
    sub["IFLA_LINKINFO"]["IFLA_INFO_DATA"]["IFLA_VLAN_ID"] = 200
    host.table["eth9.100"] = sub
    with pytest.raises(NetError, match="eth9.100 exists but is not VLAN 100 of eth9"):
        DRIVERS["macvlan"].plug(Transaction("t"), wiring(world), nic_of(vlan=100))


@pytest.mark.parametrize("mode,value", [("l2", 0), ("l3", 1), ("l3s", 2)])
def test_ipvlan_requests(world, mode, value):
    host, vm = world
    nic = nic_of(mode="ipvlan", ipvlan_mode=mode)
    DRIVERS["ipvlan"].plug(Transaction("t"), wiring(world), nic)
    (_, command, request), = host.requests()
    message = encode(command, request)
    assert message.get(("linkinfo", "kind")) == "ipvlan"
    assert message.get(("linkinfo", "data", "ipvlan_mode")) == value
    assert message.get("address") is None  # shares the parent's MAC
    assert message.get("net_ns_fd") == VM_NETNS
    target = DRIVERS["ipvlan"].probe_target(wiring(world), nic, "02:00:00:00:00:01")
    assert (target is None) == (mode != "l2")  # l3 modes do no ARP


def test_bridge_vlan_builds_port_vlan_requests(world):
    host, vm = world
    nic = parse_spec({"name": "vm1", "image": "x", "nics": [
        {"mode": "bridge", "link": "br0", "vlan": 30, "hairpin": True}]}, host=HOST).nics[0]
    DRIVERS["bridge"].plug(Transaction("t"), wiring(world, index=0), nic)
    families = [(family, command) for _, family, command, _ in host.log]
    assert families == [("link", "add"), ("link", "set"), ("brport", "set"),
                        ("vlan_filter", "add"), ("vlan_filter", "del")]
    veth = host.log[0][3]
    assert veth["peer"] == {"ifname": "eth0", "net_ns_fd": VM_NETNS, "address": nic.mac,
                            "mtu": 1500}  # the bridge's
    assert host.log[1][3]["master"] == host.index("br0")
    assert host.log[1][3]["ifalias"] == "cvm:realm1:vm1:0"
    # a bridge port with no IPv6 link-local address (IN6_ADDR_GEN_MODE_NONE)
    assert host.log[1][3]["IFLA_AF_SPEC"] == {"attrs": [["AF_INET6", {"attrs": [
        ["IFLA_INET6_ADDR_GEN_MODE", 1]]}]]}
    assert host.log[2][3]["hairpin_mode"] == 1
    assert host.log[3][3]["vlan_info"] == {"vid": 30, "flags": ["pvid", "untagged"]}


# ---------------------------------------------------------------- SR-IOV


@pytest.fixture
def sriov(world, tmp_path):
    host, vm = world
    sysfs = FakeSysfs(tmp_path / "sys").add_pf("pf0", 8, ["enp3s0f0v0", None, "enp3s0f0v2"])
    for number, name in ((0, "enp3s0f0v0"), (2, "enp3s0f0v2")):
        host.table[name] = fake_link(name, mtu=1500)
    sysfs.follow(host, {("pf0", 0): host.table["enp3s0f0v0"],
                        ("pf0", 2): host.table["enp3s0f0v2"]})
    host.vfinfo = [{"vf": 0, "mac": "00:00:00:00:00:00"}, {"vf": 1, "mac": "02:aa:00:00:00:01"},
                   {"vf": 2, "mac": "00:00:00:00:00:00", "vlan": 7}]
    return sysfs


def sriov_nic(**options):
    return nic_of(**dict({"mode": "sriov", "link": "pf0", "vf": 2, "vlan": 100, "qos": 3,
                          "trust": True, "link_state": "enable", "max_rate": 1000,
                          "name": "eth1"}, **options))


def test_sriov_attach_requests_and_saved_state(world, sriov):
    host, vm = world
    nic = sriov_nic()
    w = wiring(world, sysfs=Sysfs(sriov.root))
    DRIVERS["sriov"].plug(Transaction("t"), w, nic)
    # Previous settings were persisted before the PF was touched.
    assert w.persisted["netdev"] == "enp3s0f0v2" and w.persisted["vlan"] == 7
    steps = [(where, command, sorted(k for k in kwargs if k not in ("index",)))
             for where, command, kwargs in host.requests()]
    assert steps == [("host", "set", ["vf"]), ("host", "set", ["state"]),
                     ("host", "set", ["net_ns_fd"]), ("temp", "set", ["address", "ifname"]),
                     ("temp", "set", ["net_ns_fd"])]
    message = encode("set", host.requests()[0][2])
    assert message.get("index") == host.index("pf0")
    (info,) = message.get("IFLA_VFINFO_LIST").get_attrs("IFLA_VF_INFO")
    assert info.get("IFLA_VF_MAC")["mac"] == nic.mac
    assert (info.get("IFLA_VF_VLAN")["vlan"], info.get("IFLA_VF_VLAN")["qos"]) == (100, 3)
    assert info.get("IFLA_VF_SPOOFCHK")["spoofchk"] == 1
    assert info.get("IFLA_VF_TRUST")["trust"] == 1
    assert info.get("IFLA_VF_LINK_STATE")["link_state"] == 1
    assert info.get("IFLA_VF_RATE")["max_tx_rate"] == 1000
    assert all(nla.get("vf") == 2 for _, nla in info["attrs"])
    assert host.requests()[3][2]["ifname"] == "eth1"  # renamed in the temporary namespace
    assert host.requests()[4][2]["net_ns_fd"] == VM_NETNS
    assert vm.link("eth1") is not None and host.link("enp3s0f0v2") is None


def test_sriov_detach_restores_everything(world, sriov):
    host, vm = world
    nic = sriov_nic()
    w = wiring(world, sysfs=Sysfs(sriov.root))
    DRIVERS["sriov"].plug(Transaction("t"), w, nic)
    assert Sysfs(sriov.root).vf_netdev("pf0", 2) is None  # in the VM now
    host.log.clear()
    w2 = wiring(world, saved=w.persisted, sysfs=Sysfs(sriov.root))
    DRIVERS["sriov"].unplug(w2, nic)
    moved = host.requests()
    assert moved[0][0] == "vm" and moved[1][2]["net_ns_fd"] == host.own_netns_fd()
    assert moved[2][2]["ifname"] == "enp3s0f0v2"  # back under its old name
    assert host.link("enp3s0f0v2") is not None and vm.link("eth1") is None
    restore = encode("set", moved[-1][2])
    (info,) = restore.get("IFLA_VFINFO_LIST").get_attrs("IFLA_VF_INFO")
    assert info.get("IFLA_VF_VLAN")["vlan"] == 7 and info.get("IFLA_VF_MAC")["mac"] == \
        "00:00:00:00:00:00"
    assert w2.persisted == {}  # forgotten once restored


def test_stray_vf_comes_back_under_its_old_name(world, sriov):
    """The VM's namespace died without a detach: the kernel returned the VF as eth7."""
    host, vm = world
    nic = sriov_nic()
    w = wiring(world, sysfs=Sysfs(sriov.root))
    DRIVERS["sriov"].plug(Transaction("t"), w, nic)
    vf = vm.table.pop("eth1")  # the VM's namespace dies ...
    vf["ifname"] = "eth7"      # ... and the kernel hands the VF back under a free name
    host.table["eth7"] = vf
    host.listeners[0]()
    host.log.clear()
    stray = Wiring(host, None, "vm1", 1, "realm1", w.persisted, lambda s: None,
                   Sysfs(sriov.root))
    DRIVERS["sriov"].unplug(stray, nic)
    rename, restore = host.requests()
    assert rename[2] == {"index": vf["index"], "ifname": "enp3s0f0v2"}
    assert host.link("enp3s0f0v2") is vf
    assert encode("set", restore[2]).get("IFLA_VFINFO_LIST") is not None


@pytest.mark.parametrize("failing_step", [1, 2, 3, 4, 5])
def test_sriov_failure_at_each_step_is_undone(world, sriov, failing_step, monkeypatch):
    host, vm = world
    monkeypatch.setattr(Transaction, "inject_failure_at", failing_step)
    tx = Transaction("t")
    with pytest.raises(NetError, match="injected failure at step %d" % failing_step):
        DRIVERS["sriov"].plug(tx, wiring(world, sysfs=Sysfs(sriov.root)), sriov_nic())
    assert tx.rollback() == []
    assert host.link("enp3s0f0v2") is not None and vm.link("eth1") is None
    assert all(not ns.table.get("eth1") for ns in host.world.values())
    pf_requests = [kwargs for where, _, kwargs in host.requests() if "vf" in kwargs]
    if failing_step > 1:  # the PF was configured, then its previous settings went back
        assert len(pf_requests) == 2
        (info,) = encode("set", pf_requests[-1]).get("IFLA_VFINFO_LIST").get_attrs(
            "IFLA_VF_INFO")
        assert info.get("IFLA_VF_VLAN")["vlan"] == 7
    else:
        assert pf_requests == []


def test_sriov_vf_claims(tmp_path):
    sysfs = Sysfs(FakeSysfs(tmp_path).add_pf("pf0", 4, ["v0", None, "v2"]).root)
    spec = parse_spec({"name": "vm1", "image": "x", "nics": [{"mode": "sriov", "link": "pf0"}]},
                      host=HOST)
    assert addresses.claim(spec, {}, {}, sysfs).nics[0].option("vf") == 0
    other = {"vm2": {"spec": {"nics": [{"mode": "sriov", "link": "pf0", "vf": 0}]}}}
    assert addresses.claim(spec, other, {}, sysfs).nics[0].option("vf") == 2
    both = {"vm2": {"spec": {"nics": [{"mode": "sriov", "link": "pf0", "vf": 0},
                                      {"mode": "sriov", "link": "pf0", "vf": 2,
                                       "name": "eth1"}]}}}
    with pytest.raises(NetError, match="pf0 has no free virtual function"):
        addresses.claim(spec, both, {}, sysfs)
    pinned = parse_spec({"name": "vm1", "image": "x", "nics": [
        {"mode": "sriov", "link": "pf0", "vf": 2}]}, host=HOST)
    with pytest.raises(Conflict, match="nics.0..vf: VF 2 of pf0 is already used by VM vm2"):
        addresses.claim(pinned, both, {}, sysfs)


# ---------------------------------------------------------------- host checks


def validate(nic, features=None, sysfs=None, links=None):
    host = RecordingNetlink(links or [fake_link("eth9"), fake_link("br0", kind="bridge"),
                                      fake_link("down0", up=False), fake_link("pf0")])
    view = HostView(host, dict(ALL_FEATURES, **(features or {})), sysfs or Sysfs("/nonexistent"))
    DRIVERS[nic.mode].validate(nic, view, "nics[0]")


@pytest.mark.parametrize("options,features,message", [
    ({"mode": "ipvlan"}, {"ipvlan": False},
     "this kernel lacks ipvlan, which nics[0] (mode ipvlan) needs"),
    ({"vlan": 10}, {"8021q": False},
     "this kernel lacks 802.1Q VLANs (8021q), which nics[0] (mode macvlan with vlan=) needs"),
    ({"mode": "ipvlan", "vlan": 10}, {"8021q": False}, "lacks 802.1Q VLANs (8021q)"),
    ({"mode": "bridge", "link": "br0", "vlan": 10}, {"bridge_vlan_filtering": False},
     "this kernel lacks bridge VLAN filtering, which nics[0] (mode bridge with vlan=) needs"),
    ({}, {"macvlan": False}, "this kernel lacks macvlan"),
])
def test_missing_kernel_features_are_named(options, features, message):
    with pytest.raises(KernelFeatureMissing) as excinfo:
        validate(nic_of(**options), features)
    assert message in str(excinfo.value)


def test_sriov_host_checks(tmp_path):
    with pytest.raises(KernelFeatureMissing, match="lacks SR-IOV, which nics\\[0\\] \\(mode "
                                                   "sriov\\): this host has no SR-IOV capable NIC"):
        validate(sriov_nic())
    fake = FakeSysfs(tmp_path)
    fake.add_plain("eth9")
    fake.add_pf("pf0", 8, [])
    with pytest.raises(NetError, match="pf0 has no virtual functions enabled"):
        validate(sriov_nic(), sysfs=Sysfs(fake.root))
    fake.add_pf("pf0", 8, ["v0", "v1"])
    with pytest.raises(SpecError, match="nics\\[0\\].vf: pf0 has VFs 0-1; there is no VF 2"):
        validate(sriov_nic(), sysfs=Sysfs(fake.root))
    validate(sriov_nic(vf=1), sysfs=Sysfs(fake.root))
    with pytest.raises(SpecError, match="eth9 is not an SR-IOV physical function"):
        validate(sriov_nic(link="eth9"), sysfs=Sysfs(fake.root))


def test_parent_checks():
    with pytest.raises(SpecError, match="nics\\[0\\].link: parent interface eth404 does not "
                                        "exist on this host"):
        validate(nic_of(link="eth404"))
    with pytest.raises(NetError, match="parent interface down0 is down"):
        validate(nic_of(link="down0"))
    with pytest.raises(SpecError, match="nics\\[0\\].mtu: 9000 is above the MTU of eth9 \\(1500\\)"):
        validate(nic_of(mtu=9000))


# ---------------------------------------------------------------- addresses


def test_address_claims_and_pools():
    spec = parse_spec({"name": "vm1", "image": "x", "nics": [
        {"mode": "bridge", "link": "br0", "ip": "198.51.100.10/24"}]}, host=HOST)
    others = {"vm2": {"spec": {"nics": [{"mode": "bridge", "link": "br0",
                                         "ip": "198.51.100.10/24", "mac": "02:00:00:00:00:02"}]}}}
    with pytest.raises(Conflict, match="nics\\[0\\].ip: 198.51.100.10 is already used by VM vm2 "
                                       "\\(eth0\\)"):
        addresses.claim(spec, others, {})
    same_mac = parse_spec({"name": "vm1", "image": "x", "nics": [
        {"mode": "bridge", "link": "br0", "ip": "198.51.100.11/24",
         "mac": "02:00:00:00:00:02"}]}, host=HOST)
    with pytest.raises(Conflict, match="mac: 02:00:00:00:00:02 is already used by VM vm2"):
        addresses.claim(same_mac, others, {})
    auto = parse_spec({"name": "vm1", "image": "x", "nics": [
        {"mode": "bridge", "link": "br0", "ip": "auto"}]}, host=HOST)
    bridges = {"br0": {"address": "198.51.100.1/24", "pool": "198.51.100.10-198.51.100.11"}}
    claimed = addresses.claim(auto, others, bridges)
    assert (claimed.nics[0].ip, claimed.nics[0].gw) == ("198.51.100.11/24", "198.51.100.1")
    full = dict(others, vm3={"spec": {"nics": [{"ip": "198.51.100.11/24"}]}})
    with pytest.raises(Conflict, match="the pool of bridge br0 .* has no free address"):
        addresses.claim(auto, full, bridges)
    with pytest.raises(SpecError, match="ip=auto needs an address pool on bridge br0"):
        addresses.claim(auto, {}, {})


def test_unused_vlans_are_looked_for_only_after_a_nic_on_one(monkeypatch, tmp_path):
    """Looking for VLAN sub-interfaces no NIC needs dumps every host link and reads every
    VM's record: at hundreds of VMs that was most of a `cvm rm`. Only a NIC stacked on
    a VLAN can leave one unused."""
    import types
    from cvm.net import wiring
    from cvm.state import Store
    looked = []
    monkeypatch.setattr(wiring.Netlink, "open", classmethod(
        lambda cls, netns_fd=None, where="host": RecordingNetlink([fake_link("eth9")])))
    monkeypatch.setattr(wiring, "remove_unused", lambda host, realm, in_use: looked.append(
        in_use))
    ctx = types.SimpleNamespace(store=Store(str(tmp_path)), realm="test")
    other = parse_spec({"name": "vm2", "image": "x", "nics": [
        {"mode": "ipvlan", "link": "eth9", "vlan": 7, "ip": "198.51.100.12/24"}]}, host=HOST)
    ctx.store.write_vm("vm2", {"spec": other.to_dict()})
    for options, expected in (({"mode": "bridge", "link": "br0"}, []),
                              ({"vlan": 5}, [{("eth9", 7)}])):
        spec = parse_spec({"name": "vm1", "image": "x", "nics": [dict(
            {"mode": "macvlan", "link": "eth9", "ip": "198.51.100.10/24"}, **options)]},
            host=HOST)
        looked.clear()
        wiring.unwire_vm(ctx, "vm1", spec)
        assert looked == expected
