"""Issue 6 benchmark: one sweep of every VM's counters, against docker stats.

- sweep time for 20, 50 and 100 running VMs (median of 20 sweeps);
- `docker stats --no-stream` for the same 20 VMs in the same run, and the ratio;
- the exporter's CPU use at one scrape per second with 100 VMs (60 s of scraping).
"""

import os
import statistics
import subprocess
import time
import urllib.request

from common import BUSYBOX, CVM, header, realm

COUNTS = [int(n) for n in os.environ.get("BENCH_MONITOR_COUNTS", "20,50,100").split(",")]
SWEEPS = int(os.environ.get("BENCH_SWEEPS", "20"))
SCRAPE_SECONDS = int(os.environ.get("BENCH_SCRAPE_SECONDS", "60"))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))


def main():
    from cvm import api
    from cvm.monitor import Monitor
    from cvm.spec import parse_spec
    header("monitor: sweep cost (busybox VMs, limits set, no network)")
    with realm(with_netd=False) as (ctx, env):
        created = 0
        for count in COUNTS:
            while created < count:
                api.create(parse_spec({"name": "bm%d" % created, "image": BUSYBOX,
                                       "init": "none", "memory": "64m", "cpus": 0.2,
                                       "command": ["sleep", "100000"]}), ctx=ctx)
                created += 1
            monitor = Monitor(ctx.store)
            monitor.sweep()  # finding the VMs is a one-off: not what a sweep costs
            times = []
            for _ in range(SWEEPS):
                started = time.perf_counter()
                sweep = monitor.sweep()
                times.append(time.perf_counter() - started)
            assert len([s for s in sweep if s.status == "running"]) == count
            line = "%3d VMs: sweep median %.1f ms" % (count, statistics.median(times) * 1000)
            if count == COUNTS[0]:
                names = ["bm%d" % i for i in range(count)]
                docker_times = []
                for _ in range(3):
                    started = time.perf_counter()
                    subprocess.run(["docker", "stats", "--no-stream"] + names, check=True,
                                   capture_output=True)
                    docker_times.append(time.perf_counter() - started)
                docker = statistics.median(docker_times)
                line += "; docker stats --no-stream %.0f ms; %.0fx faster" % (
                    docker * 1000, docker / statistics.median(times))
            print(line)
        port = 19730
        exporter = subprocess.Popen([CVM, "exporter", "--listen", "127.0.0.1:%d" % port],
                                    env=env, stderr=subprocess.DEVNULL)
        try:
            url = "http://127.0.0.1:%d/metrics" % port
            for _ in range(100):
                try:
                    urllib.request.urlopen(url, timeout=5).read()
                    break
                except OSError:
                    time.sleep(0.1)
            before = cpu_seconds(exporter.pid)
            started = time.monotonic()
            for i in range(SCRAPE_SECONDS):
                urllib.request.urlopen(url, timeout=5).read()
                time.sleep(max(0.0, started + i + 1 - time.monotonic()))
            used = cpu_seconds(exporter.pid) - before
            elapsed = time.monotonic() - started
            print("exporter, %d VMs, 1 scrape/s for %.0f s: %.2f%% of one CPU" % (
                created, elapsed, 100.0 * used / elapsed))
        finally:
            exporter.terminate()
            exporter.wait()


if __name__ == "__main__":
    main()
