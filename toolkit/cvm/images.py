"""OS images: one mechanism, three sources of the base root filesystem.

    registry image (centos:7, rockylinux:9, ...)   on connected hosts
    debootstrap (Debian 12)                         offline: only a Debian mirror is needed
    tarball of a real VM's root filesystem          the migration path

Each becomes base + the cvm layer, rendered from os-images/<distro>/recipe.yml,
os-images/profiles.yml (the fat package profile of each family, written once) and
templates/image/, and built through the Docker SDK.
"""

import contextlib
import datetime
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

from . import __version__, vmtools
from .paths import project_root
from .errors import ImageError, SpecError

LOG_DIR = os.environ.get("CVM_LOG_DIR", "/var/log/cvm")
CACHE_DIR = os.environ.get("CVM_CACHE_DIR", "/var/cache/cvm/rootfs")
# Units masked in every image: devices, consoles other than the VM's one (/dev/console,
# whose getty `cvm console` reaches), kernel mounts, host-owned network and clock.
MASKED_UNITS = [
    "systemd-udevd.service", "systemd-udevd-control.socket", "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service", "systemd-udev-settle.service",
    "getty@tty1.service", "serial-getty@.service", "container-getty@.service",
    "systemd-remount-fs.service", "dev-hugepages.mount",
    "sys-fs-fuse-connections.mount", "sys-kernel-config.mount", "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount", "proc-sys-fs-binfmt_misc.automount", "systemd-binfmt.service",
    "systemd-modules-load.service", "kmod-static-nodes.service", "systemd-hwdb-update.service",
    "systemd-timesyncd.service", "chronyd.service", "ntpd.service", "systemd-networkd.service",
    "systemd-networkd.socket", "systemd-networkd-wait-online.service", "networking.service",
    "NetworkManager.service", "NetworkManager-wait-online.service", "network.service",
    "systemd-resolved.service", "ifup@.service", "cloud-init.service", "cloud-init-local.service",
    "cloud-config.service", "cloud-final.service", "auditd.service",
    "systemd-journald-audit.socket", "systemd-pstore.service", "systemd-firstboot.service",
    "e2scrub_reap.service", "lvm2-monitor.service", "multipathd.service", "mdmonitor.service",
    "smartd.service", "irqbalance.service", "tuned.service", "kdump.service",
]
DISABLED_UNITS = ["apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
                  "fstrim.timer", "man-db.timer", "dnf-makecache.timer", "motd-news.timer"]
ENABLED_UNITS = {"deb": ["ssh.service", "cron.service", "rsyslog.service", "sysstat.service"],
                 "rpm": ["sshd.service", "crond.service", "rsyslog.service", "sysstat.service"]}
OS_RELEASE_DISTROS = {("debian", "12"): "debian12", ("ubuntu", "22.04"): "ubuntu2204",
                      ("ubuntu", "24.04"): "ubuntu2404", ("centos", "7"): "centos7",
                      ("rocky", "8"): "rocky8", ("rocky", "9"): "rocky9",
                      ("almalinux", "8"): "alma8", ("almalinux", "9"): "alma9"}


def images_dir():
    return os.path.join(project_root(), "os-images")


def known_distros():
    return sorted(d for d in os.listdir(images_dir())
                  if os.path.exists(os.path.join(images_dir(), d, "recipe.yml")))


def load_recipe(distro):
    import yaml
    if distro not in known_distros():
        raise SpecError("distro", "unknown distro %r; known: %s" % (
            distro, ", ".join(known_distros())))
    with open(os.path.join(images_dir(), distro, "recipe.yml")) as handle:
        recipe = yaml.safe_load(handle)
    with open(os.path.join(images_dir(), "profiles.yml")) as handle:
        profiles = yaml.safe_load(handle)
    recipe["distro"] = distro
    recipe["profile"] = list(profiles[recipe["family"]])
    recipe.setdefault("extra_packages", [])
    recipe.setdefault("package_manager", "apt" if recipe["family"] == "deb" else "dnf")
    recipe.setdefault("init", ["/sbin/init"])
    return recipe


def _template_env():
    from .templates import environment
    return environment()


