"""The Docker engine, through the Docker SDK. Nothing else in cvm talks to Docker.

`container_config()` turns a VM spec into the create request (pure, unit-tested);
`Engine` wraps the SDK's low-level client, maps its errors to cvm's, and imports
the SDK only when first used (it costs ~150 ms).
"""

import contextlib
import functools
import io
import os
import tarfile
import time

from .errors import Conflict, CvmError, EngineUnavailable, NotFound, SpecError
from .paths import READY_FILE

LABEL_VM = "io.cvm.vm"
LABEL_REALM = "io.cvm.realm"
LABEL_INIT = "io.cvm.init"
LABEL_STATE = "io.cvm.state"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
STOP_TIMEOUT_SYSTEMD = 90  # long enough for a clean shutdown of a fat VM
CPU_PERIOD = 100000
WAIT_SCRIPT = "/usr/lib/cvm/wait-ready"

# Shipped into VMs that boot an init: PID 1 waits until the host says the VM's
# NICs are wired (or a timeout passes), then execs the real init.
WAIT_SCRIPT_TEXT = """#!/bin/sh
# cvm: start init only once the host has wired this VM's NICs.
# As PID 1 the shell ignores signals it does not trap: a stop before init runs must end it
# (SIGPWR for cvm's images, 37 = SIGRTMIN+3 as Docker numbers it for another systemd).
trap 'exit 0' TERM INT
trap 'exit 0' PWR 2>/dev/null
trap 'exit 0' 37 2>/dev/null
t=${CVM_WAIT_TIMEOUT:-30}
n=0
while [ ! -e %(ready)s ] && [ "$n" -lt $((t * 100)) ]; do
    sleep 0.01 2>/dev/null || sleep 1
    n=$((n + 1))
done
[ -e %(ready)s ] || echo "cvm: NICs not wired after ${t}s; booting without them" >&2
exec "$@"
""" % {"ready": READY_FILE}


def cgroup_version():
    return 2 if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else 1


LXCFS_DIR = "/var/lib/lxcfs"
LXCFS_FILES = ["/proc/cpuinfo", "/proc/diskstats", "/proc/loadavg", "/proc/meminfo",
               "/proc/stat", "/proc/swaps", "/proc/uptime", "/sys/devices/system/cpu/online"]
# Bound into a VM that has LXCFS's files, so that its tools can tell (see vmtools.py).
LXCFS_MARKER = "/etc/cvm/lxcfs"


def lxcfs_running(mountpoint=LXCFS_DIR):
    """Is LXCFS mounted and answering? A statfs always reaches the FUSE daemon (a dead
    one: ENOTCONN) where a stat may come from the kernel's cache; and it costs 0.03 ms
    against 0.4 ms for reading one of LXCFS's files."""
    try:
        os.statvfs(mountpoint + "/proc")
        return True
    except OSError:
        return False


def _missing_image(ref):
    return SpecError("image", "%r is not on this host (no registry is used); build it with "
                     "`cvm image build` or see `cvm image ls`" % ref)


# A container that is itself a container host (`cvm lab`): what `--privileged` would give,
# which fails where root lacks CAP_SYS_RESOURCE, so everything but that. Its dockerd,
# lxcfs and nested containers then run under its own systemd.
HOST_PROFILE = {
    "cap_add": ["ALL"], "cap_drop": ["SYS_RESOURCE"],
    "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
    "device_cgroup_rules": ["a *:* rwm"], "devices": ["/dev/fuse:/dev/fuse:rwm"],
    "cgroupns": "host",
}
# `--security-opt systempaths=unconfined`, which the docker CLI (not the engine) turns
# into no masked and no read-only /proc and /sys paths.
UNCONFINED_SYSTEM_PATHS = {"MaskedPaths": [], "ReadonlyPaths": []}
# What a VM printed on its console (`cvm logs`), kept across boots but bounded: Docker's
# json-file default grows until the disk is full.
CONSOLE_LOG = {"type": "json-file", "config": {"max-size": "10m", "max-file": "3"}}
PROFILES = ("vm", "host")


