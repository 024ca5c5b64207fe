"""`cvm demo`: a few VMs on a host-only bridge, shown working with real commands.

Everything is built offline (the Debian 12 image comes from debootstrap) and lives on
a bridge that reaches nothing outside this host. Running it again converges (the
VMs are applied, not recreated); `cvm demo --clean` removes all of it.
"""

import os
import shlex
import subprocess
import sys
import time

BRIDGE = "cvmdemo0"
# A quarter of a documentation range: the test suite and the labs (`cvm lab`: its
# 203.0.113.192/27, the tests' 203.0.113.224/27) use other parts, so all can run beside it.
BRIDGE_ADDRESS = "203.0.113.129/26"
POOL = "203.0.113.150-203.0.113.190"
IMAGE = "cvm/debian12:latest"
DEMO_DIR = "/var/lib/cvm/demo"
KEY = os.path.join(DEMO_DIR, "id_ed25519")
VMS = [
    {"name": "web1", "cpus": 1, "memory": "512m", "ip": "203.0.113.131"},
    {"name": "web2", "cpus": 0.5, "memory": "256m", "ip": "203.0.113.132"},
    {"name": "db1", "cpus": 1.5, "memory": "1g", "ip": "203.0.113.141"},
]


def spec_file():
    with open(KEY + ".pub") as handle:
        key = handle.read().strip()
    lines = ["# cvm demo: three Debian 12 VMs with systemd on a host-only bridge.",
             "defaults:", "  image: %s" % IMAGE, "  init: systemd",
             "  ssh_keys: [%s]" % key, "vms:"]
    for vm in VMS:
        lines += ["  - name: %s" % vm["name"], "    cpus: %s" % vm["cpus"],
                  "    memory: %s" % vm["memory"], "    nics:",
                  "      - {mode: bridge, link: %s, ip: %s/26, gw: 203.0.113.129}" % (
                      BRIDGE, vm["ip"])]
    path = os.path.join(DEMO_DIR, "vms.yml")
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def say(text):
    sys.stdout.write("\n\033[1m# %s\033[0m\n" % text)
    sys.stdout.flush()


def run(command, check=True):
    sys.stdout.write("$ %s\n" % command)
    sys.stdout.flush()
    result = subprocess.run(command, shell=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(result.stdout)
    if check and result.returncode != 0:
        raise SystemExit("demo: `%s` failed (exit %d)" % (command, result.returncode))
    return result


def cvm_command():
    return shlex.quote(os.path.join(os.path.dirname(sys.executable), "cvm"))


def wait_running(cvm, names, timeout=60):
    deadline = time.monotonic() + timeout
    pending = list(names)
    while pending and time.monotonic() < deadline:
        pending = [n for n in pending if subprocess.run(
            [cvm, "exec", n, "--", "systemctl", "is-system-running"], capture_output=True,
            text=True).stdout.strip() not in ("running", "degraded")]
        time.sleep(0.2)
    return pending


def outdated(names):
    """Demo VMs that would not show what the demo says: made from an older build of the
    image, or without LXCFS while it now runs. Demo VMs are disposable: they are remade."""
    from . import api
    from .engine import lxcfs_running
    from .errors import NotFound
    ctx = api.default_context()
    current = ctx.engine.image(IMAGE)["Id"]
    stale = []
    for name in names:
        try:
            vm = api.get(name, ctx)
        except NotFound:
            continue
        if (vm.container or {}).get("Image") != current or (
                lxcfs_running() and not vm.record.get("lxcfs")):
            stale.append(name)
    return stale


def mem_total_mib(free_output):
    for line in free_output.splitlines():
        if line.startswith("Mem:"):
            return int(line.split()[1])
    return None


def main(clean=False):
    cvm = cvm_command()
    if clean:
        say("removing the demo")
        run("%s rm -f %s" % (cvm, " ".join(v["name"] for v in VMS)), check=False)
        run("%s bridge rm %s" % (cvm, BRIDGE), check=False)
        return 0
    os.makedirs(DEMO_DIR, mode=0o700, exist_ok=True)
    if not os.path.exists(KEY):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", KEY,
                        "-C", "cvm-demo"], check=True)
    say("the host, as cvm sees it")
    run("%s doctor" % cvm, check=False)
    say("a host-only bridge (no uplink: nothing leaves this host)")
    if subprocess.run([os.path.join(os.path.dirname(sys.executable), "cvm"), "bridge", "ls",
                       "--json"], capture_output=True, text=True).stdout.find(
                           '"%s"' % BRIDGE) < 0:
        run("%s bridge add %s --address %s --pool %s" % (cvm, BRIDGE, BRIDGE_ADDRESS, POOL))
    run("%s bridge ls" % cvm)
    say("three VMs from one spec file, each with its own static IP, limits and systemd")
    path = spec_file()
    run("cat %s" % path)
    stale = outdated([v["name"] for v in VMS])
    if stale:
        say("%s: made from an older image build or without LXCFS; made again" % ", ".join(stale))
        run("%s rm -f %s" % (cvm, " ".join(stale)))
    run("%s apply -f %s" % (cvm, path))
    run("%s ls" % cvm)
    run("%s net ls" % cvm)
    pending = wait_running(cvm, [v["name"] for v in VMS])
    if pending:
        raise SystemExit("demo: %s did not reach running" % ", ".join(pending))
    say("they boot a real init, and behave like VMs")
    run("%s exec web1 -- systemctl is-system-running" % cvm)
    run("%s exec web1 -- sh -c 'hostname; systemctl is-active ssh cron rsyslog'" % cvm)
    say("the same static IPs a VM would have, reachable from the host and from each other")
    run("ping -c1 -W2 203.0.113.131 | head -2")
    run("%s exec web1 -- ping -c1 -W2 203.0.113.141 | head -2" % cvm)
    run("ssh -i %s -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "
        "root@203.0.113.141 'hostname; uptime'" % KEY)
    say("free and top inside a VM tell the VM's truth (db1 has 1.5 CPUs and 1 GiB)")
    total = mem_total_mib(run("%s exec db1 -- free -m" % cvm).stdout)
    if total != 1024:
        raise SystemExit("demo: free in db1 says %s MiB of memory, not its 1024" % total)
    run("%s exec db1 -- sh -c 'top -bn1 | head -5'" % cvm)
    say("restarted behind cvm's back, a VM comes back on its IP: cvm netd re-wires it")
    run("docker restart -t 1 web2")
    started = time.monotonic()
    while subprocess.run(["ping", "-c1", "-W0.05", "203.0.113.132"],
                         capture_output=True).returncode:
        if time.monotonic() - started > 30:
            raise SystemExit("demo: web2 did not come back on its address")
    print("web2 answers on 203.0.113.132 again, %.2f s after `docker restart` returned" % (
        time.monotonic() - started))
    say("done: the VMs keep running. Try `cvm enter web1`; remove it all with `cvm demo --clean`")
    return 0


