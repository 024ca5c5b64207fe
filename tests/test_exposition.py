"""The exporter's text is exactly what prometheus_client writes for the same metric
families: cvm writes it itself only because the library's writer was most of a scrape's
time at hundreds of VMs."""

from cvm.monitor import BLOCK_METRICS, NIC_METRICS, VM_METRICS, VMStats, exposition


class FixedSweep:
    """A monitor whose sweep is given."""

    def __init__(self, stats, errors_total=None):
        self.stats = stats
        self.errors_total = errors_total or {}

    def sweep(self, names=None):
        return [s for s in self.stats if not names or s.name in names]


def vm(name, container_id, **fields):
    stats = VMStats(name, container_id)
    stats.image, stats.started_at, stats.when = "cvm/debian12:latest", 1764000000.25, 1764000100.5
    for key, value in fields.items():
        setattr(stats, key, value)
    return stats


def sweep():
    quoted = vm("web", "a" * 64, image='odd"image\\name\nline', cpu_seconds=12.345678,
                memory_usage=67108864, memory_limit=134217728, swap_limit=0, pids=7,
                pids_limit=64, cpu_quota_us=50000, cpu_period_us=100000,
                block={"8:0": {"rbytes": 4096, "wbytes": 1 << 40, "rios": 1, "wios": 2},
                       "253:1": {"rbytes": 0, "wbytes": 10, "rios": 0, "wios": 1}},
                nics={"eth0": {key: 3 for key in ("rx_bytes", "rx_packets", "rx_errors",
                                                  "rx_dropped", "tx_bytes", "tx_packets",
                                                  "tx_errors", "tx_dropped")}})
    plain = vm("db", "b" * 64, cpu_seconds=0.5, memory_usage=1 << 30)
    stopped = vm("off", "c" * 64)
    stopped.status = "stopped"
    return [quoted, plain, stopped]


def library_text(stats, errors_total):
    """prometheus_client's own writing of the same families, in the same order."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    running = [s for s in stats if s.status == "running"]
    labels = ["id", "image", "name"]
    families = []

    def family(kind, metric, help_text, extra, samples):
        cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        made = cls(metric, help_text, labels=labels + extra)
        for s, extra_values, value in samples:
            if value is not None:
                made.add_metric(["/docker/" + s.container_id, s.image or "", s.name] +
                                extra_values, value)
        if made.samples:
            families.append(made)

    for kind, metric, help_text, value, label in VM_METRICS:
        family(kind, metric, help_text, [label[0]] if label else [],
               [(s, [label[1]] if label else [], value(s)) for s in running])
    for metric, help_text, key in BLOCK_METRICS:
        family("counter", metric, help_text, ["device"],
               [(s, [d], s.block[d][key]) for s in running for d in sorted(s.block)])
    for metric, help_text, key in NIC_METRICS:
        family("counter", metric, help_text, ["interface"],
               [(s, [n], s.nics[n][key]) for s in running for n in sorted(s.nics)])
    errors = CounterMetricFamily("cvm_collector_errors_total", "cgroup or /proc files cvm "
                                 "could not read, per VM and file", labels=["name", "file"])
    for (name, what), count in sorted(errors_total.items()):
        errors.add_metric([name, what], count)
    families.append(errors)

    class Collector:
        def collect(self):
            return families
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    return generate_latest(registry)


def test_exposition_is_byte_for_byte_prometheus_clients():
    errors = {("web", "memory.stat"): 2, ('we"b', "net/dev"): 1}
    stats = sweep()
    text = exposition(FixedSweep(stats, errors))
    assert text == library_text(stats, errors)
    # and it says what it should: escaped labels, every device and NIC, no stopped VM
    assert b'image="odd\\"image\\\\name\\nline"' in text
    assert b'container_fs_writes_bytes_total{device="8:0",id="/docker/' + b"a" * 64 in text
    assert b'interface="eth0",name="web"} 3.0' in text
    assert b'name="off"' not in text
    assert b"container_spec_cpu_quota{" in text and text.count(b"container_spec_cpu_quota{") == 1


def test_later_scrapes_follow_renames_new_images_and_new_values():
    """Each series' line is kept from scrape to scrape, and a scrape's value texts are
    shared among its samples: neither may leak a VM's old name, image or value."""
    first = sweep()
    assert exposition(FixedSweep(first)) == library_text(first, {})
    later = sweep()
    later[0].name, later[1].image = "web-renamed", "cvm/debian12:v2"
    later[0].memory_usage, later[1].memory_usage = 1 << 30, 0.0
    later[1].block = {"8:0": {"rbytes": 1, "wbytes": 2, "rios": 3, "wios": 4}}
    text = exposition(FixedSweep(later))
    assert text == library_text(later, {})
    assert b'name="web"' not in text and b'image="cvm/debian12:v2",name="db"} 0.0' in text


def test_values_read_back_with_prometheus_clients_parser():
    from prometheus_client.parser import text_string_to_metric_families
    stats = sweep()
    families = {f.name: f for f in text_string_to_metric_families(
        exposition(FixedSweep(stats)).decode())}
    by_vm = {s.labels["name"]: s.value for s in families["container_memory_usage_bytes"].samples}
    assert by_vm == {"web": 67108864, "db": 1 << 30}
    cpu = {s.labels["name"]: (s.labels["cpu"], s.value)
           for s in families["container_cpu_usage_seconds"].samples}
    assert cpu == {"web": ("total", 12.345678), "db": ("total", 0.5)}
    writes = {s.labels["device"]: s.value for s in families["container_fs_writes_bytes"].samples}
    assert writes == {"8:0": 1 << 40, "253:1": 10}
    assert families["cvm_collector_errors"].samples == []
