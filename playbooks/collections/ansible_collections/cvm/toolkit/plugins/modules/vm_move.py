#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cvm maintainers. Apache-2.0.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vm_move
short_description: Plan a VM's move between container hosts, and record it in the inventory
description:
  - On the controller, before a move (playbooks/move.yml) - finds the host whose
    C(cvm_vms) declares the VM and checks the target - it is another host of the
    inventory that declares every bridge the VM's NICs use, and the VM is declared in
    C(host_vars/SOURCE.yml), so that the inventory can be updated after the move.
  - With C(update_inventory), after the move - moves the VM's entry from
    C(host_vars/SOURCE.yml) to C(host_vars/TARGET.yml).
version_added: "0.1.0"
author: cvm maintainers
options:
  vm:
    description: The VM's name.
    type: str
    required: true
  to:
    description: The inventory host to move it to.
    type: str
    required: true
  hosts:
    description: Container host name to its variables (cvm_vms, cvm_bridges, ansible_host).
    type: dict
    required: true
  inventory_dir:
    description: The inventory's directory (its host_vars/ holds the VMs).
    type: path
    required: true
  update_inventory:
    description: Move the VM's entry to the target's host_vars file.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Where web1 is, and whether host2 can have it
  cvm.toolkit.vm_move:
    vm: web1
    to: host2
    hosts: "{{ dict(groups['cvm_hosts'] | zip(groups['cvm_hosts'] | map('extract', hostvars))) }}"
    inventory_dir: "{{ inventory_dir }}"
  register: plan

- name: After the move, the inventory says where web1 is
  cvm.toolkit.vm_move:
    vm: web1
    to: host2
    hosts: "{{ dict(groups['cvm_hosts'] | zip(groups['cvm_hosts'] | map('extract', hostvars))) }}"
    inventory_dir: "{{ inventory_dir }}"
    update_inventory: true
"""

RETURN = r"""
source:
  description: The host the VM is on.
  returned: always
  type: str
target_address:
  description: How the source reaches the target (its underlay address).
  returned: always
  type: str
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402


def plan(params):
    """(source, target address, problem or None)."""
    hosts, name, target = params["hosts"], params["vm"], params["to"]
    sources = [host for host, data in sorted(hosts.items())
               if any((vm or {}).get("name") == name and vm.get("state") != "absent"
                      for vm in (data or {}).get("cvm_vms") or [])]
    if not sources:
        return None, None, "vm: no host of the inventory declares a VM named %s" % name
    source = sources[0]
    if target not in hosts:
        return source, None, "to: %s is not a container host of the inventory" % target
    if target == source:
        return source, None, "to: %s is already on %s" % (name, target)
    vm = next(v for v in hosts[source]["cvm_vms"] if v.get("name") == name)
    data = hosts[target] or {}
    have = {b.get("name") for b in data.get("cvm_bridges") or []} | set(
        data.get("cvm_external_bridges") or [])
    for index, nic in enumerate(vm.get("nics") or []):
        if isinstance(nic, dict) and nic.get("mode", "bridge") == "bridge" and \
                nic.get("link") not in have:
            return source, None, "to: %s does not declare bridge %s, which nics[%d] of %s " \
                "uses (cvm_bridges)" % (target, nic.get("link"), index, name)
    if name not in [v.get("name") for v in _host_vars(params, source).get("cvm_vms") or []]:
        return source, None, "vm: %s is not declared in %s, so the inventory cannot follow " \
            "the move" % (name, _vars_file(params, source))
    address = data.get("cvm_underlay_address") or data.get("ansible_host") or target
    return source, address, None


def _vars_file(params, host):
    return os.path.join(params["inventory_dir"], "host_vars", host + ".yml")


def _host_vars(params, host):
    import yaml
    try:
        with open(_vars_file(params, host)) as handle:
            return yaml.safe_load(handle) or {}
    except FileNotFoundError:
        return {}


def _write(path, data):
    import yaml
    with open(path + ".tmp", "w") as handle:
        yaml.safe_dump(data, handle, sort_keys=False, default_flow_style=False)
    os.rename(path + ".tmp", path)


def record(params, source):
    """Move the VM's entry from the source's host_vars to the target's."""
    name = params["vm"]
    source_vars = _host_vars(params, source)
    entry = next((v for v in source_vars.get("cvm_vms") or [] if v.get("name") == name), None)
    if entry is None:
        return False
    source_vars["cvm_vms"] = [v for v in source_vars["cvm_vms"] if v.get("name") != name]
    target_vars = _host_vars(params, params["to"])
    target_vars["cvm_vms"] = list(target_vars.get("cvm_vms") or []) + [entry]
    _write(_vars_file(params, params["to"]), target_vars)
    _write(_vars_file(params, source), source_vars)
    return True


def main():
    module = AnsibleModule(argument_spec=dict(
        vm=dict(type="str", required=True), to=dict(type="str", required=True),
        hosts=dict(type="dict", required=True), inventory_dir=dict(type="path", required=True),
        update_inventory=dict(type="bool", default=False)), supports_check_mode=True)
    params = module.params
    if params["update_inventory"]:
        sources = [host for host in sorted(params["hosts"]) if params["vm"] in [
            v.get("name") for v in _host_vars(params, host).get("cvm_vms") or []]]
        source = sources[0] if sources else None
        changed = source not in (None, params["to"]) and (module.check_mode or
                                                         record(params, source))
        module.exit_json(changed=bool(changed), source=source, target_address=None)
    source, address, problem = plan(params)
    if problem:
        module.fail_json(msg=problem, source=source)
    module.exit_json(changed=False, source=source, target_address=address)


if __name__ == "__main__":
    main()
