"""The VM spec: one model, loaded from YAML or CLI flags, validated before anything is touched.

Static checks (syntax, ranges, cross-field rules) live here. Checks that need the
host (does the bridge exist, does the kernel have ipvlan) belong to the module
that owns the resource and run before it changes anything.
"""

import functools
import ipaddress
import os
import re
import shlex
import time
from dataclasses import dataclass, field, fields

from .net import DRIVERS
from .validation import (as_bool, as_int, as_list, fail, interface_name, one_line,
                         split_key_value, suggest)
from .specfile import parse_nic_text
from .sizes import SIZE_FORM, format_size, parse_cpu_list, parse_size

NAME_MAX = 12  # "<name>-e<N>" host interface names must fit IFNAMSIZ-1 = 15
MAX_NICS = 8
DOCKER_MIN_MEMORY = 6 * 1024 * 1024
INIT_MODES = ("auto", "systemd", "compat", "none")
RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")
RESERVED_LABEL_PREFIX = "io.cvm."
TUNED_SERVICES = ("nginx", "redis", "mysql", "php-fpm", "jvm")  # cvm.tune.SERVICES' keys

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SSH_KEY = re.compile(r"^(ssh-|ecdsa-|sk-)[\w@.-]+ [A-Za-z0-9+/=]+( .*)?$")
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


# ---------------------------------------------------------------- host facts


@dataclass
class HostFacts:
    """What static validation needs to know about the host; cheap to read."""

    cpus: list
    memory_bytes: int

    FRESH_FOR = 1.0  # seconds: a listing parses every VM's spec, against the same host
    _last = (float("-inf"), None)

    @classmethod
    def read(cls):
        read_at, facts = HostFacts._last
        if time.monotonic() - read_at > cls.FRESH_FOR:
            HostFacts._last = (time.monotonic(), cls._read())
        return HostFacts._last[1]

    @classmethod
    def _read(cls):
        with open("/sys/devices/system/cpu/online") as online:
            cpus = parse_cpu_list(online.read())
        memory = 0
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    memory = int(line.split()[1]) * 1024
                    break
        return cls(cpus=cpus, memory_bytes=memory)


# ---------------------------------------------------------------- NICs


@dataclass
class Route:
    to: str
    via: str

    def to_text(self):
        return "%s via %s" % (self.to, self.via)


@dataclass
class NicSpec:
    """One NIC of a VM: the keys every mode shares, and the options of its mode (declared,
    read and checked by the mode's driver in cvm.net)."""

    mode: str
    link: str = None
    name: str = None
    ip: str = None
    ip6: str = None
    gw: str = None
    gw6: str = None
    mac: str = None
    mtu: int = None
    routes: list = field(default_factory=list)
    options: dict = field(default_factory=dict)

    COMMON = ("mode", "link", "name", "ip", "ip6", "gw", "gw6", "mac", "mtu", "routes")

    def option(self, key):
        """A mode option's value (its default when the spec left it out); None for an
        option this NIC's mode does not take."""
        return self.options.get(key)

    @property
    def ip_interface(self):
        return ip_interface(self.ip) if self.ip and self.ip != "auto" else None

    @property
    def ip6_interface(self):
        return ip_interface(self.ip6) if self.ip6 else None

    def addresses(self):
        return [a for a in (self.ip_interface, self.ip6_interface) if a is not None]

    def to_dict(self):
        """Only what was set, so that stored specs stay readable and stable."""
        data = {"mode": self.mode}
        defaults = NicSpec(mode=self.mode)
        for key in self.COMMON[1:]:
            value = getattr(self, key)
            if key == "routes":
                if value:
                    data["routes"] = [r.to_text() for r in value]
            elif value != getattr(defaults, key):
                data[key] = value
        for key, option in DRIVERS[self.mode].options.items():
            if self.options.get(key, option.default) != option.default:
                data[key] = self.options[key]
        return data


def _parse_route(where, value):
    if isinstance(value, dict):
        unknown = set(value) - {"to", "via"}
        if unknown:
            fail(where, "unknown key %r in a route; use to and via" % sorted(unknown)[0])
        to, via = value.get("to"), value.get("via")
    else:
        match = re.match(r"^\s*(\S+)\s+via\s+(\S+)\s*$", str(value))
        if not match:
            fail(where, "%r is not a route; use 'CIDR via ADDRESS'" % (value,))
        to, via = match.groups()
    try:
        net = ipaddress.ip_network(str(to), strict=False)
        gateway = ipaddress.ip_address(str(via))
    except ValueError as exc:
        fail(where, str(exc))
    if net.version != gateway.version:
        fail(where, "route to %s via %s mixes IPv4 and IPv6" % (to, via))
    return Route(to=str(net), via=str(gateway))


