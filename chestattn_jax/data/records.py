"""The prepared-record format: what ``python -m chestattn_jax.data.prepare`` writes and
the sources of :mod:`chestattn_jax.data.record_reader` read.

A prepared data set is ``DATA_DIR/<builder name>/<S>px/<version>/`` (the builder name is
the data set's, :attr:`chestattn_jax.data.source.Prepared.builder_name`, e.g.
``nih_chest_xray14``), a TFDS data set of one split ``full`` (:data:`SPLIT`) of ArrayRecord
shards, with per image

- ``image``: ``(S, S, 1)`` uint8 raw pixels (letterboxed to S);
- ``labels`` / ``mask``: ``(k,)`` int32 over the data set's full class list (uncertain:
  label 0, mask 0);
- ``key``, ``patient_id``, ``view``, ``sex``, ``age``, ``source_split``;
- ``boxes`` ``(n, 4)`` ``[x, y, w, h]`` in stored pixels and ``box_labels`` ``(n,)``;
- ``truth_masks`` ``(m, S, S)`` uint8 (0 / 1) localisation masks, letterboxed with the
  image, and ``truth_mask_labels`` ``(m,)`` (SIIM's pneumothorax; ``m = 0`` elsewhere).

A folder prepared in another record format (:data:`VERSION`; 1.0.0 had no masks) is not
read: :func:`older_versions` finds it, so that the reader can say to prepare again.

Beside the shards: :data:`INDEX_FILE`, the non-image fields of every record (for splits
and class counts without decoding images; :func:`load_index`), and :data:`REPORT_FILE`,
what the data set was prepared from, with the ``build_id`` of this build
(:func:`read_report`, :func:`build_id`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import zipfile

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from chestattn_jax import files
from chestattn_jax.data import sources
from chestattn_jax.data.raw import DataFormatError

INDEX_FILE = "chestattn_index.npz"
# The per-record counts the index holds beside the fields.
COUNTS = ("num_boxes", "num_masks")
REPORT_FILE = "chestattn_prepare.json"
SPLIT = "full"
# 2.0.0: truth_masks and truth_mask_labels, and num_masks in the index.
VERSION = "2.0.0"


class RecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """The TFDS builder of a prepared data set at one image size: its features (the record
    format) and its folder. Opened as it is, it reads; the writer
    (:mod:`chestattn_jax.data.prepare`) subclasses it to generate the records. One class
    per data set: :func:`builder_class`."""

    VERSION = tfds.core.Version(VERSION)
    DATASET = ""
    CLASSES: tuple[str, ...] = ()

    def __init__(self, *, image_size: int = 224, **kwargs):
        self.image_size = int(image_size)
        config = tfds.core.BuilderConfig(name=f"{self.image_size}px")
        super().__init__(config=config, file_format="array_record", **kwargs)

    def _info(self):
        k = len(self.CLASSES)
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{self.name} at {self.image_size} px, classes: {', '.join(self.CLASSES)}",
            features=tfds.features.FeaturesDict(
                {
                    # Raw pixels, not PNG: decoding a 224-px PNG costs ~0.6 ms, more
                    # than the rest of the training pipeline; raw bytes decode ~4x
                    # faster for ~1.6x the disk. (A fully known shape would make TFDS
                    # encode with TensorFlow.)
                    "image": tfds.features.Tensor(
                        shape=(None, None, 1), dtype=np.uint8, encoding="bytes"
                    ),
                    "labels": tfds.features.Tensor(shape=(k,), dtype=np.int32),
                    "mask": tfds.features.Tensor(shape=(k,), dtype=np.int32),
                    "key": tfds.features.Text(),
                    "patient_id": tfds.features.Text(),
                    "view": tfds.features.Text(),
                    "sex": tfds.features.Text(),
                    "age": tfds.features.Scalar(dtype=np.int32),
                    "source_split": tfds.features.Text(),
                    "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
                    "box_labels": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                    # Masks compress to almost nothing: zlib, not raw bytes.
                    "truth_masks": tfds.features.Tensor(
                        shape=(None, None, None), dtype=np.uint8, encoding="zlib"
                    ),
                    "truth_mask_labels": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        raise ValueError("This builder was opened for reading; give examples= to prepare.")

    def _generate_examples(self):
        raise ValueError("This builder was opened for reading; give examples= to prepare.")


@functools.cache
def builder_class(dataset: str, base: type[RecordBuilder] = RecordBuilder) -> type:
    """The builder (a subclass of ``base``) of the prepared data set ``dataset``: its TFDS
    name (the folder) and its classes, from the registry."""
    source = sources.get_prepared(dataset)

    class DatasetRecords(base, skip_registration=True):
        DATASET = dataset  # config.data.name
        name = source.prepared.builder_name
        CLASSES = source.classes

    DatasetRecords.__name__ = DatasetRecords.__qualname__ = f"{base.__name__}_{dataset}"
    return DatasetRecords


def open_builder(
    dataset: str,
    data_dir: str,
    image_size: int,
    base: type[RecordBuilder] = RecordBuilder,
    **kwargs,
) -> RecordBuilder:
    """The builder of ``dataset`` at ``image_size`` in ``data_dir`` (``base``: the
    writer's, to prepare it, with its ``kwargs``)."""
    return builder_class(dataset, base)(data_dir=data_dir, image_size=image_size, **kwargs)


def version_dir(dataset: str, data_dir: str, image_size: int) -> str:
    """``DATA_DIR/<name>/<size>px/<version>``, where prepare writes ``dataset``."""
    name = sources.get_prepared(dataset).prepared.builder_name
    return os.path.join(os.fspath(data_dir), name, f"{int(image_size)}px", VERSION)


def older_versions(dataset: str, data_dir: str, image_size: int) -> list[str]:
    """The record-format versions other than :data:`VERSION` that ``data_dir`` holds for
    ``dataset`` at ``image_size`` (folders beside :func:`version_dir`'s), sorted."""
    parent = epath.Path(version_dir(dataset, data_dir, image_size)).parent
    if not parent.exists():
        return []
    return sorted(
        p.name
        for p in parent.iterdir()
        if p.name != VERSION and p.name[:1].isdigit() and (p / "dataset_info.json").exists()
    )


def read_report(version: str) -> dict:
    """``chestattn_prepare.json`` of a version folder; ``{}`` if it has none."""
    path = epath.Path(version) / REPORT_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataFormatError(f"{path} is damaged ({e}); prepare again with --overwrite.") from e


def build_id(version: str) -> str | None:
    """Names the one build of the data set that the version folder ``version`` holds now.

    The ``build_id`` of its ``chestattn_prepare.json`` (a new one per build, also when
    ``--overwrite`` prepares the same inputs again); for a data set prepared before
    builds had one, a hash of that record and ``dataset_info.json``. None while the
    folder holds no complete data set (absent while ``--overwrite`` builds). Reads two
    small files, local or ``gs://``.
    """
    folder = epath.Path(version)
    try:
        report = (folder / REPORT_FILE).read_bytes() if (folder / REPORT_FILE).exists() else b""
        try:
            found = json.loads(report).get("build_id") if report else None
        except (ValueError, AttributeError):  # a damaged record: hashed below as an old one
            found = None
        if found:
            return str(found)
        if not (folder / "dataset_info.json").exists():
            return None
        info = (folder / "dataset_info.json").read_bytes()
    except FileNotFoundError:  # moved aside between the check and the read
        return None
    return "sha256:" + hashlib.sha256(info + b"\0" + report).hexdigest()


def load_index(builder) -> dict:
    """The non-image fields of every record of split ``full``, as arrays, and the number
    of boxes and of truth masks of each (``num_boxes``, ``num_masks``).

    Computed once by reading the records without decoding their images, then
    cached in the version folder (written atomically; local or ``gs://``).
    """
    path = epath.Path(builder.data_dir) / INDEX_FILE
    fields = ("labels", "mask", "patient_id", "view", "sex", "age", "source_split", "key")
    if path.exists():
        try:
            index = files.read_npz(path)
            missing = [f for f in (*fields, *COUNTS) if f not in index]
            if missing:
                raise ValueError(f"it has no array {', '.join(missing)}")
            return index
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
            # Only a cache of the records: build it again.
            logging.warning("%s is damaged (%s); reading the records again.", path, e)
    skip = tfds.decode.SkipDecoding()
    source = builder.as_data_source(SPLIT, decoders={"image": skip, "truth_masks": skip})
    rows = {f: [] for f in (*fields, *COUNTS)}
    for i in range(len(source)):
        rec = source[i]
        for f in fields:
            v = rec[f]
            rows[f].append(v.decode() if isinstance(v, bytes) else v)
        rows["num_boxes"].append(len(rec["box_labels"]))
        rows["num_masks"].append(len(rec["truth_mask_labels"]))
    index = {f: np.asarray(v) for f, v in rows.items()}
    files.write_npz(path, **index)
    return index
