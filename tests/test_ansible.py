"""Ansible content on real ansible-core, the real engine and this host.

The playbooks run with connection local against this machine as the one container host,
in a test realm (cvm_state_dir), on a test bridge; VMs are then reached over ssh through
the inventory plugin. Static checks: ansible-lint on the playbooks and the collection,
ansible-doc for every plugin.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import yaml

from .conftest import DEBIAN, remove_realm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLAYBOOKS = os.path.join(ROOT, "playbooks")
COLLECTION = os.path.join(PLAYBOOKS, "collections", "ansible_collections", "cvm", "toolkit")
BIN = os.path.dirname(sys.executable)
MODULES = sorted(name[:-3] for name in os.listdir(os.path.join(COLLECTION, "plugins", "modules"))
                 if name.endswith(".py"))

pytestmark = pytest.mark.skipif(not shutil.which("ansible-playbook", path=BIN),
                                reason="ansible-core is not installed beside this python")


def ansible(tool, *args, timeout=900):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(PLAYBOOKS, "ansible.cfg"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_HOST_KEY_CHECKING="False",
               PATH=BIN + os.pathsep + os.environ["PATH"])
    return subprocess.run([os.path.join(BIN, tool)] + [str(a) for a in args], cwd=PLAYBOOKS,
                          env=env, capture_output=True, text=True, timeout=timeout)


def recap(result):
    """{host: {"ok": n, "changed": n, "failed": n, ...}} from PLAY RECAP."""
    hosts = {}
    for line in result.stdout.split("PLAY RECAP")[-1].splitlines():
        match = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
        if match:
            hosts[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)",
                                                                       match.group(2))}
    return hosts


def listed_inventory(source):
    """`ansible-inventory --list`, with ansible-core 2.19's unsafe-string wrappers removed."""
    result = ansible("ansible-inventory", "-i", source, "--list")
    assert result.returncode == 0, result.stderr

    def plain(value):
        if isinstance(value, dict):
            if set(value) == {"__ansible_unsafe"}:
                return value["__ansible_unsafe"]
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value
    return plain(json.loads(result.stdout))


def succeeded(result):
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return recap(result)


class Inventory:
    """A test inventory: container host `here` (this machine, connection local)."""

    def __init__(self, root, state_dir, hosts=("here",)):
        self.root = root
        self.state_dir = state_dir
        os.makedirs(os.path.join(root, "host_vars"), exist_ok=True)
        self._write("hosts.yml", {"cvm_hosts": {"hosts": {
            host: {"ansible_connection": "local"} for host in hosts}}})
        self._write("cvm_vms.yml", {"plugin": "cvm.toolkit.vms",
                                    "hosts_inventory": "hosts.yml"})

    def _write(self, relative, data):
        with open(os.path.join(self.root, relative), "w") as handle:
            yaml.safe_dump(data, handle)

    def host(self, host, **variables):
        variables.setdefault("cvm_state_dir", self.state_dir)
        variables.setdefault("cvm_default_image", DEBIAN)
        self._write(os.path.join("host_vars", host + ".yml"), variables)


@contextlib.contextmanager
def realm(tmp_path_factory, bridges=()):
    """A state directory whose VMs and bridges are all removed afterwards."""
    from cvm.api import Context
    from cvm.net import hostbridge
    root = str(tmp_path_factory.mktemp("ansible"))
    context = Context(state_root=os.path.join(root, "state"))
    try:
        yield root, context
    finally:
        remove_realm(context)
        for bridge in bridges:
            with contextlib.suppress(Exception):
                hostbridge.remove(context, bridge)