@functools.lru_cache(maxsize=4096)
def ip_interface(text):
    """ipaddress.ip_interface, remembered (its objects are immutable): listings parse
    every VM's stored spec, and making an IPv6 interface was a third of that."""
    return ipaddress.ip_interface(text)


def _parse_cidr(where, value, version):
    text = str(value).strip()
    if "/" not in text:
        fail(where, "%r has no prefix length; write it as a CIDR like %s" % (
            text, "198.51.100.10/24" if version == 4 else "2001:db8::10/64"))
    try:
        iface = ip_interface(text)
    except ValueError:
        fail(where, "%r is not a valid IPv%d CIDR" % (text, version))
    if iface.version != version:
        fail(where, "%r is an IPv%d address; this field takes IPv%d" % (
            text, iface.version, version))
    net = iface.network
    if net.num_addresses > 2 and iface.ip in (net.network_address, net.broadcast_address) \
            and version == 4:
        fail(where, "%s is the %s address of %s" % (
            iface.ip, "network" if iface.ip == net.network_address else "broadcast", net))
    if iface.ip.is_loopback or iface.ip.is_multicast or iface.ip.is_unspecified:
        fail(where, "%s cannot be a NIC address" % iface.ip)
    if version == 6 and iface.ip.is_link_local:
        fail(where, "%s is link-local; the kernel gives every NIC its own fe80:: address, "
              "so give a global or unique-local one" % iface.ip)
    return str(iface)


def stable_mac(vm_name, nic_index, address=None):
    """A locally administered unicast MAC that stays the same across restarts."""
    import hashlib
    digest = hashlib.sha256(("%s/%d/%s" % (vm_name, nic_index, address or "")).encode()).digest()
    first = (digest[0] & 0xFC) | 0x02  # locally administered, unicast
    return ":".join("%02x" % b for b in (first,) + tuple(digest[1:6]))


def parse_nic(where, raw, index, vm_name):
    """Validate one NIC given as a dict (YAML) or a dict parsed from `--nic`: the common
    keys here, the mode's own options by its driver."""
    if isinstance(raw, str):
        raw = parse_nic_text(raw)
    if not isinstance(raw, dict):
        fail(where, "a NIC is a mapping of options (mode, link, ip, ...)")
    raw = {str(k).replace("-", "_"): v for k, v in raw.items()}
    mode = raw.get("mode", "bridge")
    driver = DRIVERS.get(mode)
    if driver is None:
        fail(where + ".mode", "%r is not a NIC mode; use one of %s" % (mode, ", ".join(DRIVERS)))
    allowed = NicSpec.COMMON + tuple(driver.options)
    for key in raw:
        if key not in allowed:
            if any(key in other.options for other in DRIVERS.values()):
                fail("%s.%s" % (where, key), "does not apply to mode %s" % mode)
            fail("%s.%s" % (where, key), "unknown NIC option%s" % suggest(key, allowed))
    given = {key: value for key, value in raw.items() if value not in (None, "")}
    for key in given:
        if key in driver.refused:
            fail("%s.%s" % (where, key), driver.refused[key])
    nic = NicSpec(mode=mode)
    if "link" in given:
        nic.link = interface_name(where + ".link", given["link"])
    elif driver.needs_link:
        fail(where + ".link", "mode %s needs link= (the host %s)" % (mode, driver.link_role))
    nic.name = str(given.get("name") or "eth%d" % index)
    if nic.name in ("lo", ".", ".."):  # valid names, but taken in every namespace
        fail(where + ".name", "%r is not a valid interface name for a NIC" % nic.name)
    interface_name(where + ".name", nic.name)
    if "ip" in given:
        if str(given["ip"]) == "auto":
            if not driver.pools_addresses:
                fail(where + ".ip", "ip=auto needs mode bridge (the pool is on the bridge)")
            nic.ip = "auto"
        else:
            nic.ip = _parse_cidr(where + ".ip", given["ip"], 4)
    if "ip6" in given:
        nic.ip6 = _parse_cidr(where + ".ip6", given["ip6"], 6)
    for key, version, addr in (("gw", 4, nic.ip), ("gw6", 6, nic.ip6)):
        if key in given:
            setattr(nic, key, _parse_gateway("%s.%s" % (where, key), given[key], version, addr))
    if "mac" in given:
        nic.mac = _parse_mac(where + ".mac", given["mac"])
    elif driver.sets_mac:
        nic.mac = stable_mac(vm_name, index, nic.ip or nic.ip6)
    if "mtu" in given:
        nic.mtu = as_int(where + ".mtu", given["mtu"], 68, 65535)
        if nic.ip6 and nic.mtu < 1280:
            fail(where + ".mtu", "IPv6 needs an MTU of at least 1280")
    nic.routes = [_parse_route("%s.routes[%d]" % (where, i), r)
                  for i, r in enumerate(as_list(where + ".routes", raw.get("routes")))]
    for i, route in enumerate(nic.routes):
        own = [a for a in nic.addresses() if a.version == ipaddress.ip_address(route.via).version]
        if own and not any(ipaddress.ip_address(route.via) in a.network for a in own):
            fail("%s.routes[%d]" % (where, i), "next hop %s is outside the NIC's subnet" %
                 route.via)
    nic.options = {key: option.read("%s.%s" % (where, key), given[key]) if key in given
                   else option.default for key, option in driver.options.items()}
    driver.check_options(nic, where)
    return nic


