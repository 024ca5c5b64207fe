"""`cvm provision`: run the playbooks through ansible-runner, with live progress.

ansible-runner starts ansible-playbook and hands us its events; HostProgress keeps each
host's current play, task and counts, and the display draws them as they change.
"""

import os
import shutil
import sys
import tempfile

from .errors import CvmError
from .paths import project_root

PLAYBOOKS = ("site.yml", "registry.yml", "host.yml", "images.yml", "vms.yml", "move.yml")


class ProvisionError(CvmError):
    pass


class HostProgress:
    def __init__(self, name):
        self.name = name
        self.play = self.task = ""
        self.ok = self.changed = self.failed = self.skipped = self.unreachable = 0
        self.failures = []  # (task, message)

    def to_dict(self):
        return {"host": self.name, "ok": self.ok, "changed": self.changed,
                "failed": self.failed, "skipped": self.skipped,
                "unreachable": self.unreachable,
                "failures": [{"task": t, "msg": m} for t, m in self.failures]}


class ProvisionResult:
    def __init__(self, hosts, rc, status):
        self.hosts = hosts  # name -> HostProgress
        self.rc = rc
        self.status = status

    @property
    def ok(self):
        return self.rc == 0 and not any(h.failed or h.unreachable for h in self.hosts.values())

    def to_dict(self):
        return {"ok": self.ok, "rc": self.rc, "status": self.status,
                "hosts": [h.to_dict() for h in self.hosts.values()]}


def _message(result):
    failed_items = [r for r in result.get("results") or [] if r.get("failed")]
    if failed_items:  # a loop: its items' messages, not "One or more items failed"
        item = failed_items[0]
        label = (item.get("_ansible_item_label") or item.get("item") or "")
        label = label.get("name", "") if isinstance(label, dict) else label
        return ("%s: %s" % (label, _message(item)) if label else _message(item))[:500]
    message = result.get("msg") or result.get("stderr") or result.get("module_stderr") or ""
    return " ".join(str(message).split())[:500]


class EventTracker:
    """Turns ansible-runner's events into per-host progress, calling `on_change`."""

    def __init__(self, on_change=None):
        self.hosts = {}
        self.play = self.task = ""
        self.on_change = on_change or (lambda host, status: None)

    def host(self, name):
        if name not in self.hosts:
            self.hosts[name] = HostProgress(name)
        return self.hosts[name]

    def __call__(self, event):
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_play_start":
            self.play = data.get("play", "")
        elif kind == "playbook_on_task_start":
            self.task = data.get("task", "")
        elif kind.startswith("runner_on_") and data.get("host"):
            host = self.host(data["host"])
            host.play, host.task = self.play, data.get("task", self.task)
            result = data.get("res") or {}
            if kind == "runner_on_ok":
                host.ok += 1
                host.changed += bool(result.get("changed"))
                status = "changed" if result.get("changed") else "ok"
            elif kind == "runner_on_failed" and not data.get("ignore_errors"):
                host.failed += 1
                host.failures.append((host.task, _message(result)))
                status = "FAILED"
            elif kind == "runner_on_unreachable":
                host.unreachable += 1
                host.failures.append((host.task, _message(result) or "unreachable"))
                status = "UNREACHABLE"
            elif kind == "runner_on_skipped":
                host.skipped += 1
                status = "skipped"
            else:
                return True
            self.on_change(host, status)
        return True  # keep the event in ansible-runner's artifacts


def provision(inventory, playbook="site.yml", limit=None, check=False, diff=False,
              tags=None, extravars=None, on_change=None):
    """Run one of cvm's playbooks against `inventory`; returns a ProvisionResult."""
    import ansible_runner
    playbooks_dir = os.path.join(project_root(), "playbooks")
    playbook_path = playbook if os.path.isabs(playbook) else os.path.join(playbooks_dir,
                                                                           playbook)
    if not os.path.exists(playbook_path):
        raise ProvisionError("playbook: %s does not exist (cvm's are %s)" % (
            playbook, ", ".join(PLAYBOOKS)))
    if not os.path.exists(inventory):
        raise ProvisionError("inventory: %s does not exist" % inventory)
    cmdline = []
    if check:
        cmdline.append("--check")
    if diff:
        cmdline.append("--diff")
    if tags:
        cmdline += ["--tags", ",".join(tags)]
    tracker = EventTracker(on_change)
    private = tempfile.mkdtemp(prefix="cvm-provision-")
    bin_dir = os.path.dirname(sys.executable)  # ansible-playbook beside this interpreter
    try:
        runner = ansible_runner.run(
            private_data_dir=private, playbook=playbook_path,
            inventory=os.path.abspath(inventory), limit=limit or None,
            cmdline=" ".join(cmdline) or None, extravars=extravars or None,
            envvars={"ANSIBLE_CONFIG": os.path.join(playbooks_dir, "ansible.cfg"),
                     "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
                     "ANSIBLE_NOCOLOR": "1"},
            event_handler=tracker, quiet=True, suppress_env_files=True)
        return ProvisionResult(tracker.hosts, runner.rc, runner.status)
    finally:
        shutil.rmtree(private, ignore_errors=True)


class LiveDisplay:
    """Per-host progress. On a terminal, one line per host redrawn in place; otherwise
    one line per host and task as results arrive (for logs and CI)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.drawn = 0
        self.hosts = {}

    @staticmethod
    def _line(host, status):
        counts = "ok=%d changed=%d failed=%d" % (host.ok, host.changed,
                                                 host.failed + host.unreachable)
        return "%-16s %-26s %-11s %s" % (host.name[:16], counts, status,
                                         ("%s / %s" % (host.play, host.task))[:90])

    def __call__(self, host, status):
        self.hosts[host.name] = (host, status)
        if status in ("FAILED", "UNREACHABLE"):
            self._clear()
            task, message = host.failures[-1]
            self.stream.write("%s %s: %s: %s\n" % (status, host.name, task, message))
        if self.tty:
            self._clear()
            for shown, shown_status in self.hosts.values():
                self.stream.write(self._line(shown, shown_status) + "\n")
            self.drawn = len(self.hosts)
        elif status != "skipped":
            self.stream.write(self._line(host, status) + "\n")
        self.stream.flush()

    def _clear(self):
        if self.tty and self.drawn:
            self.stream.write("\033[%dA\033[J" % self.drawn)
            self.drawn = 0
