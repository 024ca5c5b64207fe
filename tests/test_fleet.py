"""A fleet, proven on a lab of three real cvm hosts on this machine (cvm lab): converged
from bare hosts by one inventory, images distributed by the registry, VMs on an overlay
bridge reaching each other across hosts, ip: auto fleet-wide, --limit, a host that is
down, and VMs moved between hosts, killed moves included.

The lab (its hosts, their data, the bridge, the registry) is one for the whole module and
is removed afterwards, on failure too.
"""

import json
import os
import secrets
import shutil
import subprocess
import tempfile

import pytest
import yaml

from cvm.lab import Lab

from .conftest import CVM, wait_for

pytestmark = [pytest.mark.engine, pytest.mark.slow, pytest.mark.fleet]

SUBNET = "203.0.113.224/27"  # not the default lab's: both may exist on one machine
OVERLAY = "198.51.100"       # only inside the lab hosts' own network namespaces


class Fleet:
    def __init__(self):
        token = secrets.token_hex(2)
        self.dir = tempfile.mkdtemp(prefix="cvm-fleet-")
        self.lab = Lab(self.dir)
        self.hosts = []
        self.key = os.path.join(self.dir, "vm_key")
        self.token = token

    def up(self):
        self.lab.up(3, prefix="f%s" % self.token, bridge="cvf%s" % self.token, subnet=SUBNET)
        self.hosts = [self.lab.host_name(i) for i in (1, 2, 3)]
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.key],
                       check=True)
        with open(self.key + ".pub") as handle:
            public = handle.read().strip()
        self.write_group_vars({"cvm_ssh_keys": [public]})
        vms = {1: [{"name": "web1", "memory": "256m", "volumes": ["/srv/web1:/data"],
                    "nics": [self.nic("%s.11/24" % OVERLAY)]}],
               2: [{"name": "web2", "memory": "256m", "nics": [self.nic("auto")]}],
               3: [{"name": "web3", "memory": "256m", "nics": [self.nic("auto")]}]}
        for index, host in enumerate(self.hosts, start=1):
            self.write_host_vars(host, {"cvm_bridges": [self.overlay(index)],
                                        "cvm_vms": vms[index]})

    @staticmethod
    def nic(ip):
        return {"mode": "bridge", "link": "ovl0", "ip": ip}

    @staticmethod
    def overlay(index, vni=100, name="ovl0"):
        return {"name": name, "address": "%s.%d/24" % (OVERLAY, index),
                "pool": "%s.100-%s.150" % (OVERLAY, OVERLAY), "vxlan": {"id": vni}}

    @property
    def inventory(self):
        return self.lab.inventory

    def host_vars(self, host):
        path = os.path.join(self.inventory, "host_vars", host + ".yml")
        with open(path) as handle:
            return yaml.safe_load(handle)

    def write_host_vars(self, host, data):
        os.makedirs(os.path.join(self.inventory, "host_vars"), exist_ok=True)
        with open(os.path.join(self.inventory, "host_vars", host + ".yml"), "w") as handle:
            yaml.safe_dump(data, handle, sort_keys=False)

    def write_group_vars(self, data):
        os.makedirs(os.path.join(self.inventory, "group_vars"), exist_ok=True)
        with open(os.path.join(self.inventory, "group_vars", "cvm_hosts.yml"), "w") as handle:
            yaml.safe_dump(data, handle, sort_keys=False)

    def provision(self, playbook="site.yml", *extra, timeout=1800):
        """`cvm provision --json`: (exit code, {host: counts}, output)."""
        result = subprocess.run([CVM, "provision", "-i", self.inventory, "--playbook",
                                 playbook, "--json"] + list(extra), capture_output=True,
                                text=True, timeout=timeout)
        try:
            hosts = {h["host"]: h for h in json.loads(result.stdout)["hosts"]}
        except ValueError:
            hosts = {}
        return result.returncode, hosts, result.stdout[-3000:] + result.stderr[-2000:]

    def on(self, host, command, timeout=120):
        return self.lab.ssh(host, command, timeout=timeout)

    def cvm(self, host, command, timeout=120):
        result = self.on(host, "cvm " + command, timeout=timeout)
        return result.returncode, result.stdout, result.stderr

    def vms_on(self, host):
        code, out, err = self.cvm(host, "ls --json")
        assert code == 0, err
        return {row["name"]: row for row in json.loads(out)}

    def where(self, name):
        return [host for host in self.hosts if name in self.vms_on(host)]

    def close(self):
        self.lab.down()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def fleet(engine):
    lab = Fleet()
    try:
        lab.up()
        yield lab
    finally:
        lab.close()


def changed_of(hosts, names):
    return {name: hosts[name]["changed"] for name in names}


