"""The host stays the host: what cvm starts inside a VM has the VM's privileges, no more.

A process from `cvm exec` or `cvm enter` must look, in /proc/self/status and
/proc/self/cgroup, exactly like one that `docker exec` starts in the same VM, and must be
unable to do what the VM's own root cannot (add an address, change a MAC, mount, write a
cgroup limit). `cvm nsrun` is host-privileged by design: it drops to the VM's capability
set unless told --keep-caps.
"""

import os
import subprocess

import pytest

from cvm import api

from .conftest import enter_session
from .test_lifecycle import busybox_spec

pytestmark = pytest.mark.engine

PRIVILEGE_LINES = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp",
                   "Seccomp_filters", "Uid", "Gid", "Groups")
# Prints the privilege lines of its own process, its cgroups, and its AppArmor label.
REPORT = ("grep -E '^(%s):' /proc/self/status; echo ==; cat /proc/self/cgroup; echo ==; "
          "cat /proc/self/attr/current 2>/dev/null || echo no-lsm" % "|".join(PRIVILEGE_LINES))


def docker_exec_report(name):
    return subprocess.run(["docker", "exec", name, "sh", "-c", REPORT], capture_output=True,
                          text=True, check=True).stdout


def host_status_lines(pid):
    with open("/proc/%d/status" % pid) as handle:
        return {line.split(":")[0]: line.split(":", 1)[1].strip() for line in handle
                if line.split(":")[0] in PRIVILEGE_LINES}


def lines_of(report):
    status, cgroups, label = report.split("==\n")
    return ({line.split(":")[0]: line.split(":", 1)[1].strip() for line in status.splitlines()},
            cgroups, label)


@pytest.fixture
def vm(ctx, images, name):
    return api.create(busybox_spec(name), ctx=ctx)


def test_exec_has_exactly_what_docker_exec_gives(cvm, vm, name):
    ours = cvm("exec", name, "--", "sh", "-c", REPORT, check=True).stdout
    assert ours == docker_exec_report(name)
    status, cgroups, _ = lines_of(ours)
    assert status["Seccomp"] == "2" and int(status["CapEff"], 16) == int(status["CapBnd"], 16)
    # Every hierarchy the VM's init is in, the exec'd process is in too.
    with open("/proc/%d/cgroup" % vm.pid) as handle:
        assert cgroups == handle.read()
    # Far less than root on the host has.
    assert int(status["CapBnd"], 16) != int(host_status_lines(os.getpid())["CapBnd"], 16)


@pytest.mark.parametrize("attempt", [
    "ip addr add 198.51.100.77/32 dev lo",
    "ip link set dev lo address 02:00:5e:00:53:01",
    "mount -t tmpfs none /mnt",
    "echo 1 > /sys/fs/cgroup/memory/memory.limit_in_bytes",
    "echo 1 > /sys/fs/cgroup/pids/pids.max",
])
def test_exec_cannot_do_what_the_vms_root_cannot(cvm, vm, name, attempt):
    result = cvm("exec", name, "--", "sh", "-c", attempt)
    assert result.returncode != 0, "%s succeeded from cvm exec" % attempt


def test_vm_api_exec_runs_with_the_vms_privileges(vm, name):
    code, out, _ = vm.exec(["sh", "-c", REPORT])
    assert code == 0 and out.decode() == docker_exec_report(name)


def test_enter_has_the_same_privileges(cvm, vm, name):
    shown = enter_session(cvm, name, "echo BEGIN; grep -E '^(CapEff|CapBnd|Seccomp):' "
                          "/proc/self/status; exit").split("BEGIN\r\n")[-1]
    expected = lines_of(docker_exec_report(name))[0]
    for key in ("CapEff", "CapBnd", "Seccomp"):
        assert "%s:\t%s" % (key, expected[key]) in shown, shown


def test_nsrun_drops_to_the_vms_capabilities_unless_told(cvm, vm, name):
    vm_status = host_status_lines(vm.pid)
    dropped = cvm("nsrun", name, "--", "grep", "^Cap", "/proc/self/status", check=True).stdout
    caps = dict(line.split(":\t") for line in dropped.splitlines())
    for key in ("CapBnd", "CapEff", "CapPrm"):
        assert caps[key] == vm_status["CapBnd"], dropped
    # In the VM's network namespace with the VM's powers: no new addresses.
    refused = cvm("nsrun", name, "--", "ip", "addr", "add", "198.51.100.78/32", "dev", "lo")
    assert refused.returncode != 0
    kept = cvm("nsrun", name, "--keep-caps", "--", "grep", "^CapEff", "/proc/self/status",
               check=True).stdout
    assert kept.split(":\t")[1].strip() == host_status_lines(os.getpid())["CapEff"]


def test_cvms_writes_into_a_vm_stay_in_its_tree(vm, name, tmp_path):
    """ns.write_file resolves paths, symlinks included, in the VM's own root: a link the
    VM's root makes to /etc writes the VM's /etc, never the host's. Only the writing
    thread joins the VM's mount namespace; the caller's root stays the host's."""
    from cvm import ns
    from cvm.errors import CvmError
    subprocess.run(["docker", "exec", name, "ln", "-s", "/etc", "/tmp/to-etc"], check=True)
    marker = "cvm-test-%s" % name
    host_root = os.stat("/")
    ns.write_file(vm.pid, "/tmp/to-etc/%s" % marker, b"the VM's\n")
    inside = subprocess.run(["docker", "exec", name, "cat", "/etc/%s" % marker],
                            capture_output=True, text=True, check=True).stdout
    assert inside == "the VM's\n"
    assert not os.path.exists("/etc/%s" % marker)
    assert (os.stat("/").st_dev, os.stat("/").st_ino) == (host_root.st_dev, host_root.st_ino)
    with pytest.raises(CvmError, match="No such file or directory"):
        ns.overwrite_mounted_file(vm.pid, "/no/such/file", b"")
