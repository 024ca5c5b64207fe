"""`cvm lab`: a fleet of real cvm hosts on one machine, the way kind runs Kubernetes nodes
as containers.

Each lab host is a container that is itself a container host (engine.HOST_PROFILE):
systemd as PID 1, its own dockerd on its own /var/lib/docker (a host directory, so the
nested engine gets overlay2, not vfs) below its own cgroup parent, lxcfs, sshd and
python3, from the image os-images/labhost (Debian 12 built offline, as the VM images
are). Lab hosts are cvm VMs of their own realm (`<lab>/state`), wired by cvm to a lab
LAN bridge where this machine, the controller, has an address; they have no route
out: everything they need comes from the controller (cvm's source and a wheelhouse of
its dependencies through host.yml, images through the registry).

The lab writes an Ansible inventory (`<lab>/inventory/hosts.yml`) that reaches them
over ssh with the lab's own key, for `cvm provision -i <lab>/inventory`.
"""

import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
import time

from .errors import CvmError, SpecError

DEFAULT_DIR = "/var/lib/cvm-lab"
IMAGE = "cvm/labhost:latest"
# Inside 203.0.113.128/25, away from what the tests and the demo use; never 203.0.113.0/25
# or 192.0.2.0/24, where the machine itself may reach the outside.
SUBNET = "203.0.113.192/27"
REGISTRY_PORT = 5043  # not 5000: Debian's own docker-registry.service takes *:5000
SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]
MAX_HOSTS = 16


def lab_dir():
    return os.path.abspath(os.environ.get("CVM_LAB_DIR") or DEFAULT_DIR)


