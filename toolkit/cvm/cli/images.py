"""`cvm image`: build, import, render, remove and ensure OS images (`cvm image ls` is in
cvm.cli.served)."""

import os

import click

from .group import CONTEXT_SETTINGS, image


@image.command("build", context_settings=CONTEXT_SETTINGS)
@click.argument("distro")
@click.option("--base", help="Registry base image already on this host (e.g. rockylinux:9).")
@click.option("--rootfs", type=click.Choice(["debootstrap"]), help="Build the base offline.")
@click.option("--tag", help="Image tag (default cvm/DISTRO:latest).")
@click.option("--extra-packages", multiple=True, help="More packages (repeatable, or a,b,c).")
def image_build(distro, base, rootfs, tag, extra_packages):
    """Build an OS image: the distro's base plus the cvm layer."""
    from .. import images
    extras = [p for item in extra_packages for p in item.split(",") if p]
    result = images.build(distro, base=base, rootfs=rootfs, tag=tag, extra_packages=extras,
                          progress=images.print_progress())
    click.echo("", err=True)
    click.echo(result)


@image.command("import", context_settings=CONTEXT_SETTINGS)
@click.option("--rootfs", "tarball", required=True, type=click.Path(),
              help="Tarball of a VM's root filesystem (tar, tar.gz).")
@click.option("--distro", required=True, help="What the VM runs (e.g. centos7).")
@click.option("--tag", required=True)
def image_import(tarball, distro, tag):
    """Turn a real VM's root filesystem into a cvm image (the migration path)."""
    from .. import images
    click.echo(images.import_vm(tarball, distro, tag, progress=images.print_progress()))


@image.command("render", context_settings=CONTEXT_SETTINGS)
@click.argument("distro")
@click.option("--base", help="Base image (default: the recipe's registry image).")
@click.option("--out", type=click.Path(), help="Write the whole build context here.")
def image_render(distro, base, out):
    """Print (or write out) the Dockerfile cvm would build for a distro."""
    from .. import images
    recipe = images.load_recipe(distro)
    rendered = images.render(recipe, base or recipe["registry_base"],
                             "registry image %s" % (base or recipe["registry_base"]), True)
    if out:
        os.makedirs(out, exist_ok=True)
        images.write_context(out, recipe, rendered)
    click.echo(rendered["Dockerfile"], nl=False)


@image.command("rm", context_settings=CONTEXT_SETTINGS)
@click.argument("refs", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True)
def image_rm(refs, force):
    """Remove images."""
    from .. import images
    for ref in refs:
        images.rm(ref, force=force)
        click.echo(ref)


@image.command("ensure", context_settings=CONTEXT_SETTINGS)
@click.argument("names", nargs=-1, required=True)
def image_ensure(names):
    """Build the named images (busybox, or distros offline) if missing or stale."""
    from .. import images
    for tag in images.ensure(names, progress=images.print_progress()):
        click.echo("\nbuilt %s" % tag, err=True)


@image.command("push", context_settings=CONTEXT_SETTINGS)
@click.argument("tag")
@click.option("--registry", required=True, metavar="HOST:PORT", help="The fleet's registry.")
def image_push(tag, registry):
    """Push a local image to the fleet's registry; prints what hosts pull (name@digest)."""
    from .. import images
    click.echo(images.push(tag, registry)["reference"])


@image.command("pull", context_settings=CONTEXT_SETTINGS)
@click.argument("reference", metavar="REGISTRY/NAME@DIGEST")
@click.option("--tag", required=True, help="The local name VMs use (e.g. cvm/debian12:latest).")
def image_pull(reference, tag):
    """Pull an image by digest unless this host has it, and name it TAG."""
    from .. import images
    pulled = images.pull(reference, tag)
    click.echo("%s %s" % (tag, "pulled" if pulled else "present"))
