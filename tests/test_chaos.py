"""cvm as an adversary tries it: a table of bad inputs across every command, 8-way races,
a storm of mixed restarts with netd killed in the middle, dockerd restarted, and creates
killed at every step. What must hold: every refusal is one line naming the field, with
exit 2 for bad input and 1 for faults, and leaves nothing behind (no container,
interface, route, nft rule, state, guest files or directory); races end with no
duplicate and no internal error; no restart loses a VM's wiring or filters.

Figures (the storm's median and worst time to answer, dockerd's recovery) are printed
and, with CVM_CHAOS_FIGURES=FILE, written there as JSON for the closing notes.
"""

import contextlib
import json
import os
import signal
import statistics
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cvm import api

from .conftest import (BUSYBOX, CVM, DEBIAN, CvmRunner, NetdProcess, remove_realm, residue,
                       restart_dockerd, wait_for)
from .nethelpers import Lab, host_links, host_routes, ip, ping, wait_pingable

SUBNET = "198.51.100"
BRIDGE_ADDRESS = SUBNET + ".1/25"
POOL = "%s.100-%s.120" % (SUBNET, SUBNET)
UPLINK_ADDRESS = SUBNET + ".130/26"  # a test-made interface standing in for the uplink


def nft_rules():
    return subprocess.run(["nft", "-s", "list", "ruleset"], capture_output=True, text=True,
                          check=True).stdout


def state_files(root):
    """The state directory's files; a VM's lock file only when the VM is gone (one
    appears with the VM's first lock and goes with the VM), the store's own lock files
    (the host-wide lock, apply's) not at all."""
    found = set()
    for directory, _, files in os.walk(root):
        for name in files:
            if name not in ("netd.log", "netd.sock", "lock", "apply.lock"):
                found.add(os.path.relpath(os.path.join(directory, name), root))
    return {path for path in found if not (path.startswith("locks/") and "vms/%s.json" % (
        path[len("locks/"):-len(".lock")]) in found)}


class World:
    """A state directory with its netd, a cvm bridge with a pool, a running VM (`base`, 3
    tasks), a stopped one (`off`) and an interface standing in for the uplink."""

    def __init__(self, tmp):
        self.lab = Lab()
        self.state = str(tmp / "state")
        self.scratch = str(tmp / "scratch")
        self.files = tmp / "files"
        for path in (self.state, self.scratch, str(self.files)):
            os.makedirs(path)
        self.ctx = api.Context(state_root=self.state)
        self.cvm = CvmRunner(self.state, CVM)
        self.netd = NetdProcess(self.state)
        self.names = {"base": "chbase", "off": "choff", "br": self.lab.name("cvc"),
                      "state": self.state, "scratch": self.scratch}
        try:
            self._make()
        except BaseException:
            self.close()
            raise

    def _make(self):
        uplink, _ = self.lab.veth(prefix="cvu")
        ip("addr", "add", UPLINK_ADDRESS, "dev", uplink)
        ip("link", "set", uplink, "up")
        self.names["up"] = uplink
        self.cvm("bridge", "add", self.names["br"], "--address", BRIDGE_ADDRESS, "--pool", POOL,
                 check=True)
        self.netd.start()
        self.cvm("create", self.names["base"], "--image", BUSYBOX, "--init", "none", "--nic",
                 "mode=bridge,link=%s,ip=%s.10/25" % (self.names["br"], SUBNET), "--",
                 "sh", "-c", "sleep 100000 & sleep 100000 & wait", check=True)
        self.cvm("create", self.names["off"], "--image", BUSYBOX, "--init", "none",
                 "--no-start", "--", "sleep", "100000", check=True)

    def footprint(self):
        """Everything a refused command must leave exactly as it was."""
        return {"containers": sorted(c["Id"] for c in self.ctx.engine.api.containers(all=True)),
                "links": host_links(), "routes": host_routes(), "nft": nft_rules(),
                "state": state_files(self.state), "scratch": sorted(os.listdir(self.scratch))}

    def write(self, name, content):
        path = self.files / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    def close(self):
        self.netd.stop()
        remove_realm(self.ctx)
        self.cvm("bridge", "rm", self.names["br"])
        ip("link", "del", self.names["br"], check=False)
        self.lab.cleanup()


@pytest.fixture(scope="module")
def world(tmp_path_factory, engine, images):
    made = World(tmp_path_factory.mktemp("chaos"))
    yield made
    made.close()


class File:
    """A spec file argument: written (as given, bytes or text) before the command runs."""

    def __init__(self, content):
        self.content = content


def _nic(**options):
    options.setdefault("mode", "bridge")
    options.setdefault("link", "{br}")
    return ",".join("%s=%s" % item for item in options.items())


NEW = "chnew"
BB = ["--image", BUSYBOX, "--init", "none"]
SLEEP = ["--", "sleep", "1000"]


def create(*flags, name=NEW, command=True):
    return ["create", name] + BB + list(flags) + (SLEEP if command else [])


def vm_file(**fields):
    lines = ["name: %s" % fields.pop("name", NEW), "image: %s" % BUSYBOX, "init: none",
             "command: [sleep, '1000']"]
    return File("\n".join(lines + ["%s: %s" % item for item in fields.items()]) + "\n")


def two_vms(first, second):
    return File("defaults: {image: %s, init: none, command: [sleep, '1000']}\nvms:\n"
                "  - {name: cha1, %s}\n  - {name: cha2, %s}\n" % (BUSYBOX, first, second))


