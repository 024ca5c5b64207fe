# -*- coding: utf-8 -*-
# Copyright: cvm maintainers. Apache-2.0.
"""Filters for a cvm fleet's overlay bridges."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


def underlay_address(host_vars, name):
    """A host's underlay address: cvm_underlay_address, else its inventory address."""
    return host_vars.get("cvm_underlay_address") or host_vars.get("ansible_host") or name


def overlay_peers(hostvars, hosts, me, bridge):
    """The underlay addresses of the hosts other than `me` that declare the overlay
    bridge `bridge` (same name, same VNI): where its VXLAN port floods to."""
    vni = (bridge.get("vxlan") or {}).get("id")
    peers = []
    for host in hosts:
        if host == me:
            continue
        declared = [b for b in hostvars[host].get("cvm_bridges") or []
                    if b.get("name") == bridge.get("name") and
                    (b.get("vxlan") or {}).get("id") == vni]
        if declared:
            peers.append(underlay_address(hostvars[host], host))
    return sorted(peers)


class FilterModule(object):
    def filters(self):
        return {"overlay_peers": overlay_peers, "underlay_address": underlay_address}
