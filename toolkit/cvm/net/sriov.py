"""mode=sriov: an SR-IOV virtual function of a physical function (`link`) moved into
the VM — the NIC's own hardware queue, the fastest path.

The VF is given (vf=N) or the first free one is taken (free: its netdev is in the
host namespace, found through sysfs virtfnN/net/). On the PF, cvm sets the VF's MAC,
VLAN and priority, spoof checking, trust, link state and rates, after saving the
VF's previous settings in the VM's state; everything is restored on detach. The VF
is renamed in a temporary namespace so that its final name never clashes with a
host interface. When a VM's namespace dies without a detach, the kernel returns the
VF to the host under a name of its choosing: the daemon finds it and restores it.
"""

import os

from ..errors import KernelFeatureMissing, NetError, SpecError
from ..validation import as_bool, as_int, fail
from .base import VLAN, NicDriver, Option, choice

LINK_STATES = {"auto": 0, "enable": 1, "disable": 2}
SYSFS_ROOT = os.environ.get("CVM_SYSFS", "/sys")
RATE = Option(lambda where, value: as_int(where, value, 0, 10 ** 6, "a rate in Mbit/s"))


class Sysfs:
    """SR-IOV facts from /sys (a fixture tree in tests)."""

    def __init__(self, root=None):
        self.root = root or SYSFS_ROOT

    def _device(self, pf):
        return os.path.join(self.root, "class", "net", pf, "device")

    def _read_int(self, path):
        try:
            with open(path) as handle:
                return int(handle.read().strip() or 0)
        except (OSError, ValueError):
            return None

    def total_vfs(self, pf):
        return self._read_int(os.path.join(self._device(pf), "sriov_totalvfs"))

    def num_vfs(self, pf):
        return self._read_int(os.path.join(self._device(pf), "sriov_numvfs")) or 0

    def vf_netdev(self, pf, vf):
        """The VF's interface name if it is in the host namespace, else None."""
        path = os.path.join(self._device(pf), "virtfn%d" % vf, "net")
        try:
            names = sorted(os.listdir(path))
        except OSError:
            return None
        return names[0] if names else None

    def free_vfs(self, pf):
        return [vf for vf in range(self.num_vfs(pf)) if self.vf_netdev(pf, vf)]

    def any_pf(self):
        base = os.path.join(self.root, "class", "net")
        try:
            return any(self.total_vfs(name) for name in os.listdir(base))
        except OSError:
            return False