# (command line, exit code, what the one line says). {br}, {base}, {off}, {up}, {state}
# and {scratch} are the world's; a File is written and its path passed.
CASES = [
    # ---- create: names and image
    (["create", "Web_1"] + BB + SLEEP, 2, "name: 'Web_1' is not a DNS label"),
    (["create", "1234"] + BB + SLEEP, 2, "name: '1234' is all digits"),
    (["create", "averyverylongname"] + BB + SLEEP, 2, "name: 'averyverylongname' is 17"),
    (["create", "-x"] + BB + SLEEP, 2, "No such option"),
    (["create", NEW, "--init", "none"] + SLEEP, 2, "image: is required"),
    (["create", NEW, "--image", "bad image"] + SLEEP, 2, "image: 'bad image' is not an image"),
    (["create", NEW, "--image", "nosuch/img:1"], 2, "image: 'nosuch/img:1' is not on this host"),
    (create(name="{base}"), 2, "name: a VM named 'chbase' already exists"),
    (create("--hostname", "bad_host"), 2, "hostname: 'bad_host' is not a valid hostname"),
    (create("--hostname", "123.example.com"), 2, "hostname: '123.example.com' starts with"),
    # ---- create: limits
    (create("--cpus", "0"), 2, "cpus: 0 must be above 0"),
    (create("--cpus", "-1"), 2, "cpus: -1 must be above 0"),
    (create("--cpus", "abc"), 2, "cpus: 'abc' is not a number of CPUs"),
    (create("--cpus", "999"), 2, "cpus: 999 is more than the host's"),
    (create("--cpus", "0.001"), 2, "cpus: 0.001 is below Docker's minimum"),
    (create("--cpuset", "99"), 2, "cpuset: CPU 99 does not exist on this host"),
    (create("--cpuset", "0-x"), 2, "cpuset: '0-x' is not a CPU list"),
    (create("--cpu-shares", "1"), 2, "cpu_shares: 1 is out of range"),
    (create("--memory", "12x"), 2, "memory: '12x' is not a size"),
    (create("--memory", "0"), 2, "memory: must be above 0"),
    (create("--memory", "1m"), 2, "memory: 1m is below Docker's minimum of 6m"),
    (create("--memory", "999t"), 2, "memory: 999t is more than the host's"),
    (create("--swap", "1g"), 2, "swap: swap needs a memory limit"),
    (create("--memory", "64m", "--swap", "-1g"), 2, "swap: '-1g' is not a size"),
    (create("--pids", "0"), 2, "pids: 0 is out of range"),
    (create("--pids", "many"), 2, "pids: 'many' is not an integer"),
    (create("--blkio-weight", "5"), 2, "blkio_weight: 5 is out of range"),
    (create("--device-read-bps", "/dev/nope:1m"), 2, "device_read_bps[0]: device /dev/nope"),
    (create("--device-write-bps", "sda:1m"), 2, "device_write_bps[0]: 'sda' is not a device"),
    (create("--device-read-iops", "/dev/null"), 2, "device_read_iops[0]: '/dev/null' is not"),
    (create("--device-write-iops", "/dev/null:x"), 2, "device_write_iops[0]: 'x' is not a"),
    (create("--restart", "sometimes"), 2, "restart: 'sometimes' is not a restart policy"),
    (create("--restart", "on-failure:x"), 2, "restart: 'x' is not a retry count"),
    (create("--restart", "always:3"), 2, "restart: 'always:3' is not a restart policy"),
    # ---- create: volumes
    (create("-v", "rel:/data"), 2, "volumes[0]: host path 'rel' is not absolute"),
    (create("-v", "{scratch}/v:data"), 2, "volumes[0]: guest path 'data' is not absolute"),
    (create("-v", "{scratch}/v"), 2, "volumes[0]: '{scratch}/v' is not HOST:GUEST"),
    (create("-v", "{scratch}/v:/data:rx"), 2, "volumes[0]: '{scratch}/v:/data:rx' is not"),
    (create("-v", "{scratch}/v:/data:ro:x"), 2, "is not HOST:GUEST"),
    (create("-v", "{scratch}/../etc:/data"), 2, "must not contain . or .. parts"),
    (create("-v", "{scratch}/v:/"), 2, "volumes[0]: the guest path cannot be /"),
    (create("-v", "{scratch}/v:/proc"), 2, "volumes[0]: guest path /proc is inside /proc"),
    (create("-v", "{scratch}/v:/proc/sys"), 2, "guest path /proc/sys is inside /proc"),
    (create("-v", "{scratch}/v:/sys/fs"), 2, "guest path /sys/fs is inside /sys"),
    (create("-v", "{scratch}/v:/dev"), 2, "guest path /dev is inside /dev"),
    (create("-v", "{scratch}/v:/etc/cvm"), 2, "inside /etc/cvm, which cvm keeps"),
    (create("-v", "{scratch}/v:/etc/hosts"), 2, "guest path /etc/hosts is made by cvm"),
    (create("-v", "{scratch}/v:/run"), 2, "guest path /run is made by cvm"),
    (create("-v", "{scratch}/a:/data", "-v", "{scratch}/b:/data"), 2,
     "volumes[1]: guest path /data is mounted twice"),
    (create("-v", "/:/host"), 2, "volumes[0]: / holds the host's"),
    (create("-v", "/etc:/hostetc"), 2, "volumes[0]: /etc is the host's /etc"),
    (create("-v", "/var:/hostvar"), 2, "volumes[0]: /var holds the host's /var/lib/docker"),
    (create("-v", "/var/lib/docker:/d"), 2, "/var/lib/docker is the host's /var/lib/docker"),
    (create("-v", "/var/lib/docker/volumes:/d"), 2, "is the host's /var/lib/docker"),
    (create("-v", "/var/run/docker.sock:/s.sock"), 2, "is the host's /run/docker.sock"),
    (create("-v", "/run:/hostrun"), 2, "/run holds the host's /run/docker.sock"),
    (create("-v", "/proc:/hostproc"), 2, "/proc is the host's /proc"),
    (create("-v", "/sys/fs/cgroup:/cg"), 2, "/sys/fs/cgroup is the host's /sys"),
    (create("-v", "/dev:/hostdev"), 2, "/dev is the host's /dev"),
    (create("-v", "/boot:/boot"), 2, "/boot is the host's /boot"),
    (create("-v", "{state}:/cvmstate"), 2, "is the host's {state}"),
    (create("-v", "{state}/vms:/cvmstate"), 2, "is the host's {state}"),
    (create("-v", "{scratch}/v:/data:ro,rw,bogus"), 2, "is not HOST:GUEST"),
    # ---- create: init, command, env, labels
    (create("--init", "upstart"), 2, "init: 'upstart' is not an init mode"),
    (["create", NEW, "--image", BUSYBOX, "--init", "systemd"], 2,
     "init: image cvm/busybox:latest has no systemd"),
    (["create", NEW, "--image", BUSYBOX, "--init", "auto", "--", "sleep", "1"], 2,
     "command: a command replaces init; it needs init: none"),
    (create("-e", "1BAD=x"), 2, "env.1BAD: is not a valid variable name"),
    (create("-e", "CVM_IP=x"), 2, "env.CVM_IP: CVM_ variables are set by cvm itself"),
    (create("-e", "NOEQUALS"), 2, "env: 'NOEQUALS' is not KEY=VALUE"),
    (create("-e", "A=one\ntwo"), 2, "env.A: contains a line break"),
    (create("-e", "=x"), 2, "env: '=x' is not KEY=VALUE"),
    (create("-l", "io.cvm.vm=x"), 2, "labels.io.cvm.vm: labels starting with io.cvm."),
    (create("-l", "=x"), 2, "labels: a label needs a key"),
    (create("-l", "a=x\ny"), 2, "labels.a: contains a line break"),
    (create("--dns", "not-an-ip"), 2, "dns[0]: 'not-an-ip' is not an IP address"),
    (create("--search", "bad_domain"), 2, "search[0]: 'bad_domain' is not a domain name"),
    (create("--ssh-key", "/nonexistent/id.pub"), 2, "ssh_keys: cannot read /nonexistent"),
    (create("--ssh-key", File("hello there\n")), 2, "ssh_keys[0]: 'hello there' is not an"),
    (create("--tune", "postgres"), 2, "tune[0]: 'postgres' is not a service cvm tunes"),
    # ---- create: NICs
    (create("--nic", "mode=tunnel,link={br}"), 2, "nics[0].mode: 'tunnel' is not a NIC mode"),
    (create("--nic", "mode=bridge"), 2, "nics[0].link: mode bridge needs link="),
    (create("--nic", "noequals"), 2, "nic: 'noequals' is not key=value"),
    (create("--nic", _nic(foo=1)), 2, "nics[0].foo: unknown NIC option"),
    (create("--nic", _nic(vf=1)), 2, "nics[0].vf: does not apply to mode bridge"),
    (create("--nic", _nic(link="cvnope0", ip=SUBNET + ".20/25")), 2,
     "nics[0].link: bridge cvnope0 does not exist on this host"),
    (create("--nic", _nic(link="{up}", ip=SUBNET + ".20/25")), 2,
     "nics[0].link: {up} is not a bridge"),
    (create("--nic", _nic(link="lo", ip=SUBNET + ".20/25")), 2,
     "nics[0].link: lo is the loopback interface"),
    (create("--nic", _nic(mode="macvlan", link="lo", ip=SUBNET + ".20/25")), 2,
     "nics[0].link: lo is the loopback interface"),
    (create("--nic", _nic(mode="macvlan", link="cvnope0")), 2,
     "nics[0].link: parent interface cvnope0 does not exist"),
    (create("--nic", _nic(mode="routed", link="cvnope0", ip=SUBNET + ".20/32")), 2,
     "nics[0].link: uplink cvnope0 does not exist"),
    (create("--nic", _nic(ip=SUBNET + ".300/25")), 2, "nics[0].ip: '198.51.100.300/25' is not"),
    (create("--nic", _nic(ip=SUBNET + ".20")), 2, "nics[0].ip: '198.51.100.20' has no prefix"),
    (create("--nic", _nic(ip=SUBNET + ".0/25")), 2, "is the network address of"),
    (create("--nic", _nic(ip=SUBNET + ".127/25")), 2, "is the broadcast address of"),
    (create("--nic", _nic(ip="127.0.0.2/8")), 2, "nics[0].ip: 127.0.0.2 cannot be a NIC"),
    (create("--nic", _nic(ip="2001:db8::5/64")), 2, "nics[0].ip: '2001:db8::5/64' is an IPv6"),
    (create("--nic", _nic(ip6="fe80::1/64")), 2, "nics[0].ip6: fe80::1 is link-local"),
    (create("--nic", _nic(ip6="2001:db8::5")), 2, "nics[0].ip6: '2001:db8::5' has no prefix"),
    (create("--nic", _nic(ip=SUBNET + ".1/25")), 2,
     "nics[0].ip: 198.51.100.1 is already used by this host ({br})"),
    (create("--nic", _nic(ip=SUBNET + ".130/26")), 2,
     "nics[0].ip: 198.51.100.130 is already used by this host ({up})"),
    (create("--nic", _nic(ip=SUBNET + ".10/25")), 2,
     "nics[0].ip: 198.51.100.10 is already used by VM chbase (eth0)"),
    (create("--nic", _nic(ip=SUBNET + ".20/25", gw="203.0.113.1")), 2,
     "nics[0].gw: gateway 203.0.113.1 is outside the NIC's subnet"),
    (create("--nic", _nic(ip=SUBNET + ".20/25", gw=SUBNET + ".20")), 2,
     "nics[0].gw: gateway 198.51.100.20 is the NIC's own address"),
    (create("--nic", _nic(ip6="2001:db8::20/64", gw=SUBNET + ".1")), 2,
     "nics[0].gw: an IPv4 gateway needs an IPv4 address"),
    (create("--nic", _nic(ip=SUBNET + ".20/25", gw="2001:db8::1")), 2, "nics[0].gw: 2001:db8::1"
     " is IPv6"),
    (create("--nic", _nic(ip=SUBNET + ".20/25", route="10.0.0.0/8 via 203.0.113.9")), 2,
     "nics[0].routes[0]: next hop 203.0.113.9 is outside the NIC's subnet"),
    (create("--nic", _nic(ip=SUBNET + ".20/25", route="nonsense")), 2,
     "nics[0].routes[0]: 'nonsense' is not a route"),
    (create("--nic", _nic(mac="01:00:5e:00:00:01")), 2, "nics[0].mac: 01:00:5e:00:00:01 is a"
     " multicast MAC"),
    (create("--nic", _nic(mac="zz:00")), 2, "nics[0].mac: 'zz:00' is not a MAC address"),
    (create("--nic", _nic(mac="00:00:00:00:00:00")), 2, "nics[0].mac: the all-zero MAC"),
    (create("--nic", _nic(mtu=70000)), 2, "nics[0].mtu: 70000 is out of range"),
    (create("--nic", _nic(mtu=9000, ip=SUBNET + ".20/25")), 2, "nics[0].mtu: 9000 is above the"
     " MTU of"),
    (create("--nic", _nic(mtu=1000, ip6="2001:db8::20/64")), 2, "IPv6 needs an MTU of at least"),
    (create("--nic", _nic(mode="macvlan", link="{up}", vlan=5000)), 2,
     "nics[0].vlan: 5000 is out of range"),
    (create("--nic", _nic(mode="macvlan", link="{up}", ip="auto")), 2,
     "nics[0].ip: ip=auto needs mode bridge"),
    (create("--nic", "mode=routed,link=lo,ip=%s.20/32" % SUBNET), 2,
     "nics[0].link: lo is the loopback interface"),
    (create("--nic", "mode=routed"), 2, "nics[0].ip: mode routed needs ip= or ip6="),
    (create("--nic", "mode=routed,ip=%s.20/32,gw=%s.1" % (SUBNET, SUBNET)), 2,
     "nics[0].gw: mode routed sets the gateway itself"),
    (create("--nic", _nic(mode="ipvlan", link="{up}", mac="02:00:00:00:00:01")), 2,
     "nics[0].mac: ipvlan NICs share the parent's MAC"),
    (create("--nic", _nic(mode="sriov", link="{up}", qos=3)), 2, "nics[0].qos: qos is the VLAN"),
    (create("--nic", _nic(hairpin="perhaps")), 2, "nics[0].hairpin: 'perhaps' is not a boolean"),
    (create("--nic", _nic(filtering="maybe", ip=SUBNET + ".20/25")), 2,
     "nics[0].filtering: 'maybe' is not a boolean"),
    (create("--nic", _nic(host_name="waytoolonginterfacename")), 2, "nics[0].host_name:"),
    (create("--nic", _nic(name="lo")), 2, "nics[0].name: 'lo' is not a valid interface name"),
    (create("--nic", _nic(ip=SUBNET + ".20/25"), "--nic", _nic(ip=SUBNET + ".21/25",
                                                                name="eth0")), 2,
     "nics[1].name: interface name eth0 is already used"),
    (create("--nic", _nic(ip=SUBNET + ".20/25"), "--nic", _nic(ip=SUBNET + ".20/25",
                                                                name="eth1")), 2,
     "nics[1]: address 198.51.100.20 is already used by nics[0]"),
    (create(*sum([["--nic", _nic(name="eth%d" % i)] for i in range(9)], [])), 2,
     "nics: 9 NICs; a VM has at most 8"),
    (create("--nic", _nic(ip=SUBNET + ".20/25", gw=SUBNET + ".1"), "--nic",
            _nic(ip=SUBNET + ".21/25", gw=SUBNET + ".1", name="eth1")), 2,
     "nics[1].gw: only one NIC can hold the IPv4 default gateway"),
    (create("--nic", _nic(mode="ipvlan", link="{up}", ip=SUBNET + ".20/25")), 1,
     "this kernel lacks ipvlan"),
    (create("--nic", _nic(mode="sriov", link="{up}")), 1, "this kernel lacks SR-IOV"),
    (create("--nic", _nic(mode="macvlan", link="{up}", vlan=10)), 1,
     "this kernel lacks 802.1Q VLANs"),
    # ---- create -f: files
    (["create", "-f", File(b"name: \xff\xfe\n")], 2, "not UTF-8 text (byte 0xff on line 1)"),
    (["create", "-f", File(b"name: a\x00\n")], 2, "holds a NUL byte"),
    (["create", "-f", File("name: a\nimage: x\nname: b\n")], 2, "line 3, column 1: duplicate"
     " key 'name'"),
    (["create", "-f", File("name: [unclosed\n")], 2, "malformed YAML at line 2"),
    (["create", "-f", File("")], 2, "the file is empty"),
    (["create", "-f", File("- a\n- b\n")], 2, "expected a VM mapping or `vms:` list"),
    (["create", "-f", File("vms: nope\n")], 2, "vms: must be a list of VM mappings"),
    (["create", "-f", File("vms: [a]\n")], 2, "vms[0]: must be a mapping of fields"),
    (["create", "-f", File("defaults: []\nvms: []\n")], 2, "defaults: must be a mapping"),
    (["create", "-f", File("vsm: []\n")], 2, ".yml: vsm: unknown key"),
    (["create", "-f", File("vms: []\n")], 2, "expected exactly one VM"),
    (["create", "-f", File("vms: []\nextra: 1\n")], 2, "extra: unknown top-level key"),
    (["create", "-f", "/nonexistent/vm.yml"], 2, "/nonexistent/vm.yml: No such file"),
    (["create", "-f", "/"], 2, "/: Is a directory"),
    (["create", "-f", vm_file(memroy="1g")], 2, "memroy: unknown key (did you mean 'memory'?)"),
    (["create", "-f", vm_file(command=12, init="none")], 2, "duplicate key 'command'"),
    (["create", "-f", File("name: %s\nimage: %s\ninit: none\ncommand: 12\n" % (NEW, BUSYBOX))],
     2, "command: 12 is not a command"),
    (["create", "-f", File("name: %s\nimage: %s\ninit: none\ncommand: {a: 1}\n" % (
        NEW, BUSYBOX))], 2, "command: {'a': 1} is not a command"),
    (["create", "-f", vm_file(volumes="/srv/x:/data")], 2, "volumes: '/srv/x:/data' is not a list"),
    (["create", "-f", vm_file(volumes="[{host: /srv/x}]")], 2, "volumes[0]: guest path '' is not"),
    (["create", "-f", vm_file(nics="{mode: bridge, link: br0}")], 2, "nics: {'mode': 'bridge',"),
    (["create", "-f", vm_file(nics="[7]")], 2, "nics[0]: a NIC is a mapping of options"),
    (["create", "-f", vm_file(dns="198.51.100.1")], 2, "dns: '198.51.100.1' is not a list"),
    (["create", "-f", vm_file(tune="nginx")], 2, "tune: 'nginx' is not a list"),
    (["create", "-f", vm_file(env="[A]")], 2, "env: 'A' is not KEY=VALUE"),
    (["create", "-f", vm_file(env="7")], 2, "env: use a mapping or a list of KEY=VALUE"),
    (["create", "-f", vm_file(labels="{'': x}")], 2, "labels: a label needs a key"),
    (["create", "-f", vm_file(labels='{a: "x\\ny"}')], 2, "labels.a: contains a line break"),
    (["create", "-f", vm_file(env='{A: "x\\ny"}')], 2, "env.A: contains a line break"),
    (["create", "-f", vm_file(cpus="[1]")], 2, "cpus: [1] is not a number of CPUs"),
    (["create", "-f", vm_file(lxcfs="sometimes")], 2, "lxcfs: 'sometimes' is not a boolean"),
    (["create", "-f", vm_file(name="[a]")], 2, "name: \"['a']\" is not a DNS label"),
    (["create", "-f", vm_file(ssh_keys="[[1]]")], 2, "ssh_keys[0]: '[1]' is not an OpenSSH"),
    # ---- apply: the whole file is checked first
    (["apply", "-f", two_vms("nics: [{link: '{br}', ip: 198.51.100.20/25}]",
                             "nics: [{link: '{br}', ip: 198.51.100.20/25}]")], 2,
     ".yml: vms[1]: nics[0].ip: 198.51.100.20 is already used by VM cha1 (eth0)"),
    (["apply", "-f", two_vms("memory: 64m", "memory: lots")], 2, "vms[1].memory: 'lots'"),
    (["apply", "-f", two_vms("memory: 64m", "image: nosuch/img:1")], 2,
     "vms[1]: image: 'nosuch/img:1' is not on this host"),
    (["apply", "-f", two_vms("memory: 64m", "volumes: ['/etc:/e']")], 2,
     "volumes[0]: /etc is the host's /etc"),
    (["apply", "-f", two_vms("memory: 64m", "nics: [{link: '{br}', ip: 198.51.100.1/25}]")], 2,
     "198.51.100.1 is already used by this host"),
    (["apply", "-f", two_vms("memory: 64m", "nics: [{link: cvnope0}]")], 2,
     "nics[0].link: bridge cvnope0 does not exist"),
    (["apply", "-f", File("vms:\n  - {name: cha1, image: %s}\n  - {name: cha1, image: %s}\n"
                          % (BUSYBOX, BUSYBOX))], 2, "VM cha1 is declared twice"),
    (["apply", "-f", two_vms("memory: 64m", "memory: lots"), "--dry-run"], 2,
     "1 problem; nothing was changed"),
    (["apply", "-f", two_vms("memory: 1k", "nics: [{link: '{br}', ip: 198.51.100.10/25}]"),
      "--dry-run"], 2, "2 problems; nothing was changed"),
    (["apply", "-f", two_vms("nics: [{link: '{br}', ip: 198.51.100.10/25}]", "memory: 64m"),
      "--keep-going"], 2, "198.51.100.10 is already used by VM chbase"),
    (["apply", "-f", File("vms:\n  - {name: chbase, image: %s, init: none, memory: 64m}\n"
                          % BUSYBOX)], 2, "chbase: needs a recreate"),
    (["apply"], 2, "Missing option"),
    # ---- net
    (["net", "attach", "{base}", "--nic", _nic(link="cvnope0")], 2, "bridge cvnope0 does not"),
    (["net", "attach", "nosuchvm", "--nic", _nic()], 2, "no VM named 'nosuchvm'"),
    (["net", "attach", "{base}", "--nic", _nic(ip=SUBNET + ".10/25", name="eth1")], 2,
     "nics[1]: address 198.51.100.10 is already used by nics[0]"),
    (["net", "attach", "{off}", "--nic", _nic(ip=SUBNET + ".10/25")], 2,
     "198.51.100.10 is already used by VM chbase (eth0)"),
    (["net", "attach", "{base}", "--nic", _nic(ip=SUBNET + ".1/25", name="eth1")], 2,
     "198.51.100.1 is already used by this host"),
    (["net", "attach", "{base}", "--nic", _nic(name="eth0")], 2, "interface name eth0 is"),
    (["net", "attach", "{base}", "--nic", "garbage"], 2, "nic: 'garbage' is not key=value"),
    (["net", "attach", "{off}", "--nic", _nic(link="{up}")], 2, "{up} is not a bridge"),
    (["net", "detach", "{base}", "eth9"], 2, "VM chbase has no NIC eth9 (it has eth0)"),
    (["net", "detach", "nosuchvm", "eth0"], 2, "no VM named 'nosuchvm'"),
    (["net", "ls", "nosuchvm"], 2, "no VM named 'nosuchvm'"),
    # ---- bridges
    (["bridge", "add", "bad name!"], 2, "name: 'bad name!' is not an interface name"),
    (["bridge", "add", "{up}"], 2, "name: {up} exists and is not a bridge"),
    (["bridge", "add", "cvxx0", "--address", "notacidr"], 2, "address: 'notacidr' is not a"),
    (["bridge", "add", "cvxx0", "--address", SUBNET + ".200"], 2, "has no prefix length"),
    (["bridge", "add", "cvxx0", "--address", SUBNET + ".128/26"], 2,
     "address: 198.51.100.128 is the network address of 198.51.100.128/26"),
    (["bridge", "add", "cvxx0", "--address", SUBNET + ".191/26"], 2, "is the broadcast address"),
    (["bridge", "add", "cvxx0", "--address", SUBNET + ".130/26"], 2,
     "address: 198.51.100.130 is already {up}'s address"),
    (["bridge", "add", "cvxx0", "--address", SUBNET + ".140/26"], 2,
     "address: 198.51.100.128/26 overlaps {up}'s subnet 198.51.100.128/26"),
    (["bridge", "add", "cvxx0", "--address", SUBNET + ".10/24", "--allow-overlap"], 2,
     "address: 198.51.100.10 is VM chbase's address (eth0)"),
    (["bridge", "add", "cvxx0", "--address", SUBNET + ".1/25"], 2,
     "address: 198.51.100.1 is already {br}'s address"),
    (["bridge", "add", "cvxx0", "--address", SUBNET + ".60/27"], 2,
     "overlaps {br}'s subnet 198.51.100.0/25"),
    (["bridge", "add", "cvxx0", "--address", SUBNET + ".61/24", "--allow-overlap", "--pool",
      "%s.110-%s.125" % (SUBNET, SUBNET)], 2, "pool: 198.51.100.110-198.51.100.125 overlaps the"
     " pool of cvm bridge {br}"),
    (["bridge", "add", "cvxx0", "--pool", "%s.200-%s.210" % (SUBNET, SUBNET)], 2,
     "pool: needs --address"),
    (["bridge", "add", "cvxx0", "--address", SUBNET + ".225/27", "--pool",
      "%s.10-%s.20" % (SUBNET, SUBNET)], 2, "pool: 198.51.100.10-198.51.100.20 is outside"),
    (["bridge", "add", "cvxx0", "--address", SUBNET + ".225/27", "--pool", "a-b"], 2, "pool:"),
    (["bridge", "add", "cvxx0", "--address", "127.0.0.5/8"], 2, "127.0.0.5 cannot be a bridge"),
    (["bridge", "add", "cvxx0", "--mtu", "10"], 2, "mtu: 10 is out of range"),
    (["bridge", "add", "cvxx0", "--uplink", "cvnope0"], 2, "uplink: interface cvnope0 does not"),
    (["bridge", "add", "cvxx0", "--vxlan", "0", "--vxlan-local", SUBNET + ".130"], 2,
     "vxlan.id: 0 is out of range"),
    (["bridge", "add", "cvxx0", "--vxlan", "100"], 2, "vxlan.local: None is not this host's"),
    (["bridge", "add", "cvxx0", "--vxlan", "100", "--vxlan-local", SUBNET + ".250"], 2,
     "vxlan.local: no interface of this host has 198.51.100.250"),
    (["bridge", "rm", "cvnope0"], 2, "no bridge cvnope0 made by cvm"),
    (["bridge", "rm", "{br}"], 2, "bridge {br} is used by chbase (eth0)"),
    # ---- resize
    (["resize", "{base}"], 2, "nothing to resize"),
    (["resize", "{base}", "--cpus", "0"], 2, "cpus: 0 must be above 0"),
    (["resize", "{base}", "--memory", "1m"], 2, "memory: 1m is below Docker's minimum"),
    (["resize", "{base}", "--pids", "0"], 2, "pids: 0 is out of range"),
    (["resize", "{base}", "--pids", "2"], 2, "pids: 2 is below the 3 tasks VM chbase runs now"),
    (["resize", "{base}", "--cpuset", "99"], 2, "cpuset: CPU 99 does not exist"),
    (["resize", "{base}", "--cpu-shares", "1"], 2, "cpu_shares: 1 is out of range"),
    (["resize", "nosuchvm", "--cpus", "1"], 2, "no VM named 'nosuchvm'"),
    # ---- processes in VMs
    (["exec", "nosuchvm", "--", "true"], 2, "no VM named 'nosuchvm'"),
    (["exec", "{off}", "--", "true"], 2, "VM choff is not running"),
    (["enter", "nosuchvm"], 2, "no VM named 'nosuchvm'"),
    (["enter", "{off}"], 2, "VM choff is not running"),
    (["nsrun", "nosuchvm", "--net", "--", "true"], 2, "no VM named 'nosuchvm'"),
    (["nsrun", "{off}", "--net", "--", "true"], 2, "VM choff is not running"),
    # ---- tune
    (["tune", "{base}", "postgres"], 2, "service: 'postgres' is not a service cvm tunes"),
    (["tune", "nosuchvm", "nginx"], 2, "no VM named 'nosuchvm'"),
    (["tune", "{base}", "nginx"], 2, "nginx is not installed in VM chbase"),
    (["tune", "{base}", "redis", "--set", "nokey"], 2, "set: 'nokey' is not KEY=VALUE"),
    # ---- images
    (["image", "build", "gentoo"], 2, "distro: unknown distro 'gentoo'"),
    (["image", "build", "centos7", "--rootfs", "debootstrap"], 2, "centos7 cannot be built"),
    (["image", "build", "debian12", "--base", "nosuch:base"], 2, "base image nosuch:base is"),
    (["image", "build", "debian12", "--base", "x", "--rootfs", "debootstrap"], 2,
     "give --base or --rootfs, not both"),
    (["image", "import", "--rootfs", "/nonexistent.tar", "--distro", "debian12", "--tag",
      "x:y"], 2, "rootfs: /nonexistent.tar does not exist"),
    (["image", "import", "--rootfs", File("hello"), "--distro", "debian12", "--tag", "x:y"], 2,
     "is not a tar archive"),
    # ---- other commands on what does not exist
    (["start", "nosuchvm"], 2, "no VM named 'nosuchvm'"),
    (["stop", "nosuchvm"], 2, "no VM named 'nosuchvm'"),
    (["restart", "nosuchvm"], 2, "no VM named 'nosuchvm'"),
    (["rm", "nosuchvm"], 2, "no VM named 'nosuchvm'"),
    (["rm", "{base}"], 2, "VM chbase is running; stop it first or use -f"),
    (["inspect", "nosuchvm"], 2, "no VM named 'nosuchvm'"),
    (["stats", "nosuchvm"], 2, "no VM named 'nosuchvm'"),
    (["stats", "nosuchvm", "--prometheus"], 2, "no VM named 'nosuchvm'"),
    (["free", "nosuchvm"], 2, "no VM named 'nosuchvm'"),
    (["export", "nosuchvm", "-o", "{scratch}/x.cvm"], 2, "no VM named 'nosuchvm'"),
    (["import", "/nonexistent.cvm"], 2, "/nonexistent.cvm: No such file"),
    (["import", File(b"not an archive")], 2, "not a cvm VM archive"),
]


