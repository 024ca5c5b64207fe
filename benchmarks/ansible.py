"""Issue 7 benchmark: vms.yml wall time for 10, 30 and 50 VMs, create and no-change.

Baseline, in the same run on the same image: a loop of community.docker.docker_container
tasks creating the same containers with network_mode none (the collection is taken
from PyPI's `ansible` package); if that cannot be had, `cvm create` in a shell loop.
cvm's VMs get a static IP on a host-only bridge and are wired and probed; the
baseline's containers have no network at all.
"""

import contextlib
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

import yaml

from common import DEBIAN, header, realm

SIZES = [int(n) for n in os.environ.get("BENCH_ANSIBLE_SIZES", "10,30,50").split(",")]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLAYBOOKS = os.path.join(ROOT, "playbooks")
BIN = os.path.dirname(sys.executable)
CACHE = os.environ.get("CVM_CACHE_DIR", "/var/cache/cvm")
BRIDGE = "cvmbenchan0"


def community_docker(directory):
    """Unpack community.docker from PyPI's `ansible` wheel into `directory`; its
    collections path, or None when the wheel cannot be had."""
    wheels = os.path.join(CACHE, "wheels")
    os.makedirs(wheels, exist_ok=True)
    if not glob.glob(os.path.join(wheels, "ansible-*.whl")):
        result = subprocess.run([os.path.join(BIN, "pip"), "download", "-q", "--no-deps",
                                 "-d", wheels, "ansible"], capture_output=True, text=True)
        if result.returncode != 0:
            print("(cannot download PyPI's ansible: %s)" % result.stderr.strip()[-200:])
            return None
    wheel = sorted(glob.glob(os.path.join(wheels, "ansible-*.whl")))[-1]
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist()
                   if m.startswith("ansible_collections/community/docker/")]
        archive.extractall(directory, members)
    return directory


def ansible_playbook(inventory, playbook, collections=None):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(PLAYBOOKS, "ansible.cfg"),
               PATH=BIN + os.pathsep + os.environ["PATH"])
    if collections:
        env["ANSIBLE_COLLECTIONS_PATH"] = collections + os.pathsep + os.path.join(
            PLAYBOOKS, "collections")
    started = time.perf_counter()
    result = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", inventory, playbook],
                            cwd=PLAYBOOKS, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit("bench: %s failed:\n%s" % (playbook, result.stdout[-3000:]))
    return elapsed


def write_yaml(path, data):
    with open(path, "w") as handle:
        yaml.safe_dump(data, handle)


def cvm_inventory(directory, state_dir, count):
    os.makedirs(os.path.join(directory, "host_vars"), exist_ok=True)
    write_yaml(os.path.join(directory, "hosts.yml"),
               {"cvm_hosts": {"hosts": {"here": {"ansible_connection": "local"}}}})
    write_yaml(os.path.join(directory, "host_vars", "here.yml"), {
        "cvm_state_dir": state_dir, "cvm_default_image": DEBIAN,
        "cvm_bridges": [{"name": BRIDGE, "address": "198.51.100.1/24"}],
        "cvm_vms": [{"name": "bench%d" % i, "cpus": 0.5, "memory": "128m",
                     "nics": [{"mode": "bridge", "link": BRIDGE,
                               "ip": "198.51.100.%d/24" % (10 + i)}]}
                    for i in range(count)]})
    return directory


def docker_playbook(directory, count):
    path = os.path.join(directory, "docker.yml")
    write_yaml(path, [{
        "name": "The same containers with community.docker", "hosts": "localhost",
        "connection": "local", "gather_facts": False,
        "vars": {"ansible_python_interpreter": sys.executable},
        "tasks": [{"name": "Containers", "community.docker.docker_container": {
            "name": "benchdc{{ item }}", "image": DEBIAN, "network_mode": "none",
            "hostname": "benchdc{{ item }}", "cpus": 0.5, "memory": "128m",
            "restart_policy": "unless-stopped", "tmpfs": ["/run", "/run/lock"],
            "command": ["sleep", "infinity"], "state": "started"},
            "loop": "{{ range(%d) | list }}" % count}]}])
    return path


def remove_docker_containers(count):
    import docker
    client = docker.from_env()
    for i in range(count):
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get("benchdc%d" % i).remove(force=True)


def shell_loop(state_dir, count):
    env = dict(os.environ, CVM_STATE_DIR=state_dir)
    started = time.perf_counter()
    for i in range(count):
        subprocess.run([os.path.join(BIN, "cvm"), "create", "shell%d" % i, "--image", DEBIAN,
                        "--cpus", "0.5", "--memory", "128m", "--nic",
                        "mode=bridge,link=%s,ip=198.51.100.%d/24" % (BRIDGE, 100 + i)],
                       env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main():
    header("ansible: vms.yml for %s VMs (image %s), wall time" % (
        ", ".join(map(str, SIZES)), DEBIAN))
    work = tempfile.mkdtemp(prefix="cvm-bench-ansible-")
    rows = []
    try:
        collections = community_docker(os.path.join(work, "collections"))
        baseline = "docker_container loop" if collections else "cvm create shell loop"
        for count in SIZES:
            with realm() as (ctx, env):
                from cvm.net import hostbridge
                hostbridge.add(ctx, BRIDGE, "198.51.100.1/24", None, None, None)
                inventory = cvm_inventory(os.path.join(work, "inv%d" % count), ctx.store.root,
                                          count)
                try:
                    create = ansible_playbook(inventory, "vms.yml")
                    unchanged = ansible_playbook(inventory, "vms.yml")
                finally:
                    from cvm import api
                    for vm in api.ls(ctx):
                        vm.remove(force=True)
                if collections:
                    playbook = docker_playbook(work, count)
                    try:
                        base_create = ansible_playbook("localhost,", playbook, collections)
                        base_unchanged = ansible_playbook("localhost,", playbook, collections)
                    finally:
                        remove_docker_containers(count)
                else:
                    base_create, base_unchanged = shell_loop(ctx.store.root, count), None
                with contextlib.suppress(Exception):
                    hostbridge.remove(ctx, BRIDGE)
            rows.append((count, create, unchanged, base_create, base_unchanged))
        print("%-5s %12s %12s %14s %14s %10s %10s" % (
            "VMs", "cvm create", "cvm no-op", "base create", "base no-op", "create x",
            "no-op x"))
        for count, create, unchanged, base_create, base_unchanged in rows:
            print("%-5d %11.1fs %11.1fs %13.1fs %14s %10.2f %10s" % (
                count, create, unchanged, base_create,
                "%.1fs" % base_unchanged if base_unchanged else "-", create / base_create,
                "%.2f" % (unchanged / base_unchanged) if base_unchanged else "-"))
        for count, create, unchanged, _, _ in rows:
            print("%d VMs: %.0f ms per VM to create, %.0f ms per VM to confirm unchanged" % (
                count, 1000 * create / count, 1000 * unchanged / count))
        print("baseline: %s (network_mode none, no wiring); target: no-change 50 VMs < 30 s"
              % baseline)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