def _parse_gateway(where, value, version, addr):
    try:
        gateway = ipaddress.ip_address(str(value))
    except ValueError:
        fail(where, "%r is not an IP address" % (value,))
    key = where.rsplit(".", 1)[-1]
    if gateway.version != version:
        fail(where, "%s is IPv%d; %s takes an IPv%d gateway" % (
            gateway, gateway.version, key, version))
    if addr is None:
        fail(where, "an IPv%d gateway needs an IPv%d address on the NIC (%s=)" % (
            version, version, "ip" if version == 4 else "ip6"))
    if addr != "auto":
        iface = ip_interface(addr)
        if gateway not in iface.network:
            fail(where, "gateway %s is outside the NIC's subnet %s" % (gateway, iface.network))
        if gateway == iface.ip:
            fail(where, "gateway %s is the NIC's own address" % gateway)
    return str(gateway)


def _parse_mac(where, value):
    mac = str(value).strip().lower().replace("-", ":")
    if not _MAC.match(mac):
        fail(where, "%r is not a MAC address like 02:00:5e:00:53:01" % value)
    if int(mac[:2], 16) & 1:
        fail(where, "%s is a multicast MAC; use a unicast one" % mac)
    if mac == "00:00:00:00:00:00":
        fail(where, "the all-zero MAC cannot be used")
    return mac


# ---------------------------------------------------------------- VMs


@dataclass
class Volume:
    host: str
    guest: str
    readonly: bool = False
    host_path_ok: bool = False  # the operator says this host path may go to the VM

    def bind(self):
        """As Docker's Binds take it."""
        return "%s:%s:%s" % (self.host, self.guest, "ro" if self.readonly else "rw")

    def to_text(self):
        options = (["ro"] if self.readonly else []) + (
            ["host_path_ok"] if self.host_path_ok else [])
        return "%s:%s%s" % (self.host, self.guest, ":" + ",".join(options) if options else "")


# Host paths that hand the host to a VM: the path itself, anything under it, and any
# directory above it (`/var` holds /var/lib/docker).
HOST_ONLY_TREES = ("/proc", "/sys", "/dev", "/boot", "/var/lib/docker", "/var/lib/containerd",
                   "/var/lib/cvm", "/run/docker.sock", "/run/containerd", "/etc")