def _fill(world, value):
    """The world's names in place of {br}, {base}, ...; a File written, its path given."""
    if isinstance(value, File):
        content = value.content
        if isinstance(content, str):
            content = _fill(world, content)
        return world.write("f%d.yml" % id(value), content)
    for key, name in world.names.items():
        value = value.replace("{%s}" % key, name)
    return value


def test_the_table_is_big_enough():
    assert len(CASES) >= 150


@pytest.mark.parametrize("argv,code,message", CASES, ids=[
    "%03d-%s" % (i, " ".join(str(a) for a in argv[:2])) for i, (argv, _, _) in
    enumerate(CASES)])
def test_bad_input_is_one_line_and_leaves_nothing(world, argv, code, message):
    before = world.footprint()
    result = world.cvm(*[_fill(world, a) for a in argv])
    if result.returncode == 0:  # wrongly accepted: undo what it may have made
        world.cvm("rm", "-f", NEW, "cha1", "cha2")
        world.cvm("bridge", "rm", "cvxx0")
    message = _fill(world, message)
    lines = result.stderr.splitlines()
    assert (result.returncode, len(lines)) == (code, 1), result.stderr
    assert lines[0].startswith("cvm: "), lines
    assert message in lines[0], lines[0]
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    after = world.footprint()
    assert after == before, {key: (before[key], after[key]) for key in before
                             if before[key] != after[key]}