def container_config(spec, realm, state_root, init_mode, init_command, host_cgroup_version,
                     lxcfs=False, file_binds=(), stop_signal=None, profile="vm",
                     log_driver="json-file"):
    """Keyword arguments for the SDK's create_container and create_host_config.

    `init_mode` is the resolved mode (systemd, compat or none) and `init_command`
    the argv of PID 1 for systemd/compat; `lxcfs` binds LXCFS's /proc files so that
    unmodified programs inside see the VM's memory, CPUs and uptime; `file_binds` are
    the binds of cvm's own files (see cvm.guestfiles); `stop_signal` is the one the
    image's init shuts down cleanly on (see host_stop_signal); `profile` "host" makes a
    container host of it (HOST_PROFILE), not a VM. `log_driver` is the engine's default:
    json-file gets CONSOLE_LOG's bounds, any other driver is the operator's choice.
    """
    labels = dict(spec.labels)
    labels.update({LABEL_VM: spec.name, LABEL_REALM: realm, LABEL_STATE: state_root,
                   LABEL_INIT: init_mode})
    env = dict(spec.env)
    env.update(network_env(spec))
    host = {
        "network_mode": "none",
        "restart_policy": _restart_policy(spec.restart),
        "pids_limit": spec.pids if spec.pids and spec.pids > 0 else -1,
        "binds": [v.bind() for v in spec.volumes] + list(file_binds),
    }
    if log_driver == "json-file":
        host["log_config"] = CONSOLE_LOG
    if lxcfs:
        host["binds"] += ["%s%s:%s:ro" % (LXCFS_DIR, path, path) for path in LXCFS_FILES]
    if spec.cpus:
        host["cpu_period"] = CPU_PERIOD
        host["cpu_quota"] = int(round(spec.cpus * CPU_PERIOD))
    if spec.cpuset:
        host["cpuset_cpus"] = spec.cpuset
    if spec.cpu_shares:
        host["cpu_shares"] = spec.cpu_shares
    if spec.memory:
        host["mem_limit"] = spec.memory
        host["memswap_limit"] = spec.memory + (spec.swap or 0)
        if not spec.swap and host_cgroup_version == 1:
            host["mem_swappiness"] = 0
    if spec.blkio_weight:
        host["blkio_weight"] = spec.blkio_weight
    for key in ("device_read_bps", "device_write_bps", "device_read_iops", "device_write_iops"):
        throttles = getattr(spec, key)
        if throttles:
            host[key] = [{"Path": t.device, "Rate": t.rate} for t in throttles]
    create = {
        "image": spec.image,
        "name": spec.name,
        "hostname": spec.effective_hostname.split(".")[0],
        "domainname": ".".join(spec.effective_hostname.split(".")[1:]) or None,
        "labels": labels,
        "environment": env,
        "detach": True,
        # No sandbox in Docker's "none" network either: runc gives the VM a new network
        # namespace with lo up, cvm wires it, and /etc/hosts and /etc/resolv.conf are
        # cvm's files among `file_binds` (see cvm.guestfiles).
        "network_disabled": True,
    }
    if init_mode in ("systemd", "compat"):
        host["tmpfs"] = {"/run": "rw,nosuid,nodev,mode=755", "/run/lock": "rw,nosuid,nodev,noexec"}
        # reboot(2) with CAP_SYS_BOOT only ends the VM's own PID namespace: the kernel
        # kills its init with SIGHUP (reboot) or SIGINT (poweroff), so Docker sees
        # 129/130 and the daemon tells a reboot from a poweroff.
        host["cap_add"] = ["SYS_BOOT"]
        create["stop_signal"] = stop_signal or host_stop_signal({}, init_mode)[0]
        create["stop_timeout"] = STOP_TIMEOUT_SYSTEMD
        env["container"] = "docker"
        create["entrypoint"] = ["/bin/sh", WAIT_SCRIPT]
        create["command"] = list(init_command)
        # A console: init's messages go to Docker's log of the VM (`cvm logs`), and a
        # getty on it (systemd's console-getty) takes logins through `cvm console`.
        create["tty"] = True
        create["stdin_open"] = True
        if profile == "host":
            host.update(HOST_PROFILE)
            # The host's whole cgroup tree, writable: its systemd and dockerd manage their
            # own parts of it (dockerd below its own cgroup parent).
            host["binds"].append("/sys/fs/cgroup:/sys/fs/cgroup:rw")
        elif init_mode == "systemd":
            if host_cgroup_version == 1:
                # systemd needs its own named hierarchy writable; the controllers stay
                # Docker's read-only per-container mounts, so limits cannot be lifted.
                host["binds"].append("/sys/fs/cgroup/systemd:/sys/fs/cgroup/systemd:rw")
            else:
                # v2: a private cgroup namespace shows only the VM's subtree; the host
                # remounts it read-write before releasing init (see ns.make_cgroup_writable).
                host["cgroupns"] = "private"
    elif spec.command:
        create["command"] = list(spec.command)
    return create, host


