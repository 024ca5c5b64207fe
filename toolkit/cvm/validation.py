"""Reading one field of a spec: the checks that the VM spec and every NIC mode's own
options share. Each raises SpecError naming the field, so a bad value gets one line."""

import re

from .errors import SpecError

IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def fail(field_name, problem):
    raise SpecError(field_name, problem)


def split_key_value(field_name, item):
    """'KEY=VALUE' -> (KEY, VALUE), or a SpecError naming the field."""
    key, sep, value = str(item).partition("=")
    if not sep or not key:
        fail(field_name, "%r is not KEY=VALUE" % item)
    return key, value


def suggest(key, known):
    import difflib  # only on errors
    close = difflib.get_close_matches(key, known, n=1)
    return " (did you mean %r?)" % close[0] if close else ""


def as_list(field_name, value):
    """A list field: absent is empty; a scalar or a mapping is refused, not wrapped (in
    YAML, `volumes: /srv/x` is almost always a missing dash)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    fail(field_name, "%r is not a list; write it as a YAML list (- item) or repeat the flag"
         % (value,))


def one_line(field_name, value):
    text = "" if value is None else str(value)
    if "\n" in text or "\r" in text or "\0" in text:
        fail(field_name, "contains a line break or NUL; values are one line")
    return text


def as_bool(field_name, value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    fail(field_name, "%r is not a boolean; use true or false" % (value,))


def as_int(field_name, value, low=None, high=None, what="an integer"):
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(str(value).strip())
    except ValueError:
        fail(field_name, "%r is not %s" % (value, what))
    if (low is not None and number < low) or (high is not None and number > high):
        fail(field_name, "%d is out of range; use %s to %s" % (number, low, high))
    return number


def one_of(field_name, value, choices):
    if value not in choices:
        fail(field_name, "%r is not one of %s" % (value, ", ".join(choices)))
    return value


def interface_name(field_name, value):
    text = str(value)
    if not IFNAME.match(text):
        fail(field_name, "%r is not a valid interface name (1-15 of A-Z a-z 0-9 _ . -)" % text)
    return text
