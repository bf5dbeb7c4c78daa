"""What the raw-layout readers (:mod:`.nih`, :mod:`.chexpert`) share.

A reader turns a data set as distributed (CSV files and an image tree) into a
list of :class:`RawExample`, one per image, with labels already in the order of
the requested classes. Readers never open images: decoding, resizing and the
report of missing or unreadable files belong to the prepare step.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gzip
import io
import os
import zlib
from collections.abc import Iterator, Sequence

import numpy as np


class DataFormatError(ValueError):
    """A raw file (or the class list asked of it) is not in the expected format.

    The message names the file and, where it applies, the line, the column or
    field, and the offending value or label.
    """


@dataclasses.dataclass(frozen=True)
class RawExample:
    """One image of a raw data set with its labels and metadata.

    Attributes:
      key: unique id; NIH ``Image Index`` (``00000001_000.png``), CheXpert the
        CSV ``Path`` value.
      image_path: absolute path of the image file; it may not exist.
      patient_id: NIH ``Patient ID`` text (``'1'``); CheXpert ``patient00001``.
      labels: ``(k,)`` int32 in {0, 1}, in the order of the reader's ``classes``.
      mask: ``(k,)`` int32 in {0, 1}; 0 where the label is to be ignored
        (an uncertain CheXpert label under the ``ignore`` policy).
      view: NIH ``PA``/``AP``; CheXpert the ``AP/PA`` value (``AP``, ``PA``,
        ``LL``, ...) or ``Lateral`` for a lateral image without one.
      sex: ``M``, ``F`` or ``''`` (unknown).
      age: years, -1 if unknown.
      source_split: the split the distribution puts the image in: NIH
        ``train_val``/``test`` (``''`` without the official lists), CheXpert
        ``train``/``valid``.
      boxes: ``(n, 4)`` float32 ``[x, y, w, h]`` in the pixels of the image as
        distributed (NIH: 1024 px); ``(0, 4)`` when none.
      box_labels: ``(n,)`` int32 index into ``classes`` of each box.

    The arrays are read-only: readers share one array between the examples
    that have equal labels (or no boxes).
    """

    key: str
    image_path: str
    patient_id: str
    labels: np.ndarray
    mask: np.ndarray
    view: str
    sex: str
    age: int
    source_split: str
    boxes: np.ndarray
    box_labels: np.ndarray


def read_only(a: np.ndarray) -> np.ndarray:
    """``a``, marked read-only so that examples sharing it cannot change each other."""
    a.flags.writeable = False
    return a


# Most examples have no boxes; they share these (read-only, so sharing is safe).
NO_BOXES = read_only(np.zeros((0, 4), np.float32))
NO_BOX_LABELS = read_only(np.zeros((0,), np.int32))


def positive_counts(examples: Sequence[RawExample]) -> np.ndarray:
    """``(k,)`` int64 number of positive labels per class over ``examples``."""
    if not examples:
        raise ValueError("positive_counts of an empty list of examples: the class count is unknown")
    return np.sum([e.labels for e in examples], axis=0, dtype=np.int64)


def check_classes(classes: Sequence[str], known: Sequence[str], dataset: str) -> tuple[str, ...]:
    """``classes`` as a tuple, after checking each is one of ``known`` and none repeats."""
    classes = tuple(classes)
    if not classes:
        raise DataFormatError(f"No classes asked of the {dataset} reader.")
    unknown = [c for c in classes if c not in known]
    if unknown:
        raise DataFormatError(
            f"{dataset} has no class {', '.join(map(repr, unknown))}; "
            f"its classes are {', '.join(known)}."
        )
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise DataFormatError(f"Class {', '.join(map(repr, repeated))} is asked for twice.")
    return classes


def open_text(path: str | os.PathLike) -> io.TextIOBase:
    """Opens a text file for the csv module, gunzipping it when the name ends in ``.gz``.

    Read it inside :func:`text_errors`, which turns a non-UTF-8 byte or a damaged
    ``.gz`` into a :class:`DataFormatError` naming the file and the line.
    """
    path = os.fspath(path)
    # utf-8-sig drops a byte-order mark, which would otherwise become part of
    # the first column's name.
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


@contextlib.contextmanager
def text_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turns the decoding errors of reading ``path`` into a :class:`DataFormatError`.

    Python's own errors name no file, and a ``UnicodeDecodeError`` gives the
    position in an 8 KB read buffer instead of the line.
    """
    try:
        yield
    except UnicodeDecodeError as e:
        raise _not_utf8(path, e) from e
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataFormatError(
            f"{path}: not a readable gzip file ({type(e).__name__}: {e}); it may be truncated. "
            "Copy or extract it again."
        ) from e