def kill_processes_under(directory):
    """Daemons host.yml started from a test's directory (netd, exporter)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                if directory.encode() in handle.read():
                    os.kill(int(pid), signal.SIGTERM)


# ---------------------------------------------------------------- static checks


def test_ansible_doc_renders_every_plugin():
    for module in MODULES:
        result = ansible("ansible-doc", "cvm.toolkit." + module)
        assert result.returncode == 0, (module, result.stderr)
        assert "EXAMPLES" in result.stdout and "RETURN VALUES" in result.stdout or \
            module == "validate" and "EXAMPLES" in result.stdout, module
    for kind, name in (("inventory", "vms"), ("connection", "cvm")):
        result = ansible("ansible-doc", "-t", kind, "cvm.toolkit." + name)
        assert result.returncode == 0 and "cvm" in result.stdout, (kind, result.stderr)
    assert {"vm", "image", "bridge", "validate"} <= set(MODULES)


def test_ansible_lint_passes():
    lint = shutil.which("ansible-lint", path=BIN)
    if lint is None:
        pytest.fail("ansible-lint is not installed (pip install -e .[test])")
    result = subprocess.run([lint, "--offline", "-q", "host.yml", "images.yml", "vms.yml",
                             "site.yml", "registry.yml", "move.yml", "roles", "inventory",
                             "collections"],
                            cwd=PLAYBOOKS, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, ANSIBLE_CONFIG="ansible.cfg",
                                     PATH=BIN + os.pathsep + os.environ["PATH"]))
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]


def test_example_inventory_lists_every_vm_with_groups():
    inventory = listed_inventory("inventory/example")
    assert set(inventory["cvm_vms"]["hosts"]) == {"web1", "web2", "db1", "app1", "cache1",
                                                  "build1"}
    assert set(inventory["webservers"]["hosts"]) == {"web1", "web2"}
    assert set(inventory["cvm_on_host2"]["hosts"]) == {"app1", "cache1", "build1"}
    variables = inventory["_meta"]["hostvars"]
    assert variables["db1"]["ansible_host"] == "192.0.2.31"
    assert variables["db1"]["cvm_memory"] == "8g"
    assert variables["build1"]["ansible_connection"] == "cvm.toolkit.cvm"
    assert variables["build1"]["cvm_host_address"] == "192.0.2.12"


def test_example_inventory_is_valid_and_its_plays_parse():
    result = ansible("ansible-playbook", "-i", "inventory/example", "site.yml", "--syntax-check")
    assert result.returncode == 0, result.stdout + result.stderr
    listed = listed_inventory("inventory/example")
    hosts = {host: listed["_meta"]["hostvars"][host] for host in listed["cvm_hosts"]["hosts"]}
    assert sorted(hosts) == ["host1", "host2"]
    problems, count = validation_problems(hosts)
    assert problems == [] and count == 6


def validation_problems(hosts):
    sys.path.insert(0, os.path.join(PLAYBOOKS, "collections"))
    try:
        from ansible_collections.cvm.toolkit.plugins.modules.validate import problems_of
    finally:
        sys.path.pop(0)
    return problems_of(hosts)


# ---------------------------------------------------------------- host.yml


@pytest.mark.engine
@pytest.mark.slow
def test_host_playbook_converges_then_changes_nothing(tmp_path_factory, engine):
    """A fresh venv, source and units under the test's directory; Docker, lxcfs and the
    sysctls are this host's own (already as cvm wants them, so they must stay unchanged)."""
    bridge = "cvmah" + os.urandom(2).hex()
    with realm(tmp_path_factory, bridges=[bridge]) as (root, context):
        inventory = Inventory(os.path.join(root, "inv"), context.store.root)
        inventory.host("here", cvm_venv=os.path.join(root, "venv"),
                       cvm_src_dir=os.path.join(root, "src"),
                       cvm_link=os.path.join(root, "bin", "cvm"),
                       cvm_unit_dir=os.path.join(root, "units"),
                       cvm_log_dir=os.path.join(root, "log"),
                       cvm_exporter_listen="127.0.0.1:%d" % free_port(),
                       cvm_bridges=[{"name": bridge, "address": "198.51.100.241/28"}])
        try:
            first = succeeded(ansible("ansible-playbook", "-i", inventory.root, "host.yml"))
            assert first["here"]["changed"] > 0
            second = succeeded(ansible("ansible-playbook", "-i", inventory.root, "host.yml"))
            assert second["here"]["changed"] == 0, second

            from cvm import client
            assert client.status(context.store.root), "host.yml did not start cvm netd"
            assert os.path.exists("/sys/class/net/%s/bridge" % bridge)
            assert context.store.read_bridge(bridge)["address"] == "198.51.100.241/28"
            with open(os.path.join(root, "units", "cvm-netd.service")) as handle:
                unit = handle.read()
            assert "Environment=CVM_STATE_DIR=%s" % context.store.root in unit
            assert "ExecStart=%s netd" % os.path.join(root, "bin", "cvm") in unit
            command = os.path.join(root, "bin", "cvm")
            assert os.path.realpath(command) == os.path.join(root, "venv", "bin", "cvm")
            version = subprocess.run([command, "--version"], capture_output=True, text=True)
            assert version.returncode == 0 and "cvm" in version.stdout
            listing = subprocess.run([command, "ls"], capture_output=True, text=True,
                                     env=dict(os.environ, CVM_STATE_DIR=context.store.root))
            assert listing.returncode == 0 and listing.stdout.startswith("NAME")
        finally:
            kill_processes_under(root)


