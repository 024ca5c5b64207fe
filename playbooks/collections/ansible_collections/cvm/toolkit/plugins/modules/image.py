#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cvm maintainers. Apache-2.0.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: image
short_description: A cvm OS image, built once and distributed by the fleet's registry
description:
  - Builds an image from a distro's recipe when it is missing or its recipe changed
    (the image carries the recipe's hash), from debootstrap (offline, Debian 12) or from a
    base image already on the host; with C(push), puts it into the fleet's registry.
  - With C(pull), makes the host's image the one a registry reference names by digest,
    pulling only when the host lacks that digest (no build on the host).
version_added: "0.1.0"
author: cvm maintainers
options:
  distro:
    description: The distro's recipe (debian12, ubuntu2204, ubuntu2404, centos7, rocky8,
      rocky9, alma8, alma9). Required unless C(pull) is given.
    type: str
  push:
    description: After building, push the image to this registry (host:port); returns its
      C(reference) (registry/name@digest). Pushes nothing when the registry has it.
    type: str
  pull:
    description: A registry reference by digest (registry/name@sha256:...) to make C(tag)
      from, pulled only when the host lacks that digest.
    type: str
  tag:
    description: The image's tag; defaults to C(cvm/DISTRO:latest).
    type: str
  rootfs:
    description: Build the base with debootstrap instead of from a base image.
    type: str
    choices: [debootstrap]
  base:
    description: A base image already on the host (defaults to the recipe's).
    type: str
  extra_packages:
    description: Packages added to the distro's fat profile.
    type: list
    elements: str
    default: []
  force:
    description: Build even when the image is up to date.
    type: bool
    default: false
  state:
    description: Whether the image exists.
    type: str
    choices: [present, absent]
    default: present
  state_dir:
    description: cvm's state directory on the host.
    type: path
"""

EXAMPLES = r"""
- name: Debian 12, offline
  cvm.toolkit.image:
    distro: debian12
    rootfs: debootstrap

- name: Rocky 9 with nginx, from the registry image loaded on this host
  cvm.toolkit.image:
    distro: rocky9
    base: rockylinux:9
    tag: cvm/rocky9-web
    extra_packages: [nginx]
"""

RETURN = r"""
tag:
  description: The image's tag.
  returned: always
  type: str
reference:
  description: What hosts pull (registry/name@digest).
  returned: with push or pull
  type: str
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.cvm.toolkit.plugins.module_utils.cvm_common import (  # noqa: E402
    context, import_cvm)


def main():
    module = AnsibleModule(argument_spec=dict(
        distro=dict(type="str"), tag=dict(type="str"),
        rootfs=dict(type="str", choices=["debootstrap"]), base=dict(type="str"),
        extra_packages=dict(type="list", elements="str", default=[]),
        force=dict(type="bool", default=False), push=dict(type="str"), pull=dict(type="str"),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        state_dir=dict(type="path")), supports_check_mode=True,
        mutually_exclusive=[("rootfs", "base"), ("pull", "distro"), ("pull", "push")],
        required_one_of=[("distro", "pull")], required_by={"pull": ("tag",)})
    import_cvm(module)
    from cvm import images
    from cvm.errors import CvmError
    params = module.params
    ctx = context(module)
    tag = params["tag"] or "cvm/%s:latest" % params["distro"]
    try:
        if params["pull"]:
            changed = params["pull"] not in (_image(ctx, tag) or {}).get("RepoDigests", [])
            if changed and not module.check_mode:
                images.pull(params["pull"], tag, ctx=ctx)
            module.exit_json(changed=changed, tag=tag, reference=params["pull"])
        current = _image(ctx, tag)
        if params["state"] == "absent":
            if current is not None and not module.check_mode:
                images.rm(tag, ctx=ctx)
            module.exit_json(changed=current is not None, tag=tag)
        labels = ((current or {}).get("Config") or {}).get("Labels") or {}
        fresh = labels.get("io.cvm.recipe-hash") == images.recipe_hash(params["distro"])
        changed = current is None or not fresh or params["force"]
        if changed and not module.check_mode:
            images.build(params["distro"], base=params["base"], rootfs=params["rootfs"],
                         tag=tag, extra_packages=params["extra_packages"], ctx=ctx)
        result = dict(changed=changed, tag=tag)
        if params["push"] and not module.check_mode:
            pushed = None if changed else images.pushed(tag, params["push"], ctx=ctx)
            if pushed:
                result["reference"] = pushed
            else:
                result.update(changed=True, reference=images.push(tag, params["push"],
                                                                  ctx=ctx)["reference"])
    except CvmError as exc:
        module.fail_json(msg=str(exc), tag=tag)
    module.exit_json(**result)


def _image(ctx, tag):
    from cvm.errors import SpecError
    try:
        return ctx.engine.image(tag)
    except SpecError:
        return None


if __name__ == "__main__":
    main()