def _not_utf8(path, error: UnicodeDecodeError) -> DataFormatError:
    """The line, column and value of the first byte of ``path`` that is not UTF-8."""
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for number, line in enumerate(f, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as e:
                    if number == 1 and line[:2] in (b"\xff\xfe", b"\xfe\xff"):
                        return DataFormatError(
                            f"{path}: the file is UTF-16 (it starts with a UTF-16 byte-order "
                            "mark), not UTF-8. Save it as UTF-8 (e.g. with iconv -f UTF-16 -t "
                            "UTF-8)."
                        )
                    byte = line[e.start]
                    guess = bytes([byte]).decode("cp1252", errors="replace")
                    return DataFormatError(
                        f"{path}, line {number}, column {e.start + 1}: byte 0x{byte:02X} is not "
                        f"valid UTF-8 ({guess!r} if the file is Windows-1252 or Latin-1). Save the "
                        "file as UTF-8 (e.g. with iconv -f WINDOWS-1252 -t UTF-8, given the file's "
                        "real encoding)."
                    )
    except (OSError, EOFError, zlib.error):
        pass
    byte = error.object[error.start] if error.start < len(error.object) else None
    value = "" if byte is None else f" byte 0x{byte:02X}"
    return DataFormatError(f"{path}:{value} is not UTF-8 ({error}). Save the file as UTF-8.")


def csv_rows(path: str | os.PathLike) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of each non-blank row of a CSV file, header included."""
    with open_text(path) as f, text_errors(path):
        reader = csv.reader(f)
        first = 1  # the line the row being read starts on
        try:
            for row in reader:
                if row:
                    yield reader.line_num, row
                first = reader.line_num + 1
        except csv.Error as e:
            if "field limit" in str(e):  # a quote that opens and never closes
                raise DataFormatError(
                    f'{path}, line {first}: a field opens a quote (") that is still open at '
                    f"line {reader.line_num} ({e})."
                ) from e
            raise DataFormatError(f"{path}, line {reader.line_num}: {e}.") from e


def text_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line of a text file (``.gz`` too), newline removed."""
    with open_text(path) as f, text_errors(path):
        for number, line in enumerate(f, start=1):
            yield number, line.rstrip("\r\n")


def column_index(header: Sequence[str], required: Sequence[str], path) -> dict[str, int]:
    """``{name: index}`` of each ``required`` column in ``header``; a missing one is an error."""
    index = {name.strip(): i for i, name in enumerate(header)}
    missing = [name for name in required if name not in index]
    if missing:
        raise DataFormatError(
            f"{path}: missing column {', '.join(map(repr, missing))} in the header "
            f"(found {', '.join(map(repr, header))})."
        )
    return {name: index[name] for name in required}


def find_file(directory: str | os.PathLike, names: Sequence[str]) -> str | None:
    """The first of ``names`` (each also tried with ``.gz``) that exists in ``directory``."""
    for name in names:
        for candidate in (name, name + ".gz"):
            path = os.path.join(directory, candidate)
            if os.path.isfile(path):
                return path
    return None