def render(recipe, base, base_description, install_packages, extra_packages=(), strip_vm=False,
           build_date=None):
    """{'Dockerfile': text, 'setup.sh': text} for a recipe on a base."""
    extras = list(recipe["extra_packages"]) + [p for p in extra_packages
                                               if p not in recipe["extra_packages"]]
    packages = (recipe["profile"] + [p for p in extras if p not in recipe["profile"]]) \
        if install_packages else []
    labels = image_labels(recipe, build_date or _now())
    values = {
        "cvm_version": __version__, "distro": recipe["distro"], "family": recipe["family"],
        "base": base, "base_description": base_description,
        "pre_overlay": bool(recipe.get("pre_overlay")), "packages": packages,
        "extra_packages": extras, "package_manager": recipe["package_manager"],
        "label_lines": " \\\n      ".join("%s=%s" % (k, json.dumps(v)) for k, v in labels.items()),
        "init": recipe["init"], "strip_vm": strip_vm,
        "masked_units": MASKED_UNITS, "disabled_units": DISABLED_UNITS,
        "enabled_units": ENABLED_UNITS[recipe["family"]],
        "image_json": json.dumps({k.replace("io.cvm.", ""): v for k, v in labels.items()},
                                 indent=2, sort_keys=True),
        "compile_tools": " ".join(vmtools.COMPILE_TOOLS),
    }
    env = _template_env()
    return {"Dockerfile": env.get_template("image/Dockerfile.j2").render(**values),
            "setup.sh": env.get_template("image/setup.sh.j2").render(**values)}


def image_labels(recipe, build_date):
    return {
        "io.cvm.distro": recipe["distro"],
        "io.cvm.version": str(recipe["version"]),
        "io.cvm.family": recipe["family"],
        "io.cvm.cvm-version": __version__,
        "io.cvm.build-date": build_date,
        "io.cvm.init-mode": "auto",
        "io.cvm.systemd-version": str(recipe["systemd"]),
        "io.cvm.init": " ".join(recipe["init"]),
        "io.cvm.compat-init": "/usr/lib/cvm/compat/init",
        # The image's systemd powers off on this signal and reports who asked (see
        # os-images/common: cvm-host-stop.service, system-shutdown/cvm-report).
        "io.cvm.host-stop-signal": "SIGPWR",
        "io.cvm.recipe-hash": recipe_hash(recipe["distro"]),
    }


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def recipe_hash(distro):
    """Changes whenever anything that goes into the distro's image changes."""
    digest = hashlib.sha256()
    root = project_root()
    recipe = os.path.join("os-images", distro)
    family = None
    with contextlib.suppress(OSError):
        with open(os.path.join(root, recipe, "recipe.yml")) as handle:
            family = re.search(r"^family:\s*(\w+)", handle.read(), re.M).group(1)
    sources = [recipe, "os-images/common", "os-images/profiles.yml", "templates/image",
               "toolkit/cvm/procview", "toolkit/cvm/cgroups.py", "toolkit/cvm/procfs.py",
               "toolkit/cvm/sizes.py", "toolkit/cvm/vmtools.py"]
    if family:
        sources.append("os-images/families/" + family)
    for source in sources:
        path = os.path.join(root, source)
        files = [path] if os.path.isfile(path) else sorted(
            os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if not f.endswith(".pyc"))
        for name in files:
            digest.update(os.path.relpath(name, root).encode())
            with open(name, "rb") as handle:
                digest.update(handle.read())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------- files put into images


def _compat_init_script():
    """docker-systemctl-replacement's systemctl3.py, from the installed PyPI package."""
    import importlib.util
    spec = importlib.util.find_spec("systemctl2")
    if spec is None or not spec.submodule_search_locations:
        raise ImageError("the docker-systemctl-replacement package is missing; pip install it")
    path = os.path.join(list(spec.submodule_search_locations)[0], "systemctl3.py")
    with open(path, "rb") as handle:
        return handle.read()


