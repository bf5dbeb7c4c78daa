"""Reader of CheXpert in the layout Stanford distributes it in.

Expected under ``raw_dir`` (or ``raw_dir`` is that folder itself)::

    CheXpert-v1.0-small/train.csv, valid.csv     (or CheXpert-v1.0/ for the full size)
    CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg ...

Each CSV row is one image. ``Path`` is relative to the folder that holds
``CheXpert-v1.0-small`` and carries the split and the patient
(``CheXpert-v1.0-small/train/patient00001/...``). An observation column holds
``1.0`` (positive), ``0.0`` (negative), ``-1.0`` (uncertain) or nothing (not
mentioned, read as negative). What an uncertain label becomes is the
uncertainty policy of its class:

- ``ones``: positive (label 1, mask 1);
- ``zeros``: negative (label 0, mask 1);
- ``ignore``: left out of the loss and the metrics (label 0, mask 0).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

import numpy as np

from chestattn_jax.data.classes import CHEXPERT_CLASSES
from chestattn_jax.data.raw import (
    NO_BOX_LABELS,
    NO_BOXES,
    DataFormatError,
    RawExample,
    check_classes,
    column_index,
    csv_rows,
    find_file,
    read_only,
)
from chestattn_jax.data.source import Prepared, PrepareOption, prepared_source

DATASET_DIRS = ("CheXpert-v1.0-small", "CheXpert-v1.0")
CSV_FILES = {"train": "train.csv", "valid": "valid.csv"}
# All 14 observation columns, in CSV order; any of them may be asked for as a class.
LABEL_COLUMNS = ("No Finding", *CHEXPERT_CLASSES, "Fracture", "Support Devices")
METADATA_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
POLICIES = ("ones", "zeros", "ignore")
# The view positions a prepared CheXpert holds (AP/PA, or Lateral for lateral films).
VIEWS = ("AP", "PA", "LL", "RL", "Lateral")
# (label, mask) of an uncertain (-1.0) value under each policy: the one definition, which
# the CSV reader and the prepared data set's sources (prepared.apply_uncertainty) both use.
UNCERTAIN_AS = {"ones": (1, 1), "zeros": (0, 1), "ignore": (0, 0)}
POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1
# Blank means "not mentioned in the report", which CheXpert's authors and the paper read as 0.
_VALUES = {"1.0": POSITIVE, "0.0": NEGATIVE, "": NEGATIVE, "-1.0": UNCERTAIN}
_SEX = {"Male": "M", "Female": "F"}
# "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg": the split, the patient.
_SPLIT_PATIENT = re.compile(r"(?:^|/)([^/]+)/(patient\d+)/")


def uncertainty_policies(
    uncertainty: str | Mapping[str, str],
    classes: Sequence[str],
    known: Sequence[str] = LABEL_COLUMNS,
) -> tuple[str, ...]:
    """The policy of each of ``classes``.

    Args:
      uncertainty: one of ``ones``, ``zeros``, ``ignore`` for every class, or
        ``{class: policy}``; classes left out of the dict get ``zeros``.
      classes: the class names, in order.
      known: the names a dict key may take (CheXpert's observations).

    Raises:
      DataFormatError: an unknown policy, or a dict key that is not in ``known``.
    """

    def check(policy, where):
        if policy not in POLICIES:
            raise DataFormatError(
                f"Unknown uncertainty policy {policy!r}{where}; expected one of "
                f"{', '.join(POLICIES)}."
            )
        return policy

    if isinstance(uncertainty, str):
        return (check(uncertainty, ""),) * len(classes)
    unknown = [c for c in uncertainty if c not in known]
    if unknown:
        raise DataFormatError(
            f"Uncertainty policy given for {', '.join(map(repr, unknown))}, which is no "
            f"CheXpert observation; they are {', '.join(known)}."
        )
    return tuple(check(uncertainty.get(c, "zeros"), f" for class {c!r}") for c in classes)


def _parse_value(text: str, where: str, column: str) -> int:
    value = _VALUES.get(text.strip())
    if value is None:
        # Copies re-saved by other tools may spell the values 1, -1 or 1.00.
        try:
            number = float(text)
        except ValueError:
            number = None
        if number not in (1.0, 0.0, -1.0):
            raise DataFormatError(
                f"{where}: label {text!r} in column {column!r}; expected 1.0, 0.0, -1.0 or blank."
            )
        value = int(number)
    return value


def labels_and_mask(cells, policies, classes, where) -> tuple[np.ndarray, np.ndarray]:
    """Read-only ``(k,)`` int32 labels and mask of one row's label cells (CheXpert's
    ``1.0``, ``0.0``, ``-1.0`` or blank, in the order of ``classes``) under ``policies``
    (:func:`uncertainty_policies`); ``where`` (file and line) starts an error's message.
    MIMIC-CXR's CheXpert-labeller file (:mod:`.mimic_cxr`) is read with it too."""
    labels = np.zeros(len(classes), np.int32)
    mask = np.ones(len(classes), np.int32)
    for i, (text, policy, column) in enumerate(zip(cells, policies, classes, strict=True)):
        value = _parse_value(text, where, column)
        if value == UNCERTAIN:
            labels[i], mask[i] = UNCERTAIN_AS[policy]
        else:
            labels[i] = value
    return read_only(labels), read_only(mask)


