"""What the running kernel can do for NICs, found by trying it in a throwaway netns.

Modules may be built in, loadable or absent, and /proc/modules does not tell which
link kinds work; creating each kind in a private network namespace does, and
touches nothing on the host.
"""

import json
import os

CLONE_NEWNET = 0x40000000

# feature -> the name operators know it by
FEATURES = {
    "veth": "veth",
    "bridge": "bridge",
    "macvlan": "macvlan",
    "ipvlan": "ipvlan",
    "8021q": "802.1Q VLANs (8021q)",
    "bridge_vlan_filtering": "bridge VLAN filtering",
    "vxlan": "vxlan",
}

_cache = None


def _probe_in_child():
    from pyroute2 import IPRoute

    results = {}
    with IPRoute() as ipr:

        def attempt(feature, **kwargs):
            try:
                ipr.link("add", **kwargs)
                results[feature] = True
            except Exception:
                results[feature] = False

        # Not every kernel has the dummy driver: the parent of the stacked kinds is a
        # veth end, or a bridge when even veth is missing.
        attempt("veth", ifname="cvmprobe0", kind="veth", peer="cvmprobe1")
        attempt("bridge", ifname="cvmprobe3", kind="bridge")
        found = ipr.link_lookup(ifname="cvmprobe0") or ipr.link_lookup(ifname="cvmprobe3")
        parent = found[0] if found else 1
        attempt("macvlan", ifname="cvmprobe4", kind="macvlan", link=parent, macvlan_mode="bridge")
        attempt("ipvlan", ifname="cvmprobe5", kind="ipvlan", link=parent, ipvlan_mode=0)
        attempt("8021q", ifname="cvmprobe6", kind="vlan", link=parent, vlan_id=10)
        attempt("vxlan", ifname="cvmprobe7", kind="vxlan", vxlan_id=10, vxlan_link=parent)
        results["bridge_vlan_filtering"] = False
        if results["bridge"]:
            try:
                ipr.link("set", index=ipr.link_lookup(ifname="cvmprobe3")[0],
                         kind="bridge", br_vlan_filtering=1)
                info = ipr.link("get", index=ipr.link_lookup(ifname="cvmprobe3")[0])[0]
                data = info.get(("linkinfo", "data")) or info.get_attr("IFLA_LINKINFO") \
                    .get_attr("IFLA_INFO_DATA")
                results["bridge_vlan_filtering"] = bool(data.get("IFLA_BR_VLAN_FILTERING"))
            except Exception:
                results["bridge_vlan_filtering"] = False
    return results


CACHE_FILE = "/run/cvm/kernel-features.json"


def _cache_key():
    """Changes on reboot and when modules are loaded or unloaded."""
    import hashlib
    digest = hashlib.sha1()
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/modules"):
        try:
            with open(path, "rb") as handle:
                digest.update(b" ".join(line.split(b" ", 1)[0] for line in handle))
        except OSError:
            pass
    return digest.hexdigest()


def features():
    """{feature: bool} for FEATURES. Probing forks (~0.1 s), so results are kept in
    memory and in /run, keyed by boot and loaded modules."""
    global _cache
    if _cache is not None:
        return dict(_cache)
    key = _cache_key()
    try:
        with open(CACHE_FILE) as handle:
            stored = json.load(handle)
        if stored.get("key") == key:
            _cache = stored["features"]
            return dict(_cache)
    except (OSError, ValueError, KeyError):
        pass
    _cache = _probe()
    try:
        os.makedirs(os.path.dirname(CACHE_FILE), exist_ok=True)
        with open(CACHE_FILE + ".tmp", "w") as handle:
            json.dump({"key": key, "features": _cache}, handle)
        os.rename(CACHE_FILE + ".tmp", CACHE_FILE)
    except OSError:
        pass
    return dict(_cache)


def _probe():
    import ctypes

    import pyroute2  # noqa: F401  (imported before fork so the child does not pay again)

    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            os.close(read_end)
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWNET) == 0:
                os.write(write_end, json.dumps(_probe_in_child()).encode())
                code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        data = pipe.read()
    os.waitpid(child, 0)
    return json.loads(data) if data else {f: False for f in FEATURES}


def sriov_pfs(sys_class_net="/sys/class/net"):
    """{pf_name: total_vfs} for interfaces that can have SR-IOV virtual functions."""
    result = {}
    try:
        names = os.listdir(sys_class_net)
    except OSError:
        return result
    for name in names:
        path = os.path.join(sys_class_net, name, "device", "sriov_totalvfs")
        try:
            with open(path) as handle:
                total = int(handle.read().strip() or 0)
        except (OSError, ValueError):
            continue
        if total > 0:
            result[name] = total
    return result
