"""mode=macvlan: the VM gets its own MAC on a parent interface (modes bridge, private,
vepa, passthru), optionally on an 802.1Q VLAN of that parent."""

from .stacked import StackedDriver


class MacvlanDriver(StackedDriver):
    mode = "macvlan"
    kind = "macvlan"
    features = ("macvlan",)

    def link_options(self, nic):
        return {"macvlan_mode": nic.macvlan_mode, "address": nic.mac}