# ---------------------------------------------------------------- converge


def test_one_inventory_converges_bare_hosts(fleet):
    code, hosts, output = fleet.provision()
    assert code == 0, output
    assert all(hosts[h]["changed"] > 0 and not hosts[h]["failed"] for h in fleet.hosts), hosts
    for host, name in zip(fleet.hosts, ("web1", "web2", "web3")):
        assert fleet.vms_on(host)[name]["status"] == "running"


def test_daemons_run_under_the_hosts_systemd(fleet):
    for host in fleet.hosts:
        shown = fleet.on(host, "cat /proc/1/comm; systemctl is-active docker lxcfs cvm-netd "
                               "cvm-exporter; docker info -f '{{.Driver}}'; "
                               "readlink -f /usr/local/bin/cvm").stdout.split()
        assert shown == ["systemd", "active", "active", "active", "active", "overlay2",
                         "/opt/cvm/venv/bin/cvm"], (host, shown)
    # The hosts' nested VMs live below their host's own cgroup parent.
    assert os.path.isdir("/sys/fs/cgroup/memory/cvmlab-%s" % fleet.hosts[0])


def test_a_second_run_changes_nothing(fleet):
    code, hosts, output = fleet.provision()
    assert code == 0, output
    assert changed_of(hosts, fleet.hosts + ["controller"]) == dict.fromkeys(
        fleet.hosts + ["controller"], 0), output


def test_images_come_from_the_registry_by_digest(fleet, engine):
    controller = engine.image("cvm/debian12:latest")
    for host in fleet.hosts:
        shown = json.loads(fleet.on(host, "docker image inspect cvm/debian12:latest").stdout)
        assert shown[0]["Id"] == controller["Id"]  # the very image built on the controller
        assert any(d.startswith(fleet.lab.registry + "/cvm/debian12@sha256:")
                   for d in shown[0]["RepoDigests"])
        # Nothing was built on the host: no debootstrap base image there.
        listed = fleet.on(host, "docker images --format '{{.Repository}}'").stdout.split()
        assert "cvm-base/debian12" not in listed


# ---------------------------------------------------------------- the overlay


def _vm_ip(fleet, host, name):
    return fleet.vms_on(host)[name]["ips"][0]


def test_vms_reach_each_other_across_hosts(fleet):
    web2, web3 = _vm_ip(fleet, fleet.hosts[1], "web2"), _vm_ip(fleet, fleet.hosts[2], "web3")
    code, out, err = fleet.cvm(fleet.hosts[0], "exec web1 -- ping -c2 -W2 %s" % web2)
    assert code == 0, out + err
    code, out, err = fleet.cvm(fleet.hosts[0], "exec web1 -- ping -c2 -W2 %s" % web3)
    assert code == 0, out + err
    # ssh from a VM on one host into a VM on another, with the VMs' key.
    with open(fleet.key) as handle:
        key = handle.read()
    put = subprocess.run(["ssh", "-i", fleet.lab.key, "-o", "StrictHostKeyChecking=no",
                          "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                          "root@" + fleet.lab.address_of(fleet.hosts[0]),
                          "cvm exec web1 -- sh -c 'umask 077; mkdir -p /root/.ssh; cat > "
                          "/root/.ssh/id_ed25519'"], input=key, text=True, capture_output=True)
    assert put.returncode == 0, put.stderr
    hostname = wait_for(lambda: fleet.cvm(fleet.hosts[0], "exec web1 -- ssh -o "
                                          "StrictHostKeyChecking=no -o ConnectTimeout=5 root@%s "
                                          "hostname" % web2)[1].strip(), timeout=60,
                        what="ssh from web1 into web2")
    assert hostname == "web2"
    # The overlay's MTU: the underlay's minus VXLAN's 50 bytes, on the bridge and the VM.
    assert fleet.cvm(fleet.hosts[0], "exec web1 -- cat /sys/class/net/eth0/mtu")[1].strip() \
        == "1450"


def test_ip_auto_is_fleet_wide_stable_and_never_doubled(fleet):
    with open(os.path.join(fleet.inventory, "cvm_leases.json")) as handle:
        leases = json.load(handle)
    (pool,) = leases.values()
    assert sorted(pool) == ["web2", "web3"] and len(set(pool.values())) == 2
    assert _vm_ip(fleet, fleet.hosts[1], "web2") == pool["web2"]
    assert _vm_ip(fleet, fleet.hosts[2], "web3") == pool["web3"]
    assert "%s.11" % OVERLAY not in pool.values()


# ---------------------------------------------------------------- partial runs