def write_context(directory, recipe, rendered):
    """Lay out a build context: Dockerfile, pre/ and rootfs/."""
    from .engine import WAIT_SCRIPT, WAIT_SCRIPT_TEXT
    with open(os.path.join(directory, "Dockerfile"), "w") as handle:
        handle.write(rendered["Dockerfile"])
    root = images_dir()
    if recipe.get("pre_overlay"):
        shutil.copytree(os.path.join(root, recipe["distro"], "pre"), os.path.join(directory, "pre"))
    rootfs = os.path.join(directory, "rootfs")
    for overlay in (os.path.join(root, "common", "rootfs"),
                    os.path.join(root, "families", recipe["family"], "rootfs"),
                    os.path.join(root, recipe["distro"], "rootfs")):
        if os.path.isdir(overlay):
            shutil.copytree(overlay, rootfs, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(".keep"))
    generated = dict(vmtools.tools_files())
    generated[WAIT_SCRIPT] = (WAIT_SCRIPT_TEXT.encode(), 0o755)
    generated["/usr/lib/cvm/compat/systemctl3.py"] = (_compat_init_script(), 0o755)
    generated["/usr/lib/cvm/image/setup.sh"] = (rendered["setup.sh"].encode(), 0o755)
    for path, (content, mode) in generated.items():
        target = os.path.join(rootfs, path.lstrip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as handle:
            handle.write(content)
        os.chmod(target, mode)


# ---------------------------------------------------------------- building


class BuildLog:
    """The full build output on disk, and the tail kept for error messages. The file is
    made with the first line: a build refused before any output leaves no empty log."""

    def __init__(self, distro):
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.path = os.path.join(LOG_DIR, "build-%s-%s.log" % (distro, stamp))
        self.handle = None
        self.tail = []
        self.step = None
        self.watched = [CACHE_DIR, "/var/lib/docker"]  # where a full disk breaks builds

    @property
    def written(self):
        """The log's path once it holds output, else None (for error messages)."""
        return self.path if self.handle else None

    def write(self, line):
        if self.handle is None:
            os.makedirs(LOG_DIR, exist_ok=True)
            self.handle = open(self.path, "w")
        self.handle.write(line + "\n")
        self.handle.flush()
        if line.strip():
            self.tail = (self.tail + [line.rstrip()])[-12:]

    def full_disk(self):
        for path in self.watched:
            with contextlib.suppress(OSError):
                if shutil.disk_usage(path).free < 64 << 20:
                    return path
        return None

    def fail(self, message):
        self.close()
        full = self.full_disk()
        if full or any("no space left on device" in line.lower()
                       for line in self.tail + [message]):
            message = "the disk is full%s (%s)" % (" at %s" % full if full else "", message)
        where = " at step %s" % self.step if self.step else ""
        detail = " | ".join(self.tail[-5:])
        raise ImageError("build failed%s: %s%s" % (where, message,
                                                    (" -- last output: " + detail) if detail
                                                    else ""), self.written)

    def close(self):
        if self.handle:
            self.handle.close()

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, traceback):
        """Any unexpected error becomes a build failure naming the step and the log (a
        refused request stays what it is)."""
        if exc is not None and not isinstance(exc, (ImageError, SpecError)):
            self.fail(str(exc).splitlines()[0] if str(exc) else kind.__name__)
        self.close()
        return False


def _run_logged(argv, log, progress, what):
    try:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, errors="replace")
    except OSError as exc:
        log.fail("%s could not run: %s" % (what, exc.strerror))
    for line in process.stdout:
        log.write(line.rstrip())
        if progress:
            progress({"phase": what, "line": line.rstrip()})
    if process.wait() != 0:
        log.fail("%s exited with %d" % (what, process.returncode))


