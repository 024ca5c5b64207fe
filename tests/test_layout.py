"""The house's floors: imports among cvm's modules go one way (no cycles, counting the
imports made inside functions too), and the lower floors never reach up."""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "toolkit",
                       "cvm")


def modules():
    """{dotted name: path} of every module of the cvm package."""
    found = {}
    for directory, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                relative = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3]
                dotted = relative.replace(os.sep, ".")
                found[dotted[:-len(".__init__")] if dotted.endswith(".__init__") else dotted] = \
                    path
    return found


def imports_of(name, path, known):
    """The cvm modules `name` imports anywhere in its file."""
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    with open(path) as handle:
        tree = ast.parse(handle.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                target = "%s.%s" % (base, alias.name)
                found.add(target if target in known else base)
    return {module for module in found if module in known and module != name}


def graph():
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(edges):
    """Every strongly connected group of more than one module (Tarjan)."""
    index, low, stack, on_stack, groups, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("low,high", [
    ("cvm.net", "cvm.api"), ("cvm.net", "cvm.ops"), ("cvm.net", "cvm.netd"),
    ("cvm.api", "cvm.ops"), ("cvm.api", "cvm.cli"), ("cvm.ops", "cvm.cli"),
    ("cvm.ops", "cvm.netd"), ("cvm.engine", "cvm.api"), ("cvm.procview", "cvm.api"),
])
def test_lower_floors_never_import_higher_ones(low, high):
    edges = graph()
    reached = {target for name, targets in edges.items() if name == low or
               name.startswith(low + ".") for target in targets}
    assert not [t for t in reached if t == high or t.startswith(high + ".")], reached


def test_nic_drivers_sit_below_the_spec():
    """The spec reads each mode's options from its driver (cvm.net.DRIVERS); only
    cvm.net.wiring, which wires whole VMs from specs, is above it."""
    edges = graph()
    reaching_up = sorted(name for name, targets in edges.items()
                         if (name == "cvm.net" or name.startswith("cvm.net."))
                         and name != "cvm.net.wiring" and "cvm.spec" in targets)
    assert reaching_up == []
    assert "cvm.net" in edges["cvm.spec"]
