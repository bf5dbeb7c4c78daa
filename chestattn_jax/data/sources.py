"""The registry of data sets: ``config.data.name`` -> its
:class:`chestattn_jax.data.source.DataSource`.

Each data set is defined once, as ``SOURCE``, by its own module; adding one is that
module and one entry below. Everything that depends on the data set asks :func:`get`.
"""

from __future__ import annotations

from chestattn_jax.data import (
    chexpert,
    mimic_cxr,
    nih,
    padchest,
    siim_pneumothorax,
    synthetic,
)
from chestattn_jax.data.source import DataSource

# In this order in messages and choices.
SOURCES: dict[str, DataSource] = {
    s.name: s
    for s in (
        synthetic.SOURCE,
        nih.SOURCE,
        chexpert.SOURCE,
        siim_pneumothorax.SOURCE,
        mimic_cxr.SOURCE,
        padchest.SOURCE,
    )
}


def names() -> tuple[str, ...]:
    """Every data set (the values of ``config.data.name``)."""
    return tuple(SOURCES)


def prepared_names() -> tuple[str, ...]:
    """The data sets read from a prepared folder (``python -m chestattn_jax.data.prepare
    --dataset=NAME``; ``config.eval.dataset``)."""
    return tuple(name for name, s in SOURCES.items() if s.prepared)


def get(name: str, what: str = "") -> DataSource:
    """The data set ``name``; a ``ValueError`` naming the known ones if there is none
    (``what``: the setting that named it, for the message)."""
    try:
        return SOURCES[name]
    except (KeyError, TypeError):
        where = f" ({what})" if what else ""
        raise ValueError(
            f"Unknown dataset {name!r}{where}; expected one of {', '.join(SOURCES)}."
        ) from None


def get_prepared(name: str) -> DataSource:
    """The prepared data set ``name``; a ``ValueError`` naming the known ones if there is
    none."""
    source = SOURCES.get(name) if isinstance(name, str) else None
    if source is None or source.prepared is None:
        raise ValueError(
            f"Unknown dataset {name!r}; expected one of {', '.join(prepared_names())}."
        )
    return source
