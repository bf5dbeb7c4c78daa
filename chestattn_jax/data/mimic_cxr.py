"""Reader of MIMIC-CXR-JPG 2.x in the layout PhysioNet distributes it in.

Expected under ``raw_dir`` (the ``mimic-cxr-jpg/2.0.0`` or ``2.1.0`` folder; each table
may also be stored unzipped, without ``.gz``)::

    mimic-cxr-2.0.0-chexpert.csv.gz   subject_id,study_id + the 14 CheXpert observations
    mimic-cxr-2.0.0-metadata.csv.gz   dicom_id,subject_id,study_id,...,ViewPosition,...
    mimic-cxr-2.0.0-split.csv.gz      dicom_id,study_id,subject_id,split
    files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg

The CheXpert-labeller table has one row per study, its observation columns in
alphabetical order, each ``1.0``, ``0.0``, ``-1.0`` (uncertain) or blank (not
mentioned, read as negative, as for CheXpert): a study's labels apply to every image of
the study. Uncertain labels follow CheXpert's policies, read with CheXpert's own reader
(:func:`chestattn_jax.data.chexpert.labels_and_mask`). The metadata table lists every
image (``dicom_id``) with its study and ``ViewPosition`` (``PA``, ``AP``, ``LATERAL``,
``LL``, ... or blank); the split table puts each image in ``train``, ``validate`` or
``test``, the official split (recorded as ``source_split``). An image is at
``files/p<first two digits of subject_id>/p<subject_id>/s<study_id>/<dicom_id>.jpg``.

Sex and age are not in these files (they are in MIMIC-IV's ``patients`` table, a
separate credentialed download), so they are stored unknown (``''``, -1). The images of
a study without a row in the CheXpert table (a few in the real release) cannot be
labelled: they are left out, and their number is logged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from absl import logging

from chestattn_jax.data.chexpert import LABEL_COLUMNS, labels_and_mask, uncertainty_policies
from chestattn_jax.data.raw import (
    NO_BOX_LABELS,
    NO_BOXES,
    DataFormatError,
    RawExample,
    check_classes,
    column_index,
    csv_rows,
    find_file,
)
from chestattn_jax.data.source import Prepared, PrepareOption, prepared_source

DATASET = "MIMIC-CXR-JPG"
LABELS_FILE = "mimic-cxr-2.0.0-chexpert.csv"
METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv"
SPLIT_FILE = "mimic-cxr-2.0.0-split.csv"
# The 14 observations of the CheXpert labeller, as CheXpert spells and orders them.
CLASSES = LABEL_COLUMNS
SPLITS = ("train", "validate", "test")
# The frontal views, kept by default (mimic_views).
FRONTAL = ("PA", "AP")
# The ViewPosition values of the release (config.data.views picks among the prepared).
VIEWS = (
    "PA",
    "AP",
    "LATERAL",
    "LL",
    "AP AXIAL",
    "AP LLD",
    "AP RLD",
    "PA LLD",
    "PA RLD",
    "LAO",
    "RAO",
    "LPO",
    "SWIMMERS",
    "XTABLE LATERAL",
)


def _header(rows, path, columns) -> dict[str, int]:
    try:
        _, header = next(rows)
    except StopIteration:
        raise DataFormatError(f"{path}: empty file, expected a {DATASET} header.") from None
    return column_index(header, columns, path), len(header)


def _rows(path, columns):
    """``(where, {column: stripped text})`` of each row of a table, checked for its
    field count; ``where`` is ``"<path>, line <n>"``."""
    rows = csv_rows(path)
    col, width = _header(rows, path, columns)
    for line, row in rows:
        where = f"{path}, line {line}"
        if len(row) != width:
            raise DataFormatError(f"{where}: {len(row)} fields where the header has {width}.")
        yield where, {c: row[i].strip() for c, i in col.items()}


def _id(text: str, column: str, where: str) -> str:
    if not text.isdecimal():
        raise DataFormatError(f"{where}: {column} {text!r} is not a number.")
    return text


def read_labels(
    path: str | os.PathLike,
    classes: Sequence[str] = CLASSES,
    uncertainty: str | Mapping[str, str] = "zeros",
) -> dict[str, tuple]:
    """Parses ``mimic-cxr-2.0.0-chexpert.csv[.gz]``.

    Returns:
      ``{study_id: (subject_id, labels, mask, where)}``: ``labels`` and ``mask`` read-only
      ``(k,)`` int32 in the order of ``classes`` under the uncertainty policy
      (:func:`chestattn_jax.data.chexpert.uncertainty_policies`); ``where`` the file and
      line. A study listed twice with the same cells is kept once.

    Raises:
      DataFormatError: a missing column, a bad field count, id or label, or a study
        listed twice with other labels or another subject.
    """
    classes = check_classes(classes, CLASSES, DATASET)
    policies = uncertainty_policies(uncertainty, classes)
    studies: dict[str, tuple] = {}
    cells_of: dict[str, tuple] = {}
    for where, row in _rows(path, ("subject_id", "study_id", *classes)):
        subject = _id(row["subject_id"], "subject_id", where)
        study = _id(row["study_id"], "study_id", where)
        cells = (subject, *(row[c] for c in classes))
        if study in studies:
            if cells_of[study] != cells:
                raise DataFormatError(
                    f"{where}: study {study} is listed again, with other labels or subject "
                    f"than on {studies[study][3]}."
                )
            continue
        labels, mask = labels_and_mask(cells[1:], policies, classes, where)
        studies[study], cells_of[study] = (subject, labels, mask, where), cells
    return studies


def read_metadata(path: str | os.PathLike) -> dict[str, dict]:
    """Parses ``mimic-cxr-2.0.0-metadata.csv[.gz]``.

    Returns:
      ``{dicom_id: {"subject_id", "study_id", "view", "where"}}`` in file order (view:
      ``ViewPosition``, ``''`` when blank). An image listed twice with the same study and
      view is kept once.

    Raises:
      DataFormatError: a missing column, a bad field count or id, or an image listed
        twice with another study, subject or view.
    """
    images: dict[str, dict] = {}
    for where, row in _rows(path, ("dicom_id", "subject_id", "study_id", "ViewPosition")):
        dicom = row["dicom_id"]
        if not dicom:
            raise DataFormatError(f"{where}: empty dicom_id.")
        entry = {
            "subject_id": _id(row["subject_id"], "subject_id", where),
            "study_id": _id(row["study_id"], "study_id", where),
            "view": row["ViewPosition"],
            "where": where,
        }
        old = images.get(dicom)
        if old is None:
            images[dicom] = entry
        elif any(old[k] != entry[k] for k in ("subject_id", "study_id", "view")):
            raise DataFormatError(
                f"{where}: image {dicom} is listed again, with another subject, study or "
                f"view than on {old['where']}."
            )
    return images


def read_split(path: str | os.PathLike) -> dict[str, tuple[str, str, str, str]]:
    """Parses ``mimic-cxr-2.0.0-split.csv[.gz]``: ``{dicom_id: (split, study_id,
    subject_id, where)}``, split one of ``train``, ``validate``, ``test``.

    Raises:
      DataFormatError: a missing column, a bad field count, id or split, or an image
        listed twice with another split, study or subject.
    """
    split_of: dict[str, tuple[str, str, str, str]] = {}
    for where, row in _rows(path, ("dicom_id", "study_id", "subject_id", "split")):
        split = row["split"]
        if split not in SPLITS:
            raise DataFormatError(f"{where}: split {split!r}; expected one of {', '.join(SPLITS)}.")
        entry = (
            split,
            _id(row["study_id"], "study_id", where),
            _id(row["subject_id"], "subject_id", where),
            where,
        )
        old = split_of.setdefault(row["dicom_id"], entry)
        if old[:3] != entry[:3]:
            raise DataFormatError(
                f"{where}: image {row['dicom_id']} is listed again, with another split, study "
                f"or subject than on {old[3]}."
            )
    return split_of


def table(raw_dir: str, name: str) -> str:
    """The path of table ``name`` (or ``name.gz``) in ``raw_dir``; a
    ``FileNotFoundError`` naming it and the data set if there is none."""
    path = find_file(raw_dir, (name,))
    if path is None:
        raise FileNotFoundError(
            f"No {name}.gz (or {name}) in {raw_dir}: a {DATASET} folder holds "
            f"{LABELS_FILE}.gz, {METADATA_FILE}.gz, {SPLIT_FILE}.gz and files/."
        )
    return path


def image_path(raw_dir: str, subject: str, study: str, dicom: str) -> str:
    """Where the release keeps image ``dicom`` of ``study`` of ``subject``."""
    return os.path.join(
        raw_dir, "files", f"p{subject[:2]}", f"p{subject}", f"s{study}", dicom + ".jpg"
    )


def load(
    raw_dir: str | os.PathLike,
    classes: Sequence[str] = CLASSES,
    uncertainty: str | Mapping[str, str] = "zeros",
    views: Sequence[str] | None = FRONTAL,
) -> list[RawExample]:
    """Every labelled image of a MIMIC-CXR-JPG folder, in metadata order.

    Args:
      raw_dir: the folder laid out as in this module's docstring.
      classes: CheXpert observation names; ``labels`` and ``mask`` follow this order.
      uncertainty: the uncertainty policy
        (:func:`chestattn_jax.data.chexpert.uncertainty_policies`).
      views: ``ViewPosition`` values to keep (``''`` for a blank one); None keeps all.

    Returns:
      ``RawExample``s: ``key`` the ``dicom_id``, ``patient_id`` the ``subject_id``,
      ``view`` the ``ViewPosition``, ``source_split`` the official split, sex and age
      unknown, no boxes. An image file need not exist (prepare reports it).

    Raises:
      FileNotFoundError: a table is missing. DataFormatError: a malformed table, an image
        the split table does not place or places in another study, a study whose subject
        differs between tables, or no image left.
    """
    raw_dir = os.path.abspath(raw_dir)
    classes = check_classes(classes, CLASSES, DATASET)
    paths = [table(raw_dir, n) for n in (LABELS_FILE, METADATA_FILE, SPLIT_FILE)]
    studies = read_labels(paths[0], classes, uncertainty)
    images = read_metadata(paths[1])
    split_of = read_split(paths[2])
    examples, unlabelled = [], 0
    for dicom, entry in images.items():
        subject, study, where = entry["subject_id"], entry["study_id"], entry["where"]
        split = split_of.get(dicom)
        if split is None:
            raise DataFormatError(f"{where}: image {dicom} has no row in {paths[2]}.")
        if split[1:3] != (study, subject):
            raise DataFormatError(
                f"{where}: image {dicom} is in study {study} of subject {subject}, but "
                f"{split[3]} puts it in study {split[1]} of subject {split[2]}."
            )
        if views is not None and entry["view"] not in views:
            continue
        labelled = studies.get(study)
        if labelled is None:
            unlabelled += 1
            continue
        if labelled[0] != subject:
            raise DataFormatError(
                f"{where}: study {study} is of subject {subject}, but {labelled[3]} gives "
                f"subject {labelled[0]}."
            )
        examples.append(
            RawExample(
                key=dicom,
                image_path=image_path(raw_dir, subject, study, dicom),
                patient_id=subject,
                labels=labelled[1],
                mask=labelled[2],
                view=entry["view"],
                sex="",
                age=-1,
                source_split=split[0],
                boxes=NO_BOXES,
                box_labels=NO_BOX_LABELS,
            )
        )
    if unlabelled:
        logging.warning(
            "%s: left out %d images whose study has no row in %s.", DATASET, unlabelled, paths[0]
        )
    if not examples:
        wanted = "" if views is None else f" with a ViewPosition in {tuple(views)}"
        raise DataFormatError(f"{paths[1]}: no labelled image{wanted}.")
    return examples


def read_raw(raw_dir: str, *, mimic_views: Sequence[str] = FRONTAL) -> list[RawExample]:
    """Every example of the raw folder with the full class list, for prepare: uncertain
    labels are kept apart (label 0, mask 0) so that the policy can be chosen at training
    time (``config.data.uncertainty``)."""
    return load(raw_dir, CLASSES, uncertainty="ignore", views=tuple(mimic_views))


SOURCE = prepared_source(
    "mimic_cxr",
    CLASSES,
    Prepared(
        builder_name="mimic_cxr_jpg",
        read_raw=read_raw,
        options=(
            PrepareOption(
                "mimic_views",
                FRONTAL,
                "MIMIC-CXR: ViewPosition values to keep.",
                recorded=lambda views: sorted(set(views)),
            ),
        ),
        exporter="chestattn_jax.data.export_csv_sets:MIMIC_CXR",
    ),
    views=VIEWS,
    uncertain_labels=True,
    check_config=None,
)
