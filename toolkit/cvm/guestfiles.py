"""Files cvm gives every VM, kept on the host and bind-mounted read-only into it, and the
one directory a VM writes for the host: how its last shutdown went.

/etc/cvm/limits.env, /etc/cvm/limits.json, /etc/cvm/network.env, /etc/cvm/lxcfs and the
wait-ready entrypoint live in <state>/guests/<vm>/ and are bound file by file (so /etc/cvm
stays the VM's own directory). Writing them costs a host file write: no copy into the
container at create (Docker's put_archive mounts the container's filesystem, ~40 ms),
no entering the VM on resize. They are rewritten in place, never replaced, since a bind
mount holds on to the file it was given.

/etc/hosts and /etc/resolv.conf are cvm's too, bound read-write: the VM's container is
made with no network at all in Docker (not even its "none" network, whose sandbox costs
each create and start ~100 ms), so Docker writes neither. They are written when the VM is
made, /etc/hosts's line naming the VM again when its NICs change and /etc/resolv.conf
when its dns or search do (`cvm apply`); the VM's own edits outlive its reboots, and
travel in its archive (export and import, cvm move, snapshots).
"""

import os

from .engine import LXCFS_FILES, LXCFS_MARKER, WAIT_SCRIPT, WAIT_SCRIPT_TEXT, network_env
from .errors import NotFound

# The VM's shutdown path writes here (read-write, the VM's own): `shutdown` holds the
# verb systemd-shutdown ran (poweroff, halt, reboot), `initiator` says "host" when the
# host's stop signal started it, `stopping` that the stop it asked for is under way (see
# cvm.stopsignal). See os-images/common and the compat init.
REPORT_DIR = "/run/cvm/report"
REPORT_KEYS = ("shutdown", "initiator", "stopping")
# Bound read-write: the VM's admin edits them as on any machine.
RESOLVER_FILES = ("/etc/hosts", "/etc/resolv.conf")
HOST_RESOLV_CONF = "/etc/resolv.conf"
# systemd-resolved's list of the real servers, when the host's file names only its stub.
RESOLVED_UPSTREAM = "/run/systemd/resolve/resolv.conf"


def bound_files(spec, init_mode, host, lxcfs=False):
    """{guest path: bytes} of the files bound into a VM of `spec` (`lxcfs`: with LXCFS's
    /proc files)."""
    from . import limits
    files = {path: content for path, (content, _) in limits.files(spec, host).items()}
    env = network_env(spec)
    if env:
        files["/etc/cvm/network.env"] = "".join(
            "%s=%s\n" % (k, v) for k, v in sorted(env.items())).encode()
    if init_mode in ("systemd", "compat"):
        files[WAIT_SCRIPT] = WAIT_SCRIPT_TEXT.encode()
    if lxcfs:
        files[LXCFS_MARKER] = ("LXCFS serves this VM's %s\n" % " ".join(LXCFS_FILES)).encode()
    return files


def resolver_files(spec):
    """{guest path: bytes} of the VM's /etc/hosts and /etc/resolv.conf."""
    return {"/etc/hosts": hosts_file(spec), "/etc/resolv.conf": resolv_conf(spec)}


def read_resolver_files(store, name, guest_paths=RESOLVER_FILES):
    """{guest path: text} of the VM's /etc/hosts and /etc/resolv.conf (or those of
    `guest_paths`) as they are now, its own edits included: what an archive of the VM
    carries."""
    files = {}
    for guest_path in guest_paths:
        try:
            with open(host_path(store, name, guest_path), "rb") as handle:
                files[guest_path] = handle.read().decode("utf-8", "replace")
        except OSError:
            continue
    return files


def still_fitting(files, old_spec, new_spec):
    """{guest path: bytes}: the resolver files `files` of a VM of `old_spec` as a VM of
    `new_spec` keeps them (an import, cvm move, a restored snapshot): /etc/hosts with
    the line naming the VM made for its name and address now; /etc/resolv.conf unless
    the spec's dns or search changed."""
    kept = {}
    if "/etc/hosts" in files:
        kept["/etc/hosts"] = hosts_file(new_spec, files["/etc/hosts"], was=old_spec)
    if "/etc/resolv.conf" in files and old_spec.resolver() == new_spec.resolver():
        kept["/etc/resolv.conf"] = files["/etc/resolv.conf"].encode()
    return kept


def hosts_file(spec, edited=None, was=None):
    """/etc/hosts as a VM needs it: localhost, and its name on its first address.

    `edited`: the VM's file as it is now. Its own lines are kept, and only those naming
    the VM (or, with `was`, naming it as the VM of that spec was named) give way to the
    line naming it on its new address, in the first one's place."""
    names = _names(spec)
    own = "%s\t%s" % (_first_address(spec) or "127.0.1.1", " ".join(names))
    if edited is None:
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                 "ff02::1\tip6-allnodes", "ff02::2\tip6-allrouters", own]
    else:
        naming_the_vm = set(names) | set(_names(was) if was is not None else ())
        lines = []
        for line in edited.splitlines():
            if naming_the_vm & set(line.split("#")[0].split()[1:]):
                if own not in lines:
                    lines.append(own)
            else:
                lines.append(line)
        if own not in lines:
            lines.append(own)
    return ("\n".join(lines) + "\n").encode()


