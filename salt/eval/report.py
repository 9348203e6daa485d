"""The text tables every evaluation report prints."""

from __future__ import annotations


def format_rows(rows: list[tuple[str, ...]]) -> str:
    """Text table: the first column left-aligned, the rest right-aligned; short rows padded."""
    columns = max(len(r) for r in rows)
    rows = [r + ("",) * (columns - len(r)) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(columns)]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