# Guest paths the kernel or cvm own: a volume there fails in runc or hides cvm's files.
GUEST_RESERVED_TREES = ("/proc", "/sys", "/dev", "/etc/cvm", "/run/cvm")
GUEST_RESERVED_FILES = ("/run", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf")


def _within(path, tree):
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def host_path_danger(path, state_root=None):
    """Why `path` must not be a VM's volume (a host-only tree it is, is in or holds), or
    None. Symlinks are followed: /var/run/docker.sock is /run/docker.sock."""
    real = os.path.realpath(path)
    trees = HOST_ONLY_TREES + ((state_root,) if state_root else ())
    for tree in trees:
        if _within(real, tree) and (tree != "/etc" or real == tree):
            return "%s is the host's %s" % (path, tree)
        if _within(tree, real):
            return "%s holds the host's %s" % (path, tree)
    return None


def parse_volume(where, item):
    """HOST:GUEST[:OPTIONS] (options ro, rw, host_path_ok) or a mapping with host, guest,
    readonly and host_path_ok."""
    if isinstance(item, dict):
        unknown = set(item) - {"host", "guest", "readonly", "host_path_ok"}
        if unknown:
            fail("%s.%s" % (where, sorted(unknown)[0]), "unknown volume key; use host, "
                  "guest, readonly, host_path_ok")
        host_path, guest_path = str(item.get("host") or ""), str(item.get("guest") or "")
        readonly = as_bool(where + ".readonly", item.get("readonly", False))
        host_path_ok = as_bool(where + ".host_path_ok", item.get("host_path_ok", False))
    elif isinstance(item, str):
        parts = item.split(":")
        options = parts[2].split(",") if len(parts) == 3 else []
        if len(parts) not in (2, 3) or any(o not in ("ro", "rw", "host_path_ok")
                                           for o in options):
            fail(where, "%r is not HOST:GUEST[:ro][,host_path_ok]" % item)
        host_path, guest_path = parts[0], parts[1]
        readonly, host_path_ok = "ro" in options, "host_path_ok" in options
    else:
        fail(where, "%r is not HOST:GUEST[:ro] or a mapping of host and guest" % (item,))
    for label, path in (("host", host_path), ("guest", guest_path)):
        if not path.startswith("/"):
            fail(where, "%s path %r is not absolute" % (label, path))
        if "/../" in path + "/" or "/./" in path + "/":
            fail(where, "%s path %r must not contain . or .. parts" % (label, path))
        one_line(where, path)
    host_path, guest_path = os.path.normpath(host_path), os.path.normpath(guest_path)
    if guest_path == "/":
        fail(where, "the guest path cannot be /")
    for tree in GUEST_RESERVED_TREES:
        if _within(guest_path, tree):
            fail(where, "guest path %s is inside %s, which %s" % (
                guest_path, tree, "cvm keeps for its own files" if "cvm" in tree else
                "the kernel provides in every VM"))
    if guest_path in GUEST_RESERVED_FILES:
        fail(where, "guest path %s is made by cvm in every VM" % guest_path)
    if not host_path_ok:
        danger = host_path_danger(host_path)
        if danger:
            fail(where, "%s; a VM with it could take over the host (add host_path_ok to "
                  "the volume if that is meant)" % danger)
    return Volume(host=host_path, guest=guest_path, readonly=readonly,
                  host_path_ok=host_path_ok)


@dataclass
class Throttle:
    device: str
    rate: int

    def to_text(self):
        return "%s:%d" % (self.device, self.rate)


SNAPSHOT_SCHEDULES = ("hourly", "daily", "weekly")


@dataclass
class SnapshotSchedule:
    """Snapshots that netd takes and prunes (cvm.scheduled_snapshots): `schedule` is
    hourly, daily, weekly or a cron expression (minute hour day month weekday, the host's
    local time); the newest `keep` scheduled ones stay."""
    schedule: str
    keep: int = 7
    volumes: bool = True

    def to_dict(self):
        data = {"schedule": self.schedule, "keep": self.keep}
        if not self.volumes:
            data["volumes"] = False
        return data


@dataclass
class VMSpec:
    name: str
    image: str
    hostname: str = None
    cpus: float = None
    cpuset: str = None
    cpu_shares: int = None
    memory: int = None
    swap: int = 0
    pids: int = 4096
    device_read_bps: list = field(default_factory=list)
    device_write_bps: list = field(default_factory=list)
    device_read_iops: list = field(default_factory=list)
    device_write_iops: list = field(default_factory=list)
    blkio_weight: int = None
    volumes: list = field(default_factory=list)
    init: str = "auto"
    command: list = None
    env: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)
    restart: str = "unless-stopped"
    dns: list = field(default_factory=list)
    search: list = field(default_factory=list)
    ssh_keys: list = field(default_factory=list)
    nics: list = field(default_factory=list)
    lxcfs: bool = None
    tune: list = field(default_factory=list)
    snapshots: SnapshotSchedule = None

    # Fields Docker can change on a running container.
    LIVE_FIELDS = ("cpus", "cpuset", "cpu_shares", "memory", "swap", "pids", "blkio_weight",
                   "restart")
    # Fields only cvm on the host reads: a change is a new record, nothing more.
    HOST_FIELDS = ("snapshots",)
    # Fields of a file cvm gives the VM (/etc/resolv.conf): a change rewrites it.
    RESOLVER_FIELDS = ("dns", "search")

    def resolver(self):
        """The values of RESOLVER_FIELDS: /etc/resolv.conf changes when these do."""
        return tuple(getattr(self, field) for field in self.RESOLVER_FIELDS)

    def to_dict(self):
        """The canonical, JSON-safe form that is persisted and compared."""
        data = {}
        defaults = VMSpec(name=self.name, image=self.image)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("name", "image"):
                data[f.name] = value
            elif f.name == "nics":
                if value:
                    data["nics"] = [nic.to_dict() for nic in value]
            elif f.name == "volumes":
                if value:
                    data["volumes"] = [v.to_text() for v in value]
            elif f.name.startswith("device_"):
                if value:
                    data[f.name] = [t.to_text() for t in value]
            elif f.name == "snapshots":
                if value:
                    data["snapshots"] = value.to_dict()
            elif f.name in ("memory", "swap") and value:
                data[f.name] = format_size(value)
            elif value != getattr(defaults, f.name):
                data[f.name] = value
        return data

    @property
    def effective_hostname(self):
        return self.hostname or self.name


