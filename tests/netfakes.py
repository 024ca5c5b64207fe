"""Stand-ins for what this machine cannot have: a host with 8021q, ipvlan and SR-IOV.

RecordingNetlink takes the place of cvm.net.netlink.Netlink. It keeps a small table
of links, applies the effect of the requests it receives to it, and records each
request; `encode()` turns a recorded link request into the real netlink message,
bytes and all, with pyroute2's own request pipeline, so tests check the exact NLAs
that would reach the kernel. FakeSysfs builds the SR-IOV part of /sys in a directory.
"""

import contextlib
import copy
import itertools
import os
import re

from pyroute2.iproute.linux import get_arguments_processor, get_dump_filter
from pyroute2.netlink.rtnl import RTM_NEWLINK
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from cvm.net.netlink import Netlink

_indexes = itertools.count(100)


def encode(command, kwargs):
    """The decoded ifinfmsg that pyroute2 would send for link(command, **kwargs)."""
    _, kwargs = get_dump_filter("link", command, copy.deepcopy(kwargs))
    processor = get_arguments_processor("link", command, kwargs)
    message = ifinfmsg()
    for field in message.fields:
        message[field[0]] = processor.get_value(field[0], default=0, mode="field")
    for key, value in processor.items():
        nla = ifinfmsg.name2nla(key)
        if message.valid_nla(nla) and value is not None:
            message["attrs"].append([nla, value])
    message["header"]["type"] = RTM_NEWLINK
    message.encode()
    decoded = ifinfmsg(message.data)
    decoded.decode()
    return decoded


class FakeLink(dict):
    def get_attr(self, name):
        return self.get(name)


def fake_link(ifname, kind=None, up=True, mtu=1500, address="02:00:00:00:00:fe", **extra):
    link = FakeLink(index=next(_indexes), ifname=ifname, flags=1 if up else 0, mtu=mtu,
                    address=address, **extra)
    if kind:
        link["IFLA_LINKINFO"] = FakeLink(IFLA_INFO_KIND=kind, IFLA_INFO_DATA=FakeLink())
    return link


class RecordingNetlink:
    """Quacks like cvm.net.netlink.Netlink; `log` is shared by every namespace."""

    def __init__(self, links=(), netns_fd=None, where="host", log=None, world=None):
        self.netns_fd = netns_fd
        self.where = where
        self.log = log if log is not None else []
        self.world = world if world is not None else {}  # netns_fd -> RecordingNetlink
        self.world[netns_fd] = self
        if netns_fd is None:
            self.world[-1] = self  # what own_netns_fd() hands out for the host
        self.table = {link["ifname"]: link for link in links}
        self.vfinfo = []
        self.listeners = []  # called after every request (FakeSysfs follows VFs with it)
        self._nft = RecordingNft(where, self.log)

    delete_link = Netlink.delete_link  # built on request(), as for the kernel

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    # the seam
    def request(self, family, command, **kwargs):
        self.log.append((self.where, family, command, copy.deepcopy(kwargs)))
        if family == "link":
            self._apply(command, kwargs)
        for listener in self.world[None].listeners if None in self.world else []:
            listener()
        return []

    def _apply(self, command, kwargs):
        if command == "add":
            target = self.world.get(kwargs.get("net_ns_fd"), self)
            link = fake_link(kwargs["ifname"], kind=kwargs.get("kind"),
                             up=False, address=kwargs.get("address", "02:00:00:00:00:aa"),
                             link=kwargs.get("link"))
            target.table[link["ifname"]] = link
            peer = kwargs.get("peer")
            if isinstance(peer, dict):
                peer_ns = self.world.get(peer.get("net_ns_fd"), self)
                peer_ns.table[peer["ifname"]] = fake_link(peer["ifname"], kind="veth", up=False,
                                                          address=peer.get("address"))
        elif command == "del":
            name = kwargs.get("ifname") or self._name(kwargs.get("index"))
            self.table.pop(name, None)
        elif command == "set":
            name = kwargs.get("ifname") if "index" not in kwargs else self._name(kwargs["index"])
            link = self.table.get(name)
            if link is None:
                return
            if "net_ns_fd" in kwargs:
                del self.table[name]
                self.world.get(kwargs["net_ns_fd"], self).table[name] = link
            if "ifname" in kwargs and "index" in kwargs and kwargs["ifname"] != name:
                self._rename(link, name, kwargs["ifname"])
            if kwargs.get("state") == "up":
                link["flags"] |= 1
            if kwargs.get("state") == "down":
                link["flags"] &= ~1
            for key in ("master", "address", "ifalias", "mtu"):
                if key in kwargs:
                    link[key] = kwargs[key]

    def _rename(self, link, old, new):
        owner = next(ns for ns in self.world.values() if ns.table.get(old) is link)
        del owner.table[old]
        link["ifname"] = new
        owner.table[new] = link

    def _name(self, index):
        for ns in self.world.values():
            for name, link in ns.table.items():
                if link["index"] == index:
                    return name
        return None

    # lookups
    def link(self, ifname=None, index=None):
        if index is not None:
            return next((entry for entry in self.table.values() if entry["index"] == index), None)
        return self.table.get(ifname)

    def index(self, ifname):
        link = self.table.get(ifname)
        return link["index"] if link else None

    def links(self):
        return list(self.table.values())

    def addresses(self, index):
        return []

    def routes(self, family, **filters):
        return []

    def link_with_vfs(self, index):
        entries = []
        for vf in self.vfinfo:
            entries.append(FakeLink(
                IFLA_VF_MAC={"vf": vf["vf"], "mac": vf["mac"]},
                IFLA_VF_VLAN={"vf": vf["vf"], "vlan": vf.get("vlan", 0), "qos": vf.get("qos", 0)},
                IFLA_VF_SPOOFCHK={"vf": vf["vf"], "spoofchk": vf.get("spoofchk", 1)},
                IFLA_VF_TRUST={"vf": vf["vf"], "trust": vf.get("trust", 0)},
                IFLA_VF_LINK_STATE={"vf": vf["vf"], "link_state": vf.get("link_state", 0)},
                IFLA_VF_RATE={"vf": vf["vf"], "min_tx_rate": 0, "max_tx_rate": 0}))

        class VfList(dict):
            def get_attrs(self, name):
                return entries

        return FakeLink(IFLA_VFINFO_LIST=VfList())

    def own_netns_fd(self):
        return self.netns_fd if self.netns_fd is not None else -1

    def nft(self):
        return self._nft

    @contextlib.contextmanager
    def temporary_namespace(self):
        temp = RecordingNetlink(netns_fd=-99, where="temp", log=self.log, world=self.world)
        try:
            yield temp
        finally:
            # As the kernel does: physical devices of a dying namespace go back to the host.
            del self.world[-99]
            for name, link in temp.table.items():
                self.table[name if name not in self.table else "dev%d" % link["index"]] = link
                link["ifname"] = name if self.table.get(name) is link else "dev%d" % link["index"]
            for listener in self.listeners:
                listener()

    def requests(self, family="link"):
        return [(where, command, kwargs) for where, fam, command, kwargs in self.log
                if fam == family]


