"""Parsing and printing of sizes and CPU lists, shared by specs and tools."""

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?\s*$"
SIZE_FORM = "a number with an optional unit b, k, m, g or t (binary: 1k = 1024), e.g. 512m or 1.5g"


def parse_size(value):
    """'512m' -> 536870912. Integers are bytes. Raises ValueError with the accepted form."""
    if isinstance(value, bool):
        raise ValueError("%r is not a size; use %s" % (value, SIZE_FORM))
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    import re  # ~3 ms: not for a command that only prints sizes
    match = re.match(_SIZE, str(value), re.IGNORECASE)
    if not match:
        raise ValueError("%r is not a size; use %s" % (value, SIZE_FORM))
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.lower()])


def format_size(nbytes):
    """536870912 -> '512m'; exact where possible, so that it parses back."""
    for unit in ("t", "g", "m", "k"):
        scale = _UNITS[unit]
        if nbytes >= scale and nbytes % scale == 0:
            return "%d%s" % (nbytes // scale, unit)
    for unit in ("t", "g", "m", "k"):
        if nbytes >= _UNITS[unit]:
            return "%.1f%s" % (nbytes / _UNITS[unit], unit)
    return "%db" % nbytes


def parse_cpu_list(text):
    """'0-2,4' -> [0, 1, 2, 4]. Raises ValueError on bad syntax. (No re: the in-VM tools
    call this, and loading re is a fifth of their start-up in a throttled VM.)"""
    cpus = set()
    text = str(text).strip()
    if not text:
        return []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        if not _decimal(first) or (dash and not _decimal(last)) or \
                (dash and int(first) > int(last)):
            raise ValueError("%r is not a CPU list; use numbers and ranges like 0-2,4" % text)
        cpus.update(range(int(first), int(last if dash else first) + 1))
    return sorted(cpus)


def _decimal(text):
    return bool(text) and all("0" <= c <= "9" for c in text)


def format_seconds(seconds):
    """A duration as people read it: '12 ms' below a second, '1.3 s' above."""
    return "%d ms" % round(seconds * 1000) if seconds < 1 else "%.1f s" % seconds
