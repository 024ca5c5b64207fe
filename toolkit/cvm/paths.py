"""Where cvm keeps its state. Imported by the launcher, so: nothing heavy here."""

import os

DEFAULT_ROOT = "/var/lib/cvm"


def default_root():
    return os.path.abspath(os.environ.get("CVM_STATE_DIR", DEFAULT_ROOT))