class RecordingNft:
    """Quacks like cvm.net.filtering.Nft: records each batch of nft commands in the shared
    log (family "nft") and keeps which tables, chains and map elements exist."""

    def __init__(self, where, log):
        self.where = where
        self.log = log
        self.tables = {}  # (family, name) -> {"chains": set, "elements": set}

    def run(self, commands, what):
        self.log.append((self.where, "nft", "batch", list(commands)))
        for command in commands:
            words = command.split()
            key = tuple(words[2:4])
            if words[:2] == ["add", "table"]:
                self.tables.setdefault(key, {"chains": set(), "elements": set()})
            elif words[:2] == ["delete", "table"]:
                self.tables.pop(key, None)
            elif words[1] in ("chain", "element"):
                table = self.tables[key]
                kind = "chains" if words[1] == "chain" else "elements"
                name = re.search(r'"([^"]+)"', command) if kind == "elements" else None
                name = name.group(1) if name else words[4].strip('"')
                if words[0] == "add":
                    table[kind].add(name)
                elif words[0] == "delete":
                    table[kind].discard(name)
        return []

    def table(self, family, name):
        found = self.tables.get((family, name))
        return copy.deepcopy(found) if found is not None else None

    def batches(self):
        return [commands for where, family, _, commands in self.log
                if family == "nft" and where == self.where]


class FakeSysfs:
    """/sys/class/net/<pf>/device/{sriov_totalvfs,sriov_numvfs,virtfnN/net/<vf>} in a dir.

    `follow(host)` keeps virtfnN/net/ in step with where the VF's link is in a
    RecordingNetlink world, as the kernel's sysfs is with the real namespaces."""

    def __init__(self, root):
        self.root = str(root)
        self.followed = {}  # (pf, number) -> link dict

    def follow(self, host, links):
        """Track {(pf, number): link} of `host`'s world from now on."""
        self.followed.update(links)

        def sync():
            for (pf, number), link in self.followed.items():
                present = any(entry is link for entry in host.table.values())
                self.move_vf(pf, number, link["ifname"] if present else None)
        host.listeners.append(sync)
        sync()
        return self

    def add_pf(self, pf, total, vfs):
        """`vfs`: the netdev name of each enabled VF, or None for one in use elsewhere."""
        device = os.path.join(self.root, "class", "net", pf, "device")
        os.makedirs(device, exist_ok=True)
        with open(os.path.join(device, "sriov_totalvfs"), "w") as handle:
            handle.write("%d\n" % total)
        with open(os.path.join(device, "sriov_numvfs"), "w") as handle:
            handle.write("%d\n" % len(vfs))
        for number, netdev in enumerate(vfs):
            pci = os.path.join(self.root, "bus", "pci", "devices", "0000:03:%02x.%d" % (
                number // 8, number % 8))
            os.makedirs(os.path.join(pci, "net"), exist_ok=True)
            if netdev:
                os.makedirs(os.path.join(pci, "net", netdev), exist_ok=True)
            link = os.path.join(device, "virtfn%d" % number)
            if not os.path.lexists(link):
                os.symlink(pci, link)
        return self

    def move_vf(self, pf, number, new_name):
        """The VF's netdev appears under a new name (or leaves the host with None)."""
        net = os.path.join(self.root, "class", "net", pf, "device", "virtfn%d" % number, "net")
        for name in os.listdir(net):
            os.rmdir(os.path.join(net, name))
        if new_name:
            os.makedirs(os.path.join(net, new_name))

    def add_plain(self, name):
        os.makedirs(os.path.join(self.root, "class", "net", name), exist_ok=True)
