#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cvm maintainers. Apache-2.0.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: validate
short_description: Check a whole cvm inventory before anything changes
description:
  - Takes every container host's C(cvm_vms) and C(cvm_bridges) and reports, all at once,
    duplicate VM names, IPs and MACs across all hosts, addresses outside their bridge's
    subnet, VMs on a bridge their host does not declare, and invalid VM specs.
  - "Resolves every C(ip: auto) of a bridge NIC from the bridge's pool for the whole fleet
    at once, keeping each VM's address in a lease file across runs, and checks that an
    overlay bridge (C(vxlan)) has one VXLAN id on every host and a VXLAN id one bridge."
  - Run it once, on the controller, first in a play; it fails listing every problem and
    touches nothing.
version_added: "0.1.0"
author: cvm maintainers
options:
  hosts:
    description:
      - Container host name to a mapping with C(cvm_vms) (list), C(cvm_bridges) (list)
        and C(cvm_external_bridges) (bridges that exist without cvm declaring them).
    type: dict
    required: true
  leases:
    description: "The lease file of C(ip: auto) addresses (JSON, made when missing)."
    type: path
"""

EXAMPLES = r"""
- name: The inventory, checked once before anything changes
  cvm.toolkit.validate:
    hosts: "{{ dict(groups['cvm_hosts'] | zip(groups['cvm_hosts'] | map('extract', hostvars))) }}"
  run_once: true
  delegate_to: localhost
"""

RETURN = r"""
problems:
  description: Every problem found (empty when the inventory is valid).
  returned: always
  type: list
  elements: str
vms:
  description: How many VMs the inventory declares.
  returned: always
  type: int
resolved:
  description: "For each host, the NICs of its VMs that had C(ip: auto), with the address
    each got."
  returned: always
  type: dict
"""

import ipaddress  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.cvm.toolkit.plugins.module_utils.cvm_common import (  # noqa: E402
    declared_spec, import_cvm)


def problems_of(hosts, resolved=None):
    from cvm.errors import SpecError
    from cvm.spec import HostFacts, parse_spec
    resolved = resolved or {}
    # The controller is not the container host: check the specs, not this machine's size.
    anywhere = HostFacts(cpus=list(range(4096)), memory_bytes=1 << 60)
    problems, names, addresses, macs = [], {}, {}, {}
    for host in sorted(hosts):
        data = hosts[host] or {}
        bridges = {b["name"]: b for b in data.get("cvm_bridges") or []}
        external = set(data.get("cvm_external_bridges") or [])
        for raw in data.get("cvm_vms") or []:
            if raw.get("state") == "absent":
                continue
            raw = declared_spec(raw, data)
            vm = raw.get("name", "?")
            if vm in resolved.get(host, {}):
                raw["nics"] = resolved[host][vm]
            where = "%s on %s" % (vm, host)
            if vm in names:
                problems.append("VM name %s is declared on %s and on %s" % (vm, names[vm],
                                                                            host))
            names.setdefault(vm, host)
            try:
                spec = parse_spec(raw, host=anywhere)
            except SpecError as exc:
                problems.append("%s: %s" % (where, exc))
                continue
            raw_nics = raw.get("nics") or []
            for index, nic in enumerate(spec.nics):
                for address in nic.addresses():
                    key = str(address.ip)
                    if key in addresses:
                        problems.append("address %s is used by %s and by %s" % (
                            key, addresses[key], where))
                    addresses.setdefault(key, where)
                declared = raw_nics[index] if index < len(raw_nics) else {}
                if isinstance(declared, dict) and declared.get("mac"):  # derived ones differ
                    if nic.mac in macs:
                        problems.append("MAC %s is used by %s and by %s" % (
                            nic.mac, macs[nic.mac], where))
                    macs.setdefault(nic.mac, where)
                if nic.mode != "bridge":
                    continue
                if nic.link not in bridges and nic.link not in external:
                    problems.append("%s uses bridge %s, which %s does not declare "
                                    "(cvm_bridges)" % (where, nic.link, host))
                    continue
                bridge_address = (bridges.get(nic.link) or {}).get("address")
                if bridge_address and nic.ip_interface is not None:
                    subnet = ipaddress.ip_interface(bridge_address).network
                    if nic.ip_interface.ip not in subnet:
                        problems.append("%s has %s, outside bridge %s's subnet %s" % (
                            where, nic.ip_interface.ip, nic.link, subnet))
    return problems, len(names)


def main():
    module = AnsibleModule(argument_spec=dict(hosts=dict(type="dict", required=True),
                                              leases=dict(type="path")),
                           supports_check_mode=True)
    import_cvm(module)
    from cvm import fleet
    hosts, path = module.params["hosts"], module.params["leases"]
    leases = fleet.read_leases(path) if path else {}
    resolved, leases, problems = fleet.assign_addresses(hosts, leases)
    problems = fleet.overlay_problems(hosts) + problems
    spec_problems, count = problems_of(hosts, resolved)
    problems += spec_problems
    if problems:
        module.fail_json(msg="the inventory has %d problem(s); nothing was changed:\n- %s" % (
            len(problems), "\n- ".join(problems)), problems=problems, vms=count)
    changed = bool(path) and not module.check_mode and fleet.write_leases(path, leases)
    module.exit_json(changed=changed, problems=[], vms=count, resolved=resolved)


if __name__ == "__main__":
    main()
