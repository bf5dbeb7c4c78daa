"""Reader of SIIM-ACR Pneumothorax Segmentation in the layout the Kaggle challenge
distributes it in (stage 1: its labelled training set).

Expected under ``raw_dir``::

    train-rle.csv                                   (or train-rle.csv.gz)
    dicom-images-train/<study UID>/<series UID>/<ImageId>.dcm

``train-rle.csv`` has the header ``ImageId, EncodedPixels`` (the second name, and every
value of that column, starts with a space). ``EncodedPixels`` is ``-1`` for an image
without pneumothorax, else one region's mask as a run-length code; an image with several
regions has one row per region, and its truth is their union. The code is *relative*:
pairs ``(offset, length)``, each offset counted from the end of the previous run (the
first from pixel 0), over the 1024 x 1024 mask flattened in column-major order (the
challenge's ``rle2mask(...).T``). :func:`decode_rle` decodes it.

Choices of ours, stated where they are made:

- The one class is ``Pneumothorax``; the truth mask is stored with it
  (:class:`MaskedExample`), and an image is positive when it has a region.
- Patient, sex, age and view come from each DICOM's header (``PatientID``,
  ``PatientSex``, ``PatientAge``, ``ViewPosition``); an image whose header has no
  ``PatientID`` is its own patient.
- There is no labelled official test split (the stage-2 test set's labels were released
  apart, in another file): every image is ``source_split`` ``train``, and the splits are
  made by patient like NIH's without the official lists.
- Several rows of one image are its regions. A row repeated word for word adds nothing
  to the union: it is read once and counted (:data:`DUPLICATE_ROWS` in the log). ``-1``
  beside a region for the same image contradicts it and is an error.
- DICOMs under ``dicom-images-train`` that the CSV does not list are not read; an image
  the CSV lists but the tree lacks gets the path ``dicom-images-train/<ImageId>.dcm``,
  which prepare reports as missing (``--on_bad_image``).
"""

from __future__ import annotations

import dataclasses
import os
import re
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
    csv_rows,
    find_file,
    read_only,
)
from chestattn_jax.data.source import Prepared, prepared_source

CLASSES = ("Pneumothorax",)
RLE_FILE = "train-rle.csv"
IMAGE_DIR = "dicom-images-train"
# The side of the distributed DICOMs, in which the run-length code is given.
MASK_FRAME = 1024
NO_PNEUMOTHORAX = "-1"
# The view positions of the distributed DICOMs.
VIEWS = ("PA", "AP")
SOURCE_SPLIT = "train"
# What the log calls rows repeated word for word.
DUPLICATE_ROWS = "identical duplicate rows"


@dataclasses.dataclass(frozen=True)
class MaskedExample(RawExample):
    """A :class:`RawExample` with localisation truth as masks, kept as runs until prepare
    decodes them (a 1024 x 1024 mask per image would not fit in memory for the set).

    Attributes:
      mask_frame: ``(height, width)`` of the frame the masks are given in.
      mask_labels: ``(m,)`` int32 index into the reader's classes of each mask.
      mask_runs: per mask, ``(r, 2)`` int64 ``[start, length]`` runs over the frame
        flattened in column-major order (absolute starts).
    """

    mask_frame: tuple[int, int]
    mask_labels: np.ndarray
    mask_runs: tuple[np.ndarray, ...]

    def truth_masks(self) -> np.ndarray:
        """``(m, height, width)`` bool: each mask of ``mask_labels`` decoded from its runs."""
        h, w = self.mask_frame
        out = np.zeros((len(self.mask_runs), h * w), bool)
        for i, runs in enumerate(self.mask_runs):
            out[i] = runs_to_flat(runs, h * w)
        # Column-major: the flat index runs down each column first.
        return out.reshape(len(self.mask_runs), w, h).transpose(0, 2, 1)


def runs_to_flat(runs: np.ndarray, size: int) -> np.ndarray:
    """``(size,)`` bool, True over each ``[start, length]`` run of ``runs``."""
    delta = np.zeros(size + 1, np.int32)
    runs = np.asarray(runs, np.int64).reshape(-1, 2)
    np.add.at(delta, runs[:, 0], 1)
    np.add.at(delta, runs[:, 0] + runs[:, 1], -1)
    return np.cumsum(delta[:size]) > 0


