"""The one Markdown and CSV table writer of the evaluation and comparison outputs."""

from __future__ import annotations

import csv
import io


def markdown(header, rows) -> str:
    """A Markdown table (no trailing newline); cells are written with ``str``, ``None``
    as an empty cell."""

    def line(cells):
        return "| " + " | ".join("" if c is None else str(c) for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *(line(r) for r in rows)])


def csv_text(header, rows) -> str:
    """The same table as CSV text (``None`` as an empty field)."""
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows([["" if c is None else c for c in r] for r in rows])
    return out.getvalue()
