"""The host setup script itself (`./run`), which CI and the README's commands run."""

import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_setup_scripts_pass_shellcheck():
    result = subprocess.run(["shellcheck", "run", ".ci/run"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout



def recap_of(log):
    """{"ok": n, "changed": n, "failed": n, ...} of the one host in an Ansible log."""
    line = [line for line in log.splitlines() if line.startswith("localhost ")][-1]
    return {key: int(value) for key, value in
            (item.split("=") for item in line.split(":", 1)[1].split())}


@pytest.mark.engine
@pytest.mark.slow
def test_setup_applies_the_host_role_and_converges():
    """`./run setup` sets this machine up with the role every container host gets
    (playbooks/host.yml on inventory/local): run again, it changes nothing, and what the
    role starts runs."""
    for attempt in ("converge", "again"):
        result = subprocess.run([os.path.join(ROOT, "run"), "setup"], cwd=ROOT,
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
    assert "applying playbooks/host.yml" in result.stderr
    with open("/var/log/cvm/setup.log") as handle:
        recap = recap_of(handle.read())
    assert recap["failed"] == 0 and recap["changed"] == 0, recap
    status = subprocess.run(["/usr/local/bin/cvm", "netd", "--status"], capture_output=True,
                            text=True)
    assert status.returncode == 0, status.stdout + status.stderr
