"""OS images: every recipe rendered and linted, the offline Debian 12 image built and
inspected, a real VM's root filesystem imported, and the errors each bad input gets.

CentOS, Rocky, Alma and Ubuntu cannot be built here (no registry, no mirrors): their
recipes are rendered and linted with hadolint, their setup scripts syntax-checked, and
the VM semantics suite runs against any of them on a connected host
(CVM_TEST_IMAGES=cvm/centos7,... see test_vm_semantics.py).
"""

import glob
import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

from cvm import api, images, vmtools
from cvm.api import resolve_init
from cvm.spec import parse_spec

from .conftest import BUILD_LOG_DIR, DEBIAN, wait_booted

HADOLINT = os.path.join(os.path.dirname(sys.executable), "hadolint")
DISTROS = ["alma8", "alma9", "centos7", "debian12", "labhost", "rocky8", "rocky9", "ubuntu2204",
           "ubuntu2404"]


def test_known_distros():
    assert images.known_distros() == DISTROS


@pytest.mark.parametrize("distro", DISTROS)
def test_every_recipe_renders_and_lints(distro, tmp_path):
    recipe = images.load_recipe(distro)
    rendered = images.render(recipe, recipe["registry_base"], "registry image", True)
    dockerfile = rendered["Dockerfile"]
    assert dockerfile.splitlines()[2] == "FROM " + recipe["registry_base"]
    for package in recipe["profile"] + recipe["extra_packages"]:
        assert "      %s" % package in dockerfile, package
    for label in ("distro", "version", "cvm-version", "build-date", "init-mode",
                  "systemd-version"):
        assert "io.cvm.%s=" % label in dockerfile
    assert "STOPSIGNAL SIGPWR" in dockerfile and 'CMD ["/sbin/init"]' in dockerfile
    images.write_context(str(tmp_path), recipe, rendered)
    lint = subprocess.run([HADOLINT, "--failure-threshold", "warning",
                           str(tmp_path / "Dockerfile")], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    setup = tmp_path / "rootfs/usr/lib/cvm/image/setup.sh"
    assert subprocess.run(["sh", "-n", str(setup)]).returncode == 0
    assert "\n    %s || " % " ".join(vmtools.COMPILE_TOOLS) in setup.read_text()
    for path in ("usr/local/bin/free", "usr/local/bin/top", "usr/local/bin/mpstat",
                 "usr/lib/cvm/wait-ready", "usr/lib/cvm/compat/init",
                 "usr/lib/cvm/compat/systemctl3.py", "usr/local/sbin/hwclock",
                 "etc/systemd/system/cvm-ssh-keygen.service"):
        assert (tmp_path / "rootfs" / path).exists(), path
    family_shim = (tmp_path / "rootfs/usr/local/sbin/chkconfig").exists()
    assert family_shim == (recipe["family"] == "deb")  # RPM distros have the real one


def test_centos7_recipe_specifics(tmp_path):
    recipe = images.load_recipe("centos7")
    rendered = images.render(recipe, "centos:7", "registry image", True)
    assert "yum install -y" in rendered["Dockerfile"] and "yum-plugin-ovl" in rendered[
        "Dockerfile"]
    assert "COPY pre/ /" in rendered["Dockerfile"]
    images.write_context(str(tmp_path), recipe, rendered)
    repo = (tmp_path / "pre/etc/yum.repos.d/CentOS-Base.repo").read_text()
    assert "vault.centos.org/7.9.2009/os/" in repo and "mirrorlist" not in repo
    setup = rendered["setup.sh"]
    assert "/etc/pam.d/crond" in setup and "pam_loginuid" in setup
    assert "sshd.service crond.service rsyslog.service" in setup


def test_ubi_minimal_bases_get_dnf():
    recipe = images.load_recipe("rocky9")
    dockerfile = images.render(recipe, "rockylinux:9-ubi-micro", "registry", True)["Dockerfile"]
    assert "microdnf install -y dnf" in dockerfile


def image_attrs(labels, cmd=None):
    return {"Config": {"Labels": labels, "Cmd": cmd}}


def test_init_auto_picks_compat_for_old_systemd_on_cgroup_v2():
    spec = parse_spec({"name": "x", "image": "cvm/centos7"})
    centos7 = image_attrs({"io.cvm.systemd-version": "219", "io.cvm.init": "/sbin/init",
                           "io.cvm.compat-init": "/usr/lib/cvm/compat/init"})
    mode, argv, why = resolve_init(spec, centos7, 2)
    assert (mode, argv) == ("compat", ["/usr/lib/cvm/compat/init"])
    assert why == "the image's systemd 219 is older than 230 and this host is cgroup v2"
    assert resolve_init(spec, centos7, 1)[0] == "systemd"
    debian = image_attrs({"io.cvm.systemd-version": "252"})
    assert resolve_init(spec, debian, 2)[0] == "systemd"
    assert resolve_init(spec, image_attrs({}, ["/bin/sh"]), 1)[0] == "none"
    assert resolve_init(spec, image_attrs({}, ["/lib/systemd/systemd"]), 1)[:2] == (
        "systemd", ["/lib/systemd/systemd"])


@pytest.mark.engine
def test_debian12_image_is_built_offline_with_labels(images, engine, cvm):
    labels = engine.image(DEBIAN)["Config"]["Labels"]
    assert labels["io.cvm.distro"] == "debian12" and labels["io.cvm.version"] == "12"
    assert labels["io.cvm.init-mode"] == "auto" and labels["io.cvm.systemd-version"] == "252"
    assert labels["io.cvm.recipe-hash"] == images_module_hash()
    rows = json.loads(cvm("image", "ls", "--json", check=True).stdout)
    assert any(r["tag"] == DEBIAN and r["distro"] == "debian12" for r in rows)
    table = cvm("image", "ls", check=True).stdout
    assert table.splitlines()[0].split() == ["TAG", "ID", "DISTRO", "VERSION", "INIT", "BUILT",
                                             "SIZE"]


def images_module_hash():
    return images.recipe_hash("debian12")


BAD = [
    (["image", "build", "gentoo"], "unknown distro 'gentoo'; known: alma8, alma9, centos7, "
                                   "debian12, labhost, rocky8, rocky9, ubuntu2204, ubuntu2404"),
    (["image", "build", "rocky9"], "base image rockylinux:9 is not on this host and cvm pulls "
                                   "from no registry"),
    (["image", "build", "centos7", "--rootfs", "debootstrap"],
     "centos7 cannot be built with debootstrap; use --base IMAGE"),
    (["image", "build", "debian12", "--base", "nosuch:base"],
     "base image nosuch:base is not on this host"),
]


@pytest.mark.engine
@pytest.mark.parametrize("args,message", BAD, ids=["distro", "base", "debootstrap", "named"])
def test_bad_builds_are_one_line(cvm, args, message):
    logs = os.listdir(BUILD_LOG_DIR)
    result = cvm(*args)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr
    assert "build log" not in result.stderr and os.listdir(BUILD_LOG_DIR) == logs  # none empty


@pytest.mark.engine
def test_missing_debootstrap(cvm, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(sys.executable, bin_dir / "python3")
    result = cvm("image", "build", "debian12", "--rootfs", "debootstrap", "--extra-packages",
                 "cowsay", env={"PATH": str(bin_dir)})
    assert result.returncode == 1
    assert "debootstrap is not installed; apt-get install debootstrap" in result.stderr
    assert "build log" not in result.stderr  # nothing was logged: no empty log is cited


@pytest.mark.engine
def test_build_failure_names_the_step_and_tags_nothing(cvm, engine, images):
    tag = "cvm-test/broken:latest"
    result = cvm("image", "build", "debian12", "--base", "cvm/busybox:latest", "--tag", tag)
    assert result.returncode == 1
    line = result.stderr.strip()
    assert "build failed at step 3/" in line and "apt-get" in line
    assert "last output:" in line and "(build log: %s/build-debian12-" % BUILD_LOG_DIR in line
    log = line.rsplit("(build log: ", 1)[1].rstrip(")")
    assert os.path.exists(log)
    from cvm.errors import SpecError
    with pytest.raises(SpecError):
        engine.image(tag)  # no half-tagged image


@pytest.mark.engine
def test_disk_full_is_named(cvm, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(cache)], check=True)
    try:
        result = cvm("image", "build", "debian12", "--rootfs", "debootstrap",
                     "--extra-packages", "cowsay", env={"CVM_CACHE_DIR": str(cache)},
                     timeout=600)
    finally:
        subprocess.run(["umount", "-l", str(cache)])
    assert result.returncode == 1
    assert "the disk is full" in result.stderr and "(build log:" in result.stderr


# ---------------------------------------------------------------- importing a VM


def debootstrap_tarball():
    recipe = images.load_recipe("debian12")
    found = sorted(glob.glob(os.path.join(images.CACHE_DIR, "debian12-*.tar")),
                   key=os.path.getmtime)
    if not found:
        images.debootstrap_rootfs(recipe, (), images.BuildLog("debian12-test"))
        found = glob.glob(os.path.join(images.CACHE_DIR, "debian12-*.tar"))
    return found[-1]


def add_file(archive, name, text, mode=0o644):
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    archive.addfile(info, io.BytesIO(data))


@pytest.fixture
def vm_tarball(tmp_path, images):
    """A Debian 12 'VM' as a sysadmin would tar it: kernel, fstab, udev rules, a user of its
    own and a service of its own (the offline root filesystem, with those changes)."""
    service = ("[Unit]\nDescription=The VM's own app\n[Service]\nExecStart=/bin/sleep infinity"
               "\n[Install]\nWantedBy=multi-user.target\n")
    replaced = {"./etc/fstab": "UUID=abcd / ext4 errors=remount-ro 0 1\n/dev/sdb1 /data xfs "
                               "defaults 0 2\n"}
    added = {"./boot/vmlinuz-6.1.0-18-amd64": "kernel",
             "./etc/udev/rules.d/70-persistent-net.rules": "# eth0\n",
             "./etc/systemd/system/legacy-app.service": service,
             "./home/alice/.profile": "# alice\n"}
    appended = {"./etc/passwd": "alice:x:1500:1500:Alice:/home/alice:/bin/bash\n",
                "./etc/group": "alice:x:1500:\n"}
    path = str(tmp_path / "vm-root.tar")
    with tarfile.open(debootstrap_tarball()) as source, tarfile.open(path, "w") as target:
        for member in source:
            if member.name in replaced:
                add_file(target, member.name, replaced[member.name])
            elif member.name in appended and member.isfile():
                text = source.extractfile(member).read().decode() + appended[member.name]
                add_file(target, member.name, text)
            elif member.isfile():
                target.addfile(member, source.extractfile(member))
            else:
                target.addfile(member)
        for name, text in added.items():
            add_file(target, name, text)
        enabled = tarfile.TarInfo("./etc/systemd/system/multi-user.target.wants/legacy-app.service")
        enabled.type = tarfile.SYMTYPE
        enabled.linkname = "/etc/systemd/system/legacy-app.service"
        target.addfile(enabled)  # `systemctl enable legacy-app`, as on the VM
    return path


@pytest.mark.engine
def test_import_a_vm_root_filesystem(cvm, ctx, engine, vm_tarball, name):
    tag = "cvm-test/imported:latest"

    def import_steps_left():
        return [ref for image in engine.images() for ref in image.get("RepoTags") or ()
                if ref.startswith("cvm-base/debian12-import:")]

    def dangling():
        return {image["Id"] for image in engine.api.images(filters={"dangling": True})}

    dangling_before = dangling()
    result = cvm("image", "import", "--rootfs", vm_tarball, "--distro", "debian12", "--tag", tag,
                 timeout=600)
    assert result.returncode == 0, result.stderr
    assert import_steps_left() == []              # the imported base is not left named
    assert dangling() <= dangling_before          # nor unnamed
    try:
        vm = api.create(parse_spec({"name": name, "image": tag}), ctx=ctx)
        wait_booted(vm, timeout=30, states=(b"running",))

        def run(script):
            return vm.exec(["sh", "-c", script])[1].decode()

        assert run("id -u alice").strip() == "1500"                 # users kept
        assert run("systemctl is-active legacy-app").strip() == "active"  # services kept
        assert run("ls /boot | wc -l").strip() == "0"               # kernel stripped
        assert "/dev/sdb1" not in run("cat /etc/fstab")             # mounts stripped
        assert run("ls /etc/udev/rules.d/70-persistent-net.rules 2>&1 || true").startswith("ls")
        assert run("free -m | awk '/^Mem:/{print $1}'").strip() == "Mem:"  # cvm's tools
    finally:
        for vm in api.ls(ctx):
            vm.remove(force=True)
        engine.remove_image(tag, force=True)


@pytest.mark.engine
def test_import_refuses_what_is_not_that_vm(cvm, tmp_path, vm_tarball):
    not_tar = tmp_path / "notes.txt"
    not_tar.write_text("hello")
    result = cvm("image", "import", "--rootfs", not_tar, "--distro", "debian12", "--tag", "x:y")
    assert result.returncode == 2 and "is not a tar archive" in result.stderr
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(str(empty), "w:gz") as archive:
        add_file(archive, "./etc/hostname", "box\n")
    result = cvm("image", "import", "--rootfs", empty, "--distro", "debian12", "--tag", "x:y")
    assert result.returncode == 2
    assert "is not a root filesystem: it has no /etc/os-release" in result.stderr
    result = cvm("image", "import", "--rootfs", vm_tarball, "--distro", "centos7", "--tag", "x:y")
    assert result.returncode == 2
    assert "holds debian 12 (debian12), not centos7; pass --distro debian12" in result.stderr
    missing = cvm("image", "import", "--rootfs", tmp_path / "nope.tar", "--distro", "debian12",
                  "--tag", "x:y")
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_os_release_mapping():
    assert images.distro_of("rocky", "9.3") == "rocky9"
    assert images.distro_of("centos", "7") == "centos7"
    assert images.distro_of("ubuntu", "22.04") == "ubuntu2204"
    assert images.distro_of("almalinux", "8.9") == "alma8"
    assert images.distro_of("arch", "") is None


def test_tool_wrappers(tmp_path):
    """free and uptime are shell scripts that pick procps' binary where cvm bound LXCFS's
    files (and they are readable), else cvm's: they pass shellcheck. The others are
    Python started isolated (-IS: no site, no user paths, no PYTHON* variables)."""
    wrappers = {path: content for path, (content, mode) in vmtools.tools_files().items()
                if path.startswith("/usr/local/bin/") and mode == 0o755}
    assert sorted(wrappers) == sorted("/usr/local/bin/" + tool for tool in vmtools.TOOLS)
    for tool in vmtools.TOOLS:
        text = wrappers["/usr/local/bin/" + tool].decode()
        if tool in vmtools.NATIVE_UNDER_LXCFS:
            script = tmp_path / tool
            script.write_text(text)
            assert text.startswith("#!/bin/sh\n") and "[ -e /etc/cvm/lxcfs ]" in text
            result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
            assert result.returncode == 0, result.stdout
        else:
            assert text.startswith("#!/usr/bin/python3 -IS\n")