def read_csv(
    path: str | os.PathLike,
    classes: Sequence[str] = CHEXPERT_CLASSES,
    uncertainty: str | Mapping[str, str] = "zeros",
    frontal_only: bool = True,
    image_root: str | os.PathLike | None = None,
) -> list[RawExample]:
    """Parses a CheXpert ``train.csv`` or ``valid.csv`` (``.gz`` too).

    Args:
      path: the CSV file.
      classes: observation names; ``labels`` and ``mask`` follow this order.
      uncertainty: the uncertainty policy (see :func:`uncertainty_policies`).
      frontal_only: keep only rows whose ``Frontal/Lateral`` is ``Frontal``.
      image_root: the folder ``Path`` values are relative to; by default the
        parent of the CSV's folder (``raw_dir`` for ``raw_dir/CheXpert-v1.0-small/train.csv``).

    Returns:
      ``RawExample``s in file order; ``source_split`` is the component of ``Path``
      before the patient (``train``, ``valid``) and ``patient_id`` that patient.

    Raises:
      DataFormatError: a missing column, a row whose field count differs from
        the header's, a ``Path`` without a ``patientNNNNN`` folder, a repeated
        ``Path``, a bad ``Frontal/Lateral``, ``Age`` or label value, an unknown
        class or policy, or no row left.
    """
    classes = check_classes(classes, LABEL_COLUMNS, "CheXpert")
    policies = uncertainty_policies(uncertainty, classes)
    if image_root is None:
        image_root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    image_root = os.path.abspath(image_root)

    rows = csv_rows(path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise DataFormatError(f"{path}: empty file, expected a CheXpert header.") from None
    col = column_index(header, METADATA_COLUMNS + classes, path)
    path_col, sex_col, age_col = col["Path"], col["Sex"], col["Age"]
    orientation_col, view_col = col["Frontal/Lateral"], col["AP/PA"]
    label_cols = [col[c] for c in classes]
    # Rows share one read-only (labels, mask) pair per distinct pattern of label
    # cells (about 14k in the real train.csv of 223k rows), so most rows parse no label.
    arrays: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}
    examples, seen = [], {}
    for line, row in rows:
        if len(row) != len(header):
            raise DataFormatError(
                f"{path}, line {line}: {len(row)} fields where the header has {len(header)}."
            )
        cells = tuple(map(row.__getitem__, label_cols))
        pair = arrays.get(cells)
        if pair is None:
            pair = arrays[cells] = labels_and_mask(cells, policies, classes, f"{path}, line {line}")
        orientation = row[orientation_col].strip()
        if orientation not in ("Frontal", "Lateral"):
            raise DataFormatError(
                f"{path}, line {line}: {orientation!r} in column 'Frontal/Lateral'; expected "
                "Frontal or Lateral."
            )
        key = row[path_col].strip()
        if key in seen:
            raise DataFormatError(
                f"{path}, line {line}: Path {key!r} already listed on line {seen[key]}."
            )
        seen[key] = line
        split_and_patient = _SPLIT_PATIENT.search(key)
        if split_and_patient is None:
            raise DataFormatError(
                f"{path}, line {line}: Path {key!r} has no '<split>/patientNNNNN/' folders."
            )
        age_text = row[age_col].strip()
        if age_text and not age_text.isdecimal():  # isdigit() takes '²', int() does not
            raise DataFormatError(
                f"{path}, line {line}: age {age_text!r} in column 'Age' is not a number."
            )
        if frontal_only and orientation != "Frontal":
            continue
        view = row[view_col].strip() or ("Lateral" if orientation == "Lateral" else "")
        examples.append(
            RawExample(
                key=key,
                image_path=os.path.join(image_root, key),
                patient_id=split_and_patient[2],
                labels=pair[0],
                mask=pair[1],
                view=view,
                sex=_SEX.get(row[sex_col].strip(), ""),
                age=int(age_text) if age_text else -1,
                source_split=split_and_patient[1],
                boxes=NO_BOXES,
                box_labels=NO_BOX_LABELS,
            )
        )
    if not examples:
        kind = "frontal row" if frontal_only else "row"
        raise DataFormatError(f"{path}: no {kind} to read.")
    return examples


