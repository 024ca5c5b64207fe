"""Sizing services to the VM: the rules over a matrix of CPUs and memory, the templates,
and nginx and Redis tuned, re-tuned on resize and rolled back on a failed check."""

import math
import subprocess
import threading
import time

import pytest

from cvm import api, sizing, tune
from cvm.errors import SpecError
from cvm.spec import parse_spec
from cvm.templates import render

from .conftest import wait_for

MIB, GIB = 1 << 20, 1 << 30
WEB_IMAGE = "cvm-test/debian12-web:latest"
MEMORIES = [128 * MIB, 512 * MIB, 768 * MIB, GIB, 2 * GIB, 4 * GIB, 8 * GIB, 16 * GIB, 64 * GIB]
# (how the CPUs are limited, quota, cpuset size, host CPUs) -> the CPUs a service plans for
CPU_CASES = [("quota 0.5", 0.5, None, 64, 1), ("quota 1", 1.0, None, 64, 1),
             ("quota 1.5", 1.5, None, 64, 2), ("quota 4", 4.0, None, 64, 4),
             ("quota 32", 32.0, None, 64, 32), ("cpuset 1", None, 1, 64, 1),
             ("cpuset 4", None, 4, 64, 4), ("cpuset 32", None, 32, 64, 32),
             ("quota 1.5 on cpuset 1", 1.5, 1, 64, 1), ("no limit", None, None, 64, 64)]


@pytest.mark.parametrize("label,quota,cpuset,host,expected", CPU_CASES,
                         ids=[c[0] for c in CPU_CASES])
def test_vm_cpus(label, quota, cpuset, host, expected):
    assert sizing.vm_cpus(quota, cpuset, host) == expected


@pytest.mark.parametrize("memory", MEMORIES)
@pytest.mark.parametrize("cpus", [1, 2, 4, 32])
def test_rules_stay_within_the_vm(cpus, memory):
    nginx = sizing.nginx(cpus, memory)
    assert nginx["worker_processes"] == cpus
    assert 512 <= nginx["worker_connections"] <= 8192
    assert nginx["worker_rlimit_nofile"] == 2 * nginx["worker_connections"]
    redis = sizing.redis(memory)
    assert redis["maxmemory"] == int(memory * 0.45) and redis["maxmemory-policy"] == \
        "allkeys-lru"
    assert sizing.redis(memory, persistence=False)["maxmemory"] == int(memory * 0.75)
    mysql = sizing.mysql(cpus, memory)
    assert 32 * MIB <= mysql["innodb_buffer_pool_size"] <= memory * 0.75
    assert mysql["innodb_buffer_pool_size"] % MIB == 0
    assert 1 <= mysql["innodb_buffer_pool_instances"] <= 8
    if mysql["innodb_buffer_pool_instances"] > 1:  # each instance at least 1 GiB
        assert mysql["innodb_buffer_pool_size"] / mysql["innodb_buffer_pool_instances"] >= GIB
    assert 50 <= mysql["max_connections"] <= 4000
    php = sizing.php_fpm(cpus, memory)
    assert php["pm.max_children"] * 64 * MIB <= max(memory * 0.8, 128 * MIB)
    assert php["pm.min_spare_servers"] <= php["pm.start_servers"] <= php["pm.max_spare_servers"] \
        <= php["pm.max_children"]
    old = sizing.jvm(cpus, memory, container_aware=False)
    heap = int(old[1][4:-1])
    assert heap == max(16, int(memory * 0.75 / MIB)) and old[0] == \
        "-XX:ActiveProcessorCount=%d" % cpus
    gc_threads = int(old[3].split("=")[1])
    assert gc_threads == (cpus if cpus <= 8 else 8 + int((cpus - 8) * 5 / 8))


def test_rules_by_hand():
    assert sizing.mysql(2, 512 * MIB)["innodb_buffer_pool_size"] == 128 * MIB
    assert sizing.mysql(2, 2 * GIB)["innodb_buffer_pool_size"] == GIB
    assert sizing.mysql(4, 8 * GIB) == {"innodb_buffer_pool_size": 6 * GIB,
                                        "innodb_buffer_pool_instances": 6,
                                        "max_connections": (8 * GIB - 6 * GIB - 128 * MIB) //
                                        (4 * MIB)}
    assert sizing.mysql(32, 64 * GIB)["innodb_buffer_pool_instances"] == 8
    assert sizing.php_fpm(2, GIB)["pm.max_children"] == 12
    assert sizing.jvm(2, GIB) == ["-XX:ActiveProcessorCount=2", "-XX:MaxRAMPercentage=75.0",
                                  "-XX:InitialRAMPercentage=75.0"]
    assert sizing.jvm(32, GIB, container_aware=False)[-1] == "-XX:CICompilerCount=%d" % max(
        2, int(5 * math.log(5, 2) * 3 / 2))


def test_templates_render():
    text = render("services/nginx-main.conf.j2", cpus=2, memory_mib=768,
                  **sizing.nginx(2, 768 * MIB))
    assert "worker_processes 2;" in text and "worker_rlimit_nofile 1536;" in text
    settings = sizing.redis(768 * MIB)
    text = render("services/redis.conf.j2", settings=settings, cpus=2, memory_mib=768,
                  **settings)
    assert "maxmemory %d\n" % int(768 * MIB * 0.45) in text
    settings = sizing.php_fpm(2, GIB)
    text = render("services/php-fpm.conf.j2", settings=settings, cpus=2, memory_mib=1024)
    assert "[www]" in text and "pm.max_children = 12" in text
    text = render("services/jvm.env.j2", options=sizing.jvm(2, GIB), cpus=2, memory_mib=1024)
    assert 'JAVA_TOOL_OPTIONS="-XX:ActiveProcessorCount=2 -XX:MaxRAMPercentage=75.0' in text
    settings = sizing.mysql(2, 2 * GIB)
    text = render("services/mysql.cnf.j2", cpus=2, memory_mib=2048, **settings)
    assert "[mysqld]" in text and "innodb_buffer_pool_size = %d" % GIB in text


