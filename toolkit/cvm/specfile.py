"""Spec documents in their raw form: YAML files, `--nic` text, flags over a file.

Light on purpose (no validation, no dataclasses): the CLI reads files and flags with
it and hands the raw mapping to the API (or the daemon), which validates it with
cvm.spec.parse_spec.
"""

from .errors import SpecError


def _suggest(key, known):
    import difflib  # only on errors
    close = difflib.get_close_matches(key, known, n=1)
    return " (did you mean %r?)" % close[0] if close else ""


def parse_nic_text(text):
    """'mode=bridge,link=br0,ip=198.51.100.10/24' -> dict, as `--nic` gives it."""
    data = {}
    for item in [p for p in str(text).split(",") if p.strip()]:
        if "=" not in item:
            raise SpecError("nic", "%r is not key=value (e.g. mode=bridge,link=br0,"
                            "ip=198.51.100.10/24)" % item)
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key == "routes" or key == "route":
            data.setdefault("routes", []).append(value.strip())
        else:
            data[key] = value.strip()
    return data


def merge(base, overrides):
    """Flags override the file: keys present in overrides win; lists are replaced whole."""
    merged = dict(base)
    for key, value in overrides.items():
        if value is None or value == [] or value == {} or value == ():
            continue
        merged[key] = value
    return merged


def load_yaml(path, data):
    """One YAML document from bytes: UTF-8 text only, and a key given twice in a mapping is
    an error (PyYAML's last-one-wins would drop the first silently)."""
    import yaml  # deferred: only file-driven commands pay for it

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise SpecError(None, "%s: not UTF-8 text (byte 0x%02x on line %d); a spec file is "
                        "YAML text" % (path, data[exc.start], line)) from None
    if "\0" in text:
        raise SpecError(None, "%s: holds a NUL byte; a spec file is YAML text" % path)
    try:
        return yaml.load(text, Loader=_strict_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = "line %d, column %d: " % (mark.line + 1, mark.column + 1) if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        kind = "" if problem.startswith("duplicate key") else "malformed YAML at "
        raise SpecError(None, "%s: %s%s%s" % (path, kind, where, problem)) from None


def _strict_loader():
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # an unhashable key: SafeLoader reports it
                    break
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, "duplicate key %r (each key may appear once)" % (key,),
                        key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return StrictLoader


def load_file(path):
    """Read a spec file: one VM mapping, or `vms:` (with optional `defaults:`).

    Returns [(where, raw_mapping)], where `where` names the VM's place in the file for errors
    ("PATH: vms[2]", or "PATH:" for a file of one VM).
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise SpecError(None, "%s: %s" % (path, exc.strerror)) from None
    document = load_yaml(path, data)
    if document is None:
        raise SpecError(None, "%s: the file is empty" % path)
    if not isinstance(document, dict):
        raise SpecError(None, "%s: expected a VM mapping or `vms:` list at the top" % path)
    if "vms" not in document:
        return [(path + ":", document)]  # fields are named "PATH: memory"
    unknown = set(document) - {"vms", "defaults"}
    if unknown:
        key = sorted(unknown)[0]
        raise SpecError("%s: %s" % (path, key), "unknown top-level key; a spec file has "
                        "`vms:` and optional `defaults:`%s" % _suggest(key, ["vms", "defaults"]))
    defaults = {} if document.get("defaults") is None else document["defaults"]
    if not isinstance(defaults, dict):
        raise SpecError("%s: defaults" % path, "must be a mapping of fields")
    vms = [] if document.get("vms") is None else document["vms"]
    if not isinstance(vms, list):
        raise SpecError("%s: vms" % path, "must be a list of VM mappings")
    entries = []
    for i, raw in enumerate(vms):
        if not isinstance(raw, dict):
            raise SpecError("%s: vms[%d]" % (path, i), "must be a mapping of fields")
        entries.append(("%s: vms[%d]" % (path, i), merge(defaults, raw)))
    return entries
