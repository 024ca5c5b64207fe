"""Issue 17 benchmark: snapshots and export/import of a VM with 1 GiB of changed files.

(a) `cvm snapshot` of the running VM (copied first, frozen only to bring the copy up to
    date): time total, time frozen, bytes written, against
    `docker commit` of the same container in the same run (which pauses it throughout);
(b) `cvm export -o FILE` and `cvm import FILE`, throughput, against `tar` of the same
    files (the container's upper directory): tar -c to a file, tar -x from it;
(c) `cvm snapshot` of a running VM whose volume (the same 1 GiB) is on XFS with reflinks
    (a loop mount the benchmark makes): time, time frozen, the bytes the snapshot holds
    on its own, against `cp -a` of the volume (which reflinks there too) and `tar -c`.

The files are half random (incompressible), half text-like (repeated lines), as a VM's
changed files are a mix. Sizes: BENCH_SNAPSHOT_MIB (default 1024).
"""

import contextlib
import os
import shutil
import subprocess
import tempfile
import time

from common import BUSYBOX, CVM, header, realm

MIB = int(os.environ.get("BENCH_SNAPSHOT_MIB", "1024"))
ROUNDS = int(os.environ.get("BENCH_SNAPSHOT_ROUNDS", "3"))
NAME = "bsnap"


def fill(ctx, name=NAME):
    """Write MIB MiB of files into the VM's /data (its writable layer, or a volume)."""
    from cvm import api
    half = MIB // 2
    script = ("mkdir -p /data && cd /data && i=0; while [ $i -lt %d ]; do "
              "head -c 1048576 /dev/urandom > r$i; i=$((i+1)); done; "
              "yes 'a changed line of a config or a log, as VMs have them' | head -c %d "
              "> text; sync" % (half, (MIB - half) << 20))
    code, _, err = api.get(name, ctx).exec(["sh", "-c", script], timeout=600)
    if code != 0:
        raise SystemExit("bench: filling the VM failed: %s" % err.decode())


def timed(argv, env=None):
    started = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return time.monotonic() - started


def settle():
    """Let the writes and deletes before a timed step reach the disk first: on a disk
    mounted with `discard`, the trims of a removed layer slow the next writes for
    seconds, and would be charged to whichever step came next."""
    os.sync()
    time.sleep(2)


def rate(seconds):
    return "%.0f MiB/s" % (MIB / seconds)


def main():
    from cvm import api, bundle, snapshots
    from cvm.spec import parse_spec
    header("snapshots and export/import of a VM with %d MiB of changed files" % MIB)
    scratch = tempfile.mkdtemp(prefix="cvm-bench-snap-", dir="/var/tmp")
    with realm(with_netd=False) as (ctx, env):
        try:
            api.create(parse_spec({"name": NAME, "image": BUSYBOX, "init": "none",
                                   "command": ["sleep", "100000"]}), ctx=ctx)
            fill(ctx)
            container = api.get(NAME, ctx).container_id
            upper = bundle.upper_dir(ctx, container)

            print("(a) snapshot of the running VM, %d rounds each, interleaved" % ROUNDS)
            for round_ in range(ROUNDS):
                row = snapshots.take(ctx, NAME, "s%d" % round_)
                commit = timed(["docker", "commit", container, "cvm-bench-commit:%d" % round_])
                print("  cvm snapshot: %.1f s, frozen %.2f s, %d MiB written | docker commit "
                      "(paused throughout): %.1f s" % (row["seconds"], row["quiesced"],
                                                       row["bytes"] >> 20, commit))
                snapshots.remove(ctx, NAME, "s%d" % round_)
                subprocess.run(["docker", "rmi", "cvm-bench-commit:%d" % round_],
                               capture_output=True)

            print("(b) export and import against tar of the same files")
            archive, tarball = os.path.join(scratch, "vm.cvm"), os.path.join(scratch, "u.tar")
            for round_ in range(ROUNDS):
                export = timed([CVM, "export", NAME, "-o", archive], env)
                tar_c = timed(["tar", "-C", upper, "-cf", tarball, "."])
                api.get(NAME, ctx).remove(force=True)
                settle()
                import_ = timed([CVM, "import", archive], env)
                untar_to = os.path.join(scratch, "untar")
                os.makedirs(untar_to)
                settle()
                tar_x = timed(["tar", "-C", untar_to, "-xf", tarball])
                shutil.rmtree(untar_to)
                print("  cvm export %s (%d MiB archive) | tar -c %s  ||  cvm import %s | "
                      "tar -x %s" % (rate(export), os.path.getsize(archive) >> 20,
                                     rate(tar_c), rate(import_), rate(tar_x)))
                container = api.get(NAME, ctx).container_id
                upper = bundle.upper_dir(ctx, container)
            reflinked_volume(ctx, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def reflinked_volume(ctx, scratch):
    from cvm import api, snapshots
    from cvm.spec import parse_spec
    print("(c) snapshot of a running VM whose volume is on XFS (reflinks), %d rounds" % ROUNDS)
    image, mount_point = os.path.join(scratch, "xfs.img"), os.path.join(scratch, "xfs")
    with open(image, "wb") as handle:
        handle.truncate((MIB * 3 + 512) << 20)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", image], check=True)
    os.mkdir(mount_point)
    subprocess.run(["mount", "-o", "loop", image, mount_point], check=True)
    volume, name = os.path.join(mount_point, "vol"), NAME + "v"
    try:
        os.mkdir(volume)
        api.create(parse_spec({"name": name, "image": BUSYBOX, "init": "none",
                               "command": ["sleep", "100000"],
                               "volumes": ["%s:/data" % volume]}), ctx=ctx)
        fill(ctx, name)
        for round_ in range(ROUNDS):
            settle()
            row = snapshots.take(ctx, name, "s%d" % round_)
            copy = os.path.join(mount_point, "copy")
            settle()
            cp = timed(["cp", "-a", volume, copy])
            shutil.rmtree(copy)
            settle()
            tar_c = timed(["tar", "-C", volume, "-cf", os.path.join(scratch, "v.tar"), "."])
            os.unlink(os.path.join(scratch, "v.tar"))
            print("  cvm snapshot: %.2f s, frozen %.3f s, %.1f MiB its own | cp -a (reflinks) "
                  "%.2f s | tar -c %.2f s" % (row["seconds"], row["quiesced"],
                                              row["bytes"] / (1 << 20), cp, tar_c))
            snapshots.remove(ctx, name, "s%d" % round_)
    finally:
        with contextlib.suppress(Exception):
            api.get(name, ctx).remove(force=True)
        subprocess.run(["umount", mount_point], check=True)


if __name__ == "__main__":
    main()
