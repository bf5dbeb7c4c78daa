"""Reader of the RSNA Pneumonia Detection Challenge (stage 2) in the layout Kaggle
distributes it in.

Expected under ``raw_dir``::

    stage_2_train_labels.csv          patientId,x,y,width,height,Target
    stage_2_detailed_class_info.csv   patientId,class
    stage_2_train_images/<patientId>.dcm

``stage_2_train_labels.csv`` has one row per box (``x``, ``y`` the top-left corner and
``width``, ``height``, in the pixels of the 1024 x 1024 DICOM) with ``Target`` 1, and one
row with empty box fields and ``Target`` 0 for an image without a box. The detailed class
file repeats a patient once per row of the label file; its ``class`` (``Lung Opacity``,
``No Lung Opacity / Not Normal``, ``Normal``) must agree with ``Target`` (``Lung
Opacity`` exactly when 1), which is checked. The stage 2 test images carry no labels and
are not read.

The one class is ``Lung Opacity`` (``Target``). Sex, age and view position are read from
each DICOM's header (``PatientSex``, ``PatientAge``, ``ViewPosition``); the pixels are
decoded by the prepare step. Each ``patientId`` names one image (the challenge gives no
patient grouping), so each image is its own patient: our choice, forced by the files.
There is no official split. Boxes stay in the DICOM's own pixels (``box_frame`` None);
prepare scales them to the stored image and clips and counts any that leave it; the reader
warns, naming file, line and image, about a box that leaves the size its DICOM header gives.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from absl import logging

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
from chestattn_jax.data.source import Prepared, prepared_source

DATASET = "RSNA Pneumonia"
LABELS_FILE = "stage_2_train_labels.csv"
CLASS_INFO_FILE = "stage_2_detailed_class_info.csv"
IMAGE_DIR = "stage_2_train_images"
CLASSES = ("Lung Opacity",)
DETAILED_CLASSES = ("Lung Opacity", "No Lung Opacity / Not Normal", "Normal")
VIEWS = ("PA", "AP")
LABEL_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
BOX_FIELDS = ("x", "y", "width", "height")


def warn_outside(boxes: np.ndarray, lines: Sequence[str], header: dict | None, image: str):
    """Logs, naming file, line and image, each ``[x, y, w, h]`` box that reaches outside
    the image size its DICOM header gives (prepare clips and counts them)."""
    if header is None or not header["rows"] or not header["columns"]:
        return
    width, height = header["columns"], header["rows"]
    outside = (
        (boxes[:, 0] < 0)
        | (boxes[:, 1] < 0)
        | (boxes[:, 0] + boxes[:, 2] > width)
        | (boxes[:, 1] + boxes[:, 3] > height)
    )
    for i in np.flatnonzero(outside):
        logging.warning(
            "%s: box %s of image %s reaches outside its %d x %d pixels (width x height); "
            "prepare clips it to the image and counts it.",
            lines[i],
            boxes[i].tolist(),
            image,
            width,
            height,
        )


def _box(row, col, where: str, image: str) -> tuple[float, float, float, float]:
    values = []
    for name in BOX_FIELDS:
        text = row[col[name]].strip()
        try:
            values.append(float(text))
        except ValueError:
            raise DataFormatError(
                f"{where}: image {image}: box field {name!r} is {text!r}, not a number."
            ) from None
    x, y, w, h = values
    if not (np.isfinite(values).all() and w > 0 and h > 0):
        raise DataFormatError(
            f"{where}: image {image}: box {values} needs finite values and width, height > 0."
        )
    return x, y, w, h


def read_labels(path: str | os.PathLike) -> dict[str, dict]:
    """Parses ``stage_2_train_labels.csv``.

    Returns:
      ``{patientId: {"target": 0 | 1, "boxes": [(x, y, w, h), ...], "lines": [where of
      each box], "line": its first line}}`` in file order (one entry per image however
      many rows it has).

    Raises:
      DataFormatError: a missing column, a row with a field count other than the
        header's, a ``Target`` other than 0 / 1, a Target 1 row without a numeric box
        of positive size, a Target 0 row with one, or an image with both.
    """
    rows = csv_rows(path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise DataFormatError(f"{path}: empty file, expected a {LABELS_FILE} header.") from None
    col = column_index(header, LABEL_COLUMNS, path)
    images: dict[str, dict] = {}
    for line, row in rows:
        where = f"{path}, line {line}"
        if len(row) != len(header):
            raise DataFormatError(f"{where}: {len(row)} fields where the header has {len(header)}.")
        image = row[col["patientId"]].strip()
        if not image:
            raise DataFormatError(f"{where}: empty patientId.")
        target_text = row[col["Target"]].strip()
        if target_text not in ("0", "1"):
            raise DataFormatError(
                f"{where}: image {image}: Target is {target_text!r}; expected 0 or 1."
            )
        target = int(target_text)
        entry = images.setdefault(image, {"target": target, "boxes": [], "lines": [], "line": line})
        if entry["target"] != target:
            raise DataFormatError(
                f"{where}: image {image} has Target {target} here and Target "
                f"{entry['target']} on line {entry['line']}."
            )
        has_box = any(row[col[name]].strip() for name in BOX_FIELDS)
        if target == 1:
            entry["boxes"].append(_box(row, col, where, image))
            entry["lines"].append(where)
        elif has_box:
            raise DataFormatError(f"{where}: image {image} has Target 0 but a box.")
    return images


def read_class_info(path: str | os.PathLike) -> dict[str, tuple[str, int]]:
    """Parses ``stage_2_detailed_class_info.csv``: ``{patientId: (class, line)}``.

    Raises:
      DataFormatError: a missing column, an unknown class, or an image whose rows
        disagree (the file repeats an image once per box, with the same class).
    """
    rows = csv_rows(path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise DataFormatError(f"{path}: empty file, expected a {CLASS_INFO_FILE} header.") from None
    col = column_index(header, ("patientId", "class"), path)
    classes: dict[str, tuple[str, int]] = {}
    for line, row in rows:
        where = f"{path}, line {line}"
        if len(row) != len(header):
            raise DataFormatError(f"{where}: {len(row)} fields where the header has {len(header)}.")
        image, name = row[col["patientId"]].strip(), row[col["class"]].strip()
        if name not in DETAILED_CLASSES:
            raise DataFormatError(
                f"{where}: image {image}: unknown class {name!r}; expected one of "
                f"{', '.join(DETAILED_CLASSES)}."
            )
        first = classes.setdefault(image, (name, line))
        if first[0] != name:
            raise DataFormatError(
                f"{where}: image {image} has class {name!r} here and {first[0]!r} on line "
                f"{first[1]}."
            )
    return classes


def _require(raw_dir: str, name: str, folder: bool = False) -> str:
    path = os.path.join(raw_dir, name)
    if not (os.path.isdir(path) if folder else os.path.isfile(path)):
        kind = "folder" if folder else "file"
        raise FileNotFoundError(
            f"No {name} {kind} in {raw_dir}: the {DATASET} layout (stage 2) has "
            f"{LABELS_FILE}, {CLASS_INFO_FILE} and {IMAGE_DIR}/."
        )
    return path


def load(raw_dir: str | os.PathLike, classes: Sequence[str] = CLASSES) -> list[RawExample]:
    """Every image of ``stage_2_train_labels.csv``, in file order (module docstring).

    Returns:
      ``RawExample`` s: ``key`` and ``patient_id`` the ``patientId``, ``labels``
      ``(1,)`` the Target, ``mask`` ones, ``boxes`` ``[x, y, w, h]`` in DICOM pixels with
      ``box_labels`` 0, ``source_split`` ``''``; sex, age and view from the DICOM header
      (``''``, -1, ``''`` for an image that is absent or unreadable, which prepare
      reports under ``--on_bad_image``).

    Raises:
      FileNotFoundError: a file or the image folder of the layout is missing.
      DataFormatError: a malformed file (:func:`read_labels`, :func:`read_class_info`),
        a detailed class that disagrees with Target, or an image of one file missing
        from the other.
    """
    raw_dir = os.path.abspath(raw_dir)
    classes = check_classes(classes, CLASSES, DATASET)
    labels_path = _require(raw_dir, LABELS_FILE)
    info_path = _require(raw_dir, CLASS_INFO_FILE)
    image_dir = _require(raw_dir, IMAGE_DIR, folder=True)
    images = read_labels(labels_path)
    detailed = read_class_info(info_path)
    for image in detailed.keys() - images.keys():
        raise DataFormatError(
            f"{info_path}, line {detailed[image][1]}: image {image} is not in {labels_path}."
        )
    positive, negative = (read_only(np.asarray([v], np.int32)) for v in (1, 0))
    mask = read_only(np.ones(1, np.int32))
    examples = []
    for image, entry in images.items():
        if image not in detailed:
            raise DataFormatError(
                f"{labels_path}, line {entry['line']}: image {image} is not in {info_path}."
            )
        name, info_line = detailed[image]
        if (name == "Lung Opacity") != bool(entry["target"]):
            raise DataFormatError(
                f"{info_path}, line {info_line}: image {image} has class {name!r} but Target "
                f"{entry['target']} in {labels_path}, line {entry['line']}."
            )
        path = os.path.join(image_dir, f"{image}.dcm")
        header = dicom_header(path)
        if entry["boxes"]:
            boxes = read_only(np.asarray(entry["boxes"], np.float32))
            box_labels = read_only(np.zeros(len(boxes), np.int32))
            warn_outside(boxes, entry["lines"], header, image)
        else:
            boxes, box_labels = NO_BOXES, NO_BOX_LABELS
        meta = header or {"sex": "", "age": -1, "view": ""}
        examples.append(
            RawExample(
                key=image,
                image_path=path,
                patient_id=image,
                labels=positive if entry["target"] else negative,
                mask=mask,
                view=meta["view"],
                sex=meta["sex"],
                age=meta["age"],
                source_split="",
                boxes=boxes,
                box_labels=box_labels,
            )
        )
    if not examples:
        raise DataFormatError(f"{labels_path}: no image.")
    return examples


def read_raw(raw_dir: str) -> list[RawExample]:
    """Every example of the raw folder, for prepare."""
    return load(raw_dir, CLASSES)


SOURCE = prepared_source(
    "rsna_pneumonia",
    CLASSES,
    Prepared(
        builder_name="rsna_pneumonia",
        read_raw=read_raw,
        exporter="chestattn_jax.data.export_dicom_sets:RSNA",
    ),
    views=VIEWS,
)
