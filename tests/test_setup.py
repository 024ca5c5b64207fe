"""The host setup script itself (`./run`), which CI and the README's commands run."""

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_setup_scripts_pass_shellcheck():
    result = subprocess.run(["shellcheck", "run", ".ci/run"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout

