"""Reader of NIH ChestX-ray14 in the layout the NIH Clinical Center distributes it in.

Expected under ``raw_dir``::

    Data_Entry_2017_v2020.csv or Data_Entry_2017.csv   (either may be .gz)
    images/00000001_000.png ...  or  images_001/images/00000001_000.png ... (the archives)
    train_val_list.txt, test_list.txt                  (optional: the official split)
    BBox_List_2017.csv                                 (optional: 984 boxes on 880 images)

Quirks of the files that this reader absorbs:

- The Data_Entry header names ``OriginalImage[Width,Height]`` and
  ``OriginalImagePixelSpacing[x,y]`` contain unquoted commas, so the header and
  every row have 11 fields; the 2017 file also ends every line with a comma
  (a 12th, empty field). Columns are found by name.
- Older releases write ages as ``058Y``.
- The box list labels Infiltration ``Infiltrate``, its header names the four box
  fields ``Bbox [x,y,w,h]`` (again unquoted) and some copies pad rows with empty
  fields. Box coordinates are in the pixels of the distributed 1024x1024 PNGs,
  not of the original image sizes in Data_Entry.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from chestattn_jax.data.classes import NIH_CLASSES
from chestattn_jax.data.images import dicom_age
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
    text_lines,
)
from chestattn_jax.data.source import Prepared, PrepareOption, prepared_source

# The corrected 2020 metadata first: it fixes ages and some labels of the 2017 file.
DATA_ENTRY_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
BBOX_LIST_NAME = "BBox_List_2017.csv"
# The box list's coordinates are pixels of the distributed 1024 x 1024 PNGs, whatever size
# a copy's images have: prepare scales from this frame, export writes in it.
NIH_BOX_FRAME = 1024
SPLIT_LISTS = {"train_val": "train_val_list.txt", "test": "test_list.txt"}
NO_FINDING = "No Finding"
# The view positions (View Position) a prepared NIH ChestX-ray14 holds.
VIEWS = ("PA", "AP")

DATA_ENTRY_COLUMNS = (
    "Image Index",
    "Finding Labels",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
)
# The box list's own spellings of class names.
BOX_LABEL_ALIASES = {"Infiltrate": "Infiltration"}
BOX_FIELDS = ("x", "y", "w", "h")


def _parse_age(text: str, where: str) -> int:
    """Years of a ``Patient Age`` cell (``58``, older releases ``058Y``); -1 if blank."""
    age = dicom_age(text)
    if age is None:
        raise DataFormatError(f"{where}: bad age {text.strip()!r} in column 'Patient Age'.")
    return age


def _parse_findings(text: str, where: str) -> tuple[str, ...]:
    findings = tuple(label.strip() for label in text.split("|"))
    if findings == (NO_FINDING,):
        return ()
    for label in findings:
        if label not in NIH_CLASSES:
            problem = (
                f"'{NO_FINDING}' with other findings"
                if label == NO_FINDING
                else f"unknown finding {label!r}"
            )
            raise DataFormatError(
                f"{where}: {problem} in column 'Finding Labels' (value {text!r}); expected "
                f"'{NO_FINDING}' or '|'-separated names from {', '.join(NIH_CLASSES)}."
            )
    return findings


def read_data_entry(path: str | os.PathLike) -> list[dict]:
    """Parses ``Data_Entry_2017.csv`` or ``Data_Entry_2017_v2020.csv`` (``.gz`` too).

    Returns:
      One dict per row, in file order: ``image_index`` (str), ``findings``
      (tuple of NIH class names, empty for ``No Finding``), ``patient_id``
      (the CSV text, stripped), ``age`` (int years, -1 if blank), ``sex``
      (``M``, ``F`` or ``''``) and ``view`` (``PA``, ``AP``).

    Raises:
      DataFormatError: a required column is missing, a row's field count differs
        from the header's, a finding or age is not understood, or an image
        appears twice.
    """
    rows = csv_rows(path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise DataFormatError(f"{path}: empty file, expected a Data_Entry header.") from None
    col = column_index(header, DATA_ENTRY_COLUMNS, path)
    entries, seen = [], {}
    for line, row in rows:
        where = f"{path}, line {line}"
        if len(row) != len(header):
            raise DataFormatError(f"{where}: {len(row)} fields where the header has {len(header)}.")
        image = row[col["Image Index"]].strip()
        if image in seen:
            raise DataFormatError(f"{where}: image {image!r} already listed on line {seen[image]}.")
        seen[image] = line
        entries.append(
            {
                "image_index": image,
                "findings": _parse_findings(row[col["Finding Labels"]], where),
                "patient_id": row[col["Patient ID"]].strip(),
                "age": _parse_age(row[col["Patient Age"]], where),
                "sex": {"M": "M", "F": "F"}.get(row[col["Patient Gender"]].strip().upper(), ""),
                "view": row[col["View Position"]].strip(),
            }
        )
    return entries


def read_bbox_list(
    path: str | os.PathLike,
) -> dict[str, list[tuple[str, float, float, float, float]]]:
    """Parses ``BBox_List_2017.csv`` (``.gz`` too).

    Returns:
      ``{image index: [(class name, x, y, w, h), ...]}`` in file order; ``Infiltrate``
      is renamed ``Infiltration``; coordinates are 1024-px image pixels.

    Raises:
      DataFormatError: a missing column, a short row, a non-empty field past
        the box, a non-numeric or non-positive-size box, or a label that is not
        an NIH class.
    """
    rows = csv_rows(path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise DataFormatError(f"{path}: empty file, expected a BBox_List header.") from None
    col = column_index(header, ("Image Index", "Finding Label"), path)
    # The header spells the four box fields "Bbox [x", "y", "w", "h]".
    x_col = next((i for i, name in enumerate(header) if name.strip().startswith("Bbox")), None)
    if x_col is None:
        raise DataFormatError(f"{path}: missing column 'Bbox [x,y,w,h]' in the header.")
    boxes: dict[str, list[tuple[str, float, float, float, float]]] = {}
    for line, row in rows:
        where = f"{path}, line {line}"
        if len(row) < x_col + 4 or any(field.strip() for field in row[x_col + 4 :]):
            raise DataFormatError(
                f"{where}: expected the image, the label and 4 box fields, got {row!r}."
            )
        label = row[col["Finding Label"]].strip()
        label = BOX_LABEL_ALIASES.get(label, label)
        if label not in NIH_CLASSES:
            raise DataFormatError(f"{where}: unknown label {label!r} in column 'Finding Label'.")
        values = []
        for name, text in zip(BOX_FIELDS, row[x_col : x_col + 4], strict=True):
            try:
                values.append(float(text))
            except ValueError:
                raise DataFormatError(
                    f"{where}: box field {name!r} is {text!r}, not a number."
                ) from None
        x, y, w, h = values
        if not (np.isfinite(values).all() and w > 0 and h > 0):
            raise DataFormatError(f"{where}: box {values} needs finite values and w, h > 0.")
        boxes.setdefault(row[col["Image Index"]].strip(), []).append((label, x, y, w, h))
    return boxes


def read_split_list(path: str | os.PathLike) -> list[str]:
    """The image names in ``train_val_list.txt`` or ``test_list.txt``, one a line, in order."""
    return [name for name in (line.strip() for _, line in text_lines(path)) if name]


def _image_paths(raw_dir: str) -> dict[str, str]:
    """``{file name: path}`` of the PNGs under ``images/`` and ``images_*/images/``."""
    folders = [os.path.join(raw_dir, "images")]
    with os.scandir(raw_dir) as it:
        archives = sorted(e.name for e in it if e.is_dir() and e.name.startswith("images_"))
    folders += [os.path.join(raw_dir, name, "images") for name in archives]
    paths: dict[str, str] = {}
    for folder in folders:
        if not os.path.isdir(folder):
            continue
        with os.scandir(folder) as it:
            for entry in it:
                paths.setdefault(entry.name, entry.path)
    return paths


def _source_splits(raw_dir: str) -> dict[str, str]:
    """``{image: 'train_val' | 'test'}`` from the official lists that exist in ``raw_dir``."""
    split_of: dict[str, str] = {}
    for split, name in SPLIT_LISTS.items():
        path = find_file(raw_dir, (name,))
        if path is None:
            continue
        for image in read_split_list(path):
            if split_of.get(image, split) != split:
                raise DataFormatError(f"{path}: {image!r} is also in the {split_of[image]} list.")
            split_of[image] = split
    return split_of


def load(
    raw_dir: str | os.PathLike,
    classes: Sequence[str] = NIH_CLASSES,
    views: Sequence[str] | None = ("PA", "AP"),
) -> list[RawExample]:
    """Every image of an NIH ChestX-ray14 folder, in Data_Entry order.

    Args:
      raw_dir: the folder laid out as in this module's docstring.
      classes: NIH class names; ``labels`` and ``box_labels`` follow this order
        and boxes of other classes are dropped.
      views: ``View Position`` values to keep; None keeps every image.

    Returns:
      ``RawExample``s with ``mask`` all ones (NIH labels have no uncertainty).
      An image missing from the image folders gets ``raw_dir/images/<name>``.

    Raises:
      FileNotFoundError: no Data_Entry file in ``raw_dir``.
      DataFormatError: an unknown class, a malformed file, or no image left.
    """
    raw_dir = os.path.abspath(raw_dir)
    classes = check_classes(classes, NIH_CLASSES, "NIH ChestX-ray14")
    entry_path = find_file(raw_dir, DATA_ENTRY_NAMES)
    if entry_path is None:
        raise FileNotFoundError(
            f"No {' or '.join(DATA_ENTRY_NAMES)} (or .gz) in {raw_dir}: not an NIH ChestX-ray14 "
            "folder."
        )
    entries = read_data_entry(entry_path)
    image_paths = _image_paths(raw_dir)
    split_of = _source_splits(raw_dir)
    bbox_path = find_file(raw_dir, (BBOX_LIST_NAME,))
    all_boxes = read_bbox_list(bbox_path) if bbox_path else {}

    index = {c: i for i, c in enumerate(classes)}
    mask = read_only(np.ones(len(classes), np.int32))
    # Rows share one read-only labels array per distinct finding set (a few
    # hundred in the real file), which keeps 112k examples cheap to build.
    labels_of: dict[tuple[str, ...], np.ndarray] = {}
    examples = []
    for entry in entries:
        if views is not None and entry["view"] not in views:
            continue
        findings = entry["findings"]
        labels = labels_of.get(findings)
        if labels is None:
            labels = np.zeros(len(classes), np.int32)
            labels[[index[f] for f in findings if f in index]] = 1
            labels_of[findings] = read_only(labels)
        name = entry["image_index"]
        kept = [b for b in all_boxes.get(name, ()) if b[0] in index]
        if kept:
            boxes = read_only(np.asarray([b[1:] for b in kept], np.float32))
            box_labels = read_only(np.asarray([index[b[0]] for b in kept], np.int32))
        else:
            boxes, box_labels = NO_BOXES, NO_BOX_LABELS
        examples.append(
            RawExample(
                key=name,
                image_path=image_paths.get(name, os.path.join(raw_dir, "images", name)),
                patient_id=entry["patient_id"],
                labels=labels,
                mask=mask,
                view=entry["view"],
                sex=entry["sex"],
                age=entry["age"],
                source_split=split_of.get(name, ""),
                boxes=boxes,
                box_labels=box_labels,
            )
        )
    if not examples:
        wanted = "" if views is None else f" with a view in {tuple(views)}"
        raise DataFormatError(f"{entry_path}: no image{wanted}.")
    return examples


def read_raw(raw_dir: str, *, nih_views: Sequence[str] = VIEWS) -> list[RawExample]:
    """Every example of the raw folder with the full class list, for prepare."""
    return load(raw_dir, NIH_CLASSES, views=tuple(nih_views))


SOURCE = prepared_source(
    "nih",
    NIH_CLASSES,
    Prepared(
        builder_name="nih_chest_xray14",
        read_raw=read_raw,
        options=(
            PrepareOption(
                "nih_views",
                VIEWS,
                "NIH view positions to keep.",
                recorded=lambda views: sorted(set(views)),
            ),
        ),
        box_frame=NIH_BOX_FRAME,
        exporter="chestattn_jax.data.export:NIH",
    ),
    views=VIEWS,
)