def debootstrap_rootfs(recipe, extra_packages, log, progress=None):
    """A cached tarball of a debootstrap of the recipe's suite with the fat profile."""
    settings = recipe.get("debootstrap")
    if not settings:
        raise SpecError("rootfs", "%s cannot be built with debootstrap; use --base IMAGE (one "
                        "of its registry images, e.g. %s)" % (recipe["distro"], recipe["registry_base"]))
    if shutil.which("debootstrap") is None:
        raise ImageError("debootstrap is not installed; apt-get install debootstrap",
                         log.written)
    packages = recipe["profile"] + [p for p in list(recipe["extra_packages"]) +
                                    list(extra_packages) if p not in recipe["profile"]]
    key = hashlib.sha256(json.dumps([settings, packages]).encode()).hexdigest()[:16]
    os.makedirs(CACHE_DIR, exist_ok=True)
    tarball = os.path.join(CACHE_DIR, "%s-%s.tar" % (recipe["distro"], key))
    if os.path.exists(tarball):
        log.write("using cached root filesystem %s" % tarball)
        return tarball, key
    workdir = tempfile.mkdtemp(prefix="cvm-debootstrap-", dir=CACHE_DIR)
    log.watched.insert(0, workdir)
    try:
        target = os.path.join(workdir, "root")
        log.step = "debootstrap"
        _run_logged(["debootstrap", "--variant=minbase", "--include=" + ",".join(packages),
                     settings["suite"], target, settings["mirror"]], log, progress, "debootstrap")
        # Lists are large and stale by the time the image runs: drop them like Docker images do.
        shutil.rmtree(os.path.join(target, "var/lib/apt/lists"), ignore_errors=True)
        os.makedirs(os.path.join(target, "var/lib/apt/lists/partial"), exist_ok=True)
        for cache in ("var/cache/apt/archives",):
            for name in os.listdir(os.path.join(target, cache)):
                if name.endswith(".deb"):
                    os.unlink(os.path.join(target, cache, name))
        partial = tarball + ".partial"
        _run_logged(["tar", "--numeric-owner", "--xattrs", "-C", target, "-cf", partial, "."],
                    log, progress, "tar")
        os.rename(partial, tarball)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return tarball, key


def import_base(engine, tarball, tag, log):
    """docker import of a root filesystem tarball (plain or gzip) as a base image."""
    log.write("importing %s as %s" % (tarball, tag))
    result = engine.import_image(tarball, tag, changes=["ENV container=docker",
                                                        'CMD ["/sbin/init"]'])
    text = result if isinstance(result, str) else json.dumps(result)
    if "error" in text.lower() and "sha256:" not in text:
        log.fail("docker import failed: %s" % text[:200])
    return tag


def _docker_build(engine, context_dir, tag, labels, log, progress):
    step_re = re.compile(r"^Step (\d+/\d+) : (.*)$")
    for record in engine.build(context_dir, tag, labels):
        if "error" in record:
            log.write(record["error"])
            log.fail(record["error"].strip().splitlines()[-1])
        text = record.get("stream", "")
        for line in text.splitlines():
            log.write(line)
            match = step_re.match(line)
            if match:
                log.step = "%s (%s)" % (match.group(1), match.group(2)[:60])
            if progress:
                progress({"phase": "build", "step": log.step, "line": line})


def build(distro, base=None, rootfs=None, tag=None, extra_packages=(), ctx=None, progress=None):
    """Build cvm/<distro> (or `tag`) from a registry base or debootstrap. Returns the tag."""
    from .context import default_context
    ctx = ctx or default_context()
    recipe = load_recipe(distro)
    tag = tag or "cvm/%s:latest" % distro
    with BuildLog(distro) as log:
        if rootfs is not None and base is not None:
            raise SpecError("base", "give --base or --rootfs, not both")
        if rootfs is not None:
            if rootfs != "debootstrap":
                raise SpecError("rootfs", "takes 'debootstrap'; to turn a VM's tarball into an "
                                "image use `cvm image import`")
            tarball, key = debootstrap_rootfs(recipe, extra_packages, log, progress)
            base = "cvm-base/%s:%s" % (distro, key)
            if not _image_exists(ctx.engine, base):
                log.step = "import"
                import_base(ctx.engine, tarball, base, log)
            description = "debootstrap %s from %s" % (recipe["debootstrap"]["suite"],
                                                        recipe["debootstrap"]["mirror"])
            install = False
        else:
            base = base or recipe["registry_base"]
            if not _image_exists(ctx.engine, base):
                raise SpecError("base", "base image %s is not on this host and cvm pulls from "
                                "no registry; `docker pull %s` on a connected host (or `docker "
                                "load`), or build offline with --rootfs debootstrap" % (base, base))
            description = "registry image %s" % base
            install = True
        rendered = render(recipe, base, description, install, extra_packages)
        _build_layer(ctx.engine, recipe, rendered, tag, log, progress)
    return tag


def _build_layer(engine, recipe, rendered, tag, log, progress):
    previous = None
    with contextlib.suppress(Exception):
        previous = engine.image(tag)["Id"]
    with tempfile.TemporaryDirectory(prefix="cvm-build-") as context_dir:
        write_context(context_dir, recipe, rendered)
        _docker_build(engine, context_dir, tag, {}, log, progress)
    if previous and previous != engine.image(tag)["Id"]:
        # The image this tag replaced: gone unless containers still use it.
        with contextlib.suppress(Exception):
            engine.remove_image(previous)


