"""Plain-text tables for the CLI: left-aligned columns, two spaces apart."""


def render(headers, rows):
    rows = [["" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def human_duration(seconds):
    """Like docker ps: '3 seconds', '5 minutes', '2 hours', '4 days'."""
    if seconds is None:
        return ""
    seconds = int(seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return "%d %s%s" % (count, unit, "" if count == 1 else "s")
    return "%d second%s" % (seconds, "" if seconds == 1 else "s")
