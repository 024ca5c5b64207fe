"""mode=ipvlan: the VM shares the parent's MAC (for switches that allow one MAC per
port), modes l2 (default), l3 and l3s, optionally on an 802.1Q VLAN of the parent."""

from .base import FILTERING, VLAN, choice
from .stacked import StackedDriver

MODES = {"l2": 0, "l3": 1, "l3s": 2}


class IpvlanDriver(StackedDriver):
    mode = "ipvlan"
    kind = "ipvlan"
    features = ("ipvlan",)
    sets_mac = False
    options = {"ipvlan_mode": choice(*MODES), "vlan": VLAN, "filtering": FILTERING}
    refused = {"mac": "ipvlan NICs share the parent's MAC; drop mac"}

    def link_options(self, nic):
        return {"ipvlan_mode": MODES[nic.option("ipvlan_mode")]}

    def probe_target(self, w, nic, mac):
        # In l3 and l3s modes the slave does not do ARP at all.
        return super().probe_target(w, nic, mac) if nic.option("ipvlan_mode") == "l2" else None
