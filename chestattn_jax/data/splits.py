"""Patient-disjoint train / validation / test splits.

Every scheme assigns whole patients to a split, so no patient's images are on
both sides of an evaluation. All are deterministic functions of their seed.

- ``random``: the paper's 70/10/20 by patient.
- ``kfold``: ``num_folds`` patient folds (the paper uses 3); fold ``fold`` is the
  test set and a ``val_fraction`` of the remaining patients the validation set.
- ``official``: the data set's own test list (NIH ``test_list.txt``, CheXpert
  ``valid.csv``) is the test set; the rest is split into train and validation by patient.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from chestattn_jax.config_fields import SPLIT_FIELDS

SCHEMES = ("random", "kfold", "official")
SPLIT_NAMES = ("train", "validation", "test")


def _patient_order(patient_ids, seed: int):
    """Unique patients in a seeded random order, and each example's patient number."""
    unique, inverse = np.unique(np.asarray(patient_ids, dtype=str), return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(unique))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return len(unique), rank[inverse]


def _by_rank(rank, bounds) -> list[np.ndarray]:
    return [np.flatnonzero((rank >= lo) & (rank < hi)) for lo, hi in bounds]


def random_split(patient_ids, fractions=(0.7, 0.1, 0.2), seed: int = 0) -> dict:
    """Example indices of train / validation / test, ``fractions`` of the patients."""
    fractions = np.asarray(fractions, np.float64)
    if fractions.shape != (3,) or np.any(fractions < 0) or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(
            f"Split fractions must be three non-negative numbers summing to 1, "
            f"got {tuple(fractions)} (config.data.split_fractions)."
        )
    n, rank = _patient_order(patient_ids, seed)
    edges = np.round(np.cumsum(np.concatenate([[0.0], fractions])) * n).astype(int)
    parts = _by_rank(rank, itertools.pairwise(edges))
    return dict(zip(SPLIT_NAMES, parts, strict=True))


def kfold_split(
    patient_ids, num_folds: int = 3, fold: int = 0, val_fraction: float = 0.125, seed: int = 0
) -> dict:
    """Fold ``fold`` of ``num_folds`` patient folds as test; the rest train + validation."""
    if num_folds < 2:
        raise ValueError(f"config.data.num_folds must be at least 2, got {num_folds}.")
    if not 0 <= fold < num_folds:
        raise ValueError(f"config.data.fold={fold} is out of range for {num_folds} folds.")
    n, rank = _patient_order(patient_ids, seed)
    fold_of = rank * num_folds // max(n, 1)
    test = np.flatnonzero(fold_of == fold)
    rest = np.flatnonzero(fold_of != fold)
    train, val = _split_off_validation(np.asarray(patient_ids, dtype=str), rest, val_fraction, seed)
    return {"train": train, "validation": val, "test": test}


def official_split(patient_ids, is_test, val_fraction: float = 0.125, seed: int = 0) -> dict:
    """The distributed test list as test; the other patients into train and validation."""
    is_test = np.asarray(is_test, bool)
    pids = np.asarray(patient_ids, dtype=str)
    leaked = np.intersect1d(pids[is_test], pids[~is_test])
    if leaked.size:
        raise ValueError(
            f"The official test list shares {leaked.size} patients with the rest of the data "
            f"(e.g. {', '.join(leaked[:3])}); it cannot be used as a patient-disjoint split."
        )
    train, val = _split_off_validation(pids, np.flatnonzero(~is_test), val_fraction, seed)
    return {"train": train, "validation": val, "test": np.flatnonzero(is_test)}


def _split_off_validation(pids, indices, val_fraction, seed):
    if not 0 <= val_fraction < 1:
        raise ValueError(f"config.data.val_fraction must be in [0, 1), got {val_fraction}.")
    n, rank = _patient_order(pids[indices], seed + 1)
    n_val = round(val_fraction * n)
    return indices[rank >= n_val], indices[rank < n_val]


def make_splits(
    scheme: str,
    patient_ids,
    *,
    is_official_test=None,
    fold: int = 0,
    num_folds: int = 3,
    fractions=(0.7, 0.1, 0.2),
    val_fraction: float = 0.125,
    seed: int = 0,
) -> dict:
    """Dispatches ``config.data.split`` to one of the schemes; every split non-empty."""
    if scheme not in SCHEMES:
        raise ValueError(
            f"Unknown split scheme {scheme!r} (config.data.split); expected one "
            f"of {', '.join(SCHEMES)}."
        )
    if scheme == "random":
        splits = random_split(patient_ids, fractions, seed)
    elif scheme == "kfold":
        splits = kfold_split(patient_ids, num_folds, fold, val_fraction, seed)
    else:
        if is_official_test is None or not np.any(is_official_test):
            raise ValueError(
                "config.data.split='official' needs the data set's own test list "
                "(NIH test_list.txt, CheXpert valid.csv); none was prepared."
            )
        splits = official_split(patient_ids, is_official_test, val_fraction, seed)
    empty = [name for name, idx in splits.items() if len(idx) == 0]
    if empty:
        raise ValueError(
            f"Split scheme {scheme!r} leaves {', '.join(empty)} empty "
            f"({len(np.unique(np.asarray(patient_ids, dtype=str)))} patients)."
        )
    return splits


def check_config(p, mode: str) -> str | None:
    """The rules of the split settings of a prepared data set (``config.data.split`` and the
    fields its schemes read), added to ``p`` (a
    :class:`chestattn_jax.config_checks.Problems`). Returns the scheme, if valid."""
    split = p.choice("data.split", SCHEMES)
    fractions = p.value("data.split_fractions")
    if (
        not isinstance(fractions, list | tuple)
        or len(fractions) != 3
        or not all(p.is_real(f) and f > 0 for f in fractions)
        or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6)
    ):
        p.add(
            "data.split_fractions",
            "must be three numbers greater than 0 (train, validation, test) summing to 1, "
            "e.g. (0.7, 0.1, 0.2).",
        )
    folds = p.int("data.num_folds", 2, "at least 2")
    fold = p.int("data.fold", 0, "at least 0")
    if folds is not None and fold is not None and fold >= folds:
        p.add("data.fold", f"must be below config.data.num_folds={folds} (0 .. {folds - 1}).")
    p.fraction("data.val_fraction", "the share of the non-test patients that validate")
    p.seed("data.split_seed")
    return split


def check_scheme_fields(p, split: str) -> None:
    """Split fields that the scheme ``split`` ignores must keep their defaults."""
    for field, schemes in SPLIT_FIELDS.items():
        if split not in schemes:
            p.ignored(
                f"data.{field}",
                f"is ignored by config.data.split={split!r} (it is read by "
                f"{' and '.join(repr(s) for s in schemes)})",
            )
