"""How results look: the same for what netd served and what ran in this process."""

import sys

from ..sizes import format_size
from ..table import human_duration, render as table


def out(text=""):
    sys.stdout.write(text + "\n")


def as_json(data):
    import json
    out(json.dumps(data, indent=2, sort_keys=True, default=str))


def vms(rows):
    out(table(["NAME", "STATUS", "IMAGE", "CPUS", "MEMORY", "IPS", "UPTIME"],
              [[r["name"], r["status"], r["image"], "%g" % r["cpus"] if r["cpus"] else "-",
                format_size(r["memory"]) if r["memory"] else "-", ",".join(r["ips"]) or "-",
                human_duration(r["uptime_seconds"])] for r in rows]))


def vm(data):
    import yaml
    out(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip())


def each(results):
    """Names that were done; one error line for each that failed. The exit code."""
    from ..errors import from_dict
    failed = 0
    for result in results:
        if result["ok"]:
            out(result["name"])
        else:
            error = from_dict(result["error"])
            sys.stderr.write("cvm: %s\n" % error)
            failed = error.exit_code
    return failed


def plan(items):
    symbols = {"create": "+", "change": "~", "recreate": "!", "unchanged": "=", "blocked": "x",
               "invalid": "x"}
    for item in items:
        line = "%s %s  %s" % (symbols[item["action"]], item["name"], item["action"])
        if item["action"] == "blocked":
            line += " (needs --recreate: %s)" % ", ".join(item["recreate_fields"])
        out(line)
        for key, change in item["changes"].items():
            out("    %s: %s -> %s" % (key, _short(change["old"]), _short(change["new"])))
        for problem in item.get("problems", ()):
            out("    problem: %s" % problem)


def _short(value):
    import json
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) < 70 else text[:67] + "..."


def applied(done):
    counts = {}
    for item in done:
        counts[item["action"]] = counts.get(item["action"], 0) + 1
    out("created %d, changed %d, recreated %d, unchanged %d" % (
        counts.get("create", 0), counts.get("change", 0), counts.get("recreate", 0),
        counts.get("unchanged", 0)))


def stats(rows, sort="name", clear=False):
    """`cvm stats`' table, as docker stats lays it out; `clear` redraws in place."""
    if sort == "name":
        rows = sorted(rows, key=lambda r: r["name"])
    else:
        position = {"cpu": 0, "mem": 1, "net": 2}[sort]
        rows = sorted(rows, key=lambda r: r["sort"][position], reverse=True)
    text = table(["NAME", "CPU %", "QUOTA %", "MEM USAGE / LIMIT", "MEM %", "NET I/O",
                  "BLOCK I/O", "PIDS", "UPTIME"],
                 [[r["name"], r.get("cpu", r["status"]), r.get("quota", ""),
                   r.get("memory", ""), r.get("memory_pct", ""), r.get("net", ""),
                   r.get("block", ""), r.get("pids", ""), r.get("uptime", "")] for r in rows])
    out(("\033[H\033[2J" if clear else "") + text)


def nics(rows):
    out(table(["VM", "VM SIDE", "HOST SIDE", "MODE", "ADDRESSES", "MAC", "STATE"],
              [[r["vm"], r["vm_side"], r.get("host_side"), r["mode"],
                ",".join(r["addresses"]) or "-", r["mac"], r["state"]] for r in rows]))


def images(rows):
    out(table(["TAG", "ID", "DISTRO", "VERSION", "INIT", "BUILT", "SIZE"],
              [[r["tag"], r["id"], r["distro"], r["version"], r["init"], r["built"],
                format_size(r["size"] or 0)] for r in rows]))


def bridges(rows):
    out(table(["NAME", "STATE", "ADDRESS", "POOL", "UPLINK", "PORTS"],
              [[r["name"], r["state"], r["address"] or "-", r["pool"] or "-",
                r["uplink"] or "-", len(r["ports"])] for r in rows]))