def host_stop_signal(image_attrs, init_mode):
    """(signal Docker stops the VM with, whether the VM then reports who asked for its
    shutdown). cvm's images (their systemd, and cvm's compat init) power off on SIGPWR
    and say it was the host's doing; any other systemd halts cleanly on SIGRTMIN+3 but
    reports nothing, so a poweroff inside it cannot be told from a `docker stop`."""
    labels = (image_attrs.get("Config") or {}).get("Labels") or {}
    if init_mode == "compat":
        return "SIGPWR", True
    if init_mode == "systemd":
        signal = labels.get("io.cvm.host-stop-signal")
        return (signal, True) if signal else ("SIGRTMIN+3", False)
    return None, False


def network_env(spec):
    """CVM_IP, CVM_NETMASK, CVM_GATEWAY... for eth0 (and CVM_<IF>_* for every NIC)."""
    import ipaddress
    env = {}
    for index, nic in enumerate(spec.nics):
        prefixes = ["CVM_%s_" % nic.name.upper().replace("-", "_").replace(".", "_")]
        if index == 0:
            prefixes.append("CVM_")
        iface = nic.ip_interface
        for prefix in prefixes:
            if iface is not None:
                env[prefix + "IP"] = str(iface.ip)
                env[prefix + "NETMASK"] = str(iface.netmask)
                env[prefix + "PREFIX"] = str(iface.network.prefixlen)
            gateway = nic.gw or ("169.254.0.1" if nic.mode == "routed" and iface else None)
            if gateway:
                env[prefix + "GATEWAY"] = gateway
            if nic.ip6:
                env[prefix + "IP6"] = str(ipaddress.ip_interface(nic.ip6))
            gateway6 = nic.gw6 or ("fe80::1" if nic.mode == "routed" and nic.ip6 else None)
            if gateway6:
                env[prefix + "GATEWAY6"] = gateway6
            if nic.mac:
                env[prefix + "MAC"] = nic.mac
    return env


def _restart_policy(text):
    name, _, count = text.partition(":")
    policy = {"Name": "" if name == "no" else name}
    if count:
        policy["MaximumRetryCount"] = int(count)
    return policy


def _chunks(*pieces):
    yield from pieces