SPEC_KEYS = tuple(f.name for f in fields(VMSpec))
# YAML and flag spellings that mean the same field.
ALIASES = {"dns_search": "search", "cpu-shares": "cpu_shares", "ssh_key": "ssh_keys",
           "nic": "nics", "volume": "volumes", "blkio-weight": "blkio_weight"}


def parse_spec(raw, where="", host=None):
    """Validate a raw mapping (YAML, flags or stored JSON) into a VMSpec.

    `where` prefixes field names in errors, e.g. 'vms[2]' for the third VM of a file.
    """
    def name_of(key):
        if not where:
            return key
        return "%s%s%s" % (where, " " if where.endswith(":") else ".", key)

    if not isinstance(raw, dict):
        fail(where.rstrip(":") or "spec", "a VM spec is a mapping of fields (name, image, "
              "cpus, ...)")
    data = {}
    for key, value in raw.items():
        key = ALIASES.get(str(key), str(key).replace("-", "_"))
        key = ALIASES.get(key, key)
        if key not in SPEC_KEYS:
            fail(name_of(key), "unknown key%s" % suggest(key, SPEC_KEYS))
        data[key] = value

    name = data.get("name")
    if name in (None, ""):
        fail(name_of("name"), "is required")
    name = str(name)
    if len(name) > NAME_MAX:
        fail(name_of("name"), "%r is %d characters; at most %d, so that host interface names "
              "(<name>-e<N>) fit the kernel's 15" % (name, len(name), NAME_MAX))
    if not _NAME.match(name):
        fail(name_of("name"), "%r is not a DNS label: lowercase letters, digits and '-', "
              "starting and ending with a letter or digit" % name)
    if name.isdigit():
        fail(name_of("name"), "%r is all digits; a hostname needs a letter or '-'" % name)
    spec = VMSpec(name=name, image=None)

    image = data.get("image")
    if image in (None, ""):
        fail(name_of("image"), "is required (e.g. cvm/debian12)")
    spec.image = str(image)
    if any(c.isspace() for c in spec.image):
        fail(name_of("image"), "%r is not an image reference" % spec.image)

    if data.get("hostname") not in (None, ""):
        hostname = str(data["hostname"])
        labels = hostname.split(".")
        if len(hostname) > 253 or not all(_HOST_LABEL.match(label) and len(label) <= 63
                                              for label in labels):
            fail(name_of("hostname"), "%r is not a valid hostname (labels of letters, digits "
                  "and '-', at most 63 each)" % hostname)
        if labels[0].isdigit():
            fail(name_of("hostname"), "%r starts with an all-digit label; a host's name "
                  "needs a letter or '-'" % hostname)
        spec.hostname = hostname

    host = host or HostFacts.read()
    if data.get("cpus") not in (None, ""):
        try:
            cpus = float(data["cpus"])
        except (TypeError, ValueError):
            fail(name_of("cpus"), "%r is not a number of CPUs (e.g. 1.5)" % (data["cpus"],))
        if not cpus > 0:
            fail(name_of("cpus"), "%s must be above 0 (e.g. 0.5, 1, 1.5)" % data["cpus"])
        if cpus < 0.01:
            fail(name_of("cpus"), "%s is below Docker's minimum of 0.01" % data["cpus"])
        if cpus > len(host.cpus):
            fail(name_of("cpus"), "%s is more than the host's %d CPUs" % (
                data["cpus"], len(host.cpus)))
        spec.cpus = round(cpus, 3)
    if data.get("cpuset") not in (None, ""):
        text = str(data["cpuset"])
        try:
            wanted = parse_cpu_list(text)
        except ValueError as exc:
            fail(name_of("cpuset"), str(exc))
        missing = [c for c in wanted if c not in host.cpus]
        if missing:
            fail(name_of("cpuset"), "CPU %s does not exist on this host (it has %s)" % (
                ",".join(map(str, missing)), _cpu_ranges(host.cpus)))
        spec.cpuset = text  # a quota above the cpuset is allowed: the cpuset caps it
    if data.get("cpu_shares") not in (None, ""):
        spec.cpu_shares = as_int(name_of("cpu_shares"), data["cpu_shares"], 2, 262144)

    for key in ("memory", "swap"):
        if data.get(key) in (None, ""):
            continue
        try:
            size = parse_size(data[key])
        except ValueError:
            fail(name_of(key), "%r is not a size; use %s" % (data[key], SIZE_FORM))
        if key == "memory":
            if size <= 0:
                fail(name_of(key), "must be above 0")
            if size < DOCKER_MIN_MEMORY:
                fail(name_of(key), "%s is below Docker's minimum of 6m" % data[key])
            if size > host.memory_bytes:
                fail(name_of(key), "%s is more than the host's %s of RAM" % (
                    data[key], format_size(host.memory_bytes)))
        elif size < 0:
            fail(name_of(key), "cannot be negative")
        setattr(spec, key, size)
    if spec.swap and not spec.memory:
        fail(name_of("swap"), "swap needs a memory limit (swap is added on top of memory)")

    if data.get("pids") not in (None, ""):
        if str(data["pids"]).lower() in ("unlimited", "-1", "max"):
            spec.pids = -1
        else:
            spec.pids = as_int(name_of("pids"), data["pids"], 1, 4194304)

    for key in ("device_read_bps", "device_write_bps", "device_read_iops", "device_write_iops"):
        throttles = []
        for i, item in enumerate(as_list(name_of(key), data.get(key))):
            where_item = "%s[%d]" % (name_of(key), i)
            text = str(item)
            if ":" not in text:
                fail(where_item, "%r is not DEVICE:RATE (e.g. /dev/sda:10m)" % text)
            device, rate_text = text.rsplit(":", 1)
            if not device.startswith("/dev/"):
                fail(where_item, "%r is not a device path under /dev" % device)
            if not os.path.exists(device):
                fail(where_item, "device %s does not exist on this host" % device)
            if key.endswith("bps"):
                try:
                    rate = parse_size(rate_text)
                except ValueError:
                    fail(where_item, "%r is not a rate; use %s" % (rate_text, SIZE_FORM))
            else:
                rate = as_int(where_item, rate_text, 1, None, "a number of IO operations")
            if rate <= 0:
                fail(where_item, "the rate must be above 0")
            throttles.append(Throttle(device=device, rate=rate))
        setattr(spec, key, throttles)
    if data.get("blkio_weight") not in (None, ""):
        spec.blkio_weight = as_int(name_of("blkio_weight"), data["blkio_weight"], 10, 1000)

    for i, item in enumerate(as_list(name_of("volumes"), data.get("volumes"))):
        volume = parse_volume("%s[%d]" % (name_of("volumes"), i), item)
        if any(volume.guest == v.guest for v in spec.volumes):
            fail("%s[%d]" % (name_of("volumes"), i), "guest path %s is mounted twice"
                  % volume.guest)
        spec.volumes.append(volume)

    if data.get("init") not in (None, ""):
        if data["init"] not in INIT_MODES:
            fail(name_of("init"), "%r is not an init mode; use one of %s" % (
                data["init"], ", ".join(INIT_MODES)))
        spec.init = data["init"]
    if data.get("command") not in (None, "", []):
        if spec.init != "none":
            fail(name_of("command"), "a command replaces init; it needs init: none")
        command = data["command"]
        if isinstance(command, str):
            try:
                spec.command = shlex.split(command)
            except ValueError as exc:
                fail(name_of("command"), "%s in %r" % (exc, command))
        elif isinstance(command, (list, tuple)) and all(
                isinstance(part, (str, int, float)) and not isinstance(part, bool)
                for part in command):
            spec.command = [str(part) for part in command]
        else:
            fail(name_of("command"), "%r is not a command; give a string or a list of "
                  "strings" % (command,))
        if not spec.command:
            fail(name_of("command"), "is empty")

    env = data.get("env") or {}
    if isinstance(env, list):
        env = dict(split_key_value(name_of("env"), item) for item in env)
    if not isinstance(env, dict):
        fail(name_of("env"), "use a mapping or a list of KEY=VALUE")
    for key, value in env.items():
        if not _ENV_KEY.match(str(key)):
            fail("%s.%s" % (name_of("env"), key), "is not a valid variable name")
        if str(key).startswith("CVM_"):
            fail("%s.%s" % (name_of("env"), key), "CVM_ variables are set by cvm itself")
        spec.env[str(key)] = one_line("%s.%s" % (name_of("env"), key), value)

    labels = data.get("labels") or {}
    if isinstance(labels, list):
        labels = dict(str(item).split("=", 1) if "=" in str(item) else (str(item), "")
                      for item in labels)
    if not isinstance(labels, dict):
        fail(name_of("labels"), "use a mapping or a list of KEY=VALUE")
    for key, value in labels.items():
        if key is None or not str(key).strip():
            fail(name_of("labels"), "a label needs a key (KEY=VALUE)")
        one_line("%s.%s" % (name_of("labels"), key), key)
        if str(key).startswith(RESERVED_LABEL_PREFIX):
            fail("%s.%s" % (name_of("labels"), key), "labels starting with %s are reserved "
                  "for cvm" % RESERVED_LABEL_PREFIX)
        spec.labels[str(key)] = one_line("%s.%s" % (name_of("labels"), key), value)

    if data.get("restart") not in (None, ""):
        policy = str(data["restart"])
        base = policy.split(":", 1)[0]
        if base not in RESTART_POLICIES or (":" in policy and base != "on-failure"):
            fail(name_of("restart"), "%r is not a restart policy; use one of %s "
                  "(on-failure:N for a retry limit)" % (policy, ", ".join(RESTART_POLICIES)))
        if ":" in policy:
            as_int(name_of("restart"), policy.split(":", 1)[1], 1, None, "a retry count")
        spec.restart = policy

    for i, server in enumerate(as_list(name_of("dns"), data.get("dns"))):
        try:
            spec.dns.append(str(ipaddress.ip_address(str(server))))
        except ValueError:
            fail("%s[%d]" % (name_of("dns"), i), "%r is not an IP address" % server)
    for i, domain in enumerate(as_list(name_of("search"), data.get("search"))):
        domain = str(domain).rstrip(".")
        if not all(_HOST_LABEL.match(part) for part in domain.split(".")):
            fail("%s[%d]" % (name_of("search"), i), "%r is not a domain name" % domain)
        spec.search.append(domain)

    for i, key_text in enumerate(as_list(name_of("ssh_keys"), data.get("ssh_keys"))):
        where_item = "%s[%d]" % (name_of("ssh_keys"), i)
        for line in str(key_text).strip().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not _SSH_KEY.match(line):
                fail(where_item, "%r is not an OpenSSH public key (ssh-ed25519 AAAA... "
                      "comment)" % (line[:40] + ("..." if len(line) > 40 else "")))
            spec.ssh_keys.append(line)

    raw_nics = as_list(name_of("nics"), data.get("nics"))
    if len(raw_nics) > MAX_NICS:
        fail(name_of("nics"), "%d NICs; a VM has at most %d" % (len(raw_nics), MAX_NICS))
    for i, raw_nic in enumerate(raw_nics):
        spec.nics.append(parse_nic("%s[%d]" % (name_of("nics"), i), raw_nic, i, name))
    _check_nics_together(spec, name_of("nics"))

    if data.get("lxcfs") not in (None, ""):
        spec.lxcfs = as_bool(name_of("lxcfs"), data["lxcfs"])
    for i, service in enumerate(as_list(name_of("tune"), data.get("tune"))):
        if service not in TUNED_SERVICES:
            fail("%s[%d]" % (name_of("tune"), i), "%r is not a service cvm tunes; use one "
                  "of %s" % (service, ", ".join(TUNED_SERVICES)))
        if service not in spec.tune:
            spec.tune.append(service)
    if data.get("snapshots") not in (None, "", {}):
        spec.snapshots = parse_snapshot_schedule(name_of("snapshots"), data["snapshots"])
    return spec


