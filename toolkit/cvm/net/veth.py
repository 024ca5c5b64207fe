"""The veth pair that bridge and routed NICs share: one end on the host, one in the VM."""

from ..errors import Conflict
from .base import default_host_name, parse_tag


def host_name(w, nic):
    return port_name(w.vm_name, w.index, nic)


def port_name(vm_name, index, nic):
    """The host end of NIC `index` of VM `vm_name`: its host_name, else the default."""
    return nic.option("host_name") or default_host_name(vm_name, index)


def plug_veth(tx, w, nic, extra_host_settings=None, mtu=None):
    """Create the pair with the VM end made directly inside the VM's namespace under its
    final name and MAC (no rename, no clash on the host); tag and raise the host end.
    `mtu`: the pair's (default: the NIC's, else the kernel's). Returns the host end's
    name."""
    name = host_name(w, nic)
    existing = w.host.link(name)
    if existing is not None:
        if not left_by_this_vm(w, nic, existing):
            raise Conflict("%s: a host interface named %s already exists and is not this "
                           "VM's" % (nic.name, name))
        tx.step("remove stale host end %s" % name,
                lambda: w.host.request("link", "del", index=existing["index"]))
    peer = {"ifname": nic.name, "net_ns_fd": w.vm.netns_fd, "address": nic.mac}
    settings = {}
    if mtu or nic.mtu:
        peer["mtu"] = settings["mtu"] = mtu or nic.mtu
    tx.step("create veth %s <-> %s" % (name, nic.name),
            lambda: w.host.request("link", "add", ifname=name, kind="veth", peer=peer,
                                   **settings),
            lambda: w.host.request("link", "del", ifname=name))
    settings = dict(extra_host_settings or {}, ifalias=w.tag, state="up")
    tx.step("raise host end %s" % name,
            lambda: w.host.request("link", "set", ifname=name, **settings))
    return name


def left_by_this_vm(w, nic, link):
    """Whether host interface `link` is this NIC's, left behind: tagged for this VM (a
    previous start's, its namespace still being torn down), or untagged but paired with
    this NIC inside the VM (a wiring killed between creating the pair and tagging it)."""
    tag = parse_tag(link.get("ifalias"))
    if tag is not None:
        return tag[:2] == (w.realm, w.vm_name)
    inside = w.vm.link(nic.name) if w.vm is not None else None
    return inside is not None and inside.get("link") == link["index"] and \
        link.get("link") == inside["index"]


def unplug_veth(w, nic):
    """Deleting the host end removes the pair (and routes through it)."""
    link = w.host.link(host_name(w, nic))
    if link is not None and parse_tag(link.get("ifalias")) is not None:
        w.host.delete_link(index=link["index"])


def veth_plugged(w, nic, master=None):
    link = w.host.link(host_name(w, nic))
    if link is None or not link["flags"] & 1:
        return False
    return master is None or link.get("master") == master


def describe_veth(w, nic):
    link = w.host.link_state(host_name(w, nic))
    return {"host_side": host_name(w, nic),
            "host_state": ("up" if link["up"] else "down") if link else "missing"}
