#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cvm maintainers. Apache-2.0.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: bridge
short_description: A host bridge for cvm VMs
description:
  - Creates (or adopts) a Linux bridge that cvm persists and recreates at boot, with an
    optional host address, an address pool for C(ip=auto) NICs and an uplink whose
    addresses move to the bridge.
  - A bridge that VMs use is never removed; changing a bridge's settings needs it unused.
version_added: "0.1.0"
author: cvm maintainers
options:
  name:
    description: The bridge's interface name.
    type: str
    required: true
  state:
    description: Whether the bridge exists.
    type: str
    choices: [present, absent]
    default: present
  address:
    description: The host's address on the bridge, a CIDR.
    type: str
  pool:
    description: Addresses for C(ip=auto) NICs, C(FIRST-LAST) or a CIDR.
    type: str
  uplink:
    description: An interface to enslave; its addresses and routes move to the bridge.
    type: str
  vxlan:
    description:
      - Makes the bridge an overlay shared with other hosts; C(id) (the VNI), C(port)
        (default 4789), C(local) (this host's underlay address) and C(remotes) (the other
        hosts' underlay addresses; host.yml fills them from the inventory).
      - The bridge's MTU defaults to the underlay's minus 50.
    type: dict
  mtu:
    description: The bridge's MTU.
    type: int
  allow_overlap:
    description:
      - Lets the bridge's subnet overlap another interface's or cvm bridge's on purpose.
        An address another interface or VM has is refused regardless.
    type: bool
    default: false
  state_dir:
    description: cvm's state directory on the host.
    type: path
"""

EXAMPLES = r"""
- name: The LAN bridge on the uplink
  cvm.toolkit.bridge:
    name: br0
    uplink: eno1

- name: A host-only lab bridge with a pool
  cvm.toolkit.bridge:
    name: lab0
    address: 203.0.113.1/24
    pool: 203.0.113.100-203.0.113.199
"""

RETURN = r"""
bridge:
  description: The bridge as cvm records it.
  returned: when present
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.cvm.toolkit.plugins.module_utils.cvm_common import (  # noqa: E402
    context, import_cvm)

FIELDS = ("address", "pool", "uplink", "mtu")
VXLAN_FIELDS = ("id", "port", "local")


def main():
    module = AnsibleModule(argument_spec=dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        address=dict(type="str"), pool=dict(type="str"), uplink=dict(type="str"),
        mtu=dict(type="int"), vxlan=dict(type="dict"), state_dir=dict(type="path"),
        allow_overlap=dict(type="bool", default=False)),
        supports_check_mode=True)
    import_cvm(module)
    from cvm.errors import CvmError
    from cvm.net import hostbridge
    params = module.params
    ctx = context(module)
    current = ctx.store.read_bridge(params["name"])
    try:
        if params["state"] == "absent":
            if current is None:
                module.exit_json(changed=False)
            if not module.check_mode:
                hostbridge.remove(ctx, params["name"])
            module.exit_json(changed=True, diff=dict(before=current, after={}))
        wanted = hostbridge.validate(params["name"], params["address"], params["pool"],
                                     params["mtu"], params["vxlan"])
        wanted["uplink"] = params["uplink"]
        hostbridge.check_collisions(ctx, wanted, params["allow_overlap"])
        fields = [k for k in FIELDS if k != "mtu" or params["mtu"] is not None]
        same = current is not None and all(current.get(k) == wanted.get(k) for k in fields)
        same_overlay = same and _overlay(current) == _overlay(wanted)
        if same_overlay and (current.get("vxlan") or {}).get("remotes") == \
                (wanted.get("vxlan") or {}).get("remotes"):
            module.exit_json(changed=False, bridge=current)
        diff = dict(before=current or {}, after=wanted)
        if module.check_mode:
            module.exit_json(changed=True, diff=diff)
        if same_overlay:  # only the fleet around it changed: no VM is disturbed
            record = hostbridge.set_remotes(ctx, params["name"], wanted["vxlan"]["remotes"])
            module.exit_json(changed=True, bridge=record, diff=diff)
        if current is not None:
            hostbridge.remove(ctx, params["name"])
        record = hostbridge.add(ctx, params["name"], params["address"], params["uplink"],
                                params["pool"], params["mtu"], params["vxlan"],
                                params["allow_overlap"])
    except CvmError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=True, bridge=record, diff=diff)


def _overlay(record):
    vxlan = record.get("vxlan") or {}
    return tuple(vxlan.get(k) for k in VXLAN_FIELDS)


if __name__ == "__main__":
    main()
