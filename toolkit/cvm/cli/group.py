"""The click group `cvm` and its sub-groups, which every command module adds to."""

import click

from .. import __version__
from . import calls

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="cvm")
@click.option("--verbose", is_flag=True, help="Say where operations run (cvm netd or here).")
def cli(verbose):
    """Run Docker containers as if they were virtual machines."""
    calls.verbose = calls.verbose or verbose


@cli.group(context_settings=CONTEXT_SETTINGS)
def net():
    """NICs of VMs: attach, detach, list.

    \b
    A NIC is given as key=value pairs, e.g.
      mode=bridge,link=br0,ip=198.51.100.10/24,gw=198.51.100.1
    Modes: bridge (veth into a host bridge), routed (veth, host routes the /32 and
    answers ARP/NDP on link=UPLINK), macvlan, ipvlan (on parent link=), sriov
    (a VF of PF link=, vf=N or the first free). Common keys: name, ip, ip6, gw,
    gw6, mac, mtu, routes ("CIDR via ADDR", repeatable). Per mode:
      bridge: hairpin, host_name, vlan, filtering
      routed: host_name, filtering
      macvlan: macvlan_mode, vlan, filtering
      ipvlan: ipvlan_mode, vlan, filtering
      sriov: vf, vlan, qos, spoofchk, trust, link_state, min_rate, max_rate
    """


@cli.group(context_settings=CONTEXT_SETTINGS)
def image():
    """Build, import, list and remove OS images."""


@cli.group(context_settings=CONTEXT_SETTINGS)
def bridge():
    """Host bridges for VMs (persisted and recreated at boot by cvm netd)."""