def free_port():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- vms.yml


VM_NET = "198.51.100.%d/24"


def vm(name, address, memory, **extra):
    return dict(name=name, memory=memory, cpus=0.5, tags=["webservers"],
                nics=[{"mode": "bridge", "link": extra.pop("bridge"), "ip": VM_NET % address,
                       "gw": "198.51.100.1"}], **extra)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, images):
    """Three Debian VMs declared in an inventory, on a bridge host.yml's bridge task made."""
    bridge = "cvmav" + os.urandom(2).hex()
    with realm(tmp_path_factory, bridges=[bridge]) as (root, context):
        key = os.path.join(root, "id_ed25519")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        with open(key + ".pub") as handle:
            public_key = handle.read().strip()
        inventory = Inventory(os.path.join(root, "inv"), context.store.root)
        names = ["a%s%d" % (os.urandom(2).hex(), i) for i in range(3)]
        vms = [vm(names[0], 11, "256m", bridge=bridge),
               vm(names[1], 12, "256m", bridge=bridge),
               vm(names[2], 13, "384m", bridge=bridge)]
        settings = dict(cvm_bridges=[{"name": bridge, "address": "198.51.100.1/24"}],
                        cvm_ssh_keys=[public_key], cvm_vms=vms)
        inventory.host("here", **settings)
        bridge_play = ansible("ansible-playbook", "-i", inventory.root, "host.yml",
                              "--start-at-task", "Bridges for VMs")
        succeeded(bridge_play)
        yield dict(root=root, context=context, inventory=inventory, names=names, key=key,
                   settings=settings)


def fleet_created(fleet):
    """The fleet with its VMs, made by vms.yml unless the test of that already made them
    (so that each test also runs alone: pytest -k)."""
    if not fleet.get("created"):
        succeeded(run_vms(fleet))
        fleet["created"] = True
    return fleet


def run_vms(fleet, *args):
    return ansible("ansible-playbook", "-i", fleet["inventory"].root, "vms.yml", *args)


def container_of(context, name):
    info = context.engine.named(name)
    assert info is not None, "no container for %s" % name
    return info["Id"], info["HostConfig"]["Memory"]


@pytest.mark.engine
@pytest.mark.slow
def test_vms_playbook_creates_then_changes_nothing(fleet):
    first = succeeded(run_vms(fleet))
    fleet["created"] = True
    assert first["here"]["changed"] == 1 and first["here"]["failed"] == 0
    context = fleet["context"]
    for name in fleet["names"]:
        record = context.store.read_vm(name)
        assert record is not None, name
        assert context.engine.named(name)["State"]["Running"], name
    second = succeeded(run_vms(fleet))
    assert second["here"]["changed"] == 0, second


@pytest.mark.engine
@pytest.mark.slow
def test_vms_reached_over_ssh_through_the_inventory_plugin(fleet):
    fleet_created(fleet)
    play = os.path.join(fleet["root"], "facts.yml")
    with open(play, "w") as handle:
        yaml.safe_dump([{
            "name": "Facts of every VM", "hosts": "webservers", "gather_facts": False,
            "tasks": [{"name": "A VM just made is still starting sshd",
                       "ansible.builtin.wait_for_connection": {"timeout": 60}},
                      {"name": "Facts", "ansible.builtin.setup": {}},
                      {"name": "The VM is what the inventory declares",
                       "ansible.builtin.assert": {"that": [
                           "ansible_hostname == inventory_hostname",
                           "ansible_default_ipv4.address == cvm_spec.nics[0].ip.split('/')[0]",
                           "ansible_memtotal_mb == cvm_memory[:-1] | int",
                       ]}}]}], handle)
    result = ansible("ansible-playbook", "-i", fleet["inventory"].root, play,
                     "-e", "ansible_ssh_private_key_file=%s" % fleet["key"],
                     "-e", "ansible_ssh_common_args='-o StrictHostKeyChecking=no "
                           "-o UserKnownHostsFile=/dev/null'")
    hosts = succeeded(result)
    assert set(fleet["names"]) <= set(hosts), hosts
    assert all(hosts[name]["ok"] == 3 for name in fleet["names"]), hosts


