"""fleet: a 3-host lab (cvm lab) taken from bare hosts to 30 running VMs, and what a fleet
costs and gives: provision vs `cvm apply` host after host over ssh, a no-change run, the
registry vs a build per host, VMs across hosts vs on one host, and a move's downtime.

BENCH_FLEET_VMS sets the VMs per host (10); BENCH_FLEET_PARTS which parts run after (a)
(registry,paths,move). The lab is made in a directory of its own and removed at the end.
"""

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time

import yaml

from common import CVM, header

PER_HOST = int(os.environ.get("BENCH_FLEET_VMS", "10"))
SUBNET = "203.0.113.224/27"
OVERLAY = "198.51.100"


class Bench:
    def __init__(self):
        from cvm.lab import Lab
        self.dir = tempfile.mkdtemp(prefix="cvm-bench-fleet-")
        self.lab = Lab(self.dir)
        token = secrets.token_hex(2)
        self.lab.up(3, prefix="b%s" % token, bridge="cvb%s" % token, subnet=SUBNET)
        self.hosts = [self.lab.host_name(i) for i in (1, 2, 3)]

    def write_vms(self, count):
        for index, host in enumerate(self.hosts, start=1):
            vms = [{"name": "%s%d" % ("abc"[index - 1], n), "memory": "128m",
                    "nics": [{"mode": "bridge", "link": "ovl0", "ip": "auto"}]}
                   for n in range(count)]
            data = {"cvm_bridges": [{"name": "ovl0", "address": "%s.%d/24" % (OVERLAY, index),
                                     "pool": "%s.100-%s.199" % (OVERLAY, OVERLAY),
                                     "vxlan": {"id": 100}}],
                    "cvm_vms": vms}
            os.makedirs(os.path.join(self.lab.inventory, "host_vars"), exist_ok=True)
            with open(os.path.join(self.lab.inventory, "host_vars", host + ".yml"), "w") as f:
                yaml.safe_dump(data, f)

    def provision(self, playbook="site.yml"):
        started = time.monotonic()
        result = subprocess.run([CVM, "provision", "-i", self.lab.inventory, "--playbook",
                                 playbook, "--json"], capture_output=True, text=True)
        took = time.monotonic() - started
        if result.returncode != 0:
            raise SystemExit("bench: provision failed: %s" % result.stdout[-2000:])
        hosts = json.loads(result.stdout)["hosts"]
        return took, sum(h["changed"] for h in hosts)

    def on(self, host, command, timeout=900, input=None):
        result = self.lab.ssh(host, command, timeout=timeout, input=input)
        if result.returncode != 0:
            raise SystemExit("bench: %s on %s failed: %s" % (command, host, result.stderr))
        return result.stdout

    def remove_vms(self):
        for host in self.hosts:
            self.on(host, "cvm ls --json | python3 -c 'import json,sys; print(\" \".join(r["
                          "\"name\"] for r in json.load(sys.stdin)))' | xargs -r cvm rm -f")

    def close(self):
        self.lab.down()
        shutil.rmtree(self.dir, ignore_errors=True)


def converge(bench):
    header("fleet (a): bare 3-host lab to %d running VMs" % (3 * PER_HOST))
    bench.write_vms(PER_HOST)
    took, changed = bench.provision()
    print("%-52s %8.1f s  (%d changes)" % ("cvm provision, site.yml, from bare hosts", took,
                                           changed))
    took, changed = bench.provision()
    print("%-52s %8.1f s  (%d changes)" % ("the same, again (nothing to change)", took,
                                           changed))
    bench.remove_vms()
    took, _ = bench.provision("vms.yml")
    print("%-52s %8.1f s" % ("cvm provision, vms.yml: %d VMs, hosts in parallel" %
                             (3 * PER_HOST), took))
    bench.remove_vms()
    started = time.monotonic()
    with open(os.path.join(bench.lab.inventory, "cvm_leases.json")) as handle:
        leases = next(iter(json.load(handle).values()))
    for index, host in enumerate(bench.hosts, start=1):
        with open(os.path.join(bench.lab.inventory, "host_vars", host + ".yml")) as handle:
            vms = yaml.safe_load(handle)["cvm_vms"]
        for vm in vms:
            vm["image"] = "cvm/debian12"
            vm["nics"][0]["ip"] = "%s/24" % leases[vm["name"]]
        bench.on(host, "cat > /tmp/vms.yml && cvm apply -f /tmp/vms.yml",
                 input=yaml.safe_dump({"vms": vms}))
    took = time.monotonic() - started
    print("%-52s %8.1f s" % ("cvm apply, host after host over ssh (baseline)", took))