def test_set_validation():
    nginx = tune.service_named("nginx")
    assert tune.parse_sets(nginx, ["worker_connections=2048"]) == {"worker_connections": 2048}
    with pytest.raises(SpecError, match="nginx has no setting 'worker_conections'; it has "
                                        "worker_connections, worker_processes, "
                                        "worker_rlimit_nofile"):
        tune.parse_sets(nginx, ["worker_conections=10"])
    with pytest.raises(SpecError, match="service: 'apache' is not a service cvm tunes; known: "
                                        "jvm, mysql, nginx, php-fpm, redis"):
        tune.service_named("apache")


# ---------------------------------------------------------------- in a VM


@pytest.fixture(scope="module")
def web_image():
    from cvm import images
    from cvm.engine import Engine
    images.build("debian12", rootfs="debootstrap", tag=WEB_IMAGE,
                 extra_packages=["nginx", "redis-server"])
    yield WEB_IMAGE
    Engine().remove_image(WEB_IMAGE, force=True)


@pytest.fixture
def web_vm(ctx, web_image, lab, name):
    bridge = lab.bridge("198.51.100.1/24", prefix="cvw")
    vm = api.create(parse_spec({
        "name": name, "image": web_image, "cpus": 1.5, "memory": "768m",
        "tune": ["nginx", "redis"],
        "nics": [{"mode": "bridge", "link": bridge, "ip": "198.51.100.70/24"}]}), ctx=ctx)
    wait_for(lambda: vm.exec(["systemctl", "is-active", "nginx", "redis-server"])[1].split()
             == [b"active", b"active"], timeout=60, what="nginx and redis to start")
    return vm


def run(vm, script):
    code, out, err = vm.exec(["sh", "-c", script])
    assert code == 0, err
    return out.decode()


@pytest.mark.engine
def test_tune_resize_and_roll_back(cvm, ctx, web_vm, name):
    vm = web_vm
    limits = run(vm, "cat /etc/cvm/limits.env")
    assert "CVM_CPUS=2\n" in limits and "CVM_MEMORY_MB=768\n" in limits
    shown = cvm("tune", name, "nginx", check=True).stdout
    assert "worker_processes = 2" in shown and "+worker_processes 2;" in shown
    cvm("tune", name, "nginx", "--reload", check=True)
    assert "worker_processes 2;" in run(vm, "nginx -T 2>/dev/null")
    reported = cvm("tune", name, "redis", "--reload", check=True).stdout
    assert str(int(768 * MIB * 0.45)) in reported
    assert run(vm, "redis-cli CONFIG GET maxmemory").split()[1] == str(int(768 * MIB * 0.45))
    # The services keep answering while the VM is resized and re-tuned.
    failures, stop = [], threading.Event()

    def probe():
        while not stop.is_set():
            web = subprocess.run(["curl", "-sf", "-o", "/dev/null", "http://198.51.100.70/"])
            redis = vm.exec(["redis-cli", "ping"])[1].strip()
            if web.returncode != 0 or redis != b"PONG":
                failures.append((web.returncode, redis))
            time.sleep(0.1)

    watcher = threading.Thread(target=probe)
    watcher.start()
    try:
        cvm("resize", name, "--cpus", "0.5", "--memory", "2g", check=True)
    finally:
        time.sleep(1)
        stop.set()
        watcher.join()
    assert failures == []
    assert "worker_processes 1;" in run(vm, "nginx -T 2>/dev/null")
    assert run(vm, "redis-cli CONFIG GET maxmemory").split()[1] == str(int(2 * GIB * 0.45))
    assert "CVM_CPUS=1\n" in run(vm, "cat /etc/cvm/limits.env")
    # An override is kept for later re-tunes.
    cvm("tune", name, "nginx", "--reload", "--set", "worker_connections=700", check=True)
    assert "worker_connections 700;" in run(vm, "nginx -T 2>/dev/null")
    assert ctx.store.read_vm(name)["tune_overrides"]["nginx"] == {"worker_connections": 700}
    # A value the service's own check refuses: the previous files are back, nginx runs on.
    before = run(vm, "cat /etc/nginx/cvm-events.conf")
    bad = cvm("tune", name, "nginx", "--reload", "--set", "worker_connections=lots")
    assert bad.returncode == 1
    assert "nginx: the configuration check failed, the previous configuration is back" in \
        bad.stderr
    assert run(vm, "cat /etc/nginx/cvm-events.conf") == before
    assert subprocess.run(["curl", "-sf", "-o", "/dev/null", "http://198.51.100.70/"]
                          ).returncode == 0


@pytest.mark.engine
def test_tune_bad_input(cvm, web_vm, name):
    unknown = cvm("tune", name, "apache")
    assert unknown.returncode == 2 and "known: jvm, mysql, nginx, php-fpm, redis" in \
        unknown.stderr
    missing = cvm("tune", name, "mysql")
    assert missing.returncode == 2 and "mysql is not installed in VM %s" % name in \
        missing.stderr
    bad_key = cvm("tune", name, "redis", "--set", "maxmemroy=1")
    assert bad_key.returncode == 2 and "redis has no setting 'maxmemroy'" in bad_key.stderr
