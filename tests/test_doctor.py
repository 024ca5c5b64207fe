"""`cvm doctor` on this host, with no engine, and against an lxcfs that died (as
create's own liveness check sees it, too)."""

import json
import os
import signal
import subprocess

from cvm import doctor
from cvm.engine import lxcfs_running

from .conftest import BUSYBOX, wait_for


def rows_of(result):
    return {row["name"]: row for row in json.loads(result.stdout)}


def test_doctor_reports_this_host(cvm):
    result = cvm("doctor", "--json")
    rows = rows_of(result)
    assert rows["root"]["status"] == "OK"
    assert rows["engine"]["status"] == "OK" and rows["engine"]["detail"].startswith("Docker ")
    assert rows["cgroups"]["status"] == "OK"
    for module in ("veth", "bridge", "macvlan"):
        assert rows["kernel: " + module]["status"] == "OK"
    assert rows["lxcfs"]["status"] == "OK"  # ./run tests started it
    assert rows["nsenter"]["status"] == "OK"
    failed = [row for row in rows.values() if row["status"] == "FAIL"]
    assert result.returncode == (1 if failed else 0)
    assert all(row["fix"] for row in rows.values() if row["status"] != "OK")


def test_doctor_without_an_engine_fails_and_says_how_to_start_one(cvm):
    result = cvm("doctor", "--json", env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert result.returncode == 1
    engine = rows_of(result)["engine"]
    assert engine["status"] == "FAIL" and "dockerd" in engine["fix"]


def test_doctor_tells_a_dead_lxcfs_from_a_missing_one(tmp_path):
    mount_point = str(tmp_path / "lxcfs")
    os.mkdir(mount_point)
    assert not lxcfs_running(mount_point)
    lxcfs = subprocess.Popen(["lxcfs", "-p", str(tmp_path / "lxcfs.pid"), mount_point],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(mount_point + "/proc/meminfo"), what="private lxcfs")
        assert doctor.check_lxcfs(mount_point).status == "OK" and lxcfs_running(mount_point)
        os.stat(mount_point + "/proc/meminfo")  # now in the kernel's attribute cache

        lxcfs.send_signal(signal.SIGKILL)
        lxcfs.wait()
        # A killed LXCFS leaves its mount, and stat() still "works" from that cache:
        # create must not bind such files into a VM.
        os.stat(mount_point + "/proc/meminfo")
        assert not lxcfs_running(mount_point)
        dead = doctor.check_lxcfs(mount_point)
        assert dead.status == "FAIL"
        assert "Transport endpoint is not connected" in dead.detail
        assert dead.fix.startswith("umount -l %s;" % mount_point) and "cvm restart" in dead.fix

        subprocess.run(["umount", "-l", mount_point], check=True)
        missing = doctor.check_lxcfs(mount_point)
        assert missing.status == "WARN" and missing.detail.startswith("not running")
        assert not lxcfs_running(mount_point)
    finally:
        if lxcfs.poll() is None:
            lxcfs.kill()
            lxcfs.wait()
        while mount_point in doctor.mount_points():
            subprocess.run(["umount", "-l", mount_point], check=True)


def test_doctor_names_vms_made_while_lxcfs_was_down(ctx, images, name, monkeypatch):
    from cvm import api
    from cvm.spec import parse_spec

    def busybox(vm_name, **fields):
        return parse_spec(dict({"name": vm_name, "image": BUSYBOX, "init": "none",
                                "command": ["sleep", "1000"]}, **fields))
    api.create(busybox(name + "a"), ctx=ctx)  # LXCFS runs here: bound
    api.create(busybox(name + "b", lxcfs=False), ctx=ctx)  # chosen: never listed
    assert doctor.check_vms_without_lxcfs(ctx.store).status == "OK"
    monkeypatch.setattr(api, "lxcfs_running", lambda: False)  # as if LXCFS were down
    api.create(busybox(name + "c"), ctx=ctx)
    check = doctor.check_vms_without_lxcfs(ctx.store)
    assert check.status == "WARN" and check.detail.endswith(": %sc" % name)
    assert "recreate" in check.fix


def test_doctor_lists_host_paths_given_to_vms(cvm, ctx, images, name):
    refused = cvm("create", name, "--image", BUSYBOX, "--init", "none", "-v", "/etc:/hostetc",
                  "--", "sleep", "1000")
    assert refused.returncode == 2 and "volumes[0]: /etc is the host's /etc" in refused.stderr
    assert rows_of(cvm("doctor", "--json"))["host paths in VMs"]["status"] == "OK"
    cvm("create", name, "--image", BUSYBOX, "--init", "none", "-v",
        "/etc:/hostetc:ro,host_path_ok", "--", "sleep", "1000", check=True)
    row = rows_of(cvm("doctor", "--json"))["host paths in VMs"]
    assert row["status"] == "WARN" and row["detail"].endswith(": %s (/etc)" % name)