def _image_exists(engine, ref):
    try:
        engine.image(ref)
        return True
    except SpecError:
        return False


def read_os_release(tarball):
    """(ID, VERSION_ID) from a root filesystem tarball; ImageError if it is not one."""
    try:
        archive = tarfile.open(tarball, "r:*")
    except (OSError, tarfile.TarError) as exc:
        raise SpecError("rootfs", "%s is not a tar archive (%s)" % (
            tarball, str(exc).splitlines()[0].rstrip(":"))) from None
    wanted = ("etc/os-release", "usr/lib/os-release")
    found = {}
    with archive:
        for member in archive:
            name = member.name.lstrip("./")
            if name in wanted and (member.isfile() or member.issym()):
                if member.issym():
                    continue
                found[name] = archive.extractfile(member).read().decode(errors="replace")
                if name == "etc/os-release":
                    break
    text = found.get("etc/os-release") or found.get("usr/lib/os-release")
    if text is None:
        raise SpecError("rootfs", "%s is not a root filesystem: it has no /etc/os-release"
                        % tarball)
    fields = dict(re.findall(r'^([A-Z_]+)="?([^"\n]*)"?$', text, re.M))
    return fields.get("ID", ""), fields.get("VERSION_ID", "")


def distro_of(os_id, version_id):
    major = version_id if os_id == "ubuntu" else version_id.split(".")[0]
    return OS_RELEASE_DISTROS.get((os_id, major))


def import_vm(tarball, distro, tag, ctx=None, progress=None):
    """Turn a tarball of a VM's root filesystem into a cvm image (the migration path)."""
    from .context import default_context
    ctx = ctx or default_context()
    recipe = load_recipe(distro)
    if not os.path.isfile(tarball):
        raise SpecError("rootfs", "%s does not exist" % tarball)
    os_id, version_id = read_os_release(tarball)
    found = distro_of(os_id, version_id)
    if found != distro:
        raise SpecError("distro", "%s holds %s %s%s, not %s; pass --distro %s" % (
            tarball, os_id or "an unknown OS", version_id,
            " (%s)" % found if found else "", distro, found or "<one of %s>" %
            ", ".join(known_distros())))
    with BuildLog(distro + "-import") as log:
        with open(tarball, "rb") as handle:
            key = hashlib.sha256(handle.read(1 << 20)).hexdigest()[:16]
        base = "cvm-base/%s-import:%s" % (distro, key)
        log.step = "import"
        import_base(ctx.engine, tarball, base, log)
        try:
            rendered = render(recipe, base, "VM root filesystem %s" % os.path.basename(tarball),
                              install_packages=False, strip_vm=True)
            _build_layer(ctx.engine, recipe, rendered, tag, log, progress)
        finally:
            # The imported base is a step, not a product: the built image holds its layer,
            # and a later import of the same tarball would leave this one dangling.
            with contextlib.suppress(Exception):
                ctx.engine.remove_image(base)
    return tag


# ---------------------------------------------------------------- tiny images