def test_a_program_missing_in_the_vm_fails_as_docker_exec_says(world):
    ours = world.cvm("exec", world.names["base"], "--", "/no/such/program")
    container = api.get(world.names["base"], world.ctx).container_id
    theirs = subprocess.run(["docker", "exec", container, "/no/such/program"],
                            capture_output=True, text=True)
    assert (ours.returncode, ours.stdout, ours.stderr) == (
        theirs.returncode, theirs.stdout, theirs.stderr) and ours.returncode == 126


def test_the_daemon_logged_no_traceback(world):
    assert "Traceback" not in world.netd.log()


# ---------------------------------------------------------------- apply: all or nothing


def _memory_of(world, name):
    return api.get(name, world.ctx).spec.memory


def test_a_failed_apply_undoes_every_change_it_made(world):
    """The file's checks pass; its last VM's address then answers on the LAN (a machine
    that is not a VM): the create, the change and the recreate before it are undone, the
    recreated VM with its writable layer."""
    make = ["create"] + BB + ["--memory", "64m"]
    world.cvm(*(make[:1] + ["chx"] + make[1:] + SLEEP), check=True)
    world.cvm(*(make[:1] + ["chy"] + make[1:] + SLEEP), check=True)
    world.cvm("exec", "chx", "--", "sh", "-c", "echo kept > /kept", check=True)
    world.lab.peer(world.names["br"], SUBNET + ".30/25")
    spec_file = world.write("undo.yml", (
        "defaults: {image: %s, init: none, command: [sleep, '1000'], memory: 64m}\n"
        "vms:\n  - {name: chx, hostname: renamed}\n  - {name: chy, memory: 96m}\n"
        "  - {name: cha1, nics: [{link: %s, ip: %s.29/25}]}\n"
        "  - {name: cha2, nics: [{link: %s, ip: %s.30/25}]}\n") % (
        BUSYBOX, world.names["br"], SUBNET, world.names["br"], SUBNET))
    try:
        before = world.footprint()
        failed = world.cvm("apply", "-f", spec_file, "--recreate")
        assert failed.returncode == 2 and len(failed.stderr.splitlines()) == 1, failed.stderr
        assert "198.51.100.30 answered an ARP probe" in failed.stderr
        assert "the 3 changes made before it were undone" in failed.stderr
        after = world.footprint()
        assert len(after.pop("containers")) == len(before.pop("containers"))
        assert after == before, after["state"] ^ before["state"]
        assert residue(world.ctx, "cha1") == [] and residue(world.ctx, "cha2") == []
        assert _memory_of(world, "chy") == 64 << 20
        chx = api.get("chx", world.ctx)
        assert chx.running and chx.spec.effective_hostname == "chx"
        assert world.cvm("exec", "chx", "--", "cat", "/kept").stdout == "kept\n"

        kept_going = world.cvm("apply", "-f", spec_file, "--recreate", "--keep-going")
        assert kept_going.returncode == 2 and len(kept_going.stderr.splitlines()) == 1
        assert "1 of 4 changes failed (cha2: " in kept_going.stderr
        assert "the other 3 were made" in kept_going.stderr
        assert residue(world.ctx, "cha2") == [] and api.get("cha1", world.ctx).running
        assert _memory_of(world, "chy") == 96 << 20
        assert api.get("chx", world.ctx).spec.effective_hostname == "renamed"
    finally:
        world.cvm("rm", "-f", "chx", "chy", "cha1", "cha2")
    assert not os.listdir(os.path.join(world.state, "replaced"))  # the layer's archive


