"""The in-VM tools against the originals in the same VM (issues 5 and 15).

A VM of half a CPU (where a Python start-up is throttled) with LXCFS: `free` and
`uptime` are procps' own there, reached through cvm's wrapper; cvm's own (from the
cgroup, as on a VM without LXCFS: CVM_PROCVIEW=cgroup) are timed too, with vmstat,
mpstat, nproc and `top -b -n1` among 300 processes. Median of 20 runs each, timed inside
the VM (a loop around the command), so that the exec's start-up is not counted: back to
back, as a script's loop runs them (each run then pays for the CPU the last one took from
the quota), and 0.25 s apart, as a user or an agent runs one (each starts with the quota
an idle VM has).

Then the host helpers a sysadmin runs in loops, whole process, through netd, each
against what they would run instead: the same tools from the host (`cvm free -m NAME`
against `docker exec NAME free -m`...); a host binary in the VM's network namespace
(`cvm nsrun NAME -- ss -lnt` against `nsenter -t $(docker inspect -f {{.State.Pid}}
NAME) -n ss -lnt`); `cvm exec NAME -- true`, `cvm logs NAME` and `cvm image ls` against
`docker exec`, `docker logs` and `docker images`.
"""

import os
import statistics
import subprocess
import time

from common import CVM, DEBIAN, header, realm

RUNS = int(os.environ.get("BENCH_RUNS", "20"))
PROCESSES = int(os.environ.get("BENCH_PROCESSES", "300"))

SPACED = 0.25  # seconds between spaced runs: more than two CFS periods
TIMER = r"""
import resource, subprocess, sys, time, statistics
runs, gap, argv = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
times = []
for _ in range(runs):
    time.sleep(gap)
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
    times.append(time.perf_counter() - started)
used = resource.getrusage(resource.RUSAGE_CHILDREN)
print(statistics.median(times), (used.ru_utime + used.ru_stime) / runs)
"""


def timed(vm, argv, gap=0.0):
    """(median seconds, CPU seconds per run) of runs `gap` seconds apart: the CPU shows
    what the VM's quota throttles."""
    code, out, err = vm.exec(["python3", "-c", TIMER, str(RUNS), str(gap)] + argv)
    if code:
        raise SystemExit("bench: %s failed in the VM: %s" % (" ".join(argv), err.decode()))
    median, cpu = out.split()
    return float(median), float(cpu)


CVMS = ["env", "CVM_PROCVIEW=cgroup"]


