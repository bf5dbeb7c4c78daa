"""Reader of PadChest in the layout BIMCV distributes it in.

Expected under ``raw_dir``::

    PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv   (or .csv.gz)
    0/216840111366964012283393834152009033102258826_00-059-087.png ...
    1/...  54/...                                           (the archives 0.zip ... 54.zip)

Each CSV row is one image, ``<ImageDir>/<ImageID>``, a 16-bit grayscale PNG. Columns
read: ``ImageID``, ``ImageDir``, ``StudyDate_DICOM`` (``yyyymmdd``), ``PatientID``,
``PatientBirth`` (a year, written ``1932.0`` by pandas), ``PatientSex_DICOM``,
``Projection`` (``PA``, ``AP``, ``AP_horizontal``, ``L``, ``COSTAL``, ``EXCLUDE``,
``UNK``; the view, falling back on ``ViewPosition_DICOM`` where blank), ``MethodLabel``
(``Physician``: labelled by a radiologist from the report; ``RNN_model``: by the authors'
report model) and ``Labels``, a Python list written as text,
``['cardiomegaly', 'pleural effusion']``. Other columns (the Spanish report, with commas
inside quotes, localisations, DICOM fields) are not read.

Quirks of the file that this reader absorbs:

- a ``Labels`` entry may carry stray spaces (``[' pleural effusion']``), and repeat one;
  entries are stripped, and an empty one (``['']``) is no finding;
- a blank ``Labels`` cell (a few rows) means the image was never labelled: left out, and
  counted in the log;
- ``ImageDir`` and ``PatientBirth`` may be written as floats (``12.0``).

Labels are read as the class list below names them, in PadChest's lowercase spelling;
these are our choice of its common findings. A few of PadChest's more specific terms count
for the finding they specialise (:data:`SUBTYPES`, e.g. ``rib fracture`` for ``fracture``),
also our choice; every other term is not a class here. Age is the study year minus
``PatientBirth`` where both are given (-1 otherwise, and where that difference is outside
0-120 years). There is no official split (``source_split`` is ``''``).
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Sequence

import numpy as np
from absl import logging

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

DATASET = "PadChest"
CSV_FILE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
CLASSES = (
    "atelectasis",
    "cardiomegaly",
    "consolidation",
    "pulmonary edema",
    "pleural effusion",
    "emphysema",
    "pulmonary fibrosis",
    "hiatal hernia",
    "infiltrates",
    "mass",
    "nodule",
    "pleural thickening",
    "pneumonia",
    "pneumothorax",
    "alveolar pattern",
    "interstitial pattern",
    "costophrenic angle blunting",
    "fracture",
    "normal",
)
# PadChest terms that specialise one of CLASSES and count as it (our choice).
SUBTYPES = {
    "laminar atelectasis": "atelectasis",
    "lobar atelectasis": "atelectasis",
    "segmental atelectasis": "atelectasis",
    "round atelectasis": "atelectasis",
    "total atelectasis": "atelectasis",
    "loculated pleural effusion": "pleural effusion",
    "loculated fissural effusion": "pleural effusion",
    "apical pleural thickening": "pleural thickening",
    "calcified pleural thickening": "pleural thickening",
    "reticular interstitial pattern": "interstitial pattern",
    "reticulonodular interstitial pattern": "interstitial pattern",
    "multiple nodules": "nodule",
    "pulmonary mass": "mass",
    "rib fracture": "fracture",
    "clavicle fracture": "fracture",
    "humeral fracture": "fracture",
    "vertebral fracture": "fracture",
    "callus rib fracture": "fracture",
}
PHYSICIAN, MODEL = "Physician", "RNN_model"
# Projection values; the frontal ones are kept by default (padchest_views).
FRONTAL = ("PA", "AP", "AP_horizontal")
VIEWS = (*FRONTAL, "L", "COSTAL", "EXCLUDE", "UNK")
# ViewPosition_DICOM spellings, where Projection is blank.
_DICOM_VIEW = {"POSTEROANTERIOR": "PA", "ANTEROPOSTERIOR": "AP", "LATERAL": "L"}
COLUMNS = (
    "ImageID",
    "ImageDir",
    "StudyDate_DICOM",
    "PatientID",
    "PatientBirth",
    "PatientSex_DICOM",
    "ViewPosition_DICOM",
    "Projection",
    "MethodLabel",
    "Labels",
)
_WHOLE = re.compile(r"(\d+)(?:\.0*)?")


def _number(text: str, column: str, where: str, digits: int | None = None) -> int | None:
    """An integer written ``12`` or ``12.0`` (None if blank); ``digits``: its length."""
    if not text:
        return None
    m = _WHOLE.fullmatch(text)
    if m is None or (digits is not None and len(m[1]) != digits):
        raise DataFormatError(f"{where}: {column} {text!r} is not {_WHAT[column]}.")
    return int(m[1])


_WHAT = {
    "ImageDir": "a folder number",
    "PatientBirth": "a year",
    "StudyDate_DICOM": "a date yyyymmdd",
}


def parse_labels(text: str, where: str) -> tuple[str, ...] | None:
    """The terms of a ``Labels`` cell, stripped, empty ones dropped, each once, in order;
    None for a blank cell (an image never labelled).

    Raises:
      DataFormatError: the cell is not a Python list of strings.
    """
    if not text.strip():
        return None
    try:
        value = ast.literal_eval(text.strip())  # literals only: never runs code
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataFormatError(
            f"{where}: Labels {text!r} is not a list of quoted terms like "
            "['cardiomegaly', 'pleural effusion']."
        )
    return tuple(dict.fromkeys(t for t in (v.strip() for v in value) if t))


def _age(birth: int | None, date: int | None) -> int:
    if birth is None or date is None:
        return -1
    age = date // 10000 - birth
    return age if 0 <= age <= 120 else -1


def read_csv(
    path: str | os.PathLike,
    classes: Sequence[str] = CLASSES,
    physician_only: bool = False,
    views: Sequence[str] | None = FRONTAL,
    image_root: str | os.PathLike | None = None,
) -> list[RawExample]:
    """Parses PadChest's CSV (``.gz`` too).

    Args:
      path: the CSV file.
      classes: PadChest terms of :data:`CLASSES`; ``labels`` follows this order.
      physician_only: keep only the rows whose ``MethodLabel`` is ``Physician``.
      views: views (``Projection``) to keep; None keeps all.
      image_root: the folder holding the ``ImageDir`` folders; by default the CSV's.

    Returns:
      ``RawExample``s in file order: ``key`` the ``ImageID``, ``patient_id`` the
      ``PatientID``, ``mask`` all ones, ``source_split`` ``''``. An image listed twice
      with the same fields is kept once.

    Raises:
      DataFormatError: a missing column, a bad field count, a ``Labels`` cell that is not
        a list of strings, a bad ``ImageDir``, date, year or ``MethodLabel``, an empty
        ``ImageID``, an image listed twice with other fields, or no image left.
    """
    classes = check_classes(classes, CLASSES, DATASET)
    root = os.path.abspath(image_root or os.path.dirname(os.path.abspath(path)))
    index = {c: i for i, c in enumerate(classes)}
    for term, parent in SUBTYPES.items():
        if parent in index:
            index[term] = index[parent]
    rows = csv_rows(path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise DataFormatError(f"{path}: empty file, expected a {DATASET} header.") from None
    col = column_index(header, COLUMNS, path)
    mask = read_only(np.ones(len(classes), np.int32))
    labels_of: dict[frozenset, np.ndarray] = {}
    examples, seen = [], {}
    unlabelled = ages_out = 0
    for line, row in rows:
        where = f"{path}, line {line}"
        if len(row) != len(header):
            raise DataFormatError(f"{where}: {len(row)} fields where the header has {len(header)}.")
        cell = {c: row[i].strip() for c, i in col.items()}
        method = cell["MethodLabel"]
        if method not in (PHYSICIAN, MODEL):
            raise DataFormatError(
                f"{where}: MethodLabel {method!r}; expected {PHYSICIAN} or {MODEL}."
            )
        image = cell["ImageID"]
        if not image:
            raise DataFormatError(f"{where}: empty ImageID.")
        folder = _number(cell["ImageDir"], "ImageDir", where)
        if folder is None:
            raise DataFormatError(f"{where}: empty ImageDir.")
        birth = _number(cell["PatientBirth"], "PatientBirth", where, digits=4)
        date = _number(cell["StudyDate_DICOM"], "StudyDate_DICOM", where, digits=8)
        terms = parse_labels(row[col["Labels"]], where)
        view = cell["Projection"] or _DICOM_VIEW.get(
            cell["ViewPosition_DICOM"].upper(), cell["ViewPosition_DICOM"]
        )
        sex = {"M": "M", "F": "F"}.get(cell["PatientSex_DICOM"].upper(), "")
        # Every field read, whichever images are kept: a second listing must repeat them.
        fields = (folder, cell["PatientID"], terms, view, sex, birth, date, method)
        if image in seen:
            if seen[image][1] != fields:
                raise DataFormatError(
                    f"{where}: image {image!r} is listed again, with other fields than on "
                    f"line {seen[image][0]}."
                )
            continue
        seen[image] = (line, fields)
        if physician_only and method != PHYSICIAN:
            continue
        if views is not None and view not in views:
            continue
        if terms is None:
            unlabelled += 1
            continue
        found = frozenset(index[t] for t in terms if t in index)
        labels = labels_of.get(found)
        if labels is None:
            labels = np.zeros(len(classes), np.int32)
            labels[list(found)] = 1
            labels = labels_of[found] = read_only(labels)
        age = _age(birth, date)
        ages_out += age < 0 and birth is not None and date is not None
        example = RawExample(
            key=image,
            image_path=os.path.join(root, str(folder), image),
            patient_id=cell["PatientID"],
            labels=labels,
            mask=mask,
            view=view,
            sex=sex,
            age=age,
            source_split="",
            boxes=NO_BOXES,
            box_labels=NO_BOX_LABELS,
        )
        examples.append(example)
    if unlabelled:
        logging.warning("%s: left out %d images with a blank Labels cell.", path, unlabelled)
    if ages_out:
        logging.warning("%s: %d ages outside 0-120 years stored as unknown.", path, ages_out)
    if not examples:
        kept = "physician-labelled " if physician_only else ""
        wanted = "" if views is None else f" with a Projection in {tuple(views)}"
        raise DataFormatError(f"{path}: no labelled {kept}image{wanted}.")
    return examples


def load(
    raw_dir: str | os.PathLike,
    classes: Sequence[str] = CLASSES,
    physician_only: bool = False,
    views: Sequence[str] | None = FRONTAL,
) -> list[RawExample]:
    """The images of a PadChest folder (:func:`read_csv` of its CSV).

    Raises:
      FileNotFoundError: no CSV in ``raw_dir``. DataFormatError: as in :func:`read_csv`.
    """
    raw_dir = os.path.abspath(raw_dir)
    path = find_file(raw_dir, (CSV_FILE,))
    if path is None:
        raise FileNotFoundError(f"No {CSV_FILE} (or .gz) in {raw_dir}: not a {DATASET} folder.")
    return read_csv(path, classes, physician_only, views, image_root=raw_dir)


def read_raw(
    raw_dir: str,
    *,
    padchest_views: Sequence[str] = FRONTAL,
    padchest_physician_only: bool = False,
) -> list[RawExample]:
    """Every example of the raw folder with the full class list, for prepare."""
    return load(raw_dir, CLASSES, padchest_physician_only, tuple(padchest_views))


SOURCE = prepared_source(
    "padchest",
    CLASSES,
    Prepared(
        builder_name="padchest",
        read_raw=read_raw,
        options=(
            PrepareOption(
                "padchest_views",
                FRONTAL,
                "PadChest: Projection values to keep.",
                recorded=lambda views: sorted(set(views)),
            ),
            PrepareOption(
                "padchest_physician_only",
                False,
                "PadChest: keep only the images a physician labelled (MethodLabel "
                "Physician), not those of the report model.",
                recorded=bool,
            ),
        ),
        exporter="chestattn_jax.data.export_csv_sets:PADCHEST",
    ),
    views=VIEWS,
)