@pytest.mark.engine
@pytest.mark.slow
def test_connection_plugin_reaches_a_vm_through_cvm_exec(fleet):
    """No ssh: modules, file copies and facts through `cvm exec` on the host."""
    fleet_created(fleet)
    name = fleet["names"][0]
    base = ["-i", fleet["inventory"].root, name, "-e", "ansible_connection=cvm.toolkit.cvm",
            "-e", "cvm_vm=%s" % name, "-e", "cvm_state_dir=%s" % fleet["context"].store.root,
            "-e", "cvm_command=%s" % os.path.join(BIN, "cvm")]
    copied = ansible("ansible", *base, "-m", "ansible.builtin.copy", "-a",
                     "content='through cvm exec\n' dest=/root/plugin.txt")
    assert copied.returncode == 0 and "CHANGED" in copied.stdout, copied.stdout + copied.stderr
    read = ansible("ansible", *base, "-m", "ansible.builtin.command", "-a",
                   "cat /root/plugin.txt")
    assert read.returncode == 0 and "through cvm exec" in read.stdout, read.stdout
    facts = ansible("ansible", *base, "-m", "ansible.builtin.setup", "-a",
                    "filter=ansible_hostname")
    assert '"ansible_hostname": "%s"' % name in facts.stdout, facts.stdout
    # Modules run with the VM's privileges (Docker's exec), not the host's.
    caps = ansible("ansible", *base, "-m", "ansible.builtin.command", "-a",
                   "grep -E '^(CapEff|Seccomp):' /proc/self/status")
    expected = subprocess.run(["docker", "exec", name, "grep", "-E", "^(CapEff|Seccomp):",
                               "/proc/self/status"], capture_output=True, text=True).stdout
    assert expected and expected.strip() in caps.stdout.replace("\\t", "\t"), caps.stdout


@pytest.mark.engine
@pytest.mark.slow
def test_check_mode_reports_one_memory_change_then_it_is_made_live(fleet):
    fleet_created(fleet)
    context, names = fleet["context"], fleet["names"]
    before = container_of(context, names[2])
    fleet["settings"]["cvm_vms"][2]["memory"] = "512m"
    fleet["inventory"].host("here", **fleet["settings"])

    checked = run_vms(fleet, "--check", "--diff")
    assert succeeded(checked)["here"]["changed"] == 1
    assert '-    "memory": "384m"' in checked.stdout and '+    "memory": "512m"' in checked.stdout
    changed_items = re.findall(r"^changed: \[here\] => \(item=(\S+)\)", checked.stdout, re.M)
    assert changed_items == [names[2]], checked.stdout
    assert container_of(context, names[2]) == before, "--check changed the VM"

    succeeded(run_vms(fleet))
    container_id, memory = container_of(context, names[2])
    assert container_id == before[0], "the VM was recreated, not changed live"
    assert memory == 512 * 1024 * 1024
    assert succeeded(run_vms(fleet))["here"]["changed"] == 0