def in_the_vm():
    from cvm import api
    from cvm.spec import parse_spec
    header("tools: inside a VM (0.5 CPU, 1 GiB, LXCFS), median of %d runs" % RUNS)
    with realm(with_netd=False) as (ctx, env):
        vm = api.create(parse_spec({"name": "benchtools", "image": DEBIAN, "cpus": 0.5,
                                    "memory": "1g", "pids": 8192}), ctx=ctx)
        if not vm.record["lxcfs"]:
            raise SystemExit("bench: LXCFS is not running; `./run setup` starts it")
        booted = time.monotonic()  # a booting VM spends its half CPU on systemd
        while vm.exec(["systemctl", "is-system-running"])[1].strip() not in (b"running",
                                                                            b"degraded"):
            if time.monotonic() - booted > 60:
                raise SystemExit("bench: the VM did not finish booting in 60 s")
            time.sleep(0.2)
        vm.exec(["sh", "-c", "for i in $(seq %d); do sleep 100000 </dev/null >/dev/null 2>&1 & "
                              "done; true" % PROCESSES])
        time.sleep(2)
        count = int(vm.exec(["sh", "-c", "ls -d /proc/[0-9]* | wc -l"])[1])
        rows = [("free (LXCFS: procps' own, through cvm's wrapper)", "free",
                 ["/usr/local/bin/free"]),
                ("free (cvm's, from the cgroup)", "free", CVMS + ["/usr/local/bin/free"]),
                ("free (procps)", "free", ["/usr/bin/free"]),
                ("uptime (LXCFS: procps' own, through cvm's wrapper)", "uptime",
                 ["/usr/local/bin/uptime"]),
                ("uptime (cvm's, from the cgroup)", "uptime", CVMS + ["/usr/local/bin/uptime"]),
                ("uptime (procps)", "uptime", ["/usr/bin/uptime"]),
                ("vmstat (cvm)", "vmstat", ["/usr/local/bin/vmstat"]),
                ("vmstat (procps)", "vmstat", ["/usr/bin/vmstat"]),
                ("mpstat (cvm)", "mpstat", ["/usr/local/bin/mpstat"]),
                ("mpstat (sysstat)", "mpstat", ["/usr/bin/mpstat"]),
                ("nproc (cvm)", "nproc", ["/usr/local/bin/nproc"]),
                ("nproc (coreutils: the host's CPUs)", "nproc", ["/usr/bin/nproc"]),
                ("top -b -n1 (cvm)", "top", ["/usr/local/bin/top", "-b", "-n1"]),
                ("top -b -n1 (cvm, first run: no saved sample)", "top",
                 ["sh", "-c", "rm -f /run/cvm/procview-top-*; exec /usr/local/bin/top -b -n1"]),
                ("top -b -n1 (procps)", "top", ["/usr/bin/top", "-b", "-n1"])]
        timings = [(label, tool, timed(vm, argv), timed(vm, argv, SPACED)[0])
                   for label, tool, argv in rows]
        # Each tool's baseline is its original: the last row of its group.
        baselines = {tool: (value, spaced) for _, tool, (value, _), spaced in timings}
        print("%d processes in the VM; a bare `python3 -IS -c pass` uses %.1f ms of CPU" % (
            count, timed(vm, ["python3", "-IS", "-c", "pass"])[1] * 1000))
        print("%-54s %13s %6s %13s %6s %12s" % ("", "back to back", "ratio",
                                                "%.2f s apart" % SPACED, "ratio",
                                                "CPU per run"))
        for label, tool, (value, cpu), spaced in timings:
            print("%-54s %10.1f ms %6.2f %10.1f ms %6.2f %9.1f ms" % (
                label, value * 1000, value / baselines[tool][0], spaced * 1000,
                spaced / baselines[tool][1], cpu * 1000))


HOST_SIDE = [["free", "-m"], ["uptime"], ["vmstat"], ["mpstat"], ["top", "-b", "-n1"]]


def whole_process(argv, env):
    started = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    return time.perf_counter() - started


def from_the_host():
    from cvm import api
    from cvm.spec import parse_spec
    header("host helpers: cvm against what a sysadmin runs instead (docker exec unless "
           "said), whole process, median of %d interleaved" % RUNS)
    with realm() as (ctx, env):
        vm = api.create(parse_spec({"name": "benchhost", "image": DEBIAN, "cpus": 0.5,
                                    "memory": "1g"}), ctx=ctx)
        booted = time.monotonic()
        while vm.exec(["systemctl", "is-system-running"])[1].strip() not in (b"running",
                                                                            b"degraded"):
            if time.monotonic() - booted > 60:
                raise SystemExit("bench: the VM did not finish booting in 60 s")
            time.sleep(0.2)
        container = vm.container_id
        rows = [(" ".join(argv), [CVM, argv[0], vm.name] + argv[1:],
                 ["docker", "exec", container] + argv) for argv in HOST_SIDE]
        rows += [
            ("nsrun -- ss -lnt (baseline: nsenter)", [CVM, "nsrun", vm.name, "--", "ss", "-lnt"],
             ["sh", "-c", "nsenter -t $(docker inspect -f '{{.State.Pid}}' %s) -n ss -lnt"
              % container]),
            ("exec -- true", [CVM, "exec", vm.name, "--", "true"],
             ["docker", "exec", container, "true"]),
            ("logs (its boot's console)", [CVM, "logs", vm.name], ["docker", "logs", container]),
            ("image ls (baseline: docker images)", [CVM, "image", "ls"], ["docker", "images"])]
        print("%-38s %12s %16s %7s" % ("", "cvm", "baseline", "ratio"))
        for label, argv, baseline_argv in rows:
            ours, theirs = [], []
            for _ in range(RUNS):
                ours.append(whole_process(argv, env))
                theirs.append(whole_process(baseline_argv, env))
            mine, baseline = statistics.median(ours), statistics.median(theirs)
            print("%-38s %9.1f ms %13.1f ms %7.2f" % (label, mine * 1000, baseline * 1000,
                                                     mine / baseline))


def main():
    in_the_vm()
    from_the_host()


if __name__ == "__main__":
    main()