# ---------------------------------------------------------------- races


def _same(after, before):
    assert after == before, {key: (before[key], after[key]) for key in before
                             if before[key] != after[key]}


def _parallel(count, job):
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(job, range(count)))


def _clean(result):
    """A racing command either did its work or said in one line why not."""
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr, \
        result.stderr
    assert result.returncode == 0 or len(result.stderr.splitlines()) == 1, result.stderr
    return result


def _through(index):
    """Half the racers through netd, half in their own process (CVM_NO_DAEMON)."""
    return {"CVM_NO_DAEMON": "1"} if index % 2 else {}


def _addresses(world, names):
    return [api.get(n, world.ctx).spec.nics[0].ip for n in names]


def test_racing_creates_with_ip_auto_get_distinct_addresses(world):
    before = world.footprint()
    names = ["chr%d" % i for i in range(8)]
    results = _parallel(8, lambda i: _clean(world.cvm(
        *create("--nic", _fill(world, _nic(ip="auto")), name=names[i]), env=_through(i))))
    try:
        assert [r.returncode for r in results] == [0] * 8, [r.stderr for r in results]
        addresses = _addresses(world, names)
        assert len(set(addresses)) == 8 and all(a.startswith(SUBNET + ".1") for a in addresses)
        assert all(api.get(n, world.ctx).running for n in names)
    finally:
        removed = _parallel(8, lambda i: _clean(world.cvm("rm", "-f", names[i],
                                                          env=_through(i))))
    assert [r.returncode for r in removed] == [0] * 8
    _same(world.footprint(), before)