class Engine:
    """Low-level access to the Docker engine. Methods take container ids or names."""

    def __init__(self, base_url=None):
        self.base_url = base_url or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
        self._api = None

    @property
    def api(self):
        if self._api is None:
            import docker  # deferred: ~150 ms

            try:
                self._api = docker.APIClient(base_url=self.base_url, version="auto", timeout=120)
            except docker.errors.DockerException as exc:
                raise self._unavailable(exc) from None
        return self._api

    def _unavailable(self, exc):
        return EngineUnavailable(
            "no Docker engine answers at %s (%s); start it with `systemctl start docker` "
            "or `dockerd &`" % (self.base_url, str(exc).splitlines()[0][:120]))

    @contextlib.contextmanager
    def _translated(self, what):
        """Map SDK errors raised inside the block to cvm's typed errors."""
        import docker
        import requests

        try:
            yield
        except docker.errors.ImageNotFound as exc:
            raise NotFound("%s: image not found (%s); build it with `cvm image build` or "
                           "list them with `cvm image ls`" % (what, _explain(exc))) from None
        except docker.errors.NotFound as exc:
            raise NotFound("%s: %s" % (what, _explain(exc))) from None
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and "already in use" in _explain(exc):
                raise Conflict("%s: %s" % (what, _explain(exc))) from None
            raise CvmError("%s: Docker refused: %s" % (what, _explain(exc))) from None
        except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
            raise self._unavailable(exc) from None

    # ------------------------------------------------------------ engine

    def version(self):
        with self._translated("engine"):
            return self.api.version()

    def info(self):
        with self._translated("engine"):
            return self.api.info()

    @functools.cached_property
    def root_dir(self):
        """Where Docker keeps its layers (stagings go beside them, on their filesystem)."""
        return self.info().get("DockerRootDir") or "/var/lib/docker"

    @functools.cached_property
    def default_log_driver(self):
        return self.info().get("LoggingDriver") or "json-file"

    # ------------------------------------------------------------ images

    def image(self, ref):
        """Image attributes; a missing image is a spec error naming the field."""
        try:
            with self._translated("image %s" % ref):
                return self.api.inspect_image(ref)
        except NotFound:
            raise _missing_image(ref) from None

    def images(self, label=None):
        with self._translated("images"):
            return self.api.images(filters={"label": label} if label else None)

    def remove_image(self, ref, force=False):
        with self._translated("image %s" % ref):
            self.api.remove_image(ref, force=force)

    def tag(self, ref, repository, tag):
        with self._translated("tag %s" % ref):
            self.api.tag(ref, repository, tag=tag)

    def push(self, repository, tag):
        """Push repository:tag to its registry; the manifest's digest."""
        with self._translated("push %s:%s" % (repository, tag)):
            for record in self.api.push(repository, tag=tag, stream=True, decode=True):
                if record.get("error"):
                    raise CvmError("push %s:%s: the registry refused: %s" % (
                        repository, tag, record["error"]))
                digest = (record.get("aux") or {}).get("Digest")
                if digest:
                    return digest
        raise CvmError("push %s:%s: the registry gave no digest" % (repository, tag))

    def registry_has(self, reference):
        """Does the registry of `reference` (name@digest) hold it? dockerd asks it."""
        try:
            with self._translated("registry %s" % reference):
                self.api.inspect_distribution(reference)
            return True
        except CvmError:
            return False

    def pull(self, reference):
        """Pull `reference` (repository@digest or :tag) from its registry."""
        with self._translated("pull %s" % reference):
            for record in self.api.pull(reference, stream=True, decode=True):
                if record.get("error"):
                    raise CvmError("pull %s: %s" % (reference, record["error"]))

    def save_image(self, ref):
        """`docker save` of an image: an iterator of the tar stream's chunks."""
        with self._translated("save %s" % ref):
            return self.api.get_image(ref, chunk_size=1 << 20)

    def load_image(self, chunks):
        """`docker load` of a tar stream given as an iterator of chunks."""
        with self._translated("load"):
            for record in self.api.load_image(chunks):
                if record.get("error"):
                    raise CvmError("load: %s" % record["error"])

    def import_image(self, source, tag, changes):
        """docker import of a root filesystem: `source` is a tarball path or bytes."""
        repository, _, version = tag.partition(":")
        with self._translated("import %s" % tag):
            if isinstance(source, (bytes, bytearray)):
                return self.api.import_image_from_data(
                    source, repository=repository, tag=version or "latest", changes=changes)
            return self.api.import_image_from_file(
                source, repository=repository, tag=version or "latest", changes=changes)

    # ------------------------------------------------------------ containers

    def create(self, spec, realm, state_root, init_mode, init_command, lxcfs=False,
               file_binds=(), stop_signal=None, profile="vm"):
        create, host = container_config(spec, realm, state_root, init_mode, init_command,
                                        cgroup_version(), lxcfs, file_binds, stop_signal,
                                        profile, self.default_log_driver)
        try:
            with self._translated("creating %s" % spec.name):
                host_config = self.api.create_host_config(**host)
                if profile == "host":
                    host_config.update(UNCONFINED_SYSTEM_PATHS)
                try:
                    return self.api.create_container(host_config=host_config, **create)["Id"]
                except Exception as exc:
                    if getattr(exc, "status_code", None) == 409:
                        raise Conflict("name: a container named %r already exists"
                                       % spec.name) from None
                    raise
        except NotFound:  # the only thing a create can miss is its image
            raise _missing_image(spec.image) from None

    def start(self, container):
        with self._translated("start %s" % container):
            self.api.start(container)

    def stop(self, container, timeout=None):
        with self._translated("stop %s" % container):
            self.api.stop(container, timeout=timeout)

    def restart(self, container, timeout=None):
        with self._translated("restart %s" % container):
            self.api.restart(container, timeout=timeout)

    def pause(self, container):
        """Freeze every process of the container (its cgroup's freezer)."""
        with self._translated("pause %s" % container):
            self.api.pause(container)

    def unpause(self, container):
        with self._translated("unpause %s" % container):
            self.api.unpause(container)

    def kill(self, container, signal=None):
        with self._translated("kill %s" % container):
            self.api.kill(container, signal=signal)

    def remove(self, container, force=False):
        """Remove a container; one that is already gone, or that another remover is
        removing (then this waits until it is gone), is not an error."""
        import docker
        try:
            with self._translated("remove %s" % container):
                try:
                    self.api.remove_container(container, force=force, v=False)
                except docker.errors.APIError as exc:
                    if exc.status_code != 409 or "already in progress" not in _explain(exc):
                        raise
                    deadline = time.monotonic() + 60
                    while self.inspect(container) is not None and time.monotonic() < deadline:
                        time.sleep(0.05)
        except NotFound:
            pass

    def inspect(self, container):
        """Container attributes, or None if it does not exist."""
        try:
            with self._translated("inspect %s" % container):
                return self.api.inspect_container(container)
        except NotFound:
            return None

    def named(self, name):
        """The container called exactly `name`, or None. Docker also resolves a reference
        by ID prefix, and names like "ba2" or "cafe" are hex: a plain inspect of such a
        name may return another container."""
        info = self.inspect(name)
        return info if info is not None and info.get("Name") == "/" + name else None

    def vm_containers(self, realm, all=True):
        """Summaries of this realm's VM containers (one API call)."""
        with self._translated("list"):
            return self.api.containers(all=all, filters={"label": "%s=%s" % (LABEL_REALM,
                                                                                realm)})

    def running_vms(self, realm):
        """Names of this realm's VMs whose containers run (from the list: never waits for
        a container that Docker is stopping, as an inspect does)."""
        return {c["Labels"].get(LABEL_VM) for c in self.vm_containers(realm)
                if c["State"] == "running"}

    def update(self, container, spec):
        """Apply the live-changeable resources of `spec` to a running container."""
        body = {
            "CpuPeriod": CPU_PERIOD if spec.cpus else 0,
            "CpuQuota": int(round(spec.cpus * CPU_PERIOD)) if spec.cpus else -1,
            "CpusetCpus": spec.cpuset or "",
            "CpuShares": spec.cpu_shares or 0,
            "PidsLimit": spec.pids if spec.pids and spec.pids > 0 else -1,
            "RestartPolicy": _restart_policy(spec.restart),
        }
        if spec.memory:
            body["Memory"] = spec.memory
            body["MemorySwap"] = spec.memory + (spec.swap or 0)
        if spec.blkio_weight:
            body["BlkioWeight"] = spec.blkio_weight
        api = self.api
        # The SDK's update_container() predates PidsLimit; post the documented body.
        with self._translated("update %s" % container):
            return api._result(api._post_json(api._url("/containers/{0}/update", container),
                                              data=body), True)

    def put_files(self, container, files):
        """Write {path: (bytes, mode)} into a created or running container."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            made = set()
            for path, (content, mode) in sorted(files.items()):
                parts = path.strip("/").split("/")
                for depth in range(1, len(parts)):
                    directory = "/".join(parts[:depth])
                    if directory not in made:
                        made.add(directory)
                        info = tarfile.TarInfo(directory)
                        info.type = tarfile.DIRTYPE
                        info.mode = 0o700 if directory.endswith(".ssh") else 0o755
                        info.mtime = time.time()
                        tar.addfile(info)
                info = tarfile.TarInfo("/".join(parts))
                info.size = len(content)
                info.mode = mode
                info.mtime = time.time()
                tar.addfile(info, io.BytesIO(content))
        with self._translated("copy into %s" % container):
            self.api.put_archive(container, "/", buffer.getvalue())

    # ------------------------------------------------------------ processes in a container

    def logs(self, container, follow=False, since=None):
        """The container's output (stdout and stderr interleaved as written) as chunks of
        bytes, from Unix time `since`; with `follow`, until the container stops. What it
        returns has close(), which ends a followed stream."""
        with self._translated("logs of %s" % container[:12]):
            if follow:
                # The SDK streams a terminal's output a byte at a time: right for
                # following, ~100 ms for a boot's worth of console.
                return self.api.logs(container, stdout=True, stderr=True, stream=True,
                                     follow=True, since=since)
            return _chunks(self.api.logs(container, stdout=True, stderr=True, since=since))

    def exec_start(self, container, argv, tty=False, env=None):
        """Start `argv` in a running container exactly as `docker exec` does: with the
        container's capabilities, seccomp profile, no_new_privs, AppArmor/SELinux label,
        user and cgroups. Returns (exec id, a socket carrying its stdio): stdin is written
        to it (shutdown(SHUT_WR) is EOF), stdout and stderr come back framed unless `tty`
        (see cvm.relay)."""
        with self._translated("exec in %s" % container):
            exec_id = self.api.exec_create(container, list(argv), stdin=True, tty=tty,
                                           environment=env)["Id"]
        return exec_id, self._hijack("/exec/%s/start" % exec_id, {"Detach": False, "Tty": tty})

    def attach(self, container, detach_keys):
        """A socket on the container's terminal (its /dev/console), as `docker attach`
        gives: keys in, the screen out, until `detach_keys` (Docker's notation)."""
        return self._hijack("/containers/%s/attach?stream=1&stdin=1&stdout=1&stderr=1&"
                            "detachKeys=%s" % (container, detach_keys), {})

    def resize(self, container, rows, columns):
        with self._translated("console of %s" % container[:12]):
            self.api.resize(container, height=rows, width=columns)

    def exec_status(self, exec_id):
        """(running, exit code, host pid) of a process started by exec_start."""
        with self._translated("exec %s" % exec_id[:12]):
            info = self.api.exec_inspect(exec_id)
        return info.get("Running"), info.get("ExitCode"), info.get("Pid")

    def exec_exit_code(self, exec_id, wait=5.0):
        """The exit code of a process from exec_start, once its stream has ended (Docker
        may still be reaping it for a moment)."""
        deadline = time.monotonic() + wait
        while True:
            running, code, _ = self.exec_status(exec_id)
            if not running or time.monotonic() > deadline:
                return code if code is not None else 1
            time.sleep(0.01)

    def run(self, container, argv, input=None, timeout=None):
        """Run `argv` in a running container as exec_start does, feed it `input` and wait:
        (exit code, stdout bytes, stderr bytes), or None if it did not finish within
        `timeout` seconds (it is killed then)."""
        from . import relay
        process, stdio = self.exec_start(container, argv)
        deadline = None if timeout is None else time.monotonic() + timeout
        output = relay.collect(stdio, input=input, deadline=deadline)
        if output is None:
            _, _, pid = self.exec_status(process)
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
            return None
        return (self.exec_exit_code(process),) + output

    def exec_resize(self, exec_id, rows, columns):
        with self._translated("exec %s" % exec_id[:12]):
            self.api.exec_resize(exec_id, height=rows, width=columns)

    def _hijack(self, path, body):
        """POST `body` to `path` asking Docker to upgrade the connection to a raw stream,
        and return the socket once the response's headers are read, and not a byte more.

        The SDK's exec_start(socket=True) reads the headers through a buffered reader and
        hands out the socket under it: output that arrived with the headers is lost
        (docker/docker-py#3332). Here the headers are peeked at and consumed exactly."""
        import json
        import socket
        payload = json.dumps(body).encode()
        version = self.api.api_version
        request = ("POST /v%s%s HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
                   "Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: %d\r\n\r\n"
                   % (version, path, len(payload))).encode() + payload
        url = self.base_url
        try:
            if url.startswith(("unix://", "http+unix://")):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect("/" + url.split("://", 1)[1].lstrip("/"))
            elif url.startswith("tcp://"):
                host, _, port = url[len("tcp://"):].rpartition(":")
                sock = socket.create_connection((host, int(port)))
            else:
                raise CvmError("cvm exec needs a unix:// or tcp:// Docker engine, not %s" % url)
            sock.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                peeked = sock.recv(4096, socket.MSG_PEEK)
                if not peeked:
                    raise ConnectionError("the engine closed the connection")
                end = (head + peeked).find(b"\r\n\r\n")
                take = len(peeked) if end < 0 else end + 4 - len(head)
                head += sock.recv(take)
        except OSError as exc:
            raise self._unavailable(exc) from None
        status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if status_line.split()[1:2] not in (["101"], ["200"]):
            sock.settimeout(5)
            try:
                body = sock.recv(65536).decode(errors="replace")
                reason = json.loads(body[body.index("{"):]).get("message") or body
            except (OSError, ValueError):
                reason = status_line
            finally:
                sock.close()
            raise CvmError("%s: Docker refused: %s" % (path, reason.strip()))
        return sock

    def events(self, realm, since=None, until=None):
        """Decoded container events of this realm's VMs: forever, or up to `until`."""
        filters = {"type": "container", "label": "%s=%s" % (LABEL_REALM, realm)}
        with self._translated("events"):
            return self.api.events(decode=True, filters=filters, since=since, until=until)

    def build(self, context_dir, tag, labels, network_mode="host", buildargs=None):
        """Build an image; yields decoded progress records."""
        with self._translated("build %s" % tag):
            return self.api.build(path=context_dir, tag=tag, labels=labels, rm=True,
                                  forcerm=True, decode=True, network_mode=network_mode,
                                  buildargs=buildargs or {})


def _explain(exc):
    explanation = getattr(exc, "explanation", None)
    text = explanation.decode() if isinstance(explanation, bytes) else (explanation or str(exc))
    return text.strip().splitlines()[0] if text else type(exc).__name__
