"""NIH ChestX-ray14 scored against expert labels, on the images an expert file covers.

NIH's labels were mined from reports. ``google2019_nih-chest-xray-labels.csv`` (Majkowska
et al., Radiology 2020) gives radiologist-adjudicated labels for some NIH images: per
``Image Index``, ``Fracture``, ``Pneumothorax``, ``Airspace opacity`` and ``Nodule or
mass`` as ``YES`` / ``NO`` (``Set Id``: the image's set there). With
``config.eval.nih_expert_labels=PATH`` (``.csv`` or ``.csv.gz``), the ``auc`` evaluator scores the
model's classes that the label space relates to these columns
(:func:`chestattn_jax.data.label_space.mapping` with ``within=True``: Pneumothorax =
Pneumothorax; Nodule and Mass each against Nodule or mass; Consolidation against Airspace
opacity, within which it falls; no NIH class is a fracture) on the images of the evaluated
split that the file lists, and only on those.

Adds ``metrics["expert_labels"]``: ``file``, ``images`` (the split's images the file
covers), ``split_images``, ``file_images``, ``by_set_id`` (covered images per ``Set Id``),
``class_map`` (model class: expert column), ``auc``, ``mean_auc``, ``undefined_classes``,
``positives``, ``negatives`` (unlabelled cells are left out and counted in ``unlabelled``),
``bootstrap`` with ``config.eval.bootstrap_draws``, and ``note``. Every other metric keeps
NIH's own labels.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
from absl import logging

from chestattn_jax.data import label_space, nih
from chestattn_jax.data.raw import DataFormatError, column_index, csv_rows
from chestattn_jax.metrics import bootstrap_auc, per_class_auc

# The expert file's label columns (the label space's ``nih_expert`` data set).
COLUMNS = ("Fracture", "Pneumothorax", "Airspace opacity", "Nodule or mass")
IMAGE_COLUMN, SET_COLUMN = "Image Index", "Set Id"
VALUES = {"YES": 1.0, "NO": 0.0, "": np.nan}
FIELD = "eval.nih_expert_labels"


def read_expert_labels(path: str | os.PathLike) -> dict:
    """Parses the expert label file: ``{"images": (n,) str, "labels": (n, 4) float (1 YES,
    0 NO, NaN blank) in :data:`COLUMNS` order, "set_ids": (n,) str ('' without the
    column)}``. An image listed twice with the same labels is kept once. Raises a
    ``DataFormatError`` naming the file and line of a missing column, a short row, a value
    other than YES / NO / blank, or an image listed twice with other labels."""
    rows = csv_rows(path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise DataFormatError(f"{path}: empty file, expected the expert labels' header.") from None
    header = [h.strip() for h in header]
    col = column_index(header, (IMAGE_COLUMN, *COLUMNS), path)
    set_col = header.index(SET_COLUMN) if SET_COLUMN in header else None
    images, labels, set_ids, seen = [], [], [], {}
    for line, row in rows:
        where = f"{path}, line {line}"
        if len(row) != len(header):
            raise DataFormatError(f"{where}: {len(row)} fields where the header has {len(header)}.")
        values = []
        for name in COLUMNS:
            text = row[col[name]].strip().upper()
            if text not in VALUES:
                raise DataFormatError(
                    f"{where}: {row[col[name]]!r} in column {name!r}; expected YES, NO or blank."
                )
            values.append(VALUES[text])
        image = row[col[IMAGE_COLUMN]].strip()
        if image in seen:
            first, before = seen[image]
            if not np.array_equal(before, values, equal_nan=True):
                raise DataFormatError(
                    f"{where}: image {image!r} is listed on line {first} with other labels."
                )
            continue
        seen[image] = (line, values)
        images.append(image)
        labels.append(values)
        set_ids.append(row[set_col].strip() if set_col is not None else "")
    return {
        "images": np.asarray(images, dtype=str),
        "labels": np.asarray(labels, dtype=np.float64).reshape(-1, len(COLUMNS)),
        "set_ids": np.asarray(set_ids, dtype=str),
    }


def expert_metrics(record, expert: dict, *, bootstrap_draws: int = 0, seed: int = 0) -> dict:
    """The ``metrics["expert_labels"]`` of ``record`` (a pass over NIH images, its
    ``evaluated_as`` NIH's class names) against ``expert`` (:func:`read_expert_labels`)."""
    pairs = label_space.mapping(
        "nih", list(record.evaluated_as), "nih_expert", COLUMNS, within=True
    )
    columns = [j for j, c in enumerate(record.evaluated_as) if c in pairs]
    names = [record.classes[j] for j in columns]
    where = {image: i for i, image in enumerate(expert["images"])}
    ids = np.asarray(record.example_ids).astype(str)
    rows = np.flatnonzero([i in where for i in ids])
    file_rows = np.asarray([where[i] for i in ids[rows]], dtype=int)
    expert_columns = [COLUMNS.index(pairs[record.evaluated_as[j]]) for j in columns]
    truth = expert["labels"][file_rows][:, expert_columns]
    known = ~np.isnan(truth)
    labels, mask = np.nan_to_num(truth).astype(np.int32), known.astype(np.int32)
    probs = np.asarray(record.probs)[rows][:, columns]
    out = {
        "images": len(rows),
        "split_images": len(record),
        "file_images": len(expert["images"]),
        "by_set_id": dict(Counter(expert["set_ids"][file_rows].tolist())),
        "class_map": {record.classes[j]: pairs[record.evaluated_as[j]] for j in columns},
        "note": (
            f"scored on the {len(rows)} of the split's {len(record)} images that the expert "
            "file lists, against its labels; the other metrics use NIH's labels."
        ),
    }
    out.update(per_class_auc(labels, probs, mask, names))
    for name, value in (("positives", 1), ("negatives", 0)):
        out[name] = dict(zip(names, ((labels == value) & known).sum(0).tolist(), strict=True))
    out["unlabelled"] = dict(zip(names, (~known).sum(0).tolist(), strict=True))
    if bootstrap_draws and len(rows):
        out["bootstrap"] = bootstrap_auc(
            labels,
            probs,
            mask,
            names,
            np.asarray(record.patient_ids)[rows],
            num_draws=bootstrap_draws,
            seed=seed,
        )
    return out


def check_config(p, mode: str) -> None:
    """The rules of ``config.eval.nih_expert_labels`` (read by the ``auc`` evaluator),
    added to ``p`` (a :class:`chestattn_jax.config_checks.Problems`)."""
    path = p.value(FIELD)
    chosen = p.value("eval.evaluators")
    chosen = chosen if isinstance(chosen, list | tuple) else ()
    if not isinstance(path, str):
        p.add(FIELD, 'must be the path of google2019_nih-chest-xray-labels.csv, or "".')
    elif path and "auc" not in chosen:
        p.add(
            FIELD,
            "is read by the auc evaluator: add auc to config.eval.evaluators, or leave this "
            "at its default ''.",
        )
    elif path:
        dataset = p.value("eval.dataset") or p.value("data.name")
        if dataset != nih.SOURCE.name:
            p.add(
                FIELD,
                f"labels NIH ChestX-ray14 images, but the evaluated data set is {dataset!r}: "
                "evaluate on nih (config.data.name, or config.eval.dataset).",
            )


def add_expert_metrics(config, expert: dict, record, metrics: dict) -> None:
    """Adds ``metrics["expert_labels"]`` (:func:`expert_metrics` with the config's
    bootstrap settings and the file's path); warns where the file covers no image."""
    out = expert_metrics(
        record,
        expert,
        bootstrap_draws=config.eval.bootstrap_draws,
        seed=config.eval.bootstrap_seed,
    )
    metrics["expert_labels"] = {"file": str(config.eval.nih_expert_labels), **out}
    if not out["images"]:
        logging.warning(
            "%s lists none of the %d images of the evaluated split: no expert-label AUC.",
            config.eval.nih_expert_labels,
            len(record),
        )
