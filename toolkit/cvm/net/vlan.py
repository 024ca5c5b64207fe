"""802.1Q sub-interfaces of a parent, for vlan= on macvlan and ipvlan NICs.

Created on first use (or reused when they exist), tagged so that cvm removes the
ones it made once no NIC uses them any more.
"""

from ..errors import NetError
from .netlink import link_kind


def sub_name(parent, vid):
    suffix = ".%d" % vid
    return parent[:15 - len(suffix)] + suffix


def vlan_tag(realm, vid):
    return "cvm:%s:vlan:%d" % (realm, vid)


def parent_index(tx, w, nic):
    """The index to stack the NIC on: the parent, or its VLAN sub-interface."""
    parent = w.host.index(nic.link)
    vid = nic.option("vlan")
    if not vid:
        return parent
    name = sub_name(nic.link, vid)
    existing = w.host.link(name)
    if existing is not None:
        data = existing.get("IFLA_LINKINFO").get("IFLA_INFO_DATA") \
            if existing.get("IFLA_LINKINFO") else None
        if link_kind(existing) != "vlan" or existing.get("link") != parent or (
                data is not None and data.get("IFLA_VLAN_ID") != vid):
            raise NetError("%s.vlan: %s exists but is not VLAN %d of %s" % (
                nic.name, name, vid, nic.link))
        return existing["index"]
    tx.step("create VLAN %d on %s (%s)" % (vid, nic.link, name),
            lambda: w.host.request("link", "add", ifname=name, kind="vlan", link=parent,
                                   vlan_id=vid),
            lambda: w.host.request("link", "del", ifname=name))
    index = w.host.index(name)
    tx.step("raise %s" % name, lambda: w.host.request(
        "link", "set", index=index, state="up", ifalias=vlan_tag(w.realm, vid)))
    return index


def remove_unused(host, realm, in_use):
    """Delete cvm's VLAN sub-interfaces whose (parent, vid) no NIC in `in_use` needs."""
    removed = []
    for link in host.links():
        alias = link.get("ifalias") or ""
        if not alias.startswith("cvm:%s:vlan:" % realm):
            continue
        parent = host.link(index=link.get("link")) if link.get("link") else None
        key = (parent.get("ifname") if parent else None, int(alias.rsplit(":", 1)[1]))
        if key not in in_use:
            host.delete_link(index=link["index"])
            removed.append(link.get("ifname"))
    return removed