def registry(bench, engine):
    header("fleet (b): the Debian 12 image on 3 hosts: registry vs a build per host")
    for host in bench.hosts:
        bench.remove_vms()
        bench.on(host, "docker rmi -f cvm/debian12:latest $(docker images -q "
                       "'%s/cvm/debian12') >/dev/null 2>&1; true" % bench.lab.registry)
    took, _ = bench.provision("images.yml")
    print("%-52s %8.1f s" % ("images.yml: pushed once, pulled by digest on 3 hosts", took))
    from cvm import images
    from cvm.context import Context
    ctx = Context(state_root=os.path.join(bench.dir, "build-state"))
    cache = tempfile.mkdtemp(prefix="cvm-bench-rootfs-")
    started = time.monotonic()
    os.environ["CVM_CACHE_DIR"] = cache  # nothing cached: what a host without it pays
    try:
        import importlib
        importlib.reload(images)
        images.build("debian12", rootfs="debootstrap", tag="cvm-bench/debian12:build", ctx=ctx)
    finally:
        os.environ.pop("CVM_CACHE_DIR")
        importlib.reload(images)
        shutil.rmtree(cache, ignore_errors=True)
        engine.remove_image("cvm-bench/debian12:build", force=True)
    one = time.monotonic() - started
    print("%-52s %8.1f s" % ("one build, debootstrap and layer (what each host pays)", one))
    print("%-52s %8.1f s  (%.1fx the registry)" % ("builds on 3 hosts, one after another",
                                                    3 * one, 3 * one / took))


PING = re.compile(r"rtt min/avg/max/mdev = [\d.]+/([\d.]+)/")
SENDER = """import socket, sys, time
s = socket.create_connection((sys.argv[1], 5001))
data, sent, started = b"x" * 65536, 0, time.monotonic()
while time.monotonic() - started < 3:
    s.sendall(data)
    sent += len(data)
print(sent * 8 / (time.monotonic() - started) / 1e9)
"""
RECEIVER = """import socket
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", 5001))
listener.listen()
connection, _ = listener.accept()
while connection.recv(1 << 20):
    pass
"""


def put(bench, host, vm, path, text):
    bench.on(host, "cvm exec %s -- sh -c 'cat > %s'" % (vm, path), input=text)


def paths(bench):
    header("fleet (c): VM to VM, same host vs across hosts (VXLAN)")
    bench.write_vms(2)
    bench.provision("vms.yml")
    put(bench, bench.hosts[0], "a0", "/tmp/send.py", SENDER)
    for label, (host, vm) in {"same host": (bench.hosts[0], "a1"),
                              "across hosts": (bench.hosts[1], "b0")}.items():
        target = json.loads(bench.on(host, "cvm inspect %s --json" % vm))["addresses"][0] \
            .split("/")[0]
        out = bench.on(bench.hosts[0], "cvm exec a0 -- ping -c 50 -i 0.05 -q %s" % target)
        latency = float(PING.search(out).group(1))
        put(bench, host, vm, "/tmp/receive.py", RECEIVER)
        bench.on(host, "setsid -f cvm exec %s -- python3 /tmp/receive.py >/dev/null 2>&1; "
                       "sleep 0.5" % vm)
        gbits = float(bench.on(bench.hosts[0], "cvm exec a0 -- python3 /tmp/send.py %s" %
                               target).strip())
        print("%-30s ping %7.3f ms   TCP %6.2f Gbit/s" % (label, latency, gbits))


