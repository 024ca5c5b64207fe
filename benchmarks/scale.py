"""Issue 15 benchmark: cvm's listings, stats and exporter as a host fills with VMs, and
creating and removing many (python benchmarks/run.py scale; N from BENCH_SCALE_VMS or
`python benchmarks/scale.py N`).

- `cvm create` of the first and the last tenth of N systemd VMs (whole process), the
  last tenth once the host has settled (the VMs before it booted), as the first had an
  idle host; beside `docker run --net=none` of the same image at both points (on the
  settled host, and one just before each create of both tenths: the same load), and
  with a few creates at each point made in-process, split into the time Docker took to
  answer cvm's requests and cvm's own;
- a NIC attached to each (IPv6, on a host-only bridge);
- with N running, once they have booted and the host is mostly idle: `cvm ls`,
  `cvm net ls`, `cvm stats`, `cvm stats --json` against `docker ps -a` and
  `docker stats --no-stream`; an exporter scrape cold and warm;
- `cvm rm -f` of all N at once (one command; netd removes them in parallel);
- the host's mount table at both points, and what reading it once costs: runc reads all
  of it five times per container start, and it holds a line per running container (its
  overlay root), so this is a share of Docker's start that grows with the VMs.
"""

import contextlib
import os
import statistics
import subprocess
import sys
import time
import urllib.request

from common import CVM, DEBIAN, cvm, header, realm

ROUNDS = 5


def whole(argv, env, rounds=ROUNDS):
    """Median seconds of `argv` as a whole process."""
    return statistics.median(_timed(argv, env) for _ in range(rounds))


def busy_fraction(window=3.0):
    """The share of all CPUs' time spent busy over `window` seconds."""
    def totals():
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # all, idle + iowait
    total, idle = totals()
    time.sleep(window)
    total2, idle2 = totals()
    return 1 - (idle2 - idle) / max(1, total2 - total)


def settle(busy=0.2, at_most=600):
    """Wait until the VMs have booted and the host is mostly idle again, over two windows
    in a row (booting VMs wait on the disk in bursts): listings are measured on a host of
    N idle VMs, not of N booting ones. Returns the seconds waited."""
    started, quiet = time.monotonic(), 0
    while quiet < 2 and time.monotonic() - started < at_most:
        quiet = quiet + 1 if busy_fraction() <= busy else 0
    return time.monotonic() - started


def mount_table():
    """(lines, bytes, median seconds to read it) of this host's mount table, as runc reads
    it (/proc/self/mountinfo, from the host's mount namespace)."""
    took = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        with open("/proc/self/mountinfo", "rb") as table:
            text = table.read()
        took.append(time.perf_counter() - started)
    return text.count(b"\n"), len(text), statistics.median(took)


def scrape(url):
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        response.read()
    return time.perf_counter() - started


def docker_runs(env, rounds=ROUNDS):
    """Median seconds of `docker run -d --net=none` of the VMs' image (its containers
    removed after)."""
    names = ["scale-docker-%d" % i for i in range(rounds)]
    try:
        return statistics.median(docker_run(env, name) for name in names)
    finally:
        remove_containers(names)


def docker_run(env, name):
    """Seconds of one `docker run -d --net=none` of the VMs' image, as container `name`."""
    return _timed(["docker", "run", "-d", "--net=none", "--memory", "64m", "--name", name,
                   DEBIAN, "sleep", "100000"], env)


def remove_containers(names):
    subprocess.run(["docker", "rm", "-f"] + list(names), capture_output=True)


def beside(indexes):
    """The names of the containers of `docker run`s made just before creates `indexes`:
    under the same load as those creates (the VMs just created still booting)."""
    return ["scale-beside-%d" % i for i in indexes]


def create_split(ctx, prefix, rounds=ROUNDS):
    """Median (seconds of a create, seconds of it spent waiting for Docker's answers) of
    `rounds` creates made in this process (the VMs stay, with the others)."""
    import requests
    from cvm import api
    from cvm.spec import parse_spec
    waited = [0.0]
    send = requests.Session.send

    def timed_send(session, *args, **kwargs):
        started = time.perf_counter()
        try:
            return send(session, *args, **kwargs)
        finally:
            waited[0] += time.perf_counter() - started
    requests.Session.send = timed_send
    totals, in_docker = [], []
    try:
        for index in range(rounds):
            spec = parse_spec({"name": "%s%d" % (prefix, index), "image": DEBIAN,
                               "memory": "64m"})
            waited[0] = 0.0
            started = time.perf_counter()
            api.create(spec, ctx=ctx)
            totals.append(time.perf_counter() - started)
            in_docker.append(waited[0])
    finally:
        requests.Session.send = send
    return statistics.median(totals), statistics.median(in_docker)