def parse_rle(text: str, size: int = MASK_FRAME * MASK_FRAME, where: str = "") -> np.ndarray:
    """SIIM's relative run-length code -> ``(r, 2)`` int64 absolute ``[start, length]`` runs.

    ``text`` is whitespace-separated integers, pairs of (offset from the end of the
    previous run, run length) over ``size`` pixels. A ``DataFormatError`` (prefixed with
    ``where``) names a non-integer, an odd count, a negative offset, a run of length 0,
    and a run that ends past the last pixel.
    """
    prefix = f"{where}: " if where else ""
    words = text.split()
    try:
        values = np.asarray([int(w) for w in words], np.int64)
    except ValueError:
        bad = next(w for w in words if not re.fullmatch(r"[+-]?\d+", w))
        raise DataFormatError(
            f"{prefix}run-length code has {bad!r}, not an integer, in column 'EncodedPixels'."
        ) from None
    if len(values) % 2:
        raise DataFormatError(
            f"{prefix}run-length code has {len(values)} numbers, not pairs of (offset, length)."
        )
    if len(values) == 0:
        raise DataFormatError(f"{prefix}empty run-length code; '-1' marks an image without.")
    offsets, lengths = values[0::2], values[1::2]
    if (offsets < 0).any() or (lengths < 1).any():
        raise DataFormatError(
            f"{prefix}run-length code has a negative offset or a run of length < 1 "
            f"(pair {int(np.flatnonzero((offsets < 0) | (lengths < 1))[0]) + 1})."
        )
    # Each start is the previous run's end plus the offset.
    ends = np.cumsum(offsets + lengths)
    starts = ends - lengths
    if ends[-1] > size:
        raise DataFormatError(
            f"{prefix}run-length code runs to pixel {int(ends[-1])}, past the last of the "
            f"{size} of the {MASK_FRAME} x {MASK_FRAME} mask."
        )
    return np.stack([starts, lengths], axis=1)


def decode_rle(text: str, height: int = MASK_FRAME, width: int = MASK_FRAME) -> np.ndarray:
    """SIIM's relative, column-major run-length code -> ``(height, width)`` bool mask
    (``-1``: an empty mask)."""
    if text.strip() == NO_PNEUMOTHORAX:
        return np.zeros((height, width), bool)
    flat = runs_to_flat(parse_rle(text, height * width), height * width)
    return flat.reshape(width, height).T