def test_limit_touches_only_that_host(fleet):
    host2 = fleet.hosts[1]
    data = fleet.host_vars(host2)
    data["cvm_vms"].append({"name": "db2", "memory": "256m", "nics": [fleet.nic("auto")]})
    fleet.write_host_vars(host2, data)
    code, hosts, output = fleet.provision("vms.yml", "--limit", host2)
    assert code == 0, output
    assert sorted(hosts) == [host2], hosts
    assert fleet.vms_on(host2)["db2"]["status"] == "running"
    assert fleet.where("db2") == [host2]


def test_a_host_that_is_down_fails_alone(fleet, engine):
    down = fleet.hosts[2]
    subprocess.run(["docker", "stop", "-t", "30", down], check=True, capture_output=True)
    try:
        data = fleet.host_vars(fleet.hosts[0])
        data["cvm_vms"].append({"name": "app1", "memory": "256m", "nics": [fleet.nic("auto")]})
        fleet.write_host_vars(fleet.hosts[0], data)
        code, hosts, output = fleet.provision("vms.yml")
        assert code != 0
        assert hosts[down]["unreachable"] or hosts[down]["failed"], hosts
        assert not hosts[fleet.hosts[0]]["failed"] and not hosts[fleet.hosts[1]]["failed"]
        assert fleet.vms_on(fleet.hosts[0])["app1"]["status"] == "running"
    finally:
        fleet.lab.up(3)  # the host back, as it was
    code, hosts, output = fleet.provision("vms.yml")
    assert code == 0 and hosts[down]["changed"] == 0, output


def test_inventories_that_contradict_themselves_are_refused_whole(fleet):
    saved = {host: fleet.host_vars(host) for host in fleet.hosts}
    try:
        wrong = dict(saved[fleet.hosts[1]], cvm_bridges=[fleet.overlay(2, vni=200)])
        fleet.write_host_vars(fleet.hosts[1], wrong)
        twice = dict(saved[fleet.hosts[2]], cvm_bridges=[fleet.overlay(3),
                                                           fleet.overlay(3, name="ovl1")])
        fleet.write_host_vars(fleet.hosts[2], twice)
        code, hosts, output = fleet.provision("vms.yml")
        assert code != 0
        assert "bridge ovl0 has VXLAN id 100 on %s and 200 on %s" % (
            fleet.hosts[0], fleet.hosts[1]) in output
        assert "VXLAN id 100 is used by bridge ovl0 on %s and by bridge ovl1 on %s" % (
            fleet.hosts[0], fleet.hosts[2]) in output
        assert not any(h["changed"] for h in hosts.values()), hosts
    finally:
        for host, data in saved.items():
            fleet.write_host_vars(host, data)


# ---------------------------------------------------------------- moving VMs


def _digests(fleet, host, name):
    return fleet.cvm(host, "exec %s -- sh -c 'sha256sum /data/* /root/mark "
                           "/etc/ssh/ssh_host_ed25519_key.pub; cat /sys/class/net/eth0/address; "
                           "crontab -l'" % name)[1]


LAYER_COPY = "/var/lib/docker/cvm-migrate-web1-layer"  # where a move copies it ahead