def parse_snapshot_schedule(where, raw):
    """{schedule, keep, volumes}, or SCHEDULE[:KEEP], into a SnapshotSchedule."""
    if not isinstance(raw, dict):
        schedule, _, keep = str(raw).partition(":")
        raw = {"schedule": schedule, "keep": keep} if keep else {"schedule": schedule}
    unknown = sorted(set(map(str, raw)) - {"schedule", "keep", "volumes"})
    if unknown:
        fail("%s.%s" % (where, unknown[0]), "unknown key; use schedule, keep and volumes")
    schedule = " ".join(str(raw.get("schedule") or "").split())
    if schedule.lstrip("@") in SNAPSHOT_SCHEDULES:
        schedule = schedule.lstrip("@")  # cron's spelling
    if not schedule:
        fail("%s.schedule" % where, "is missing; use hourly, daily, weekly or a cron "
              "expression (minute hour day month weekday)")
    if schedule not in SNAPSHOT_SCHEDULES:
        from cronsim import CronSim, CronSimError
        import datetime
        try:
            if len(schedule.split()) != 5:
                raise CronSimError("it has %d fields, not 5" % len(schedule.split()))
            CronSim(schedule, datetime.datetime(2000, 1, 1))
        except CronSimError as exc:
            fail("%s.schedule" % where, "%r is not hourly, daily, weekly or a cron expression "
                  "(minute hour day month weekday): %s" % (schedule, exc))
    keep = as_int("%s.keep" % where, raw.get("keep", 7), 1, 1000, "a count of snapshots")
    volumes = True if raw.get("volumes") in (None, "") else \
        as_bool("%s.volumes" % where, raw["volumes"])
    return SnapshotSchedule(schedule, keep, volumes)


