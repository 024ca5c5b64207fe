"""Issue 2 benchmark: creating VMs with cvm vs plain Docker, on the same image.

20 VMs with `cvm create` (no network) and 20 with the Docker SDK's
containers.run(..., network_mode="none"), interleaved in a shuffled order each round;
median per-VM time each and the ratio, with a bootstrap interval of that ratio (at 20
rounds, noise moves it by a few hundredths), and `docker run --network none` (the CLI)
as the issue's baseline. cvm is measured three ways: the CLI served by cvm netd (how
hosts run it), the CLI alone (CVM_NO_DAEMON=1: every call imports the Docker SDK), and
the Python API in-process (the same work as containers.run, plus cvm's). BENCH_COUNT=N
runs N rounds instead of 20.
"""

import os
import random
import subprocess
import time

import docker

from common import BUSYBOX, cvm, header, median, ms, ratio_interval, realm

COUNT = int(os.environ.get("BENCH_COUNT", "20"))


def main():
    from cvm import api
    from cvm.spec import parse_spec
    client = docker.from_env()
    header("lifecycle: create %d VMs, median per VM (image %s, no network)" % (COUNT, BUSYBOX))
    timings = {"docker": [], "docker cli": [], "cli+netd": [],
               "cli alone": [], "api": []}
    plain = []  # the baseline's containers, removed however the run ends
    order = random.Random(2)  # a fixed shuffle: no method always follows the same one
    with realm() as (ctx, env):
        alone = dict(env, CVM_NO_DAEMON="1")

        def sdk(i):
            plain.append(client.containers.run(BUSYBOX, ["sleep", "100000"],
                                               network_mode="none", detach=True,
                                               name="bench-docker-%d" % i).id)

        def docker_cli(i):
            plain.append(subprocess.run(
                ["docker", "run", "-d", "--network", "none", "--name", "bench-dcli-%d" % i,
                 BUSYBOX, "sleep", "100000"], check=True, capture_output=True,
                text=True).stdout.strip())

        def cvm_cli(environment, prefix, **program):
            return lambda i: cvm(environment, "create", "%s%d" % (prefix, i), "--image",
                                 BUSYBOX, "--init", "none", "--", "sleep", "100000", **program)

        def cvm_api(i):
            api.create(parse_spec({"name": "ba%d" % i, "image": BUSYBOX, "init": "none",
                                   "command": ["sleep", "100000"]}), ctx=ctx)

        methods = [("docker", sdk), ("docker cli", docker_cli),
                   ("cli+netd", cvm_cli(env, "bd")),
                   ("cli alone", cvm_cli(alone, "bn")),
                   ("api", cvm_api)]
        try:
            for i in range(COUNT):
                order.shuffle(methods)
                for key, create in methods:
                    started = time.perf_counter()
                    create(i)
                    timings[key].append(time.perf_counter() - started)
        finally:
            for container in plain:
                client.api.remove_container(container, force=True)
    base = median(timings["docker"])
    cli_base = median(timings["docker cli"])
    print("%-30s %9s %8s %13s %14s" % ("", "median", "vs SDK", "(90% interval)",
                                       "vs docker CLI"))
    for key, label in (("docker", "Docker SDK containers.run"), ("docker cli", "docker run (CLI)"),
                       ("api", "cvm.create() (Python API)"),
                       ("cli+netd", "cvm create (CLI, via netd)"),
                       ("cli alone", "cvm create (CLI, no daemon)")):
        value = median(timings[key])
        low, high = ratio_interval(timings[key], timings["docker"])
        print("%-30s %9s %8.2f %13s %14.2f" % (label, ms(value), value / base,
                                               "(%.2f-%.2f)" % (low, high), value / cli_base))


if __name__ == "__main__":
    main()