def dataset_dir(raw_dir: str | os.PathLike) -> str:
    """The folder holding ``train.csv``: ``raw_dir`` itself or its ``CheXpert-v1.0[-small]``."""
    raw_dir = os.path.abspath(raw_dir)
    for candidate in (raw_dir, *(os.path.join(raw_dir, d) for d in DATASET_DIRS)):
        if find_file(candidate, (CSV_FILES["train"],)):
            return candidate
    raise FileNotFoundError(
        f"No train.csv in {raw_dir} or its {' or '.join(DATASET_DIRS)} folder: not a CheXpert "
        "folder."
    )


def load(
    raw_dir: str | os.PathLike,
    classes: Sequence[str] = CHEXPERT_CLASSES,
    uncertainty: str | Mapping[str, str] = "zeros",
    frontal_only: bool = True,
) -> list[RawExample]:
    """The images of ``train.csv`` then ``valid.csv`` of a CheXpert folder.

    Args:
      raw_dir: the folder holding ``CheXpert-v1.0-small`` (or ``CheXpert-v1.0``),
        or that folder itself.
      classes: observation names; ``labels`` and ``mask`` follow this order.
      uncertainty: the uncertainty policy (see :func:`uncertainty_policies`).
      frontal_only: keep only rows whose ``Frontal/Lateral`` is ``Frontal``.

    Raises:
      FileNotFoundError: no ``train.csv`` or ``valid.csv``.
      DataFormatError: as in :func:`read_csv`.
    """
    folder = dataset_dir(raw_dir)
    examples = []
    for name in CSV_FILES.values():
        path = find_file(folder, (name,))
        if path is None:
            raise FileNotFoundError(f"No {name} in {folder}.")
        # Path values start with the data set folder's own name, so they are
        # relative to its parent.
        examples += read_csv(
            path, classes, uncertainty, frontal_only, image_root=os.path.dirname(folder)
        )
    return examples


def check_config(p, mode: str) -> None:
    """The rules of CheXpert's uncertain labels (``config.data.uncertainty`` and
    ``uncertainty_per_class``), added to ``p`` (a
    :class:`chestattn_jax.config_checks.Problems`)."""
    p.choice("data.uncertainty", POLICIES)
    per_class = p.value("data.uncertainty_per_class")
    if not isinstance(per_class, Mapping) and not hasattr(per_class, "to_dict"):
        p.add("data.uncertainty_per_class", "must be a dict {class: policy}.")
        return
    classes = p.value("data.classes")
    classes = tuple(classes) if isinstance(classes, list | tuple) else ()
    for c, policy in p.plain(per_class).items():
        if c not in classes:
            p.add(
                "data.uncertainty_per_class",
                f"names {c!r}, which is not in config.data.classes.",
            )
        if policy not in POLICIES:
            p.add(
                "data.uncertainty_per_class",
                f"gives {c!r} the policy {policy!r}; expected one of {', '.join(POLICIES)}.",
            )


def read_raw(raw_dir: str, *, frontal_only: bool = True) -> list[RawExample]:
    """Every example of the raw folder with the full class list, for prepare: uncertain
    labels are kept apart (label 0, mask 0) so that the policy can be chosen at training
    time (``config.data.uncertainty``)."""
    return load(raw_dir, CHEXPERT_CLASSES, uncertainty="ignore", frontal_only=frontal_only)


SOURCE = prepared_source(
    "chexpert",
    CHEXPERT_CLASSES,
    Prepared(
        builder_name="chexpert",
        read_raw=read_raw,
        options=(
            PrepareOption(
                "frontal_only", True, "CheXpert: keep frontal images only.", recorded=bool
            ),
        ),
        exporter="chestattn_jax.data.export:CHEXPERT",
    ),
    views=VIEWS,
    uncertain_labels=True,
    check_config=check_config,
)
