"""What macvlan and ipvlan share: a link stacked on a parent (or its VLAN), created
straight inside the VM's namespace under its final name, so nothing appears on the
host and no rename is needed."""

from .base import NicDriver, check_mtu, require_link
from .filtering import EgressFilter
from .vlan import parent_index


class StackedDriver(NicDriver):
    kind = None

    def needed_features(self, nic):
        return self.features + (("8021q",) if nic.option("vlan") else ())

    def validate(self, nic, host, where):
        super().validate(nic, host, where)
        parent = require_link(host, nic.link, where + ".link", "parent interface")
        check_mtu(nic, parent, where)

    def link_options(self, nic):
        raise NotImplementedError

    def plug(self, tx, w, nic):
        parent = parent_index(tx, w, nic)
        options = dict(self.link_options(nic), ifname=nic.name, kind=self.kind, link=parent,
                       net_ns_fd=w.vm.netns_fd)
        if nic.mtu:
            options["mtu"] = nic.mtu
        tx.step("create %s %s on %s in the VM" % (self.kind, nic.name, nic.link),
                lambda: w.host.request("link", "add", **options),
                lambda: w.vm.request("link", "del", ifname=nic.name))
        self.filter_step(tx, w, nic)  # the link is still down: nothing was sent yet

    def port_filter(self, w, nic):
        if w.vm is None:
            return None  # the VM's namespace, and its filters, are gone
        return EgressFilter(w.vm.nft(), nic, nic.mac if self.sets_mac else None,
                            w.addresses_on_segment(nic))

    def unplug(self, w, nic):
        if w.vm is not None and w.vm.link(nic.name) is not None:
            self.unfilter(w, nic)
            w.vm.delete_link(ifname=nic.name)

    def describe(self, w, nic):
        vlan = nic.option("vlan")
        return {"host_side": "%s%s" % (nic.link, ".%d" % vlan if vlan else ""),
                "host_state": "stacked"}
