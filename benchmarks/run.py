"""Run the benchmarks: all of them, or those named (python benchmarks/run.py network)."""

import importlib
import os
import sys

ALL = ["lifecycle", "network", "images", "tools", "monitor", "ansible", "fleet", "scale",
       "snapshots"]


def main(names):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    for name in names or ALL:
        if not os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                           name + ".py")):
            print("\n== %s: not written yet" % name)
            continue
        importlib.import_module(name).main()


if __name__ == "__main__":
    main(sys.argv[1:])
