"""Reader of VinDr-CXR in the layouts PhysioNet and Kaggle distribute it in.

PhysioNet (VinDr-CXR 1.0.0), expected under ``raw_dir``::

    annotations/annotations_train.csv    image_id,rad_id,class_name,x_min,y_min,x_max,y_max
    annotations/annotations_test.csv
    annotations/image_labels_train.csv   image_id,rad_id,<one 0/1 column per label>
    annotations/image_labels_test.csv
    train/<image_id>.dicom, test/<image_id>.dicom

Kaggle ("VinBigData Chest X-ray Abnormalities Detection")::

    train.csv    image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max
    train/<image_id>.dicom

Every training image was read by three radiologists, each a row (``rad_id``) of the
image-label file and of the box file; the PhysioNet test labels are a consensus, and a file
without a reader column is read as one reader. An image's label is the readers' vote under
the label rule (``vindr_label_rule``): ``any`` (default: positive if any reader marked it)
or ``majority`` (more than half of its readers). Every reader's boxes are kept, whatever
the rule. Boxes are in the DICOM's own pixels (``box_frame`` None), ``[x_min, x_max] x
[y_min, y_max]`` stored as ``[x, y, w, h]``; prepare scales them to the stored image and
clips and counts any that leave it.

The classes are the PhysioNet labels as the files spell them: 22 local findings (with
boxes) and 5 global diagnoses (no boxes). ``No finding`` is not a class: it is the row
with no other label, as in NIH, and a reader marking it beside another label is an error.
A Kaggle copy holds 14 of the local findings (``class_id`` 0-13; 14 is ``No finding``,
with empty box fields) and no global label: the other 13 classes are masked (mask 0),
never negatives.

Images carry no patient id: each image is its own patient (our choice, forced by the
files, so a patient-disjoint split is an image-disjoint one). The official split is
PhysioNet's ``train``/``test`` (``source_split``; ``config.data.split='official'`` tests
on ``test``); a Kaggle copy is all ``train``. Sex, age and view come from each DICOM's
header, as in :mod:`chestattn_jax.data.rsna_pneumonia`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from chestattn_jax.data.images import dicom_header
from chestattn_jax.data.raw import (
    NO_BOX_LABELS,
    NO_BOXES,
    DataFormatError,
    RawExample,
    check_classes,
    column_index,
    csv_rows,
    read_only,
)
from chestattn_jax.data.rsna_pneumonia import warn_outside
from chestattn_jax.data.source import Prepared, PrepareOption, prepared_source

DATASET = "VinDr-CXR"
LOCAL_CLASSES = (
    "Aortic enlargement",
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Clavicle fracture",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Enlarged PA",
    "ILD",
    "Infiltration",
    "Lung Opacity",
    "Lung cavity",
    "Lung cyst",
    "Mediastinal shift",
    "Nodule/Mass",
    "Pleural effusion",
    "Pleural thickening",
    "Pneumothorax",
    "Pulmonary fibrosis",
    "Rib fracture",
    "Other lesion",
)
GLOBAL_CLASSES = ("COPD", "Lung tumor", "Pneumonia", "Tuberculosis", "Other diseases")
CLASSES = LOCAL_CLASSES + GLOBAL_CLASSES
NO_FINDING = "No finding"
# Copies spell the last global label "Other disease" or "Other diseases".
COLUMN_ALIASES = {"Other disease": "Other diseases"}
# Kaggle's class_id -> class_name; 14 is No finding.
KAGGLE_CLASSES = (
    "Aortic enlargement",
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Consolidation",
    "ILD",
    "Infiltration",
    "Lung Opacity",
    "Nodule/Mass",
    "Other lesion",
    "Pleural effusion",
    "Pleural thickening",
    "Pneumothorax",
    "Pulmonary fibrosis",
    NO_FINDING,
)
LABEL_RULES = ("any", "majority")
SPLITS = ("train", "test")
ANNOTATIONS_DIR = "annotations"
PHYSIONET_FILES = {
    split: (
        f"{ANNOTATIONS_DIR}/annotations_{split}.csv",
        f"{ANNOTATIONS_DIR}/image_labels_{split}.csv",
    )
    for split in SPLITS
}
KAGGLE_FILE = "train.csv"
BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")
READER_COLUMNS = ("rad_id", "rad_ID")
# The reader of a file without a reader column (the PhysioNet test set's consensus).
CONSENSUS = "consensus"


def _header(path):
    rows = csv_rows(path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise DataFormatError(f"{path}: empty file, expected a {DATASET} header.") from None
    return rows, [name.strip() for name in header]


def _reader_column(header) -> int | None:
    return next((i for i, name in enumerate(header) if name in READER_COLUMNS), None)


def read_image_labels(path: str | os.PathLike) -> dict[str, dict[str, tuple[frozenset, str]]]:
    """Parses ``image_labels_{train,test}.csv``.

    Returns:
      ``{image_id: {reader: (labels marked 1, where)}}`` in file order; the reader is
      :data:`CONSENSUS` in a file without a ``rad_id`` column. A row repeated (the same
      image and reader with the same labels) counts once.

    Raises:
      DataFormatError: a missing label column, a value other than 0 / 1, ``No finding``
        beside another label, or one reader's image listed twice with other labels.
    """
    rows, header = _header(path)
    header = [COLUMN_ALIASES.get(name, name) for name in header]
    col = column_index(header, ("image_id", *CLASSES, NO_FINDING), path)
    reader_col = _reader_column(header)
    images: dict[str, dict[str, tuple[frozenset, str]]] = {}
    for line, row in rows:
        where = f"{path}, line {line}"
        if len(row) != len(header):
            raise DataFormatError(f"{where}: {len(row)} fields where the header has {len(header)}.")
        image = row[col["image_id"]].strip()
        reader = row[reader_col].strip() if reader_col is not None else CONSENSUS
        marked = set()
        for name in (*CLASSES, NO_FINDING):
            text = row[col[name]].strip()
            try:
                value = float(text)
            except ValueError:
                value = None
            if value not in (0.0, 1.0):
                raise DataFormatError(
                    f"{where}: image {image}: {text!r} in column {name!r}; expected 0 or 1."
                )
            if value:
                marked.add(name)
        if NO_FINDING in marked and len(marked) > 1:
            raise DataFormatError(
                f"{where}: image {image}: reader {reader} marks {NO_FINDING!r} beside "
                f"{', '.join(sorted(marked - {NO_FINDING}))}."
            )
        marked.discard(NO_FINDING)
        readers = images.setdefault(image, {})
        earlier = readers.setdefault(reader, (frozenset(marked), where))
        if earlier[0] != marked:
            raise DataFormatError(
                f"{where}: image {image}, reader {reader}: labels differ from those of "
                f"{earlier[1]}."
            )
    return images


def read_box_rows(path: str | os.PathLike, kaggle: bool = False) -> list[dict]:
    """Parses ``annotations_{train,test}.csv`` or (``kaggle``) Kaggle's ``train.csv``.

    Returns:
      One dict per row in file order: ``image``, ``reader`` (:data:`CONSENSUS` without a
      ``rad_id`` column), ``class_name``, ``box`` (``(x, y, w, h)``, None for ``No
      finding``) and ``where`` (file and line).

    Raises:
      DataFormatError: a missing column, an unknown class (Kaggle: a ``class_id`` that
        is not its ``class_name``'s), a box field that is not a number, a box of no
        area, or ``No finding`` with a box.
    """
    rows, header = _header(path)
    required = ("image_id", "class_name", *BOX_COLUMNS) + (("class_id",) if kaggle else ())
    col = column_index(header, required, path)
    reader_col = _reader_column(header)
    known = KAGGLE_CLASSES if kaggle else (*LOCAL_CLASSES, NO_FINDING)
    out = []
    for line, row in rows:
        where = f"{path}, line {line}"
        if len(row) != len(header):
            raise DataFormatError(f"{where}: {len(row)} fields where the header has {len(header)}.")
        image = row[col["image_id"]].strip()
        name = row[col["class_name"]].strip()
        if name not in known:
            raise DataFormatError(
                f"{where}: image {image}: unknown class {name!r}; expected one of "
                f"{', '.join(known)}."
            )
        if kaggle and row[col["class_id"]].strip() != str(KAGGLE_CLASSES.index(name)):
            raise DataFormatError(
                f"{where}: image {image}: class_id {row[col['class_id']].strip()!r} is not "
                f"that of {name!r} ({KAGGLE_CLASSES.index(name)})."
            )
        texts = [row[col[c]].strip() for c in BOX_COLUMNS]
        box = None
        if name == NO_FINDING:
            if any(texts):
                raise DataFormatError(f"{where}: image {image}: {NO_FINDING!r} with a box.")
        else:
            box = _box(texts, where, image)
        out.append(
            {
                "image": image,
                "reader": row[reader_col].strip() if reader_col is not None else CONSENSUS,
                "class_name": name,
                "box": box,
                "where": where,
            }
        )
    return out


def _box(texts, where: str, image: str) -> tuple[float, float, float, float]:
    values = []
    for name, text in zip(BOX_COLUMNS, texts, strict=True):
        try:
            values.append(float(text))
        except ValueError:
            raise DataFormatError(
                f"{where}: image {image}: box field {name!r} is {text!r}, not a number."
            ) from None
    x0, y0, x1, y1 = values
    if not (np.isfinite(values).all() and x1 > x0 and y1 > y0):
        raise DataFormatError(
            f"{where}: image {image}: box {values} needs finite values with x_max > x_min "
            "and y_max > y_min."
        )
    return x0, y0, x1 - x0, y1 - y0


def vote(readers: Sequence[frozenset], classes: Sequence[str], rule: str) -> np.ndarray:
    """``(k,)`` int32: 1 where ``any`` reader marked the class, or (``majority``) more
    than half of them."""
    if rule not in LABEL_RULES:
        raise DataFormatError(
            f"Unknown VinDr-CXR label rule {rule!r}; expected one of {', '.join(LABEL_RULES)}."
        )
    counts = np.asarray([sum(c in marked for marked in readers) for c in classes])
    need = 1 if rule == "any" else len(readers) // 2 + 1
    return (counts >= need).astype(np.int32)


def layout(raw_dir: str) -> str:
    """``physionet`` (an ``annotations/`` folder) or ``kaggle`` (a ``train.csv``)."""
    if os.path.isdir(os.path.join(raw_dir, ANNOTATIONS_DIR)):
        return "physionet"
    if os.path.isfile(os.path.join(raw_dir, KAGGLE_FILE)):
        return "kaggle"
    raise FileNotFoundError(
        f"Neither {ANNOTATIONS_DIR}/ (PhysioNet) nor {KAGGLE_FILE} (Kaggle) in {raw_dir}: not a "
        f"{DATASET} folder."
    )


def _require(raw_dir: str, rel: str, which: str) -> str:
    path = os.path.join(raw_dir, rel)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No {rel} in {raw_dir}: the {DATASET} {which} layout has it.")
    return path


def _physionet(raw_dir: str):
    """``[(image, split, {reader: labels}, [box rows])]`` of a PhysioNet copy."""
    out, split_of = [], {}
    for split in SPLITS:
        boxes_rel, labels_rel = PHYSIONET_FILES[split]
        labels_path = _require(raw_dir, labels_rel, "PhysioNet")
        box_rows = read_box_rows(_require(raw_dir, boxes_rel, "PhysioNet"))
        images = read_image_labels(labels_path)
        for image in images:
            if image in split_of:
                raise DataFormatError(
                    f"{labels_path}: image {image} is also in the {split_of[image]} labels."
                )
            split_of[image] = split
        by_image: dict[str, list] = {}
        for r in box_rows:
            if r["image"] not in images:
                raise DataFormatError(f"{r['where']}: image {r['image']} is not in {labels_path}.")
            by_image.setdefault(r["image"], []).append(r)
        out += [(i, split, images[i], by_image.get(i, [])) for i in images]
    return out


def _kaggle(raw_dir: str):
    """``[(image, 'train', {reader: labels}, [box rows])]`` of a Kaggle copy."""
    rows = read_box_rows(_require(raw_dir, KAGGLE_FILE, "Kaggle"), kaggle=True)
    by_image: dict[str, list] = {}
    for r in rows:
        by_image.setdefault(r["image"], []).append(r)
    out = []
    for image, image_rows in by_image.items():
        readers: dict[str, set] = {}
        for r in image_rows:
            marked = readers.setdefault(r["reader"], set())
            if r["class_name"] != NO_FINDING:
                marked.add(r["class_name"])
        for r in image_rows:
            if r["class_name"] == NO_FINDING and readers[r["reader"]]:
                raise DataFormatError(
                    f"{r['where']}: image {image}: reader {r['reader']} marks {NO_FINDING!r} "
                    f"beside {', '.join(sorted(readers[r['reader']]))}."
                )
        readers_labels = {k: (frozenset(v), "") for k, v in readers.items()}
        out.append((image, "train", readers_labels, [r for r in image_rows if r["box"]]))
    return out


def load(
    raw_dir: str | os.PathLike,
    classes: Sequence[str] = CLASSES,
    label_rule: str = "any",
) -> list[RawExample]:
    """Every image of a VinDr-CXR folder (PhysioNet or Kaggle layout), train then test.

    Returns:
      ``RawExample`` s: ``key`` and ``patient_id`` the ``image_id``; ``labels`` the
      readers' vote under ``label_rule``; ``mask`` ones, or in a Kaggle copy zero for
      the classes it does not have; ``boxes`` every reader's boxes of ``classes``
      (``[x, y, w, h]``, DICOM pixels); ``source_split`` ``train`` / ``test``; sex, age
      and view from the DICOM header (``''``, -1, ``''`` for an image that is absent or
      unreadable, which prepare reports under ``--on_bad_image``).

    Raises:
      FileNotFoundError: no layout, or one of its files missing (named).
      DataFormatError: a malformed file (:func:`read_image_labels`,
        :func:`read_box_rows`), an image in both splits, or boxes of an image the labels
        do not list.
    """
    raw_dir = os.path.abspath(raw_dir)
    classes = check_classes(classes, CLASSES, DATASET)
    if label_rule not in LABEL_RULES:
        raise DataFormatError(
            f"Unknown VinDr-CXR label rule {label_rule!r}; expected one of "
            f"{', '.join(LABEL_RULES)}."
        )
    kind = layout(raw_dir)
    images = _physionet(raw_dir) if kind == "physionet" else _kaggle(raw_dir)
    has = set(CLASSES if kind == "physionet" else KAGGLE_CLASSES)
    mask = read_only(np.asarray([c in has for c in classes], np.int32))
    index = {c: i for i, c in enumerate(classes)}
    examples = []
    for image, split, readers, box_rows in images:
        labels = read_only(vote([m for m, _ in readers.values()], classes, label_rule) * mask)
        path = os.path.join(raw_dir, split, f"{image}.dicom")
        header = dicom_header(path)
        kept = [r for r in box_rows if r["class_name"] in index]
        if kept:
            boxes = read_only(np.asarray([r["box"] for r in kept], np.float32))
            box_labels = read_only(np.asarray([index[r["class_name"]] for r in kept], np.int32))
            warn_outside(boxes, [r["where"] for r in kept], header, image)
        else:
            boxes, box_labels = NO_BOXES, NO_BOX_LABELS
        meta = header or {"sex": "", "age": -1, "view": ""}
        examples.append(
            RawExample(
                key=image,
                image_path=path,
                patient_id=image,
                labels=labels,
                mask=mask,
                view=meta["view"],
                sex=meta["sex"],
                age=meta["age"],
                source_split=split,
                boxes=boxes,
                box_labels=box_labels,
            )
        )
    if not examples:
        raise DataFormatError(f"{raw_dir}: no {DATASET} image listed.")
    return examples


def read_raw(raw_dir: str, *, vindr_label_rule: Sequence[str] = ("any",)) -> list[RawExample]:
    """Every example of the raw folder with the full class list, for prepare."""
    rule = (vindr_label_rule,) if isinstance(vindr_label_rule, str) else tuple(vindr_label_rule)
    if len(rule) != 1:
        raise DataFormatError(
            f"--vindr_label_rule takes one of {', '.join(LABEL_RULES)}, got {','.join(rule)!r}."
        )
    return load(raw_dir, CLASSES, label_rule=rule[0])


SOURCE = prepared_source(
    "vindr_cxr",
    CLASSES,
    Prepared(
        builder_name="vindr_cxr",
        read_raw=read_raw,
        options=(
            PrepareOption(
                "vindr_label_rule",
                ("any",),
                "VinDr-CXR: an image's label from its readers' labels: any (a reader marked "
                "it) or majority (more than half of them did).",
                recorded=lambda rule: list(rule),
            ),
        ),
        exporter="chestattn_jax.data.export_dicom_sets:VINDR",
    ),
)