def test_a_move_keeps_the_vms_data_address_and_identity(fleet):
    source, target = fleet.hosts[0], fleet.hosts[1]
    fleet.cvm(source, "exec web1 -- sh -c 'dd if=/dev/urandom of=/data/blob bs=1M count=20 "
                      "2>/dev/null; echo layer > /root/mark; echo \"5 * * * * true\" | "
                      "crontab -'")
    before = _digests(fleet, source, "web1")
    address = _vm_ip(fleet, source, "web1")
    result = subprocess.run([CVM, "move", "web1", "--to", target, "-i", fleet.inventory],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert fleet.where("web1") == [target]
    assert fleet.on(target, "test ! -e %s" % LAYER_COPY).returncode == 0  # taken by import
    assert _digests(fleet, target, "web1") == before
    assert _vm_ip(fleet, target, "web1") == address
    # The rest of the fleet reaches it at once (its address announced as it was wired).
    assert fleet.cvm(fleet.hosts[2], "exec web3 -- ping -c1 -W2 %s" % address)[0] == 0
    # The inventory followed, and converging it changes nothing.
    assert "web1" in [vm["name"] for vm in fleet.host_vars(target)["cvm_vms"]]
    assert "web1" not in [vm["name"] for vm in fleet.host_vars(source)["cvm_vms"]]
    code, hosts, output = fleet.provision("vms.yml")
    assert code == 0 and not any(h["changed"] for h in hosts.values()), output


@pytest.mark.parametrize("why,command,expected", [
    ("the same host", "move web1 --to {target}", "is already on {target}"),
    ("not a host", "move web1 --to nosuchhost", "to: nosuchhost is not a container host"),
    ("no such VM", "move nosuchvm --to {source}", "no host of the inventory declares"),
])
def test_moves_that_cannot_be_are_refused_in_one_line(fleet, why, command, expected):
    target = fleet.where("web1")[0]
    source = [h for h in fleet.hosts if h != target][0]
    argv = command.format(target=target, source=source).split() + ["-i", fleet.inventory]
    result = subprocess.run([CVM] + argv, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0, why
    assert expected.format(target=target) in result.stderr.splitlines()[-1], result.stderr
    assert fleet.where("web1") == [target]


def test_a_target_without_the_bridge_or_room_refuses_before_the_vm_stops(fleet):
    """Checked from the archive's header on the target: the VM never stops."""
    source = fleet.where("web1")[0]
    other = [h for h in fleet.hosts if h != source][0]
    # A VM on a bridge only its host has.
    assert fleet.on(source, "cvm bridge add solo0 --address 198.51.101.1/24 && cvm create lone "
                            "--image cvm/debian12 --memory 128m --nic mode=bridge,link=solo0,"
                            "ip=198.51.101.10/24").returncode == 0
    try:
        code, _, err = fleet.cvm(source, "migrate lone --to %s" % fleet.lab.address_of(other))
        assert code != 0 and "bridge solo0 does not exist on this host" in err, err
        assert fleet.vms_on(source)["lone"]["status"] == "running"
        assert "lone" not in fleet.vms_on(other)
    finally:
        fleet.on(source, "cvm rm -f lone; cvm bridge rm solo0")
    # A sparse terabyte in a volume: the target has no room for it.
    fleet.cvm(source, "exec web1 -- truncate -s 1T /data/sparse")
    try:
        started = fleet.vms_on(source)["web1"]["uptime_seconds"]
        code, _, err = fleet.cvm(source, "migrate web1 --to %s" % fleet.lab.address_of(other))
        assert code != 0 and "disk:" in err and "free; the VM needs about" in err, err
        assert fleet.vms_on(source)["web1"]["uptime_seconds"] >= started  # never stopped
    finally:
        fleet.cvm(source, "exec web1 -- rm -f /data/sparse")
    assert fleet.where("web1") == [source]


def _declare_on(fleet, name, host):
    """Make the inventory say VM `name` is on `host` (after a move cvm migrate made)."""
    entry = None
    for other in fleet.hosts:
        data = fleet.host_vars(other)
        kept = [vm for vm in data.get("cvm_vms") or [] if vm["name"] != name]
        if len(kept) != len(data.get("cvm_vms") or []):
            entry = [vm for vm in data["cvm_vms"] if vm["name"] == name][0]
            fleet.write_host_vars(other, dict(data, cvm_vms=kept))
    data = fleet.host_vars(host)
    fleet.write_host_vars(host, dict(data, cvm_vms=(data.get("cvm_vms") or []) + [entry]))


@pytest.mark.parametrize("step,ends_on", [("precopy", "source"), ("stopped", "source"),
                                          ("verify", "source"), ("commit", "target")])
def test_a_killed_move_leaves_the_vm_running_on_exactly_one_host(fleet, step, ends_on):
    """cvm migrate killed (-9) at each step: the source's netd undoes it before the commit
    (the volumes copied to the target go too) and finishes it after."""
    source = fleet.where("web1")[0]
    target = [h for h in fleet.hosts if h != source][0]
    marker = "/run/cvm-migrate-paused"
    fleet.on(source, "rm -f %s; CVM_PAUSE_AT=migrate:%s CVM_PAUSED=%s setsid -f cvm "
                     "migrate web1 --to %s >/tmp/migrate.log 2>&1" % (
                         marker, step, marker, fleet.lab.address_of(target)))
    wait_for(lambda: fleet.on(source, "test -e %s" % marker).returncode == 0, timeout=120,
             what="the move to pause at %s" % step)
    if step == "stopped":  # the layer was copied ahead while the VM ran
        assert fleet.on(target, "test -f %s/root/mark" % LAYER_COPY).returncode == 0
    fleet.on(source, "pkill -9 -f 'cvm migrate web1'")
    expected = {"source": source, "target": target}[ends_on]
    wait_for(lambda: fleet.where("web1") == [expected] and
             fleet.vms_on(expected)["web1"]["status"] == "running", timeout=60,
             what="netd to leave web1 running on %s only" % expected)
    assert fleet.cvm(expected, "exec web1 -- true")[0] == 0
    if ends_on == "source":
        assert fleet.on(target, "test ! -e /srv/web1").returncode == 0
    assert fleet.on(target, "test ! -e %s" % LAYER_COPY).returncode == 0
    _declare_on(fleet, "web1", expected)  # what move.yml would have written
