"""mode=macvlan: the VM gets its own MAC on a parent interface (modes bridge, private,
vepa, passthru), optionally on an 802.1Q VLAN of that parent."""

from .base import FILTERING, VLAN, choice
from .stacked import StackedDriver


class MacvlanDriver(StackedDriver):
    mode = "macvlan"
    kind = "macvlan"
    features = ("macvlan",)
    options = {"macvlan_mode": choice("bridge", "private", "vepa", "passthru"), "vlan": VLAN,
               "filtering": FILTERING}

    def link_options(self, nic):
        return {"macvlan_mode": nic.option("macvlan_mode"), "address": nic.mac}