@pytest.mark.engine
@pytest.mark.slow
def test_provision_reports_per_host_results_and_fails_non_zero(fleet, tmp_path):
    fleet_created(fleet)
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ["PATH"])
    cvm = os.path.join(BIN, "cvm")
    good = subprocess.run([cvm, "provision", "-i", fleet["inventory"].root, "--playbook",
                           "vms.yml", "--check", "--json"], capture_output=True, text=True,
                          env=env, timeout=600)
    assert good.returncode == 0, good.stderr
    result = json.loads(good.stdout)
    assert result["ok"] and [h["host"] for h in result["hosts"]] == ["here"]
    assert result["hosts"][0]["failed"] == 0

    # A VM whose bridge the host does not declare: provision fails, naming host and task.
    broken = dict(fleet["settings"])
    broken["cvm_vms"] = broken["cvm_vms"] + [vm("x" + os.urandom(3).hex(), 40, "128m",
                                                bridge="nosuchbr0")]
    inventory = Inventory(str(tmp_path / "inv"), fleet["context"].store.root)
    inventory.host("here", **broken)
    bad = subprocess.run([cvm, "provision", "-i", inventory.root, "--playbook", "vms.yml"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert bad.returncode != 0
    assert "FAILED here: Validate every host's VMs and bridges" in bad.stderr
    assert "nosuchbr0" in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("cvm: provision: failed on here")

    import cvm
    provision = cvm.provision
    api_result = provision(inventory.root, "vms.yml")
    assert not api_result.ok and api_result.hosts["here"].failed == 1


@pytest.mark.engine
@pytest.mark.slow
def test_absent_removes_the_vm_and_its_wiring(fleet):
    fleet_created(fleet)
    context, names = fleet["context"], fleet["names"]
    from cvm.net.base import default_host_name
    host_interface = default_host_name(names[1], 0)
    assert os.path.exists("/sys/class/net/%s" % host_interface)
    fleet["settings"]["cvm_vms"][1]["state"] = "absent"
    fleet["inventory"].host("here", **fleet["settings"])
    assert succeeded(run_vms(fleet))["here"]["changed"] == 1
    assert context.engine.named(names[1]) is None
    assert context.store.read_vm(names[1]) is None
    assert not os.path.exists("/sys/class/net/%s" % host_interface)
    assert succeeded(run_vms(fleet))["here"]["changed"] == 0


# ---------------------------------------------------------------- validation


@pytest.mark.engine
def test_duplicate_ip_across_hosts_fails_validation_and_creates_nothing(tmp_path_factory,
                                                                         images):
    with realm(tmp_path_factory) as (root, context):
        inventory = Inventory(os.path.join(root, "inv"), context.store.root,
                              hosts=("hosta", "hostb"))
        bridge = {"name": "cvmdup0", "address": "192.0.2.1/24"}
        for host, name in (("hosta", "dupa1"), ("hostb", "dupb1")):
            inventory.host(host, cvm_bridges=[bridge], cvm_vms=[{
                "name": name, "nics": [{"mode": "bridge", "link": "cvmdup0",
                                        "ip": "192.0.2.21/24"}]}])
        result = ansible("ansible-playbook", "-i", inventory.root, "site.yml", "--tags", "vms")
        assert result.returncode != 0
        assert "Validate every host's VMs and bridges" in result.stdout
        assert "address 192.0.2.21 is used by dupa1 on hosta and by dupb1 on hostb" \
            in result.stdout
        assert context.store.vm_names() == []
        assert context.engine.vm_containers(context.realm) == []
        assert not os.path.exists("/sys/class/net/cvmdup0")


def test_validation_lists_every_problem_at_once():
    bridge = [{"name": "br0", "address": "192.0.2.1/24"}]
    problems, count = validation_problems({
        "h1": {"cvm_bridges": bridge, "cvm_vms": [
            {"name": "web1", "nics": [{"mode": "bridge", "link": "br0", "ip": "192.0.2.5/24",
                                       "mac": "02:00:00:00:00:01"}]},
            {"name": "web2", "nics": [{"mode": "bridge", "link": "br0",
                                       "ip": "203.0.113.5/24"}]},
            {"name": "web3", "nics": [{"mode": "bridge", "link": "br9", "ip": "192.0.2.9/24"}]},
            {"name": "bad", "memory": "lots"}]},
        "h2": {"cvm_bridges": bridge, "cvm_vms": [
            {"name": "web1", "nics": [{"mode": "bridge", "link": "br0", "ip": "192.0.2.6/24"}]},
            {"name": "db1", "nics": [{"mode": "bridge", "link": "br0", "ip": "192.0.2.5/24",
                                      "mac": "02:00:00:00:00:01"}]}]}})
    text = "\n".join(problems)
    assert "VM name web1 is declared on h1 and on h2" in text
    assert "address 192.0.2.5 is used by web1 on h1 and by db1 on h2" in text
    assert "MAC 02:00:00:00:00:01 is used by web1 on h1 and by db1 on h2" in text
    assert "web2 on h1 has 203.0.113.5, outside bridge br0's subnet 192.0.2.0/24" in text
    assert "web3 on h1 uses bridge br9, which h1 does not declare" in text
    assert "bad on h1: memory" in text
    assert len(problems) == 6 and count == 5
