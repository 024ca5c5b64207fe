"""Issue 5 benchmark: cvm's free and top inside a VM, against procps in the same VM.

Wall time of the replacement `free` and of procps' /usr/bin/free, then of
`top -b -n1` with 300 processes in the VM against procps' /usr/bin/top -b -n1:
median of 20 runs each, and the ratios. Each run is timed inside the VM (a loop
around the command), so that nsenter's start-up is not counted.
"""

import os

from common import DEBIAN, header, realm

RUNS = int(os.environ.get("BENCH_RUNS", "20"))
PROCESSES = int(os.environ.get("BENCH_PROCESSES", "300"))

TIMER = r"""
import subprocess, sys, time, statistics
argv = sys.argv[2:]
times = []
for _ in range(int(sys.argv[1])):
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
    times.append(time.perf_counter() - started)
print(statistics.median(times))
"""


def timed(vm, argv, env=None):
    code, out, err = vm.exec(["env"] + (env or []) + ["python3", "-c", TIMER, str(RUNS)] + argv)
    if code:
        raise SystemExit("bench: %s failed in the VM: %s" % (" ".join(argv), err.decode()))
    return float(out)


def main():
    from cvm import api
    from cvm.spec import parse_spec
    header("tools: inside a VM (1.5 CPUs, 1 GiB), median of %d runs" % RUNS)
    with realm(with_netd=False) as (ctx, env):
        vm = api.create(parse_spec({"name": "benchtools", "image": DEBIAN, "cpus": 1.5,
                                    "memory": "1g", "pids": 8192}), ctx=ctx)
        vm.exec(["sh", "-c", "for i in $(seq %d); do sleep 100000 </dev/null >/dev/null 2>&1 & "
                              "done; true" % PROCESSES])
        count = int(vm.exec(["sh", "-c", "ls -d /proc/[0-9]* | wc -l"])[1])
        rows = [("free (cvm)", timed(vm, ["/usr/local/bin/free"])),
                ("free (procps)", timed(vm, ["/usr/bin/free"])),
                ("top -b -n1 (cvm)", timed(vm, ["/usr/local/bin/top", "-b", "-n1"])),
                ("top -b -n1 (cvm, first run: no saved sample)",
                 timed(vm, ["sh", "-c", "rm -f /run/cvm/procview-top-*; exec "
                            "/usr/local/bin/top -b -n1"])),
                ("top -b -n1 (procps)", timed(vm, ["/usr/bin/top", "-b", "-n1"]))]
        print("%d processes in the VM" % count)
        print("%-48s %10s %8s" % ("", "median", "ratio"))
        baselines = {"free": rows[1][1], "top": rows[4][1]}
        for label, value in rows:
            base = baselines[label.split()[0]]
            print("%-48s %8.1f ms %8.2f" % (label, value * 1000, value / base))


if __name__ == "__main__":
    main()