# ---------------------------------------------------------------- the fleet demo


def _fleet_inventory(lab, key):
    """host_vars of the lab's three hosts: an overlay bridge on each, two VMs each (one with
    a static address, one from the fleet-wide pool), the demo's key in every VM."""
    import yaml
    with open(key + ".pub") as handle:
        public = handle.read().strip()
    os.makedirs(os.path.join(lab.inventory, "host_vars"), exist_ok=True)
    os.makedirs(os.path.join(lab.inventory, "group_vars"), exist_ok=True)
    with open(os.path.join(lab.inventory, "group_vars", "cvm_hosts.yml"), "w") as handle:
        yaml.safe_dump({"cvm_ssh_keys": [public]}, handle)
    for index in (1, 2, 3):
        host = lab.host_name(index)
        data = {"cvm_bridges": [{"name": "ovl0", "address": "198.51.100.%d/24" % index,
                                 "pool": "198.51.100.100-198.51.100.199",
                                 "vxlan": {"id": 100}}],
                "cvm_vms": [{"name": "web%d" % index, "memory": "256m", "nics": [
                    {"mode": "bridge", "link": "ovl0", "ip": "198.51.100.1%d/24" % index}]},
                            {"name": "app%d" % index, "memory": "256m", "nics": [
                                {"mode": "bridge", "link": "ovl0", "ip": "auto"}]}]}
        with open(os.path.join(lab.inventory, "host_vars", host + ".yml"), "w") as handle:
            yaml.safe_dump(data, handle, sort_keys=False)


def fleet(clean=False):
    """A lab of three cvm hosts, converged from bare by one inventory, then shown working:
    images from the registry, VMs across hosts on an overlay, a VM moved."""
    from .lab import Lab
    cvm = cvm_command()
    lab = Lab()
    if clean:
        say("removing the lab")
        run("%s lab down" % cvm, check=False)
        return 0
    say("a lab of three real cvm hosts on this machine (containers with systemd, dockerd, "
        "lxcfs, sshd)")
    run("%s lab up -n 3" % cvm)
    key = os.path.join(lab.dir, "demo_key")
    if not os.path.exists(key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key,
                        "-C", "cvm-demo"], check=True)
    _fleet_inventory(lab, key)
    hosts = [lab.host_name(i) for i in (1, 2, 3)]
    on = "ssh -i %s %s root@%%s" % (lab.key, " ".join(
        "-o %s" % option for option in ("StrictHostKeyChecking=no",
                                        "UserKnownHostsFile=/dev/null", "LogLevel=ERROR")))
    say("one inventory: an overlay bridge on every host, two VMs on each")
    run("cat %s" % os.path.join(lab.inventory, "host_vars", hosts[0] + ".yml"))
    say("cvm provision: the registry, the hosts (offline), the image built once and pulled "
        "by digest, the VMs")
    run("%s provision -i %s" % (cvm, lab.inventory))
    for host in hosts:
        run("%s 'cvm ls'" % (on % lab.address_of(host)))
    say("VMs reach each other across hosts (VXLAN), ip: auto resolved once for the fleet")
    run("cat %s" % os.path.join(lab.inventory, "cvm_leases.json"))
    run("%s 'cvm exec web1 -- ping -c2 -W2 198.51.100.13 | tail -2'" % (
        on % lab.address_of(hosts[0])))
    say("a second run changes nothing")
    run("%s provision -i %s | tail -5" % (cvm, lab.inventory))
    say("web1 moves to %s: same address, same data; the inventory follows" % hosts[1])
    run("%s 'cvm exec web1 -- sh -c \"echo written-on-%s > /root/mark\"'" % (
        on % lab.address_of(hosts[0]), hosts[0]))
    run("%s move web1 --to %s -i %s" % (cvm, hosts[1], lab.inventory))
    run("%s 'cvm ls; cvm exec web1 -- cat /root/mark'" % (on % lab.address_of(hosts[1])))
    run("%s 'cvm exec web3 -- ping -c1 -W2 198.51.100.11 | tail -2'" % (
        on % lab.address_of(hosts[2])))
    say("done: the lab keeps running (cvm lab ls); remove it with `cvm demo --fleet --clean`")
    return 0