def test_racing_creates_of_one_address_leave_one_vm(world):
    before = world.footprint()
    names = ["chs%d" % i for i in range(8)]
    nic = _fill(world, _nic(ip=SUBNET + ".40/25"))
    results = _parallel(8, lambda i: _clean(world.cvm(*create("--nic", nic, name=names[i]),
                                                      env=_through(i))))
    winners = [names[i] for i, r in enumerate(results) if r.returncode == 0]
    try:
        assert len(winners) == 1, [r.stderr for r in results]
        for i, result in enumerate(results):
            if names[i] not in winners:
                assert result.returncode == 2 and "198.51.100.40 is already used by VM %s" % (
                    winners[0]) in result.stderr, result.stderr
                assert residue(world.ctx, names[i]) == []
    finally:
        world.cvm("rm", "-f", *winners)
    _same(world.footprint(), before)


def test_rm_racing_create_leaves_a_whole_vm_or_nothing(world):
    before = world.footprint()
    names = ["chq%d" % i for i in range(8)]

    def race(i):
        done = threading.Event()
        outcomes = []

        def remover():
            while not done.is_set():
                outcomes.append(_clean(world.cvm("rm", "-f", names[i], env=_through(i + 1))))
        thread = threading.Thread(target=remover)
        thread.start()
        try:
            created = _clean(world.cvm(*create("--nic", _fill(world, _nic(ip="auto")),
                                               name=names[i]), env=_through(i)))
        finally:
            done.set()
            thread.join()
        if created.returncode == 0 and api.exists(names[i], world.ctx):
            vm = api.get(names[i], world.ctx)  # what a create reported made is whole
            assert vm.status in ("running", "missing") or vm.record["phase"] == "ready"
        outcomes.append(_clean(world.cvm("rm", "-f", names[i])))
        return outcomes
    for outcomes in _parallel(8, race):
        assert all(r.returncode == 0 or "no VM named" in r.stderr for r in outcomes), \
            [r.stderr for r in outcomes if r.returncode]
    assert all(residue(world.ctx, n) == [] for n in names)
    _same(world.footprint(), before)


