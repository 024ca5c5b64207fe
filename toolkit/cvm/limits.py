"""/etc/cvm/limits.env and limits.json: the VM's limits, for scripts and units inside.

Written at create and rewritten on every resize, so that a unit can say
EnvironmentFile=/etc/cvm/limits.env and size itself from CVM_CPUS and CVM_MEMORY_MB.
"""

import json
import math

ENV_PATH = "/etc/cvm/limits.env"
JSON_PATH = "/etc/cvm/limits.json"


def vm_limits(spec, host):
    """The limits a VM of `spec` gets on `host` (a spec.HostFacts)."""
    from .sizes import parse_cpu_list
    cpuset = parse_cpu_list(spec.cpuset) if spec.cpuset else list(host.cpus)
    cpus = len(cpuset)
    if spec.cpus:
        cpus = min(cpus, int(math.ceil(spec.cpus)))
    memory = min(spec.memory, host.memory_bytes) if spec.memory else host.memory_bytes
    return {"cpus": max(1, cpus), "cpu_quota": spec.cpus, "cpuset": spec.cpuset or "",
            "memory_bytes": memory, "memory_mb": memory // (1 << 20),
            "pids_max": spec.pids if spec.pids and spec.pids > 0 else None,
            "swap_bytes": spec.swap or 0}


def files(spec, host):
    """{path: (bytes, mode)} for the VM's /etc/cvm."""
    limits = vm_limits(spec, host)
    env = ["# cvm: this VM's limits (rewritten by cvm resize)",
           "CVM_CPUS=%d" % limits["cpus"],
           "CVM_CPU_QUOTA=%s" % ("%g" % limits["cpu_quota"] if limits["cpu_quota"] else ""),
           "CVM_CPUSET=%s" % limits["cpuset"],
           "CVM_MEMORY_BYTES=%d" % limits["memory_bytes"],
           "CVM_MEMORY_MB=%d" % limits["memory_mb"],
           "CVM_PIDS_MAX=%s" % (limits["pids_max"] or ""),
           "CVM_SWAP_BYTES=%d" % limits["swap_bytes"]]
    return {ENV_PATH: (("\n".join(env) + "\n").encode(), 0o644),
            JSON_PATH: ((json.dumps(limits, indent=2, sort_keys=True) + "\n").encode(), 0o644)}
