#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cvm maintainers. Apache-2.0.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vm
short_description: A cvm VM (a container that lives like a VM) in the state you declare
description:
  - Creates, changes, starts, stops, restarts or removes a VM through cvm's Python API.
  - Changes that cvm can make live (cpus, cpuset, cpu_shares, memory, swap, pids,
    blkio_weight, restart, nics) are made on the running VM without a restart; any other
    change needs I(recreate=true), else the task fails naming the fields.
  - Supports check mode (reports what would change and changes nothing) and diff mode
    (field by field, before and after).
version_added: "0.1.0"
author: cvm maintainers
options:
  name:
    description: The VM's name (a DNS label of at most 12 characters).
    type: str
    required: true
  state:
    description:
      - C(present) creates the VM (started) and makes it match; C(started) and C(stopped)
        also settle whether it runs; C(restarted) restarts it; C(absent) removes it, its
        wiring and its state (not its volumes' data).
    type: str
    choices: [present, started, stopped, restarted, absent]
    default: started
  recreate:
    description: Recreate the VM when a change cannot be made live.
    type: bool
    default: false
  state_dir:
    description: cvm's state directory on the host (defaults to /var/lib/cvm).
    type: path
  image:
    description: Image to boot (see C(cvm image ls)). Required unless I(state=absent).
    type: str
  hostname:
    description: Hostname; defaults to the name.
    type: str
  cpus:
    description: CPU quota, e.g. C(1.5).
    type: float
  cpuset:
    description: CPUs the VM may run on, e.g. C(0-1).
    type: str
  cpu_shares:
    description: Relative CPU weight, 2 to 262144.
    type: int
  memory:
    description: Memory limit, e.g. C(512m), C(4g), C(1.5g).
    type: str
  swap:
    description: Swap on top of memory; the default is none.
    type: str
  pids:
    description: Process limit (default 4096; C(unlimited)).
    type: raw
  device_read_bps:
    description: Read throttles, C(DEVICE:RATE).
    type: list
    elements: str
  device_write_bps:
    description: Write throttles, C(DEVICE:RATE).
    type: list
    elements: str
  device_read_iops:
    description: Read IO throttles, C(DEVICE:N).
    type: list
    elements: str
  device_write_iops:
    description: Write IO throttles, C(DEVICE:N).
    type: list
    elements: str
  blkio_weight:
    description: Block IO weight, 10 to 1000.
    type: int
  volumes:
    description: Host directories (made if missing) mounted in the VM, C(HOST:GUEST[:ro]).
    type: list
    elements: str
  init:
    description: Init mode; C(auto) picks systemd unless the image's systemd cannot run on
      this host.
    type: str
    choices: [auto, systemd, compat, none]
  command:
    description: The command, for I(init=none) only.
    type: raw
  env:
    description: Environment variables.
    type: dict
  labels:
    description: Container labels.
    type: dict
  restart:
    description: Restart policy (default C(unless-stopped)).
    type: str
  dns:
    description: DNS servers.
    type: list
    elements: str
  search:
    description: DNS search domains.
    type: list
    elements: str
  ssh_keys:
    description: OpenSSH public keys allowed to log in as root.
    type: list
    elements: str
  nics:
    description:
      - NICs, each a mapping with C(mode) (bridge, routed, macvlan, ipvlan, sriov),
        C(link), C(ip), C(ip6), C(gw), C(gw6), C(mac), C(mtu), C(routes) and the mode's
        options; see C(cvm net --help).
    type: list
    elements: raw
  lxcfs:
    description: Bind LXCFS's /proc files (default when lxcfs runs).
    type: bool
  tune:
    description: Services cvm sizes to the VM's limits and re-tunes on resize.
    type: list
    elements: str
  snapshots:
    description:
      - Snapshots cvm netd takes on a schedule and prunes, as a mapping with C(schedule)
        (hourly, daily, weekly or a cron expression), C(keep) (default 7) and C(volumes)
        (default true), or as C(SCHEDULE:KEEP). Changed without a recreate.
    type: raw
notes:
  - Runs on the container host with cvm's interpreter
    (C(ansible_python_interpreter=/opt/cvm/venv/bin/python)).
"""

EXAMPLES = r"""
- name: A web VM on the LAN bridge
  cvm.toolkit.vm:
    name: web1
    image: cvm/debian12
    cpus: 1.5
    memory: 1g
    ssh_keys: ["{{ lookup('file', '~/.ssh/id_ed25519.pub') }}"]
    nics:
      - {mode: bridge, link: br0, ip: 198.51.100.10/24, gw: 198.51.100.1}

- name: More memory, live
  cvm.toolkit.vm:
    name: web1
    image: cvm/debian12
    memory: 2g

- name: Gone
  cvm.toolkit.vm:
    name: web1
    state: absent
"""

RETURN = r"""
vm:
  description: The VM as cvm inspect shows it (absent after removal or in check mode
    before creation).
  returned: success
  type: dict
  sample: {"name": "web1", "status": "running", "addresses": ["198.51.100.10/24"]}
action:
  description: What was (or, in check mode, would be) done.
  returned: always
  type: str
  sample: change
changes:
  description: Changed fields, each with old and new values.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.cvm.toolkit.plugins.module_utils.cvm_common import (  # noqa: E402
    SPEC_OPTIONS, context, import_cvm, raw_spec)


def main():
    options = dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="started",
                   choices=["present", "started", "stopped", "restarted", "absent"]),
        recreate=dict(type="bool", default=False),
        state_dir=dict(type="path"),
    )
    options.update(SPEC_OPTIONS)
    module = AnsibleModule(argument_spec=options, supports_check_mode=True,
                           required_if=[("state", "present", ["image"]),
                                        ("state", "started", ["image"]),
                                        ("state", "stopped", ["image"]),
                                        ("state", "restarted", ["image"])])
    import_cvm(module)
    from cvm import api, applying
    from cvm.errors import CvmError
    from cvm.spec import parse_spec

    params = module.params
    ctx = context(module)
    name = params["name"]
    record = ctx.store.read_vm(name)
    result = dict(changed=False, action="unchanged", changes={})
    try:
        if params["state"] == "absent":
            if record is not None:
                result.update(changed=True, action="remove",
                              diff=dict(before=record["spec"], after={}))
                if not module.check_mode:
                    api.get(name, ctx).remove(force=True)
            module.exit_json(**result)
        spec = parse_spec(raw_spec(params))
        (item,) = applying.plan([spec], params["recreate"], ctx)
        if item.action == "blocked":
            module.fail_json(msg="%s: %s changed, which needs a recreate; set recreate: true" %
                             (name, ", ".join(item.recreate_fields)), **result)
        if item.problems:  # found before anything changes, in check mode too
            module.fail_json(msg=str(item.problems[0]), **result)
        after = spec.to_dict()
        result.update(action=item.action, changes=dict(
            (k, dict(old=o, new=n)) for k, (o, n) in item.changes.items()))
        if item.action != "unchanged":
            result["changed"] = True
            result["diff"] = dict(before=record["spec"] if record else {}, after=after)
        if not module.check_mode:
            if item.action == "create":
                api.create(spec, start=params["state"] != "stopped", ctx=ctx)
            elif item.action != "unchanged":
                applying.apply([spec], recreate=params["recreate"], ctx=ctx)
        if item.action != "create" or not module.check_mode:
            vm = api.get(name, ctx) if ctx.store.read_vm(name) else None
            if vm is not None:
                result["changed"] |= settle(module, vm, params["state"])
                result["vm"] = api.get(name, ctx).to_dict()
    except CvmError as exc:
        module.fail_json(msg=str(exc), **result)
    module.exit_json(**result)


def settle(module, vm, state):
    """Start, stop or restart as the state asks; True if that changed anything."""
    running = vm.status == "running"
    if state == "started" and not running:
        if not module.check_mode:
            vm.start()
        return True
    if state == "stopped" and running:
        if not module.check_mode:
            vm.stop()
        return True
    if state == "restarted":
        if not module.check_mode:
            vm.restart()
        return True
    return False


if __name__ == "__main__":
    main()