def test_racing_applies_of_one_file_make_it_once(world):
    before = world.footprint()
    spec_file = world.write("race.yml", (
        "defaults: {image: %s, init: none, command: [sleep, '1000']}\nvms:\n"
        "  - {name: cha1, nics: [{link: %s, ip: %s.50/25}]}\n"
        "  - {name: cha2, nics: [{link: %s, ip: %s.51/25}]}\n") % (
        BUSYBOX, world.names["br"], SUBNET, world.names["br"], SUBNET))
    try:
        results = _parallel(8, lambda i: _clean(world.cvm("apply", "-f", spec_file,
                                                          env=_through(i))))
        assert any(r.returncode == 0 for r in results)
        for result in results:
            assert result.returncode == 0 or "already" in result.stderr, result.stderr
        assert sorted(v.name for v in api.ls(world.ctx) if v.name.startswith("cha")) == [
            "cha1", "cha2"]
        assert _addresses(world, ["cha1", "cha2"]) == [SUBNET + ".50/25", SUBNET + ".51/25"]
        assert all(api.get(n, world.ctx).running for n in ("cha1", "cha2"))
        again = world.cvm("apply", "-f", spec_file, check=True)
        assert "unchanged 2" in again.stdout
    finally:
        world.cvm("rm", "-f", "cha1", "cha2")
    _same(world.footprint(), before)


def test_racing_removals_of_one_vm(world):
    before = world.footprint()
    world.cvm(*create("--nic", _fill(world, _nic(ip=SUBNET + ".60/25")), name="chz"),
              check=True)
    results = _parallel(8, lambda i: _clean(world.cvm("rm", "-f", "chz", env=_through(i))))
    assert sum(r.returncode == 0 for r in results) >= 1
    assert all(r.returncode == 0 or "no VM named 'chz'" in r.stderr for r in results), \
        [r.stderr for r in results]
    assert residue(world.ctx, "chz") == []
    _same(world.footprint(), before)


# ---------------------------------------------------------------- a create killed


STORM_SUBNET = "198.51.100.192/27"


@pytest.mark.parametrize("mender", ["netd", "cvm start"])
@pytest.mark.parametrize("step", ["recorded", "volumes", "files", "container", "started",
                                  "wired"])
