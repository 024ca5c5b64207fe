"""The VM spec: parsing, validation and its error messages. No engine needed."""

import pytest

from cvm.errors import SpecError
from cvm.sizes import format_size, parse_cpu_list, parse_size
from cvm.spec import HostFacts, parse_spec, stable_mac
from cvm.specfile import load_file, merge

HOST = HostFacts(cpus=[0, 1, 2, 3], memory_bytes=8 << 30)


def spec(**fields):
    raw = {"name": "web1", "image": "cvm/debian12"}
    raw.update(fields)
    return parse_spec(raw, host=HOST)


@pytest.mark.parametrize("text,expected", [
    ("512m", 512 << 20), ("4g", 4 << 30), ("1.5g", int(1.5 * (1 << 30))), ("100", 100),
    ("64k", 64 << 10), ("2G", 2 << 30), ("512MiB", 512 << 20), ("1t", 1 << 40), (1024, 1024),
])
def test_sizes_parse(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("nbytes,text", [(512 << 20, "512m"), (4 << 30, "4g"), (1536 << 20, "1536m"),
                                         (100, "100b")])
def test_sizes_format_round_trip(nbytes, text):
    assert format_size(nbytes) == text
    assert parse_size(format_size(nbytes)) == nbytes


def test_cpu_list():
    assert parse_cpu_list("0-2,4") == [0, 1, 2, 4]
    with pytest.raises(ValueError):
        parse_cpu_list("2-1")


def test_defaults_are_vm_like():
    vm = spec()
    assert vm.hostname is None and vm.effective_hostname == "web1"
    assert vm.swap == 0 and vm.pids == 4096 and vm.restart == "unless-stopped"
    assert vm.init == "auto"
    assert vm.to_dict() == {"name": "web1", "image": "cvm/debian12"}


def test_round_trip_through_stored_form():
    vm = spec(cpus=1.5, memory="1.5g", cpuset="0-1", volumes=["/srv/a:/data:ro"],
              env={"A": "1"}, dns=["198.51.100.53"], search=["example.com"],
              nics=[{"mode": "bridge", "link": "br0", "ip": "198.51.100.10/24",
                     "gw": "198.51.100.1"}])
    again = parse_spec(vm.to_dict(), host=HOST)
    assert again == vm
    assert again.nics[0].mac == vm.nics[0].mac


# Each bad input names its field and says what is accepted.
BAD = [
    ({"snapshots": "61 * * * *"}, "snapshots.schedule: '61 * * * *' is not hourly, daily, "
                                  "weekly or a cron expression"),
    ({"snapshots": "* * *"}, "snapshots.schedule: '* * *' is not hourly, daily, weekly or a "
                             "cron expression (minute hour day month weekday): it has 3 fields"),
    ({"snapshots": "daily:0"}, "snapshots.keep: 0 is out of range; use 1 to 1000"),
    ({"snapshots": "daily:x"}, "snapshots.keep: 'x' is not a count of snapshots"),
    ({"snapshots": {"keep": 3}}, "snapshots.schedule: is missing"),
    ({"snapshots": {"schedule": "daily", "every": 2}}, "snapshots.every: unknown key"),
    ({"snapshots": {"schedule": "daily", "volumes": "maybe"}}, "snapshots.volumes:"),
    ({"name": ""}, "name: is required"),
    ({"name": "Web_1"}, "name: 'Web_1' is not a DNS label"),
    ({"name": "-web"}, "name: '-web' is not a DNS label"),
    ({"name": "averyverylongname"}, "name: 'averyverylongname' is 17 characters; at most 12"),
    ({"image": ""}, "image: is required"),
    ({"hostname": "bad_host"}, "hostname: 'bad_host' is not a valid hostname"),
    ({"hostname": "a" * 64}, "is not a valid hostname"),
    ({"cpus": "0"}, "cpus: 0 must be above 0"),
    ({"cpus": "-1"}, "cpus: -1 must be above 0"),
    ({"cpus": "abc"}, "cpus: 'abc' is not a number of CPUs"),
    ({"cpus": "0.001"}, "cpus: 0.001 is below Docker's minimum of 0.01"),
    ({"cpus": "5"}, "cpus: 5 is more than the host's 4 CPUs"),
    ({"cpuset": "7"}, "cpuset: CPU 7 does not exist on this host (it has 0-3)"),
    ({"cpuset": "0-x"}, "cpuset: '0-x' is not a CPU list"),
    ({"memory": "12x"}, "memory: '12x' is not a size"),
    ({"memory": "0"}, "memory: must be above 0"),
    ({"memory": "1m"}, "memory: 1m is below Docker's minimum of 6m"),
    ({"memory": "64g"}, "memory: 64g is more than the host's 8g of RAM"),
    ({"swap": "1g"}, "swap: swap needs a memory limit"),
    ({"pids": "0"}, "pids: 0 is out of range"),
    ({"pids": "many"}, "pids: 'many' is not an integer"),
    ({"cpu_shares": "1"}, "cpu_shares: 1 is out of range"),
    ({"blkio_weight": "5"}, "blkio_weight: 5 is out of range"),
    ({"device_read_bps": ["/dev/nonexistent-disk:10m"]},
     "device_read_bps[0]: device /dev/nonexistent-disk does not exist"),
    ({"device_write_iops": ["sda:100"]}, "device_write_iops[0]: 'sda' is not a device path"),
    ({"volumes": ["rel/path:/data"]}, "volumes[0]: host path 'rel/path' is not absolute"),
    ({"volumes": ["/srv:data"]}, "volumes[0]: guest path 'data' is not absolute"),
    ({"volumes": ["/srv:/data:rx"]}, "volumes[0]: '/srv:/data:rx' is not HOST:GUEST[:ro]"),
    ({"volumes": ["/srv/../etc:/data"]}, "must not contain . or .. parts"),
    ({"volumes": ["/a:/data", "/b:/data"]}, "volumes[1]: guest path /data is mounted twice"),
    ({"init": "upstart"}, "init: 'upstart' is not an init mode"),
    ({"command": "sleep 1"}, "command: a command replaces init; it needs init: none"),
    ({"env": {"1BAD": "x"}}, "env.1BAD: is not a valid variable name"),
    ({"env": {"CVM_IP": "x"}}, "env.CVM_IP: CVM_ variables are set by cvm itself"),
    ({"labels": {"io.cvm.vm": "x"}}, "labels.io.cvm.vm: labels starting with io.cvm."),
    ({"restart": "sometimes"}, "restart: 'sometimes' is not a restart policy"),
    ({"dns": ["not-an-ip"]}, "dns[0]: 'not-an-ip' is not an IP address"),
    ({"search": ["bad_domain"]}, "search[0]: 'bad_domain' is not a domain name"),
    ({"ssh_keys": ["hello"]}, "ssh_keys[0]: 'hello' is not an OpenSSH public key"),
    ({"memroy": "1g"}, "memroy: unknown key (did you mean 'memory'?)"),
    ({"name": "1234"}, "name: '1234' is all digits"),
    ({"hostname": "42.example.com"}, "hostname: '42.example.com' starts with an all-digit"),
    ({"volumes": "/srv/x:/data"}, "volumes: '/srv/x:/data' is not a list"),
    ({"dns": "198.51.100.1"}, "dns: '198.51.100.1' is not a list"),
    ({"nics": {"mode": "bridge", "link": "br0"}}, "nics: {'mode': 'bridge', 'link': 'br0'} is "
                                                  "not a list"),
    ({"tune": "nginx"}, "tune: 'nginx' is not a list"),
    ({"tune": ["nginx", "postgres"]}, "tune[1]: 'postgres' is not a service cvm tunes"),
    ({"init": "none", "command": 12}, "command: 12 is not a command"),
    ({"init": "none", "command": [["a"]]}, "command: [['a']] is not a command"),
    ({"init": "none", "command": "sleep 'x"}, "command: No closing quotation"),
    ({"env": {"A": "one\ntwo"}}, "env.A: contains a line break"),
    ({"labels": {"a": "x\ny"}}, "labels.a: contains a line break"),
    ({"labels": {"": "x"}}, "labels: a label needs a key"),
    ({"labels": ["=x"]}, "labels: a label needs a key"),
    ({"volumes": ["/srv/x:/proc/foo"]}, "volumes[0]: guest path /proc/foo is inside /proc"),
    ({"volumes": ["/srv/x:/sys"]}, "volumes[0]: guest path /sys is inside /sys"),
    ({"volumes": ["/srv/x:/dev"]}, "volumes[0]: guest path /dev is inside /dev"),
    ({"volumes": ["/srv/x:/etc/hosts"]}, "volumes[0]: guest path /etc/hosts is made by cvm"),
    ({"volumes": ["/:/host"]}, "volumes[0]: / holds the host's /proc"),
    ({"volumes": ["/etc:/data"]}, "volumes[0]: /etc is the host's /etc"),
    ({"volumes": ["/var:/data"]}, "volumes[0]: /var holds the host's /var/lib/docker"),
    ({"volumes": ["/var/lib/docker/volumes:/data"]}, "is the host's /var/lib/docker"),
    ({"volumes": ["/var/run/docker.sock:/run/docker.sock"]}, "is the host's /run/docker.sock"),
    ({"volumes": ["/boot:/boot"]}, "volumes[0]: /boot is the host's /boot"),
    ({"volumes": ["/var/lib/cvm:/data"]}, "volumes[0]: /var/lib/cvm is the host's"),
    ({"volumes": [{"host": "/srv", "guest": "/data", "rw": True}]}, "volumes[0].rw: unknown"),
    ({"volumes": [7]}, "volumes[0]: 7 is not HOST:GUEST[:ro]"),
]


def test_host_paths_pass_when_the_spec_says_so():
    vm = spec(volumes=["/:/host:ro,host_path_ok",
                       {"host": "/var/run/docker.sock", "guest": "/run/docker.sock",
                        "host_path_ok": True}])
    assert [v.to_text() for v in vm.volumes] == ["/:/host:ro,host_path_ok",
                                                 "/var/run/docker.sock:/run/docker.sock:"
                                                 "host_path_ok"]
    assert parse_spec(vm.to_dict(), host=HOST).volumes == vm.volumes
    assert spec(volumes=["/etc/ssl/certs:/etc/ssl/certs:ro"]).volumes[0].readonly
    assert spec(init="none", command=["sleep", 10]).command == ["sleep", "10"]
    assert spec(tune=["nginx", "nginx"]).tune == ["nginx"]


def test_snapshot_schedules_in_their_spellings():
    assert spec(snapshots="daily").snapshots.to_dict() == {"schedule": "daily", "keep": 7}
    assert spec(snapshots="@weekly:3").snapshots.to_dict() == {"schedule": "weekly", "keep": 3}
    assert spec(snapshots={"schedule": "*/15  *  * * 1-5", "keep": "4", "volumes": False}
                ).to_dict()["snapshots"] == {"schedule": "*/15 * * * 1-5", "keep": 4,
                                             "volumes": False}
    assert "snapshots" not in spec().to_dict()


def test_tuned_services_are_the_ones_cvm_tunes():
    from cvm import tune
    from cvm.spec import TUNED_SERVICES
    assert sorted(TUNED_SERVICES) == sorted(tune.SERVICES)


@pytest.mark.parametrize("fields,message", BAD, ids=[m.split(":")[0] + "-" + str(i)
                                                      for i, (_, m) in enumerate(BAD)])
def test_bad_input_names_field_and_problem(fields, message):
    with pytest.raises(SpecError) as excinfo:
        spec(**fields)
    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


BAD_NICS = [
    ({"mode": "tunnel", "link": "br0"}, "nics[0].mode: 'tunnel' is not a NIC mode"),
    ({"mode": "bridge"}, "nics[0].link: mode bridge needs link="),
    ({"mode": "bridge", "link": "br0", "ip": "198.51.100.300/24"},
     "nics[0].ip: '198.51.100.300/24' is not a valid IPv4 CIDR"),
    ({"mode": "bridge", "link": "br0", "ip": "198.51.100.10"}, "has no prefix length"),
    ({"mode": "bridge", "link": "br0", "ip": "198.51.100.0/24"}, "is the network address"),
    ({"mode": "bridge", "link": "br0", "ip": "2001:db8::5/64"}, "is an IPv6 address"),
    ({"mode": "bridge", "link": "br0", "ip": "198.51.100.10/24", "gw": "203.0.113.1"},
     "nics[0].gw: gateway 203.0.113.1 is outside the NIC's subnet 198.51.100.0/24"),
    ({"mode": "bridge", "link": "br0", "ip6": "2001:db8::5/64", "gw": "198.51.100.1"},
     "nics[0].gw: an IPv4 gateway needs an IPv4 address on the NIC"),
    ({"mode": "bridge", "link": "br0", "ip": "198.51.100.10/24", "gw": "2001:db8::1"},
     "nics[0].gw: 2001:db8::1 is IPv6"),
    ({"mode": "macvlan", "link": "eth9", "vlan": "5000"}, "nics[0].vlan: 5000 is out of range"),
    ({"mode": "macvlan", "link": "eth9", "vlan": "0"}, "nics[0].vlan: 0 is out of range"),
    ({"mode": "bridge", "link": "br0", "mtu": "70000"}, "nics[0].mtu: 70000 is out of range"),
    ({"mode": "bridge", "link": "br0", "mac": "01:00:5e:00:00:01"}, "is a multicast MAC"),
    ({"mode": "bridge", "link": "br0", "mac": "zz:00"}, "is not a MAC address"),
    ({"mode": "ipvlan", "link": "eth9", "mac": "02:00:00:00:00:01"}, "share the parent's MAC"),
    ({"mode": "routed", "ip": "198.51.100.10/32", "gw": "198.51.100.1"},
     "mode routed sets the gateway itself"),
    ({"mode": "routed"}, "mode routed needs ip= or ip6="),
    ({"mode": "bridge", "link": "br0", "ip6": "fe80::1/64"}, "nics[0].ip6: fe80::1 is link-local"),
    ({"mode": "bridge", "link": "br0", "routes": "10.0.0.0/8 via 198.51.100.1"},
     "nics[0].routes: '10.0.0.0/8 via 198.51.100.1' is not a list"),
    ({"mode": "bridge", "link": "br0", "vf": "1"}, "nics[0].vf: does not apply to mode bridge"),
    ({"mode": "bridge", "link": "br0", "colour": "red"}, "nics[0].colour: unknown NIC option"),
    ({"mode": "sriov", "link": "pf0", "qos": "3"}, "qos is the VLAN priority; it needs vlan="),
    ({"mode": "bridge", "link": "br0", "name": "this-name-is-too-long"}, "not a valid interface"),
    ({"mode": "bridge", "link": "br0", "ip": "198.51.100.10/24",
      "routes": ["203.0.113.0/24 via 192.0.2.1"]}, "next hop 192.0.2.1 is outside"),
]


@pytest.mark.parametrize("nic,message", BAD_NICS, ids=[str(i) for i in range(len(BAD_NICS))])
def test_bad_nics(nic, message):
    with pytest.raises(SpecError) as excinfo:
        spec(nics=[nic])
    assert message in str(excinfo.value)


def test_nics_together():
    nic = {"mode": "bridge", "link": "br0", "ip": "198.51.100.10/24"}
    with pytest.raises(SpecError, match="nics.1..name: interface name eth0 is already used"):
        spec(nics=[nic, dict(nic, name="eth0", ip="198.51.100.11/24")])
    with pytest.raises(SpecError, match="address 198.51.100.10 is already used by nics.0."):
        spec(nics=[nic, dict(nic)])
    with pytest.raises(SpecError, match="at most 8"):
        spec(nics=[dict(nic, ip="198.51.100.%d/24" % (10 + i)) for i in range(9)])


def test_nic_text_form_and_stable_mac():
    vm = spec(nics=["mode=bridge,link=br0,ip=198.51.100.10/24,gw=198.51.100.1,hairpin=on"])
    nic = vm.nics[0]
    assert (nic.mode, nic.link, nic.name, nic.option("hairpin")) == ("bridge", "br0", "eth0", True)
    assert nic.mac == stable_mac("web1", 0, "198.51.100.10/24")
    first = int(nic.mac[:2], 16)
    assert first & 2 and not first & 1  # locally administered, unicast
    assert spec(nics=["mode=bridge,link=br0,ip=198.51.100.11/24"]).nics[0].mac != nic.mac


def test_a_nic_mode_is_its_driver_and_a_registration(monkeypatch):
    """The spec knows only the common keys: a mode's options, their defaults and rules
    come from its driver, so a new mode is one class plus one DRIVERS entry."""
    from cvm import net
    from cvm.net.base import NicDriver, Option
    from cvm.validation import as_int, fail

    class TunnelDriver(NicDriver):
        mode = "tunnel"
        options = {"key": Option(lambda where, value: as_int(where, value, 1, 99)),
                   "ttl": Option(lambda where, value: as_int(where, value, 1, 255), 64)}
        refused = {"gw": "tunnels route by key; drop gw"}

        def check_options(self, nic, where):
            if nic.option("key") is None:
                fail(where + ".key", "a tunnel needs key=")

    monkeypatch.setitem(net.DRIVERS, "tunnel", TunnelDriver())
    nic = spec(nics=["mode=tunnel,link=eth9,key=7,ip=198.51.100.10/24"]).nics[0]
    assert (nic.option("key"), nic.option("ttl"), nic.option("hairpin")) == (7, 64, None)
    assert nic.to_dict() == {"mode": "tunnel", "link": "eth9", "name": "eth0",
                             "ip": "198.51.100.10/24",
                             "mac": nic.mac, "key": 7}
    assert parse_spec(spec(nics=[nic.to_dict()]).to_dict(), host=HOST).nics[0] == nic
    for bad, message in (("key=100", "nics[0].key: 100 is out of range"),
                         ("key=1,hairpin=on", "nics[0].hairpin: does not apply to mode tunnel"),
                         ("key=1,kye=2", "nics[0].kye: unknown NIC option (did you mean 'key'?)"),
                         ("key=1,ip=198.51.100.10/24,gw=198.51.100.1",
                          "nics[0].gw: tunnels route by key; drop gw"),
                         ("ttl=3", "nics[0].key: a tunnel needs key=")):
        with pytest.raises(SpecError) as excinfo:
            spec(nics=["mode=tunnel,link=eth9," + bad])
        assert message in str(excinfo.value)
    with pytest.raises(SpecError, match="nics.0..mode: 'tunnel' is not a NIC mode"):
        monkeypatch.delitem(net.DRIVERS, "tunnel")
        spec(nics=["mode=tunnel,link=eth9,key=7"])


def test_merge_flags_override_file():
    merged = merge({"name": "a", "memory": "1g", "dns": ["198.51.100.1"]},
                   {"memory": "2g", "dns": [], "cpus": None})
    assert merged == {"name": "a", "memory": "2g", "dns": ["198.51.100.1"]}


def test_load_file_forms(tmp_path):
    single = tmp_path / "one.yml"
    single.write_text("name: web1\nimage: cvm/debian12\n")
    assert load_file(str(single)) == [(str(single) + ":", {"name": "web1", "image": "cvm/debian12"})]
    many = tmp_path / "many.yml"
    many.write_text("defaults:\n  image: cvm/debian12\n  memory: 1g\n"
                    "vms:\n  - name: a\n  - name: b\n    memory: 2g\n")
    entries = load_file(str(many))
    assert [e[1] for e in entries] == [{"image": "cvm/debian12", "memory": "1g", "name": "a"},
                                       {"image": "cvm/debian12", "memory": "2g", "name": "b"}]
    assert entries[1][0].endswith("vms[1]")


def test_load_file_errors(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("name: web1\nimage: [unclosed\nmemory: 1g\n")
    with pytest.raises(SpecError, match=r"bad.yml: malformed YAML at line \d+, column \d+"):
        load_file(str(bad))
    with pytest.raises(SpecError, match="missing.yml: No such file"):
        load_file(str(tmp_path / "missing.yml"))
    top = tmp_path / "top.yml"
    top.write_text("vms: []\nvsm: []\n")
    with pytest.raises(SpecError, match="vsm: unknown top-level key"):
        load_file(str(top))
    unknown = tmp_path / "unknown.yml"
    unknown.write_text("vms:\n  - name: a\n    image: x\n    cpuz: 2\n")
    where, raw = load_file(str(unknown))[0]
    with pytest.raises(SpecError, match=r"unknown.yml: vms\[0\].cpuz: unknown key \(did you mean "
                                        r"'cpus'\?\)"):
        parse_spec(raw, where=where, host=HOST)


def test_spec_files_are_utf8_yaml_with_each_key_once(tmp_path):
    binary = tmp_path / "binary.yml"
    binary.write_bytes(b"name: web1\nimage: \xff\xfe\x00\x01\n")
    with pytest.raises(SpecError, match=r"binary.yml: not UTF-8 text \(byte 0xff on line 2\)"):
        load_file(str(binary))
    nul = tmp_path / "nul.yml"
    nul.write_bytes(b"name: web1\x00\n")
    with pytest.raises(SpecError, match="nul.yml: holds a NUL byte"):
        load_file(str(nul))
    twice = tmp_path / "twice.yml"
    twice.write_text("vms:\n  - name: a\n    image: x\n    memory: 1g\n    memory: 2g\n")
    with pytest.raises(SpecError, match=r"twice.yml: line 5, column 5: duplicate key 'memory'"):
        load_file(str(twice))
    nested = tmp_path / "nested.yml"
    nested.write_text("name: a\nimage: x\nenv: {A: 1, A: 2}\n")
    with pytest.raises(SpecError, match="duplicate key 'A'"):
        load_file(str(nested))


def test_the_net_help_lists_each_modes_options_from_its_driver():
    from cvm.cli.group import net as net_group
    from cvm.net import DRIVERS
    listed = {}
    for line in net_group.callback.__doc__.splitlines():
        mode, colon, options = line.strip().partition(": ")
        if colon and mode in DRIVERS:
            listed[mode] = options.split(", ")
    assert listed == {mode: list(driver.options) for mode, driver in DRIVERS.items()}