def move(bench):
    header("fleet (d): moving an idle Debian VM with a 100 MiB volume: downtime")
    source, target, watcher = bench.hosts
    bench.remove_vms()
    for host in bench.hosts:
        with open(os.path.join(bench.lab.inventory, "host_vars", host + ".yml")) as handle:
            data = yaml.safe_load(handle)
        data["cvm_vms"] = []
        if host == source:
            data["cvm_vms"] = [{"name": "mover", "memory": "256m", "volumes": [
                "/srv/mover:/data"], "nics": [{"mode": "bridge", "link": "ovl0",
                                                "ip": "%s.50/24" % OVERLAY}]}]
        if host == watcher:
            data["cvm_vms"] = [{"name": "watch", "memory": "128m", "nics": [
                {"mode": "bridge", "link": "ovl0", "ip": "%s.60/24" % OVERLAY}]}]
        with open(os.path.join(bench.lab.inventory, "host_vars", host + ".yml"), "w") as f:
            yaml.safe_dump(data, f)
    bench.provision("vms.yml")
    bench.on(source, "cvm exec mover -- dd if=/dev/urandom of=/data/blob bs=1M count=100 "
                     "2>/dev/null")
    # Its own stdio too: a detached watcher holding ssh's pipe would keep ssh waiting.
    # Line-buffered: ping's stdout is a pipe, and its last replies would sit in its buffer.
    bench.on(watcher, "setsid -f sh -c 'cvm exec watch -- stdbuf -oL ping -D -i 0.01 -W 1 "
                      "%s.50 > /tmp/pings 2>&1' </dev/null >/dev/null 2>&1; sleep 1" % OVERLAY)
    started = time.time()
    result = subprocess.run([CVM, "move", "mover", "--to", target, "-i", bench.lab.inventory],
                            capture_output=True, text=True)
    total = time.time() - started
    if result.returncode != 0:
        raise SystemExit("bench: move failed: %s" % result.stderr[-1000:])

    def replies_so_far():
        return [float(line.split("]")[0].strip("[")) for line in bench.on(
            watcher, "cat /tmp/pings").splitlines()
            if line.startswith("[") and "bytes from" in line]

    deadline = time.time() + 30  # until the target has answered after the move ended
    while time.time() < deadline and not any(r > started + total for r in replies_so_far()):
        time.sleep(0.5)
    bench.on(watcher, "pkill -INT -f 'ping -[D]' ; true")  # not this shell's own line
    replies = replies_so_far()
    gaps = [b - a for a, b in zip(replies, replies[1:])]
    if not replies or replies[0] > started or replies[-1] < started + total:
        for host in bench.hosts:  # where each host's overlay sends the VMs' frames
            print("%s: %s" % (host, bench.on(host, "bridge fdb show br ovl0 | grep -v "
                                                   "permanent; ip neigh show dev ovl0; true")))
        print("watch: %s" % bench.on(watcher, "cvm exec watch -- ip neigh; true"))
        raise SystemExit("bench: the pings do not span the move (%d replies, %s to %s; the "
                         "move from %.2f to %.2f)" % (len(replies), replies[:1], replies[-1:],
                                                      started, started + total))
    print("%-52s %8.2f s" % ("downtime: last reply from the source to the first from "
                             "the target", max(gaps)))
    print("%-52s %8.2f s" % ("the whole `cvm move` (checks, ansible, inventory)", total))


def main():
    from cvm.engine import Engine
    parts = os.environ.get("BENCH_FLEET_PARTS", "registry,paths,move").split(",")
    bench = Bench()
    try:
        converge(bench)  # every other part needs the provisioned fleet
        if "registry" in parts:
            registry(bench, Engine())
        if "paths" in parts:
            paths(bench)
        if "move" in parts:
            move(bench)
    finally:
        bench.close()
