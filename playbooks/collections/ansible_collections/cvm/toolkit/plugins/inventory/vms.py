# -*- coding: utf-8 -*-
# Copyright: cvm maintainers. Apache-2.0.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: vms
short_description: Every VM declared on cvm container hosts, as inventory hosts
version_added: "0.1.0"
author: cvm maintainers
description:
  - Reads the container hosts' inventory and turns every VM of their C(cvm_vms) into an
    inventory host, so that existing playbooks and roles reach the VMs as they reach VMs
    today (over ssh to the VM's static IP).
  - C(ansible_host) is the VM's first address; groups are C(cvm_vms), C(cvm_on_HOST), the
    VM's distro (C(cvm_debian12) ...) and its C(tags); host vars are its spec (C(cvm_spec))
    and limits (C(cvm_cpus), C(cvm_memory)), and C(cvm_host), the container host.
  - "A VM declared with C(connection: cvm) is reached through C(cvm exec) on its container
    host instead (connection plugin C(cvm.toolkit.cvm))."
options:
  plugin:
    description: The name of this plugin.
    required: true
    choices: [cvm.toolkit.vms]
  hosts_inventory:
    description: The container hosts' inventory (file or directory), relative to this file.
    required: true
    type: str
  ssh_user:
    description: The user to log in to VMs as.
    type: str
    default: root
"""

EXAMPLES = r"""
# cvm_vms.yml, beside the hosts' inventory:
plugin: cvm.toolkit.vms
hosts_inventory: .
"""

import os  # noqa: E402
import re  # noqa: E402

from ansible.inventory.manager import InventoryManager  # noqa: E402
from ansible.plugins.inventory import BaseInventoryPlugin  # noqa: E402
from ansible.vars.manager import VariableManager  # noqa: E402
from ansible_collections.cvm.toolkit.plugins.module_utils.cvm_common import (  # noqa: E402
    declared_spec)


def _group_name(text):
    return re.sub(r"[^A-Za-z0-9_]", "_", str(text))


class InventoryModule(BaseInventoryPlugin):
    NAME = "cvm.toolkit.vms"

    def verify_file(self, path):
        return super(InventoryModule, self).verify_file(path) and \
            os.path.basename(path).split(".")[0] in ("cvm_vms", "cvm")

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache)
        self._read_config_data(path)
        source = os.path.join(os.path.dirname(path), self.get_option("hosts_inventory"))
        hosts = InventoryManager(loader=loader, sources=[os.path.abspath(source)])
        variables = VariableManager(loader=loader, inventory=hosts)
        self.inventory.add_group("cvm_vms")
        for host in hosts.get_hosts():
            host_vars = variables.get_vars(host=host)
            for vm in host_vars.get("cvm_vms") or []:
                if vm.get("state") == "absent":
                    continue
                self._add_vm(host.name, host_vars, vm)

    def _add_vm(self, container_host, host_vars, vm):
        name = vm["name"]
        self.inventory.add_host(name, group="cvm_vms")
        for group in ["cvm_on_" + _group_name(container_host),
                      "cvm_" + _group_name(self._distro(declared_spec(vm, host_vars)["image"]))] + \
                list(vm.get("tags") or []):
            self.inventory.add_group(_group_name(group))
            self.inventory.add_child(_group_name(group), name)
        address = self._address(vm)
        if address:
            self.inventory.set_variable(name, "ansible_host", address)
        self.inventory.set_variable(name, "ansible_user", self.get_option("ssh_user"))
        self.inventory.set_variable(name, "cvm_host", container_host)
        self.inventory.set_variable(name, "cvm_spec", vm)
        self.inventory.set_variable(name, "cvm_cpus", vm.get("cpus"))
        self.inventory.set_variable(name, "cvm_memory", vm.get("memory"))
        key = vm.get("ssh_private_key_file") or host_vars.get("cvm_ssh_private_key_file")
        if key:
            self.inventory.set_variable(name, "ansible_ssh_private_key_file", key)
        if vm.get("connection") == "cvm":
            self.inventory.set_variable(name, "ansible_connection", "cvm.toolkit.cvm")
            self.inventory.set_variable(name, "cvm_vm", name)
            if host_vars.get("cvm_state_dir"):
                self.inventory.set_variable(name, "cvm_state_dir", host_vars["cvm_state_dir"])
            if host_vars.get("ansible_connection") != "local":
                self.inventory.set_variable(
                    name, "cvm_host_address", host_vars.get("ansible_host", container_host))

    @staticmethod
    def _distro(image):
        repository = image.split(":")[0]
        return repository.split("/")[-1] or "unknown"

    @staticmethod
    def _address(vm):
        for nic in vm.get("nics") or []:
            if isinstance(nic, dict):
                for key in ("ip", "ip6"):
                    if nic.get(key) and nic[key] != "auto":
                        return str(nic[key]).split("/")[0]
        return None