def _timed(argv, env):
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(count=None):
    count = count or int(os.environ.get("BENCH_SCALE_VMS", "40"))
    header("scale: %d idle systemd VMs (%s, 64m each, a NIC each)" % (count, DEBIAN))
    with realm() as (ctx, env):
        tenth = max(1, count // 10)
        docker_first = docker_runs(env)
        table_first = mount_table()
        split_first = create_split(ctx, "sc-a")
        creates, docker_beside = [], []
        try:
            for index in range(count):
                if index == count - tenth:
                    print("the host settled %.0f s after VM %d's create" % (settle(), index))
                    docker_last = docker_runs(env)
                    table_last = mount_table()
                    split_last = create_split(ctx, "sc-b")
                if index < tenth or index >= count - tenth:
                    docker_beside.append(docker_run(env, beside([index])[0]))
                started = time.perf_counter()
                cvm(env, "create", "sc%d" % index, "--image", DEBIAN, "--memory", "64m")
                creates.append(time.perf_counter() - started)
                if index == tenth - 1:
                    remove_containers(beside(range(tenth)))
        finally:
            remove_containers(beside(list(range(tenth)) + list(range(count - tenth, count))))
        first, last = statistics.median(creates[:tenth]), statistics.median(creates[-tenth:])
        print("cvm create: first %d %.0f ms, last %d %.0f ms (x%.2f)" % (
            tenth, first * 1000, tenth, last * 1000, last / first))
        docker_first_tenth = statistics.median(docker_beside[:tenth])
        docker_last_tenth = statistics.median(docker_beside[tenth:])
        print("docker run --net=none, each just before one of those creates: first %.0f ms, "
              "last %.0f ms (x%.2f)" % (docker_first_tenth * 1000, docker_last_tenth * 1000,
                                        docker_last_tenth / docker_first_tenth))
        print("docker run --net=none, on a settled host: with no VM %.0f ms, with %d %.0f ms "
              "(x%.2f)" % (docker_first * 1000, count - tenth, docker_last * 1000,
                           docker_last / docker_first))
        for label, (total, in_docker) in (("with no VM", split_first),
                                          ("with %d" % (count - tenth), split_last)):
            print("in-process create %-11s %4.0f ms: Docker answering %4.0f ms, cvm's own "
                  "%3.0f ms" % (label, total * 1000, in_docker * 1000,
                                (total - in_docker) * 1000))
        for label, (lines, size, took) in (("with no VM", table_first),
                                           ("with %d" % (count - tenth + ROUNDS), table_last)):
            print("host mount table %-11s %4d lines, %4.0f KB, read once in %.1f ms (runc "
                  "reads it 5 times per start)" % (label, lines, size / 1024, took * 1000))
        with lan_nics(ctx, ["sc%d" % i for i in range(count)]) as attached:
            print("cvm net attach, in-process, into every VM: median %.0f ms" % (
                attached * 1000))
            print("the host settled %.0f s after the last create" % settle())
            listings(env, count)
            started = time.perf_counter()
            cvm(env, "rm", "-f", *["sc%d" % i for i in range(count)])
            print("cvm rm -f of %d VMs: %.1f s" % (count, time.perf_counter() - started))
        cvm(env, "rm", "-f", *["sc-%s%d" % (point, i) for point in "ab"
                               for i in range(ROUNDS)])


@contextlib.contextmanager
def lan_nics(ctx, names):
    """A NIC in every VM, on a host-only bridge of the benchmark's own (IPv6, from
    2001:db8::/32: 480 IPv4 addresses are more than the test ranges hold), so that
    listings, stats and the exporter see one per VM; yields the median attach time."""
    from pyroute2 import IPRoute
    from cvm import nics
    bridge = "cvmscale%d" % os.getpid()
    with IPRoute() as ipr:
        ipr.link("add", ifname=bridge, kind="bridge")
        try:
            ipr.link("set", index=ipr.link_lookup(ifname=bridge)[0], state="up")
            took = []
            for index, name in enumerate(names):
                started = time.perf_counter()
                nics.attach(ctx, name, {"mode": "bridge", "link": bridge,
                                        "ip6": "2001:db8:5ca1::%x/64" % (index + 16)})
                took.append(time.perf_counter() - started)
            yield statistics.median(took)
        finally:
            ipr.link("del", ifname=bridge)


def listings(env, count):
    """Listings, stats and the exporter against Docker's, with `count` VMs."""
    pairs = [("cvm ls", [CVM, "ls"], "docker ps -a", ["docker", "ps", "-a"]),
             ("cvm net ls", [CVM, "net", "ls"], "docker ps -a", ["docker", "ps", "-a"]),
             ("cvm stats", [CVM, "stats"], "docker stats --no-stream",
              ["docker", "stats", "--no-stream"]),
             ("cvm stats --json", [CVM, "stats", "--json"], "docker stats --no-stream",
              ["docker", "stats", "--no-stream"])]
    baselines = {}
    for ours, argv, theirs, baseline in pairs:
        if theirs not in baselines:
            baselines[theirs] = whole(baseline, env, rounds=3 if "stats" in theirs
                                      else ROUNDS)
        mine = whole(argv, env)
        print("%-18s %7.0f ms   %-24s %7.0f ms   (x%.2f)" % (
            ours, mine * 1000, theirs, baselines[theirs] * 1000,
            mine / baselines[theirs]))
    exporter = subprocess.Popen([CVM, "exporter", "--listen", "127.0.0.1:9739"], env=env,
                                stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                cold = scrape("http://127.0.0.1:9739/metrics")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        # Each past the exporter's cache, so each is a sweep. At uneven intervals the
        # exporter sweeps on demand; once scrapes come steadily, it sweeps just ahead of
        # each (cvm.monitor.Exporter), after a few scrapes to learn their interval.
        on_demand = []
        for gap in [1.1, 1.7] * ROUNDS:
            time.sleep(gap)
            on_demand.append(scrape("http://127.0.0.1:9739/metrics"))
        steady = []
        for _ in range(2 * ROUNDS):
            time.sleep(1.1)
            steady.append(scrape("http://127.0.0.1:9739/metrics"))
        print("exporter scrape: cold %.0f ms, warm on demand %.0f ms (median of %d), warm "
              "steady %.0f ms (scrapes %d-%d)" % (
                  cold * 1000, statistics.median(on_demand) * 1000, len(on_demand),
                  statistics.median(steady[ROUNDS:]) * 1000, ROUNDS + 1, 2 * ROUNDS))
    finally:
        exporter.terminate()
        exporter.wait()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main(int(sys.argv[1]) if len(sys.argv) > 1 else None)