class Lab:
    """The lab in `directory`: its settings (lab.json), realm, hosts and inventory."""

    def __init__(self, directory=None):
        from .context import Context
        self.dir = os.path.abspath(directory or lab_dir())
        self.ctx = Context(state_root=os.path.join(self.dir, "state"))
        self.settings = self._load()

    def _load(self):
        try:
            with open(os.path.join(self.dir, "lab.json")) as handle:
                return json.load(handle)
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise CvmError("%s/lab.json is corrupt (%s); `cvm lab down` and up again" % (
                self.dir, exc)) from None

    def _save(self):
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        with open(os.path.join(self.dir, "lab.json.tmp"), "w") as handle:
            json.dump(self.settings, handle, indent=2, sort_keys=True)
        os.rename(os.path.join(self.dir, "lab.json.tmp"), os.path.join(self.dir, "lab.json"))

    # ---------------------------------------------------------------- naming

    @property
    def network(self):
        return ipaddress.ip_network(self.settings["subnet"])

    @property
    def controller_address(self):
        return str(self.network.network_address + 1)

    def host_address(self, index):
        return str(self.network.network_address + 1 + index)

    def host_name(self, index):
        return "%s%d" % (self.settings["prefix"], index)

    @property
    def key(self):
        return os.path.join(self.dir, "id_ed25519")

    @property
    def inventory(self):
        return os.path.join(self.dir, "inventory")

    @property
    def registry(self):
        return "%s:%d" % (self.controller_address, REGISTRY_PORT)

    # ---------------------------------------------------------------- up

    def up(self, count=3, prefix=None, bridge=None, subnet=None, progress=None):
        """Make the lab have `count` hosts, running and reachable over ssh; returns ls()."""
        say = progress or (lambda text: None)
        if not 1 <= count <= MAX_HOSTS:
            raise SpecError("count", "%d hosts: a lab has 1 to %d" % (count, MAX_HOSTS))
        if self.settings is None:
            subnet = _lab_subnet(subnet or SUBNET, count)
            self.settings = {"prefix": prefix or "lab", "bridge": bridge or "cvmlab0",
                             "subnet": subnet, "count": count}
        elif prefix not in (None, self.settings["prefix"]) or \
                bridge not in (None, self.settings["bridge"]) or \
                subnet not in (None, self.settings["subnet"]):
            raise CvmError("the lab in %s has hosts %s* on %s; `cvm lab down` first to change "
                           "them" % (self.dir, self.settings["prefix"], self.settings["bridge"]))
        self.settings["count"] = max(count, self.settings.get("count", 0))
        self._save()
        from . import images
        say("lab image %s" % IMAGE)
        images.ensure(["labhost"], ctx=self.ctx)
        self._ensure_key()
        self._ensure_bridge()
        names = [self.host_name(i) for i in range(1, count + 1)]
        for index, name in enumerate(names, start=1):
            self._ensure_host(index, name, say)
        for name in names:
            self._wait_reachable(name, say)
        self.write_inventory(count)
        return self.ls()

    def _ensure_key(self):
        if not os.path.exists(self.key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cvm-lab",
                            "-f", self.key], check=True)

    def _ensure_bridge(self):
        from .net import hostbridge
        address = "%s/%d" % (self.controller_address, self.network.prefixlen)
        record = self.ctx.store.read_bridge(self.settings["bridge"])
        if record is None or record.get("address") != address:
            hostbridge.add(self.ctx, self.settings["bridge"], address=address)

    def _ensure_host(self, index, name, say):
        from . import api
        from .spec import parse_spec
        with contextlib.suppress(CvmError):
            vm = api.get(name, self.ctx)
            if vm.status != "running":
                say("starting %s" % name)
                vm.start()
            return
        say("creating %s (%s)" % (name, self.host_address(index)))
        docker_dir = os.path.join(self.dir, "hosts", name, "docker")
        os.makedirs(docker_dir, exist_ok=True)
        with open(self.key + ".pub") as handle:
            public_key = handle.read()
        spec = parse_spec({
            "name": name, "image": IMAGE, "init": "systemd", "lxcfs": False,
            "restart": "unless-stopped", "ssh_keys": [public_key],
            "volumes": ["%s:/var/lib/docker" % docker_dir],
            "nics": [{"mode": "bridge", "link": self.settings["bridge"],
                      "ip": "%s/%d" % (self.host_address(index), self.network.prefixlen),
                      # A host's NIC carries its nested VMs' traffic: not one MAC and address.
                      "filtering": False}]})
        vm = api.create(spec, start=False, ctx=self.ctx, profile="host")
        # Before its dockerd first starts: nested containers below a cgroup of their own.
        self.ctx.engine.put_files(vm.container_id, {"/etc/docker/daemon.json": (
            json.dumps(self.docker_settings(name), indent=2).encode() + b"\n", 0o644)})
        vm.start()

    def docker_settings(self, name):
        """The lab host's daemon.json (host.yml keeps it: cvm_docker_settings)."""
        return {"bridge": "none", "iptables": False, "storage-driver": "overlay2",
                "cgroup-parent": "/cvmlab-%s" % name}

    def ssh(self, name_or_address, command, timeout=60, input=None):
        address = name_or_address if name_or_address[0].isdigit() else \
            self.address_of(name_or_address)
        return subprocess.run(["ssh", "-i", self.key] + SSH_OPTIONS + ["root@" + address,
                                                                        command],
                              capture_output=True, text=True, timeout=timeout, input=input)

    def address_of(self, name):
        for index in range(1, MAX_HOSTS + 1):
            if self.host_name(index) == name:
                return self.host_address(index)
        raise CvmError("no lab host named %s" % name)

    def _wait_reachable(self, name, say, timeout=180):
        say("waiting for %s: systemd, dockerd, sshd" % name)
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                result = self.ssh(name, "systemctl is-system-running; systemctl is-active "
                                        "docker", timeout=15)
                last = (result.stdout + result.stderr).strip()
                state, _, docker = last.partition("\n")
                if state in ("running", "degraded") and docker.strip() == "active":
                    return
            except subprocess.TimeoutExpired:
                last = "ssh timed out"
            time.sleep(0.5)
        raise CvmError("lab host %s did not come up within %d s (last: %s)" % (
            name, timeout, " ".join(last.split())[:200]))

    def write_inventory(self, count):
        """hosts.yml: the lab hosts (cvm_hosts, over ssh) and the controller (cvm_registry,
        local), with what lab hosts need to know about the lab."""
        import yaml
        hosts = {}
        for index in range(1, count + 1):
            name = self.host_name(index)
            hosts[name] = {"ansible_host": self.host_address(index),
                           "cvm_docker_settings": self.docker_settings(name)}
        inventory = {"all": {"children": {
            "cvm_hosts": {"hosts": hosts, "vars": {
                "ansible_user": "root", "ansible_ssh_private_key_file": self.key,
                "ansible_ssh_common_args": " ".join(SSH_OPTIONS[:6]),
                # Lab hosts reach nothing outside the lab: no package may be missing.
                "cvm_offline": True}},
            "cvm_registry": {"hosts": {"controller": {
                "ansible_connection": "local", "ansible_host": self.controller_address,
                "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}}},
            "vars": {"cvm_registry": self.registry,
                     "cvm_registry_dir": os.path.join(self.dir, "registry")}}}
        os.makedirs(self.inventory, exist_ok=True)
        path = os.path.join(self.inventory, "hosts.yml")
        with open(path + ".tmp", "w") as handle:
            handle.write("# Written by `cvm lab up`: the lab's hosts and its controller.\n")
            yaml.safe_dump(inventory, handle, sort_keys=False)
        os.rename(path + ".tmp", path)
        return path

    # ---------------------------------------------------------------- ls / down

    def ls(self):
        if self.settings is None:
            return []
        from . import api
        rows = []
        for vm in api.ls(self.ctx):
            address = vm.spec.nics[0].ip_interface.ip if vm.spec.nics else None
            rows.append({"name": vm.name, "status": vm.status, "address": str(address),
                         "ssh": "ssh -i %s root@%s" % (self.key, address)})
        return sorted(rows, key=lambda row: row["name"])

    def down(self, progress=None):
        """Remove every lab host, their volumes, the bridge, the registry's data and every
        file of the lab."""
        say = progress or (lambda text: None)
        if self.settings is None and not os.path.exists(self.dir):
            return []
        from . import api
        removed = []
        for vm in api.ls(self.ctx):
            say("removing %s" % vm.name)
            vm.remove(force=True)
            _remove_cgroup_parent("cvmlab-%s" % vm.name)
            removed.append(vm.name)
        for container in self.ctx.engine.vm_containers(self.ctx.realm):
            self.ctx.engine.remove(container["Id"], force=True)
        if self.settings is not None:
            from .net import hostbridge
            with contextlib.suppress(CvmError):
                hostbridge.remove(self.ctx, self.settings["bridge"])
        stop_processes_under(self.dir)
        with contextlib.suppress(OSError):
            os.unlink(os.path.join("/etc/docker/certs.d", self.registry, "ca.crt"))
            os.rmdir(os.path.join("/etc/docker/certs.d", self.registry))
        shutil.rmtree(self.dir, ignore_errors=True)
        self.settings = None
        return removed


def _lab_subnet(text, count):
    """The lab LAN's subnet: room for the controller and `count` hosts, and no address of
    this machine in it (a second route to it would cut this machine off from it)."""
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise SpecError("subnet", str(exc)) from None
    if network.version != 4 or network.num_addresses - 2 < count + 1:
        raise SpecError("subnet", "%s has no room for the controller and %d hosts" % (
            network, count))
    from .net.netlink import Netlink
    with Netlink.open() as host:
        for link in host.links():
            for address in host.addresses(link["index"]):
                found = address.get("address")
                if found and ":" not in found and ipaddress.ip_address(found) in network:
                    raise SpecError("subnet", "%s holds %s of this machine (%s); give the lab "
                                    "another subnet" % (network, found, link.get("ifname")))
    return str(network)


def _remove_cgroup_parent(name, root="/sys/fs/cgroup"):
    """The cgroups a lab host's dockerd made below its parent outlive it: remove them."""
    for hierarchy in [root] + [os.path.join(root, entry) for entry in os.listdir(root)]:
        top = os.path.join(hierarchy, name)
        if not os.path.isdir(top):
            continue
        for directory, _, _ in sorted(os.walk(top), key=lambda item: -len(item[0])):
            with contextlib.suppress(OSError):
                os.rmdir(directory)


def stop_processes_under(directory):
    """Processes started from the lab's directory (its registry, when the controller has
    no systemd) end with it."""
    import signal
    marker = directory.encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                if marker in handle.read() and int(pid) != os.getpid():
                    os.kill(int(pid), signal.SIGTERM)