class SriovDriver(NicDriver):
    mode = "sriov"
    options = {"vf": Option(lambda where, value: as_int(where, value, 0, 255, "a VF number")),
               "vlan": VLAN,
               "qos": Option(lambda where, value: as_int(where, value, 0, 7, "a VLAN priority")),
               "spoofchk": Option(as_bool, True), "trust": Option(as_bool, False),
               "link_state": choice(*LINK_STATES), "min_rate": RATE, "max_rate": RATE}
    link_role = "physical function"

    def check_options(self, nic, where):
        if nic.option("qos") is not None and nic.option("vlan") is None:
            fail(where + ".qos", "qos is the VLAN priority; it needs vlan=")
        low, high = nic.option("min_rate"), nic.option("max_rate")
        if low and high and low > high:
            fail(where + ".min_rate", "min_rate %d is above max_rate %d" % (low, high))

    def validate(self, nic, host, where):
        sysfs = host.sysfs
        if host.netlink.link(nic.link) is None:
            raise SpecError(where + ".link", "physical function %s does not exist on this host"
                            % nic.link)
        if not sysfs.total_vfs(nic.link):
            if not sysfs.any_pf():
                raise KernelFeatureMissing("SR-IOV", "%s (mode sriov): this host has no "
                                           "SR-IOV capable NIC" % where)
            raise SpecError(where + ".link", "%s is not an SR-IOV physical function" % nic.link)
        count = sysfs.num_vfs(nic.link)
        if count == 0:
            raise NetError("%s.link: %s has no virtual functions enabled (echo N > /sys/class/"
                           "net/%s/device/sriov_numvfs)" % (where, nic.link, nic.link))
        vf = nic.option("vf")
        if vf is not None and vf >= count:
            raise SpecError(where + ".vf", "%s has VFs 0-%d; there is no VF %d" % (
                nic.link, count - 1, vf))

    def vf_settings(self, nic):
        """The VF's configuration on the PF, as pyroute2's `vf=` argument."""
        option = nic.option
        settings = {"vf": option("vf"), "mac": nic.mac,
                    "vlan": {"vlan": option("vlan") or 0, "qos": option("qos") or 0},
                    "spoofchk": 1 if option("spoofchk") else 0,
                    "trust": 1 if option("trust") else 0,
                    "link_state": LINK_STATES[option("link_state")]}
        if option("min_rate") is not None or option("max_rate") is not None:
            settings["rate"] = {"min_tx_rate": option("min_rate") or 0,
                                "max_tx_rate": option("max_rate") or 0}
        return settings

    def plug(self, tx, w, nic):
        pf_index = w.host.index(nic.link)
        vf = nic.option("vf")
        netdev = w.sysfs.vf_netdev(nic.link, vf)
        if netdev is None:
            raise NetError("%s: VF %d of %s is in use (its interface is not on the host)" % (
                nic.name, vf, nic.link))
        previous = read_vf_settings(w.host, pf_index, vf)
        vf_link = w.host.link(netdev)
        previous.update(netdev=netdev, mtu=vf_link.get("mtu"))
        w.remember(previous)  # persisted before the PF is touched: a crash can still restore
        # One undo for every step: wherever the VF got to (the VM, the temporary namespace,
        # or back on the host under a kernel-chosen name), unplug() finds and restores it.
        tx.step("configure VF %d on %s" % (vf, nic.link),
                lambda: w.host.request("link", "set", index=pf_index, vf=self.vf_settings(nic)),
                lambda: self.unplug(w, nic))
        vf_index = vf_link["index"]
        tx.step("take %s down" % netdev,
                lambda: w.host.request("link", "set", index=vf_index, state="down"))
        with w.host.temporary_namespace() as temp:
            # Leaving the block destroys the namespace; a VF still in it returns to the host.
            tx.step("move %s to a temporary namespace" % netdev,
                    lambda: w.host.request("link", "set", index=vf_index,
                                           net_ns_fd=temp.netns_fd))
            settings = {"ifname": nic.name, "address": nic.mac}
            if nic.mtu:
                settings["mtu"] = nic.mtu
            tx.step("rename %s to %s" % (netdev, nic.name),
                    lambda: temp.request("link", "set", index=temp.index(netdev), **settings))
            tx.step("move %s into the VM" % nic.name,
                    lambda: temp.request("link", "set", index=temp.index(nic.name),
                                         net_ns_fd=w.vm.netns_fd))

    def unplug(self, w, nic):
        """Bring the VF back to the host under its old name and restore its settings."""
        previous = w.recalled()
        vf = nic.option("vf")
        if vf is None or not previous:
            return
        if w.vm is not None and w.vm.link(nic.name) is not None:
            index = w.vm.index(nic.name)
            w.vm.request("link", "set", index=index, state="down")
            w.vm.request("link", "set", index=index, net_ns_fd=w.host.own_netns_fd())
        current = w.sysfs.vf_netdev(nic.link, vf)
        if current is not None and current != previous["netdev"] and \
                w.host.link(previous["netdev"]) is None:
            w.host.request("link", "set", index=w.host.index(current), ifname=previous["netdev"])
        pf_index = w.host.index(nic.link)
        if pf_index is not None:
            w.host.request("link", "set", index=pf_index,
                           vf=dict(previous_vf_args(previous), vf=vf))
        w.forget()

    def plugged(self, w, nic):
        return w.sysfs.vf_netdev(nic.link, nic.option("vf")) is None

    def describe(self, w, nic):
        return {"host_side": "%s vf %s" % (nic.link, nic.option("vf")),
                "host_state": "in VM" if self.plugged(w, nic) else "on host"}


def read_vf_settings(host, pf_index, vf):
    """The VF's current settings on the PF (IFLA_VFINFO_LIST), as plain values."""
    message = host.link_with_vfs(pf_index)
    vfinfo = message.get("IFLA_VFINFO_LIST")
    entries = vfinfo.get_attrs("IFLA_VF_INFO") if vfinfo is not None else []
    for entry in entries:
        mac = entry.get("IFLA_VF_MAC")
        if mac is None or mac.get("vf") != vf:
            continue
        vlan = entry.get("IFLA_VF_VLAN") or {}
        rate = entry.get("IFLA_VF_RATE") or {}
        return {"mac": mac.get("mac"), "vlan": vlan.get("vlan", 0), "qos": vlan.get("qos", 0),
                "spoofchk": (entry.get("IFLA_VF_SPOOFCHK") or {}).get("spoofchk", 1),
                "trust": (entry.get("IFLA_VF_TRUST") or {}).get("trust", 0),
                "link_state": (entry.get("IFLA_VF_LINK_STATE") or {}).get("link_state", 0),
                "min_tx_rate": rate.get("min_tx_rate", 0),
                "max_tx_rate": rate.get("max_tx_rate", 0)}
    raise NetError("the PF reports no VF %d" % vf)


def previous_vf_args(previous):
    return {"mac": previous["mac"], "vlan": {"vlan": previous["vlan"], "qos": previous["qos"]},
            "spoofchk": previous["spoofchk"], "trust": previous["trust"],
            "link_state": previous["link_state"],
            "rate": {"min_tx_rate": previous["min_tx_rate"],
                     "max_tx_rate": previous["max_tx_rate"]}}
