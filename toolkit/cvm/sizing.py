"""Sizing rules: a VM's CPUs and memory in, service settings out. Pure functions.

Each rule names the documentation it follows. `cpus` is the count a service should
plan for (ceil of the quota, bounded by the cpuset: what the VM can really run at
once); `memory` is the VM's memory limit in bytes.
"""

import math

MIB = 1 << 20
GIB = 1 << 30


def vm_cpus(quota=None, cpuset_size=None, host_cpus=None):
    """The CPUs a VM can use at once: ceil(quota), bounded by its cpuset and the host."""
    counts = [n for n in (cpuset_size, host_cpus) if n]
    count = min(counts) if counts else 1
    if quota:
        count = min(count, int(math.ceil(quota))) if counts else int(math.ceil(quota))
    return max(1, count)


def nginx(cpus, memory):
    """nginx.org/en/docs/ngx_core_module.html: worker_processes "set to the number of
    available CPU cores" (nginx's `auto` counts the host's, ignoring quota and cpuset);
    worker_connections is per worker (default 512), and every proxied connection needs
    two descriptors, so worker_rlimit_nofile is twice worker_connections. Connections
    scale with memory: ~1024 per GiB of the VM, 512 to 8192."""
    connections = max(512, min(8192, int(1024 * memory / GIB)))
    return {"worker_processes": cpus, "worker_connections": connections,
            "worker_rlimit_nofile": 2 * connections}


def jvm(cpus, memory, container_aware=True):
    """JVM sizing (docs.oracle.com/en/java/javase/17/docs/specs/man/java.html).
    Container-aware JVMs (8u191+, 10+) read the cgroup: give the heap a share of it with
    -XX:MaxRAMPercentage (75%: the rest is metaspace, threads, code cache, buffers) and
    pin the CPU count they plan for. Older JVMs see the host: set -Xmx/-Xms to the same
    share, and the thread counts the JVM would derive from the VM's CPUs:
    ParallelGCThreads = n for n <= 8, else 8 + 5/8 of the rest (HotSpot's formula);
    CICompilerCount = max(2, log2(n) * log2(log2(n)) * 3/2), HotSpot's tiered rule."""
    options = ["-XX:ActiveProcessorCount=%d" % cpus]
    if container_aware:
        return options + ["-XX:MaxRAMPercentage=75.0", "-XX:InitialRAMPercentage=75.0"]
    heap_mib = max(16, int(memory * 0.75 / MIB))
    gc_threads = cpus if cpus <= 8 else 8 + int((cpus - 8) * 5 / 8)
    log = math.log(cpus, 2) if cpus > 1 else 0
    compilers = max(2, int(log * math.log(max(log, 1), 2) * 3 / 2)) if cpus > 2 else 2
    return options + ["-Xmx%dm" % heap_mib, "-Xms%dm" % heap_mib,
                      "-XX:ParallelGCThreads=%d" % gc_threads,
                      "-XX:CICompilerCount=%d" % compilers]


def redis(memory, persistence=True):
    """redis.io/docs/management/optimization/memory-optimization: without maxmemory
    Redis grows until the kernel kills it; "while saving an RDB file or rewriting the
    AOF, Redis may use up to 2 times the memory normally used" (fork copy-on-write).
    So: 45% of the VM with persistence on, 75% without; evict least recently used keys
    instead of dying (allkeys-lru)."""
    share = 0.45 if persistence else 0.75
    return {"maxmemory": int(memory * share), "maxmemory-policy": "allkeys-lru"}


def mysql(cpus, memory):
    """dev.mysql.com/doc/refman/8.0/en/innodb-dedicated-server.html: buffer pool 128 MiB
    below 1 GiB of memory, 50% from 1 to 4 GiB, 75% above; innodb-multiple-buffer-pools:
    instances only when the pool is >= 1 GiB, each >= 1 GiB, at most 64 (8 is MySQL's
    default above 1 GiB). max_connections: what the memory left after the pool holds at
    ~4 MiB per connection (per-thread buffers), between 50 and 4000 (151 is the
    default)."""
    if memory < GIB:
        pool = 128 * MIB
    elif memory <= 4 * GIB:
        pool = memory // 2
    else:
        pool = int(memory * 0.75)
    pool = max(32 * MIB, min(pool, int(memory * 0.75))) // MIB * MIB
    instances = 1 if pool < GIB else max(1, min(8, pool // GIB, cpus * 2))
    connections = max(50, min(4000, int((memory - pool - 128 * MIB) / (4 * MIB))))
    return {"innodb_buffer_pool_size": pool, "innodb_buffer_pool_instances": int(instances),
            "max_connections": connections}


def php_fpm(cpus, memory, child_mib=64):
    """php.net/manual/en/install.fpm.configuration.php: pm.max_children caps the workers
    and so the memory: 80% of the VM divided by one child's size (64 MiB by default;
    --set child_mib=...). pm dynamic: spare servers follow the CPUs (start_servers is
    PHP's default formula, min + (max - min) / 2)."""
    children = max(2, int(memory * 0.8 / (child_mib * MIB)))
    minimum = max(1, min(children, cpus))
    maximum = max(minimum, min(children, cpus * 3))
    return {"pm": "dynamic", "pm.max_children": children, "pm.min_spare_servers": minimum,
            "pm.max_spare_servers": maximum,
            "pm.start_servers": minimum + (maximum - minimum) // 2,
            "pm.max_requests": 500}
