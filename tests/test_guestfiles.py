"""The files cvm gives every VM: /etc/hosts and /etc/resolv.conf, from its spec and the
host's resolver configuration (engine-free; the VMs' view is in test_lifecycle)."""

import pytest

from cvm import guestfiles
from cvm.spec import HostFacts, parse_spec

HOST = HostFacts(cpus=[0, 1], memory_bytes=8 << 30)


def spec(**fields):
    return parse_spec(dict({"name": "vm1", "image": "x"}, **fields), host=HOST)


@pytest.fixture
def host_resolv(tmp_path, monkeypatch):
    """Write the host's resolv.conf (and systemd-resolved's upstream list, if given)."""
    upstream = tmp_path / "upstream.conf"
    monkeypatch.setattr(guestfiles, "RESOLVED_UPSTREAM", str(upstream))

    def write(text, resolved=None):
        path = tmp_path / "resolv.conf"
        path.write_text(text)
        if resolved is not None:
            upstream.write_text(resolved)
        return str(path)
    return write


def resolv_lines(vm_spec, path):
    return guestfiles.resolv_conf(vm_spec, path).decode().splitlines()[1:]


def test_hosts_file_names_the_vm_on_its_first_address():
    vm = spec(hostname="vm1.example.com", nics=[
        {"mode": "bridge", "link": "br0", "ip6": "2001:db8::5/64"},
        {"mode": "bridge", "link": "br0", "ip": "198.51.100.5/24"}])
    text = guestfiles.hosts_file(vm).decode()
    assert "127.0.0.1\tlocalhost\n" in text
    assert "2001:db8::5\tvm1.example.com vm1\n" in text and "198.51.100.5" not in text
    assert "127.0.1.1\tvm1\n" in guestfiles.hosts_file(spec()).decode()


def test_resolv_conf_takes_the_specs_servers_and_search_else_the_hosts(host_resolv):
    host = host_resolv("domain corp.example\nnameserver 198.51.100.53\n"
                       "nameserver 2001:db8::53\noptions edns0 trust-ad\n")
    assert resolv_lines(spec(), host) == [
        "nameserver 198.51.100.53", "nameserver 2001:db8::53", "search corp.example",
        "options edns0 trust-ad"]
    assert resolv_lines(spec(dns=["203.0.113.153"], search=["a.example", "b.example"]),
                        host) == ["nameserver 203.0.113.153", "search a.example b.example",
                                  "options edns0 trust-ad"]
    assert resolv_lines(spec(search=["a.example"]), host)[:3] == [
        "nameserver 198.51.100.53", "nameserver 2001:db8::53", "search a.example"]


def test_the_hosts_loopback_servers_are_not_given_to_the_vm(host_resolv):
    """A server on the host's loopback answers nobody in the VM's network namespace."""
    local_cache = host_resolv("nameserver 127.0.0.1\nnameserver ::1\n"
                              "nameserver 198.51.100.53 # the site's\n")
    assert resolv_lines(spec(), local_cache) == ["nameserver 198.51.100.53"]
    only_local = host_resolv("nameserver 127.0.0.1\nsearch corp.example\n")
    assert resolv_lines(spec(), only_local) == ["search corp.example"]


def test_systemd_resolveds_stub_gives_way_to_its_upstream_servers(host_resolv):
    stub = host_resolv("nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n",
                       resolved="nameserver 198.51.100.53\nsearch lan\n")
    assert resolv_lines(spec(), stub) == ["nameserver 198.51.100.53", "search lan"]


def test_a_host_without_resolv_conf_gives_the_specs_alone(tmp_path):
    missing = str(tmp_path / "none")
    assert resolv_lines(spec(), missing) == []
    assert resolv_lines(spec(dns=["198.51.100.53"]), missing) == ["nameserver 198.51.100.53"]


def test_the_resolver_files_are_the_vms_to_edit(tmp_path):
    class Store:
        def guest_dir(self, name):
            return str(tmp_path / name)
    files = dict(guestfiles.resolver_files(spec()), **{"/etc/cvm/limits.env": b""})
    binds = guestfiles.binds(Store(), "vm1", files)
    assert sorted(bind.rsplit(":", 2)[1:] for bind in binds) == [
        ["/etc/cvm/limits.env", "ro"], ["/etc/hosts", "rw"], ["/etc/resolv.conf", "rw"]]


def test_a_new_address_or_name_replaces_only_the_line_naming_the_vm():
    """The VM's own lines in /etc/hosts outlive a NIC change (and an import under
    another name): only the line naming the VM is made again, in its place."""
    nic = {"mode": "bridge", "link": "br0", "ip": "198.51.100.5/24"}
    old = spec(hostname="vm1.example.com", nics=[nic])
    edited = guestfiles.hosts_file(old).decode().replace(
        "198.51.100.5\tvm1.example.com vm1\n",
        "198.51.100.5\tvm1.example.com vm1 www\n198.51.100.9 db # mine\n")
    moved = spec(hostname="vm1.example.com", nics=[dict(nic, ip="198.51.100.6/24")])
    lines = guestfiles.hosts_file(moved, edited).decode().splitlines()
    assert lines[4:] == ["198.51.100.6\tvm1.example.com vm1", "198.51.100.9 db # mine"]
    assert lines[:4] == edited.splitlines()[:4]
    renamed = spec(name="vm2", nics=[nic])
    lines = guestfiles.hosts_file(renamed, edited, was=old).decode().splitlines()
    assert lines[4:] == ["198.51.100.5\tvm2", "198.51.100.9 db # mine"]
    no_line = "127.0.0.1\tlocalhost\n"  # the VM's admin removed it: it comes back
    assert guestfiles.hosts_file(spec(), no_line) == b"127.0.0.1\tlocalhost\n127.0.1.1\tvm1\n"


def test_an_archived_vm_keeps_its_files_as_they_fit_its_new_spec():
    """An import (cvm move, a restored snapshot) keeps the VM's own resolv.conf unless
    its dns or search changed, and its own /etc/hosts with the line naming it renewed."""
    nic = {"mode": "bridge", "link": "br0", "ip": "198.51.100.5/24"}
    old = spec(nics=[nic], dns=["198.51.100.53"])
    hosts = guestfiles.hosts_file(old).decode() + "198.51.100.9 db\n"
    files = {"/etc/hosts": hosts, "/etc/resolv.conf": "edited resolv\n"}
    same = spec(nics=[nic], dns=["198.51.100.53"], memory="1g")
    assert guestfiles.still_fitting(files, old, same) == {
        "/etc/hosts": hosts.encode(), "/etc/resolv.conf": b"edited resolv\n"}
    moved = spec(nics=[dict(nic, ip="198.51.100.6/24")], dns=["198.51.100.54"])
    assert guestfiles.still_fitting(files, old, moved) == {
        "/etc/hosts": hosts.replace("198.51.100.5\t", "198.51.100.6\t").encode()}