def test_a_create_killed_at_any_step_is_made_whole(cvm, ctx, state_dir, images, lab, scratch,
                                                   name, step, mender):
    """Killed (-9) at each step of its create, a VM is finished by netd, or by `cvm start`:
    running, wired, answering, its volume there."""
    bridge = lab.bridge("198.51.100.193/27", prefix="cvk")
    volume = os.path.join(scratch, "vol")
    marker = os.path.join(state_dir, "paused")
    env = dict(cvm.env, CVM_NO_DAEMON="1", CVM_PAUSE_AT="create:" + step, CVM_PAUSED=marker)
    process = subprocess.Popen([CVM, "create", name] + BB + [
        "-v", volume + ":/vol", "--nic", "mode=bridge,link=%s,ip=198.51.100.200/27" % bridge,
        "--", "sleep", "100000"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(lambda: os.path.exists(marker) or process.poll() is not None, timeout=60,
             what="the create to pause at %s" % step)
    assert process.poll() is None, process.stderr.read()
    process.send_signal(signal.SIGKILL)
    process.wait()
    if mender == "netd":
        daemon = NetdProcess(state_dir).start()
        try:
            wait_for(lambda: (ctx.store.read_vm(name) or {}).get("phase") == "ready",
                     timeout=30, what="netd to finish the create")
        finally:
            daemon.stop()
    else:
        cvm("start", name, check=True)
    vm = api.get(name, ctx)
    assert vm.running and vm.record["phase"] == "ready" and "operation" not in vm.record
    assert wait_pingable("198.51.100.200", timeout=10)
    assert os.path.isdir(volume)
    cvm("rm", "-f", name, check=True)
    assert residue(ctx, name) == [] and not any(link.startswith(name) for link in host_links())


# ---------------------------------------------------------------- a storm of restarts


def _started_at(ctx, name):
    return api.get(name, ctx).container.get("State", {}).get("StartedAt")


class Storm:
    """Four systemd VMs on a bridge, each restarted over and over in a mix of ways, with
    netd killed part-way and brought back."""

    KINDS = ("docker restart", "cvm restart", "docker kill + start", "kill -9 of PID 1",
             "reboot inside")
    SLOW = 30
    LOOK_INSIDE_AFTER = 15  # seconds: what a VM whose restart runs this long is doing

    def __init__(self, ctx, state_dir, lab):
        self.ctx, self.state = ctx, state_dir
        self.cvm = CvmRunner(state_dir, CVM)
        self.netd = NetdProcess(state_dir).start()
        self.bridge = lab.bridge("198.51.100.193/27", prefix="cvz")
        self.vms = {"chst%d" % i: "198.51.100.%d" % (200 + i) for i in range(4)}
        self.times = []
        self.slow = []  # accounts of restarts of SLOW seconds or more
        self.inside = {}  # name: what the VM showed of itself during a long restart
        self.lock = threading.Lock()

    def boot(self):
        def make(item):
            name, address = item
            self.cvm("create", name, "--image", DEBIAN, "--memory", "256m", "--nic",
                     "mode=bridge,link=%s,ip=%s/27" % (self.bridge, address), check=True,
                     timeout=180)
            assert wait_pingable(address, timeout=60)
        list(ThreadPoolExecutor(4).map(make, self.vms.items()))

    def restart(self, name, kind):
        watchdog = threading.Timer(self.LOOK_INSIDE_AFTER, self.look_inside, (name,))
        watchdog.start()
        try:
            self._restart(name, kind)
        finally:
            watchdog.cancel()

    def look_inside(self, name):
        """The VM's own view of a restart that takes long: its jobs, and its journal."""
        result = self.cvm("exec", name, "--", "sh", "-c",
                          "systemctl list-jobs --no-pager; journalctl -b --no-pager -n 80",
                          timeout=30)
        self.inside[name] = result.stdout + result.stderr

    def _restart(self, name, kind):
        before = _started_at(self.ctx, name)
        started = time.monotonic()
        if kind == "docker restart":
            subprocess.run(["docker", "restart", name], check=True, capture_output=True)
        elif kind == "cvm restart":
            result = self.cvm("restart", name, timeout=120)
            if result.returncode != 0:
                # netd, killed while it served this, finishes it when it is back, once it
                # had begun (its record names the operation); before that, nothing ran.
                assert "lost cvm netd" in result.stderr, result.stderr
                with contextlib.suppress(AssertionError):
                    wait_for(lambda: _started_at(self.ctx, name) != before or
                             self.ctx.store.read_vm(name).get("operation"), timeout=5)
                if _started_at(self.ctx, name) == before and \
                        not self.ctx.store.read_vm(name).get("operation"):
                    self.cvm("restart", name, timeout=120, check=True)
        elif kind == "docker kill + start":
            subprocess.run(["docker", "kill", name], check=True, capture_output=True)
            subprocess.run(["docker", "start", name], check=True, capture_output=True)
        elif kind == "kill -9 of PID 1":
            os.kill(api.get(name, self.ctx).pid, signal.SIGKILL)
        else:
            # Pingable is not booted: a reboot before systemd listens is refused; retried.
            reboot = ("exec", name, "--", "sh", "-c",
                      "(sleep 0.2; until reboot; do sleep 0.2; done) >/dev/null 2>&1 &")
            result = self.cvm(*reboot)
            if result.returncode != 0:  # netd killed while it served the exec: did it run?
                assert "lost cvm netd" in result.stderr, result.stderr
                with contextlib.suppress(AssertionError):
                    wait_for(lambda: _started_at(self.ctx, name) != before, timeout=5)
                if _started_at(self.ctx, name) == before:
                    self.cvm(*reboot, check=True)
        try:
            wait_for(lambda: _started_at(self.ctx, name) != before and
                     api.get(name, self.ctx).running, timeout=120, interval=0.05,
                     what="%s to start again after %s" % (name, kind))
        except AssertionError as failure:  # what cvm, Docker and netd saw, for its reader
            vm = api.get(name, self.ctx)
            about = [line for line in self.netd.log().splitlines()
                     if name in line or "Traceback" in line or "Error" in line]
            raise AssertionError("%s; record %s; container %s; netd's log about it:\n%s" % (
                failure, {k: vm.record.get(k) for k in ("phase", "desired", "operation")},
                (vm.container or {}).get("State"), "\n".join(about[-40:]))) from None
        assert wait_pingable(self.vms[name], timeout=120), "%s lost its wiring (%s)" % (
            name, kind)
        seconds = time.monotonic() - started
        with self.lock:
            self.times.append((kind, seconds))
            if seconds >= self.SLOW:
                self.slow.append(self.account(name, kind, seconds))

    def account(self, name, kind, seconds):
        """What netd said about a slow restart, for its reader."""
        netd = [line for line in self.netd.log().splitlines() if name in line]
        return "%s: %s took %.1f s; netd's log about it:\n%s\nthe VM, %d s in:\n%s" % (
            name, kind, seconds, "\n".join(netd[-30:]), self.LOOK_INSIDE_AFTER,
            self.inside.pop(name, "(nothing)"))

    def whole(self):
        """Every VM running, desired running, answering, and every filter in place."""
        from cvm.net import wiring as net
        running = set()
        for name, address in self.vms.items():
            vm = api.get(name, self.ctx)
            assert vm.running and vm.record["desired"] == "running", name
            assert ping(address), name
            running.add(name)
        from cvm.net.netlink import Netlink
        with Netlink.open() as host:
            assert net.filter_report(self.ctx, running, host.nft()) == {"missing": [],
                                                                        "stale": []}

    def close(self):
        self.netd.stop()
        remove_realm(self.ctx)


def _figures(**figures):
    print("chaos figures: %s" % json.dumps(figures))
    path = os.environ.get("CVM_CHAOS_FIGURES")
    if path:
        existing = {}
        if os.path.exists(path):
            with open(path) as handle:
                existing = json.load(handle)
        existing.update(figures)
        with open(path, "w") as handle:
            json.dump(existing, handle, indent=2)


def test_a_storm_of_restarts_loses_no_wiring_and_dockerd_brings_all_back(
        ctx, state_dir, engine, images, lab):
    storm = Storm(ctx, state_dir, lab)
    try:
        storm.boot()
        rounds = 26  # per VM: 104 restarts in all
        names = sorted(storm.vms)

        def restarter(index):
            for turn in range(rounds):
                storm.restart(names[index], Storm.KINDS[(turn + index) % len(Storm.KINDS)])

        def netd_killer():
            wait_for(lambda: len(storm.times) >= 30, timeout=600, interval=0.2,
                     what="a third of the storm")
            storm.netd.kill(signal.SIGKILL)
            time.sleep(2)  # restarts meanwhile find no netd: their VMs wait for it
            storm.netd.start()
        killer = threading.Thread(target=netd_killer)
        killer.start()
        _parallel(len(names), restarter)
        killer.join()
        assert len(storm.times) == rounds * len(names)
        storm.whole()
        seconds = sorted(t for _, t in storm.times)

        before = {name: _started_at(ctx, name) for name in names}
        started = time.monotonic()
        restart_dockerd()
        wait_for(lambda: all(_started_at(ctx, n) != before[n] for n in names) and
                 all(ping(a) for a in storm.vms.values()), timeout=180, interval=0.1,
                 what="every VM back after dockerd restarted")
        recovery = time.monotonic() - started
        storm.whole()
        by_kind = {kind: [round(statistics.median(t for k, t in storm.times if k == kind), 2),
                          round(max(t for k, t in storm.times if k == kind), 2)]
                   for kind in Storm.KINDS}
        _figures(storm_restarts=len(seconds), storm_median_s=round(statistics.median(seconds),
                                                                   2),
                 storm_worst_s=round(seconds[-1], 2), storm_median_and_worst_by_kind_s=by_kind,
                 dockerd_restart_recovery_s=round(recovery, 2),
                 stop_signals_sent_again=storm.netd.log().count("sent it again"))
        # A stop signal lost on the way (netd killed, init not yet taking it) shows as
        # Docker's stop timeout: 90 s.
        assert not storm.slow, "%s\n%s" % (by_kind, "\n\n".join(storm.slow))
    finally:
        storm.close()