def busybox_rootfs_tar():
    """A root filesystem of busybox-static: /bin/busybox and its applet links."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        raise ImageError("busybox is not installed; apt-get install busybox-static")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "run",
                          "usr", "usr/bin", "usr/sbin", "var", "var/log"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in applets:
            if applet == "busybox":
                continue
            info = tarfile.TarInfo("bin/" + applet)
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
        for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
                           ("etc/group", "root:x:0:\n"),
                           ("etc/os-release", 'ID=busybox\nNAME="BusyBox"\n')):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def build_busybox(tag="cvm/busybox:latest", ctx=None):
    """A tiny app-style image in about a second: for tests and init-none VMs."""
    from .context import default_context
    ctx = ctx or default_context()
    ctx.engine.import_image(busybox_rootfs_tar(), tag, changes=[
        "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin", 'CMD ["/bin/sh"]',
        "LABEL io.cvm.distro=busybox io.cvm.init-mode=none"])
    return tag


# ---------------------------------------------------------------- listing


def ls(ctx=None):
    from .context import default_context
    ctx = ctx or default_context()
    rows = []
    for image in ctx.engine.images(label="io.cvm.distro"):
        labels = image.get("Labels") or {}
        for tag in image.get("RepoTags") or ["<none>"]:
            rows.append({"tag": tag, "id": image["Id"].split(":")[-1][:12],
                         "distro": labels.get("io.cvm.distro"),
                         "version": labels.get("io.cvm.version"),
                         "built": labels.get("io.cvm.build-date"),
                         "size": image.get("Size"), "init": labels.get("io.cvm.init-mode")})
    return sorted(rows, key=lambda r: r["tag"])


def rm(ref, force=False, ctx=None):
    from .context import default_context
    ctx = ctx or default_context()
    ctx.engine.remove_image(ref, force=force)


def ensure(names, ctx=None, progress=None):
    """Build the named images if missing or stale: 'busybox', or a distro (offline path)."""
    from .context import default_context
    ctx = ctx or default_context()
    built = []
    for name in names:
        if name == "busybox":
            if not _image_exists(ctx.engine, "cvm/busybox:latest"):
                built.append(build_busybox(ctx=ctx))
            continue
        tag = "cvm/%s:latest" % name
        current = None
        with contextlib.suppress(Exception):
            current = ((ctx.engine.image(tag).get("Config") or {}).get("Labels") or {}) \
                .get("io.cvm.recipe-hash")
        if current != recipe_hash(name):
            built.append(build(name, rootfs="debootstrap", ctx=ctx, progress=progress))
    return built


def print_progress(stream=sys.stderr):
    """A progress callback for terminals: one live line per step; plain lines otherwise."""
    state = {"start": time.monotonic(), "last": None}
    live = stream.isatty()

    def show(event):
        label = event.get("step") or event.get("phase")
        line = event.get("line", "")
        if live:
            text = "[%4.0fs] %s: %s" % (time.monotonic() - state["start"], label, line)
            stream.write("\r\033[K" + text[:150])
            stream.flush()
        elif label != state["last"]:
            stream.write("[%4.0fs] %s\n" % (time.monotonic() - state["start"], label))
        state["last"] = label

    return show


# ---------------------------------------------------------------- the fleet's registry


def split_reference(reference):
    """'registry:5000/cvm/debian12:latest' -> ('registry:5000/cvm/debian12', 'latest')."""
    name, _, tag = reference.rpartition(":")
    if not name or "/" in tag:
        return reference, "latest"
    return name, tag


def pushed(tag, registry, ctx=None):
    """The reference (registry/name@digest) under which `registry` holds local image
    `tag` as it is now, or None: what push would give, without pushing."""
    from .context import default_context
    ctx = ctx or default_context()
    remote = "%s/%s@" % (registry, split_reference(tag)[0])
    for reference in ctx.engine.image(tag).get("RepoDigests") or []:
        if reference.startswith(remote) and ctx.engine.registry_has(reference):
            return reference
    return None


def push(tag, registry, ctx=None):
    """Put local image `tag` into `registry` (host:port) under the same name; returns
    {"reference": registry/name@digest, "digest"}. Images are built once, on one host,
    and every other host pulls them by digest (pull)."""
    from .context import default_context
    ctx = ctx or default_context()
    ctx.engine.image(tag)  # a missing image: the spec-style error naming it
    name, version = split_reference(tag)
    remote = "%s/%s" % (registry, name)
    ctx.engine.tag(tag, remote, version)
    digest = ctx.engine.push(remote, version)
    return {"reference": "%s@%s" % (remote, digest), "digest": digest}


def pull(reference, tag, ctx=None):
    """Make local image `tag` the image `reference` (registry/name@digest) names, pulling
    it only when this host lacks that digest. Returns True when it pulled."""
    from .context import default_context
    from .errors import SpecError
    ctx = ctx or default_context()
    if "@" not in reference:
        raise SpecError("pull", "%r names no digest (registry/name@sha256:...): hosts pull "
                        "exactly what was pushed" % reference)
    try:
        present = reference in (ctx.engine.image(tag).get("RepoDigests") or [])
    except SpecError:
        present = False
    if present:
        return False
    ctx.engine.pull(reference)
    name, version = split_reference(tag)
    ctx.engine.tag(reference, name, version)
    return True