def _check_nics_together(spec, where):
    seen_names, seen_macs, seen_ips = {}, {}, {}
    for i, nic in enumerate(spec.nics):
        if nic.name in seen_names:
            fail("%s[%d].name" % (where, i), "interface name %s is already used by nics[%d]" % (
                nic.name, seen_names[nic.name]))
        seen_names[nic.name] = i
        if nic.mac:
            if nic.mac in seen_macs:
                fail("%s[%d].mac" % (where, i), "MAC %s is already used by nics[%d]" % (
                    nic.mac, seen_macs[nic.mac]))
            seen_macs[nic.mac] = i
        for addr in nic.addresses():
            if addr.ip in seen_ips:
                fail("%s[%d]" % (where, i), "address %s is already used by nics[%d]" % (
                    addr.ip, seen_ips[addr.ip]))
            seen_ips[addr.ip] = i
    gateways = [i for i, nic in enumerate(spec.nics) if nic.gw]
    if len(gateways) > 1:
        fail("%s[%d].gw" % (where, gateways[1]), "only one NIC can hold the IPv4 default "
              "gateway; nics[%d] has it already" % gateways[0])
    gateways6 = [i for i, nic in enumerate(spec.nics) if nic.gw6]
    if len(gateways6) > 1:
        fail("%s[%d].gw6" % (where, gateways6[1]), "only one NIC can hold the IPv6 default "
              "gateway; nics[%d] has it already" % gateways6[0])


def _cpu_ranges(cpus):
    if not cpus:
        return "none"
    ranges, start, prev = [], cpus[0], cpus[0]
    for cpu in cpus[1:] + [None]:
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        ranges.append(str(start) if start == prev else "%d-%d" % (start, prev))
        if cpu is not None:
            start = prev = cpu
    return ",".join(ranges)