def encode_rle(mask: np.ndarray) -> str:
    """A ``(height, width)`` bool mask -> SIIM's relative, column-major run-length code
    (``-1`` for an empty mask): the inverse of :func:`decode_rle`."""
    flat = np.asarray(mask, bool).T.reshape(-1)
    if not flat.any():
        return NO_PNEUMOTHORAX
    edges = np.diff(np.concatenate([[0], flat.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    offsets = starts - np.concatenate([[0], ends[:-1]])
    pairs = np.stack([offsets, ends - starts], axis=1).reshape(-1)
    return " ".join(str(int(v)) for v in pairs)


def read_rle_csv(path: str | os.PathLike) -> dict[str, list[tuple[int, str]]]:
    """Parses ``train-rle.csv`` (``.gz`` too).

    Returns:
      ``{ImageId: [(line, code), ...]}`` in file order: each row's code stripped
      (``-1`` or a run-length code), an identical duplicate row of an image dropped.

    Raises:
      DataFormatError: a missing column, a row without two fields, a malformed code
        (naming the image and the line), or ``-1`` beside a region for one image.
    """
    rows = csv_rows(path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise DataFormatError(
            f"{path}: empty file, expected the header 'ImageId, EncodedPixels'."
        ) from None
    names = [h.strip() for h in header]
    missing = [c for c in ("ImageId", "EncodedPixels") if c not in names]
    if missing:
        raise DataFormatError(
            f"{path}: missing column {', '.join(map(repr, missing))} in the header "
            f"(found {', '.join(map(repr, header))})."
        )
    image_col, code_col = names.index("ImageId"), names.index("EncodedPixels")
    codes: dict[str, list[tuple[int, str]]] = {}
    duplicates = 0
    for line, row in rows:
        if len(row) != len(header):
            raise DataFormatError(
                f"{path}, line {line}: {len(row)} fields where the header has {len(header)}."
            )
        image, code = row[image_col].strip(), row[code_col].strip()
        where = f"{path}, line {line}, image {image!r}"
        if not image:
            raise DataFormatError(f"{path}, line {line}: empty ImageId.")
        if code != NO_PNEUMOTHORAX:
            parse_rle(code, where=where)
        listed = codes.setdefault(image, [])
        if any(code == c for _, c in listed):
            duplicates += 1
            continue
        if listed and NO_PNEUMOTHORAX in (code, listed[0][1]):
            other = listed[0][0]
            raise DataFormatError(
                f"{where}: '-1' (no pneumothorax) and a region for the same image (lines "
                f"{min(other, line)} and {max(other, line)})."
            )
        listed.append((line, code))
    if duplicates:
        logging.info("%s: %d %s, each read once.", path, duplicates, DUPLICATE_ROWS)
    return codes


def find_dicoms(image_dir: str | os.PathLike) -> dict[str, str]:
    """``{ImageId: path}`` of every ``.dcm`` under ``image_dir``, at any depth
    (``<study UID>/<series UID>/<ImageId>.dcm`` as distributed); the first found, in
    sorted order, where a name repeats."""
    paths: dict[str, str] = {}
    for root, dirs, names in os.walk(image_dir):
        dirs.sort()
        for name in sorted(names):
            stem, ext = os.path.splitext(name)
            if ext.lower() == ".dcm":
                paths.setdefault(stem, os.path.join(root, name))
    return paths


def dicom_metadata(path: str) -> dict:
    """``{"patient_id", "sex", "age", "view"}`` from a DICOM's header (no pixels read):
    ``''`` / -1 where a field is absent or the file cannot be read (prepare reports an
    unreadable image when it decodes it)."""
    header = dicom_header(path) or {"patient_id": "", "sex": "", "age": -1, "view": ""}
    return {k: header[k] for k in ("patient_id", "sex", "age", "view")}


def load(raw_dir: str | os.PathLike, classes: Sequence[str] = CLASSES) -> list[MaskedExample]:
    """Every image of ``train-rle.csv``, in the order of its first row.

    Returns:
      :class:`MaskedExample` s: label 1 and one mask (the union of the image's
      regions, as runs) where the image has a region, label 0 and none for ``-1``.

    Raises:
      FileNotFoundError: no ``train-rle.csv`` in ``raw_dir``.
      DataFormatError: a malformed file (see :func:`read_rle_csv`) or an unknown class.
    """
    raw_dir = os.path.abspath(raw_dir)
    classes = check_classes(classes, CLASSES, "SIIM-ACR Pneumothorax")
    csv_path = find_file(raw_dir, (RLE_FILE,))
    if csv_path is None:
        raise FileNotFoundError(
            f"No {RLE_FILE} (or .gz) in {raw_dir}: not a SIIM-ACR Pneumothorax folder "
            f"(expected {RLE_FILE} and {IMAGE_DIR}/<study>/<series>/<ImageId>.dcm)."
        )
    codes = read_rle_csv(csv_path)
    image_dir = os.path.join(raw_dir, IMAGE_DIR)
    dicoms = find_dicoms(image_dir) if os.path.isdir(image_dir) else {}
    if not dicoms:
        logging.warning("No .dcm under %s: every listed image will be reported missing.", image_dir)
    size = MASK_FRAME * MASK_FRAME
    column = classes.index("Pneumothorax")
    positive, negative = np.zeros(len(classes), np.int32), np.zeros(len(classes), np.int32)
    positive[column] = 1
    positive, negative = read_only(positive), read_only(negative)
    mask = read_only(np.ones(len(classes), np.int32))
    label_of_mask = read_only(np.asarray([column], np.int32))
    examples = []
    for image, rows in codes.items():
        path = dicoms.get(image, os.path.join(image_dir, f"{image}.dcm"))
        meta = dicom_metadata(path)
        regions = [
            parse_rle(code, size, f"{csv_path}, line {line}, image {image!r}")
            for line, code in rows
            if code != NO_PNEUMOTHORAX
        ]
        runs = (read_only(np.concatenate(regions)),) if regions else ()
        examples.append(
            MaskedExample(
                key=image,
                image_path=path,
                patient_id=meta["patient_id"] or image,
                labels=positive if regions else negative,
                mask=mask,
                view=meta["view"],
                sex=meta["sex"],
                age=meta["age"],
                source_split=SOURCE_SPLIT,
                boxes=NO_BOXES,
                box_labels=NO_BOX_LABELS,
                mask_frame=(MASK_FRAME, MASK_FRAME),
                mask_labels=label_of_mask if regions else NO_BOX_LABELS,
                mask_runs=runs,
            )
        )
    if not examples:
        raise DataFormatError(f"{csv_path}: no image listed.")
    return examples


def read_raw(raw_dir: str) -> list[MaskedExample]:
    """Every example of the raw folder with the full class list, for prepare."""
    return load(raw_dir, CLASSES)


SOURCE = prepared_source(
    "siim_pneumothorax",
    CLASSES,
    Prepared(
        builder_name="siim_acr_pneumothorax",
        read_raw=read_raw,
        exporter="chestattn_jax.data.export_siim:SIIM",
    ),
    views=VIEWS,
)
