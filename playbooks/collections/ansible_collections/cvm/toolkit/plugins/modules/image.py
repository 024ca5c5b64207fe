#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cvm maintainers. Apache-2.0.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: image
short_description: A cvm OS image, built on the host
description:
  - Builds an image from a distro's recipe when it is missing or its recipe changed
    (the image carries the recipe's hash), from debootstrap (offline, Debian 12) or from a
    base image already on the host. No registry is used.
version_added: "0.1.0"
author: cvm maintainers
options:
  distro:
    description: The distro's recipe (debian12, ubuntu2204, ubuntu2404, centos7, rocky8,
      rocky9, alma8, alma9).
    type: str
    required: true
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
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.cvm.toolkit.plugins.module_utils.cvm_common import (  # noqa: E402
    context, import_cvm)


def main():
    module = AnsibleModule(argument_spec=dict(
        distro=dict(type="str", required=True), tag=dict(type="str"),
        rootfs=dict(type="str", choices=["debootstrap"]), base=dict(type="str"),
        extra_packages=dict(type="list", elements="str", default=[]),
        force=dict(type="bool", default=False),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        state_dir=dict(type="path")), supports_check_mode=True,
        mutually_exclusive=[("rootfs", "base")])
    import_cvm(module)
    from cvm import images
    from cvm.errors import CvmError, SpecError
    params = module.params
    ctx = context(module)
    tag = params["tag"] or "cvm/%s:latest" % params["distro"]
    try:
        try:
            current = ctx.engine.image(tag)
        except SpecError:
            current = None
        if params["state"] == "absent":
            if current is not None and not module.check_mode:
                images.rm(tag, ctx=ctx)
            module.exit_json(changed=current is not None, tag=tag)
        labels = ((current or {}).get("Config") or {}).get("Labels") or {}
        fresh = labels.get("io.cvm.recipe-hash") == images.recipe_hash(params["distro"])
        if current is not None and fresh and not params["force"]:
            module.exit_json(changed=False, tag=tag)
        if not module.check_mode:
            images.build(params["distro"], base=params["base"], rootfs=params["rootfs"],
                         tag=tag, extra_packages=params["extra_packages"], ctx=ctx)
    except CvmError as exc:
        module.fail_json(msg=str(exc), tag=tag)
    module.exit_json(changed=True, tag=tag)


if __name__ == "__main__":
    main()
