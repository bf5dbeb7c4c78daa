"""Markdown and CSV tables, and the one way a number is written in a cell.

Every table of the outputs (compare's, the experiment report's, an evaluation's
per-class table: :mod:`chestattn_jax.reporting.result_tables`) is written with these.
"""

from __future__ import annotations

import csv
import io

import numpy as np

MISSING = "n/a"  # a number that is undefined (an AUC of a class with one label value)


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


def number(value, digits: int = 3, missing: str = "") -> str:
    """``value`` to ``digits`` decimals; ``missing`` for ``None``."""
    return missing if value is None else f"{value:.{digits}f}"


def auc_cell(auc, ci=None, missing: str = MISSING) -> str:
    """An AUC with its interval: ``0.812 [0.790, 0.833]``; the AUC alone without an
    interval; ``missing`` where the AUC is undefined."""
    if auc is None:
        return missing
    if ci is None or ci[0] is None:
        return number(auc)
    return f"{number(auc)} [{number(ci[0])}, {number(ci[1])}]"


def difference_cell(summary: dict) -> str:
    """A paired difference with its interval, signed: ``+0.021 [-0.004, +0.046]``
    (``summary``: :func:`chestattn_jax.metrics.paired_auc_difference`'s per class or mean)."""
    d, ci = summary["difference"], summary["ci"]
    if d is None:
        return MISSING
    return f"{d:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"


def mean_sd_cell(values) -> str:
    """Mean ± sample standard deviation of the defined ``values`` (sd 0 for one value)."""
    values = [v for v in values if v is not None]
    if not values:
        return MISSING
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.3f}"


def exact_number(value: float) -> str:
    """``value`` as ``:g`` writes it where that reads back exactly (0, 0.1, 1e-07), else
    the shortest text that reads back as ``value`` (0.1000001, which ``:g`` rounds to
    0.1). Distinct values, distinct texts."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))