def _names(spec):
    fqdn = spec.effective_hostname
    return [fqdn] if "." not in fqdn else [fqdn, fqdn.split(".")[0]]


def _first_address(spec):
    for nic in spec.nics:
        for address in nic.addresses():
            return address.ip
    return None


def resolv_conf(spec, host_resolv_conf=HOST_RESOLV_CONF):
    """The spec's servers and search domains; what it leaves out, the host's. Servers on
    the host's loopback (a local cache, systemd-resolved's stub) answer nobody inside the
    VM: with only those, systemd-resolved's upstream list is used instead, and a host
    with no other server gives the VM none, rather than a public resolver it never chose."""
    host = _parse_resolv_conf(host_resolv_conf)
    if host["nameserver"] and not _reachable_from_vm(host["nameserver"]):
        host = _parse_resolv_conf(RESOLVED_UPSTREAM) if os.path.exists(RESOLVED_UPSTREAM) \
            else dict(host, nameserver=[])
    servers = spec.dns or _reachable_from_vm(host["nameserver"])
    search = spec.search or host["search"]
    lines = ["# made by cvm for VM %s from its dns and search, else the host's" % spec.name]
    lines += ["nameserver %s" % server for server in servers]
    if search:
        lines.append("search %s" % " ".join(search))
    if host["options"]:
        lines.append("options %s" % " ".join(host["options"]))
    return ("\n".join(lines) + "\n").encode()


def _parse_resolv_conf(path):
    found = {"nameserver": [], "search": [], "options": []}
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError:
        return found
    for line in text.splitlines():
        words = line.split("#")[0].split(";")[0].split()
        if len(words) < 2:
            continue
        if words[0] == "nameserver":
            found["nameserver"].append(words[1])
        elif words[0] in ("search", "domain"):
            found["search"] = words[1:]  # the last one wins, as in the resolver
        elif words[0] == "options":
            found["options"] += words[1:]
    return found


def _reachable_from_vm(servers):
    import ipaddress
    reachable = []
    for server in servers:
        try:
            if not ipaddress.ip_address(server.split("%")[0]).is_loopback:
                reachable.append(server)
        except ValueError:
            continue
    return reachable


def host_path(store, name, guest_path):
    return os.path.join(store.guest_dir(name), os.path.basename(guest_path))


def write(store, name, files):
    """Write (or rewrite in place) the host side of each bound file."""
    directory = store.guest_dir(name)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    for guest_path, content in files.items():
        mode = 0o755 if guest_path == WAIT_SCRIPT else 0o644
        try:
            fd = os.open(host_path(store, name, guest_path), os.O_WRONLY | os.O_CREAT, mode)
        except IsADirectoryError:  # Docker made a directory there: the files were removed
            raise NotFound("the files of VM %s were removed while it was being made "
                           "(cvm rm?)" % name) from None
        try:
            os.write(fd, content)
            os.ftruncate(fd, len(content))
        finally:
            os.close(fd)


def binds(store, name, files, report=False):
    """Docker bind specs for the files (and the shutdown report's directory)."""
    specs = ["%s:%s:%s" % (host_path(store, name, guest_path), guest_path,
                           "rw" if guest_path in RESOLVER_FILES else "ro")
             for guest_path in sorted(files)]
    if report:
        os.makedirs(report_dir(store, name), mode=0o755, exist_ok=True)
        specs.append("%s:%s:rw" % (report_dir(store, name), REPORT_DIR))
    return specs


def report_dir(store, name):
    return os.path.join(store.guest_dir(name), "report")


def read_report(store, name):
    """{"shutdown": verb or None, "initiator": "host" or None} of the VM's last shutdown."""
    report = {}
    for key in ("shutdown", "initiator"):
        try:
            with open(os.path.join(report_dir(store, name), key)) as handle:
                report[key] = handle.read().strip() or None
        except OSError:
            report[key] = None
    return report


def report_written_at(store, name, key):
    """When the VM wrote `key` of its shutdown report (epoch seconds), or None."""
    try:
        return os.stat(os.path.join(report_dir(store, name), key)).st_mtime
    except OSError:
        return None


def clear_report(store, name):
    """Forget the last shutdown's report: a new boot writes its own."""
    for key in REPORT_KEYS:
        try:
            os.unlink(os.path.join(report_dir(store, name), key))
        except OSError:
            pass


def powered_off_from_inside(store, name):
    """Did the VM's last shutdown come from inside it (poweroff, halt, shutdown -h) rather
    than from the host (docker stop or restart, dockerd or host shutdown) or a crash (a
    killed or OOM-killed init writes nothing)?"""
    report = read_report(store, name)
    return report["shutdown"] in ("poweroff", "halt") and report["initiator"] != "host"
