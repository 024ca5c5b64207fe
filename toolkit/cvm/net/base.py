"""The NIC driver interface, the wiring context, and transactions.

Each mode is one module with one driver class (as Incus has one file per NIC type),
registered in cvm.net.DRIVERS. The class owns its options and their rules:

    options                 {name: Option}: what the mode takes besides the common keys
                            (read by cvm.spec.parse_nic, which knows only those)
    refused                 {common key: why}: common keys the mode has no use for
    check_options(nic, where)  rules across the NIC's keys, before the host is looked at
    validate(nic, host)     host checks before anything changes (link exists, is up,
                            kernel feature present, MTU within the parent's)
    plug(tx, w, nic)        put the VM-side interface into the VM's netns under its
                            final name, plus the host-side pieces the mode needs,
                            and the filter on what it sends (filter_step)
    after_configure(tx, w, nic)  host-side steps that need the VM side ready (routes)
    unplug(w, nic)          remove what the mode left on the host; idempotent
    plugged(w, nic)         is the host side complete?
    describe(w, nic)        host-side facts for `cvm net ls`

Every step goes through a Transaction: a failure at step k undoes steps 1..k-1.
"""

import errno
from dataclasses import dataclass

from ..errors import CvmError, KernelFeatureMissing, NetError, SpecError
from ..validation import as_bool, as_int, interface_name, one_of

TAG_PREFIX = "cvm"
IFF_LOOPBACK = 0x8


def host_tag(realm, vm_name, index):
    """The ifalias cvm puts on host-side interfaces: how leftovers are found later."""
    return "%s:%s:%s:%d" % (TAG_PREFIX, realm, vm_name, index)


def parse_tag(alias):
    """(realm, vm_name, index) from a host-side ifalias, or None."""
    parts = (alias or "").split(":")
    if len(parts) == 4 and parts[0] == TAG_PREFIX and parts[3].isdigit():
        return parts[1], parts[2], int(parts[3])
    return None


def default_host_name(vm_name, index):
    return "%s-e%d" % (vm_name, index)


class Transaction:
    """Runs wiring steps and remembers how to undo each one."""

    # Tests set this to k to make step k fail (before it runs).
    inject_failure_at = None

    def __init__(self, what):
        self.what = what
        self.count = 0
        self.done = []
        self._undo = []

    def step(self, description, do, undo=None):
        self.count += 1
        if Transaction.inject_failure_at == self.count:
            raise NetError("%s: injected failure at step %d (%s)" % (self.what, self.count,
                                                                     description))
        try:
            result = do()
        except CvmError:
            raise
        except Exception as exc:
            raise NetError("%s: %s failed: %s" % (self.what, description, explain(exc))) from None
        self.done.append(description)
        if undo is not None:
            self._undo.append((description, undo))
        return result

    def rollback(self):
        """Undo completed steps, newest first. Returns what could not be undone."""
        failures = []
        while self._undo:
            description, undo = self._undo.pop()
            try:
                undo()
            except Exception as exc:  # keep undoing the rest
                failures.append("%s: %s" % (description, explain(exc)))
        return failures

    def commit(self):
        self._undo = []

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, traceback):
        """All or nothing: any error undoes the steps done so far."""
        if exc is not None:
            self.rollback()
        return False


def explain(exc):
    code = getattr(exc, "code", None)
    if code and isinstance(code, int) and code in errno.errorcode:
        return "%s (%s)" % (getattr(exc, "args", ["", ""])[-1] or exc, errno.errorcode[code])
    return str(exc) or type(exc).__name__


class Wiring:
    """What a driver needs to wire NIC `index` of a VM.

    `saved` holds facts a driver must keep to undo its work later (an SR-IOV VF's
    previous settings); `persist(saved)` writes them into the VM's state at once.
    """

    def __init__(self, host, vm, vm_name, index, realm, saved=None, persist=None, sysfs=None,
                 spec=None):
        self.host = host          # Netlink in the host namespace
        self.vm = vm              # Netlink in the VM's namespace (None when it is gone)
        self.vm_name = vm_name
        self.index = index
        self.realm = realm
        self.saved = dict(saved or {})
        self._persist = persist or (lambda saved: None)
        self.sysfs = sysfs
        self.spec = spec  # the whole VM's, when known

    @property
    def tag(self):
        return host_tag(self.realm, self.vm_name, self.index)

    def remember(self, facts):
        self.saved.update(facts)
        self._persist(dict(self.saved))

    def addresses_on_segment(self, nic):
        """The VM's addresses on this NIC's segment: its own, and those of the VM's other
        NICs on the same link (a VM answers ARP for any of its addresses on any of them)."""
        nics = [n for n in (self.spec.nics if self.spec else []) if
                (n.mode, n.link) == (nic.mode, nic.link)] or [nic]
        return [address for n in nics for address in n.addresses()]

    def recalled(self):
        return dict(self.saved)

    def forget(self):
        self.saved = {}
        self._persist({})


