"""Rendering of the jinja2 templates under templates/ (host units, service snippets)."""

import os
import shutil
import sys


def environment():
    import jinja2

    from .paths import project_root
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(os.path.join(project_root(), "templates")),
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
        undefined=jinja2.StrictUndefined)


def render(name, **values):
    from .paths import project_root
    values.setdefault("project_root", project_root())
    values.setdefault("cvm", shutil.which("cvm") or os.path.join(os.path.dirname(sys.executable),
                                                                 "cvm"))
    return environment().get_template(name).render(**values)


def install_systemd_unit(unit, directory="/etc/systemd/system", **values):
    """Render templates/systemd/<unit>.j2 into the systemd unit directory."""
    path = os.path.join(directory, unit)
    text = render("systemd/%s.j2" % unit, **values)
    with open(path + ".tmp", "w") as handle:
        handle.write(text)
    os.rename(path + ".tmp", path)
    return path
