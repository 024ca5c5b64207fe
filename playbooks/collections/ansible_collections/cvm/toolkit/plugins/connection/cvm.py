# -*- coding: utf-8 -*-
# Copyright: cvm maintainers. Apache-2.0.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: cvm
short_description: Reach a VM through cvm exec on its container host
version_added: "0.1.0"
author: cvm maintainers
description:
  - Runs commands in a cvm VM with C(cvm exec) on the VM's container host, locally or over
    ssh to the host. For VMs without sshd, or before their network exists.
  - Commands have the VM's own privileges (capabilities, seccomp profile, cgroups), as
    processes that C(docker exec) starts; they are counted against the VM's limits.
options:
  cvm_vm:
    description: The VM's name.
    type: str
    vars:
      - name: cvm_vm
      - name: inventory_hostname
  cvm_host_address:
    description: The container host to ssh to; empty runs cvm on this machine.
    type: str
    default: ""
    vars:
      - name: cvm_host_address
  cvm_command:
    description: The cvm command on the container host.
    type: str
    default: cvm
    vars:
      - name: cvm_command
  cvm_state_dir:
    description: cvm's state directory on the container host.
    type: str
    default: ""
    vars:
      - name: cvm_state_dir
"""

import shlex  # noqa: E402
import subprocess  # noqa: E402

from ansible.errors import AnsibleConnectionFailure  # noqa: E402
from ansible.plugins.connection import ConnectionBase  # noqa: E402


class Connection(ConnectionBase):
    transport = "cvm.toolkit.cvm"
    has_pipelining = True

    def _connect(self):
        self._connected = True
        return self

    def _argv(self, command):
        cvm = [self.get_option("cvm_command")]
        state_dir = self.get_option("cvm_state_dir")
        prefix = ["env", "CVM_STATE_DIR=%s" % state_dir] if state_dir else []
        argv = prefix + cvm + ["exec", self.get_option("cvm_vm"), "--", "/bin/sh", "-c",
                               command]
        host = self.get_option("cvm_host_address")
        if host:
            return ["ssh", "-o", "BatchMode=yes", host, " ".join(shlex.quote(a) for a in argv)]
        return argv

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super(Connection, self).exec_command(cmd, in_data=in_data, sudoable=sudoable)
        process = subprocess.Popen(self._argv(cmd), stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stdout, stderr = process.communicate(in_data)
        return process.returncode, stdout, stderr

    def put_file(self, in_path, out_path):
        super(Connection, self).put_file(in_path, out_path)
        with open(in_path, "rb") as handle:
            data = handle.read()
        code, _, stderr = self.exec_command("cat > %s" % shlex.quote(out_path), in_data=data)
        if code != 0:
            raise AnsibleConnectionFailure("cannot write %s in VM %s: %s" % (
                out_path, self.get_option("cvm_vm"), stderr.decode(errors="replace")))

    def fetch_file(self, in_path, out_path):
        super(Connection, self).fetch_file(in_path, out_path)
        code, stdout, stderr = self.exec_command("cat %s" % shlex.quote(in_path))
        if code != 0:
            raise AnsibleConnectionFailure("cannot read %s in VM %s: %s" % (
                in_path, self.get_option("cvm_vm"), stderr.decode(errors="replace")))
        with open(out_path, "wb") as handle:
            handle.write(stdout)

    def close(self):
        self._connected = False