class HostView:
    """What validation looks at: host links, kernel features, SR-IOV sysfs."""

    def __init__(self, netlink, features, sysfs):
        self.netlink = netlink
        self.features = features
        self.sysfs = sysfs


@dataclass(frozen=True)
class Option:
    """An option that only some NIC modes take: how a spec's value is read (or refused
    with a SpecError naming the field), and the value when the spec leaves it out."""
    read: object  # (field name, value) -> value
    default: object = None


def choice(*choices):
    """An option taking one of `choices`, the first by default."""
    return Option(lambda where, value: one_of(where, value, choices), choices[0])


VLAN = Option(lambda where, value: as_int(where, value, 1, 4094, "a VLAN id"))
FILTERING = Option(as_bool)  # unset: on when the NIC has a static address (net.filtering)
HOST_NAME = Option(interface_name)  # the host end of a veth; default_host_name() if unset


class NicDriver:
    mode = None
    features = ()  # kernel features this mode needs
    sets_mac = True  # the VM-side interface carries nic.mac
    options = {}
    refused = {}
    link_role = "parent interface"  # what link= names, for messages
    needs_link = True
    pools_addresses = False  # ip=auto: an address from the link's pool

    def check_options(self, nic, where):
        """Rules across the NIC's keys, once each was read; raise SpecError."""

    def inside_addresses(self, nic):
        """Addresses configured inside the VM (ip_interface objects)."""
        return nic.addresses()

    def inside_routes(self, nic):
        """Routes configured inside the VM, as pyroute2 route arguments."""
        routes = []
        if nic.gw:
            routes.append({"dst": "0.0.0.0/0", "gateway": nic.gw})
        if nic.gw6:
            routes.append({"dst": "::/0", "gateway": nic.gw6})
        routes.extend({"dst": r.to, "gateway": r.via} for r in nic.routes)
        return routes

    def probe_target(self, w, nic, mac):
        """(netns fd, interface, MAC) to send address probes from, or None for no probe."""
        return w.vm.netns_fd, nic.name, mac

    def holders_known(self, realm, nic):
        """Is every possible holder of an address on this NIC's segment one that cvm checks
        without asking the segment (the host, the realm's VMs)? Then no probe is sent."""
        return False

    def host_probe_target(self, nic):
        """(host interface, its MAC) on the NIC's segment, to probe from before the VM
        exists; None when only the VM side reaches the segment."""
        return None

    def needed_features(self, nic):
        return tuple(self.features)

    def validate(self, nic, host, where):
        from .kernel import FEATURES
        for feature in self.needed_features(nic):
            if not host.features.get(feature):
                raise KernelFeatureMissing(FEATURES[feature], "%s (mode %s%s)" % (
                    where, self.mode, " with vlan=" if feature != self.mode else ""))

    def plug(self, tx, w, nic):
        raise NotImplementedError

    def after_configure(self, tx, w, nic):
        pass

    def port_filter(self, w, nic):
        """The filter on what this NIC sends (see cvm.net.filtering), or None."""
        return None

    def filter_step(self, tx, w, nic):
        """Filter what the NIC sends before it can send anything."""
        from .filtering import wanted
        if wanted(nic):
            port_filter = self.port_filter(w, nic)
            tx.step("filter what %s sends" % nic.name, port_filter.apply, port_filter.remove)

    def ensure_filter(self, w, nic):
        """A NIC already wired keeps (or gets) exactly the filter its spec asks for."""
        from .filtering import wanted
        port_filter = self.port_filter(w, nic)
        if port_filter is not None:
            port_filter.apply() if wanted(nic) else port_filter.remove()

    def unfilter(self, w, nic):
        port_filter = self.port_filter(w, nic)
        if port_filter is not None:
            port_filter.remove()

    def unplug(self, w, nic):
        pass

    def plugged(self, w, nic):
        return True

    def describe(self, w, nic):
        return {}


def interface_mac(name):
    try:
        with open("/sys/class/net/%s/address" % name) as handle:
            return handle.read().strip()
    except OSError:
        return None


def require_link(host, name, where, what="interface"):
    """The host link named `name`, up; clear errors otherwise."""
    link = host.netlink.link(name)
    if link is None:
        raise SpecError(where, "%s %s does not exist on this host" % (what, name))
    if link["flags"] & IFF_LOOPBACK:
        raise SpecError(where, "%s is the loopback interface; give a %s on the LAN" % (
            name, what))
    if not link["flags"] & 1:
        raise NetError("%s: %s %s is down; bring it up first (ip link set %s up)" % (
            where, what, name, name))
    return link


def check_mtu(nic, parent, where):
    if nic.mtu and nic.mtu > parent.get("mtu", 65535):
        raise SpecError(where + ".mtu", "%d is above the MTU of %s (%d)" % (
            nic.mtu, parent.get("ifname"), parent.get("mtu")))
