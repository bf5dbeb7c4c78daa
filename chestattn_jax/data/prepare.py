"""Prepare once: raw NIH / CheXpert files -> a TFDS ArrayRecord data set.

  python -m chestattn_jax.data.prepare --dataset=nih --raw_dir=/data/nih \
      --data_dir=/data/prepared --image_size=224

writes ``DATA_DIR/nih_chest_xray14/224px/1.0.0/`` (``chexpert/224px/1.0.0`` for
CheXpert): one TFDS split ``full`` of ArrayRecord shards with, per image,

- ``image``: ``(S, S, 1)`` uint8 raw pixels, resized once. The aspect ratio is kept: the
  long side becomes S and the short side is padded with black on both sides
  (letterbox), so no anatomy is cropped or stretched. NIH images are square, so
  for them this is a plain resize;
- ``labels`` / ``mask``: ``(k,)`` int32 over the data set's full class list.
  CheXpert's uncertain labels are stored as label 0, mask 0, so that any
  uncertainty policy can be applied at training time (``config.data.uncertainty``);
- ``patient_id``, ``view``, ``sex``, ``age``, ``key`` (file name or CSV path) and
  ``source_split`` (NIH official list or CheXpert csv);
- ``boxes`` ``(n, 4)`` ``[x, y, w, h]`` in stored pixels and ``box_labels`` ``(n,)``
  (NIH's box list, scaled from its 1024-px frame; empty elsewhere).

No TensorFlow is needed. TFDS writes into a temporary ``incomplete.*`` folder and
renames it only when every shard is written, so an interrupted prepare never
leaves a data set that looks complete; leftovers of a killed run are removed at
the next start. Beside the shards, ``chestattn_index.npz`` holds the non-image
fields of every record (for splits and class counts without decoding images).
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import shutil

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from chestattn_jax.data import chexpert, nih
from chestattn_jax.data.classes import CHEXPERT_CLASSES, NIH_CLASSES
from chestattn_jax.data.images import letterbox, letterbox_boxes, load_grayscale
from chestattn_jax.data.raw import DataFormatError, RawExample

NIH_BOX_FRAME = 1024  # NIH's box list is in the coordinates of the 1024 x 1024 PNGs
INDEX_FILE = "chestattn_index.npz"
REPORT_FILE = "chestattn_prepare.json"
ON_BAD_IMAGE = ("error", "skip")
SPLIT = "full"


class _ChestXrayBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A TFDS builder whose examples are :class:`RawExample` s given in Python."""

    VERSION = tfds.core.Version("1.0.0")
    CLASSES: tuple[str, ...] = ()
    box_frame: int | None = None  # fixed frame of the raw box coordinates, if any

    def __init__(
        self,
        *,
        image_size: int = 224,
        examples=None,
        on_bad_image: str = "error",
        num_workers: int = 0,
        **kwargs,
    ):
        if on_bad_image not in ON_BAD_IMAGE:
            raise ValueError(f"Unknown on_bad_image {on_bad_image!r}; expected error or skip.")
        self._examples = examples
        self._on_bad_image = on_bad_image
        self._num_workers = num_workers
        self.image_size = int(image_size)
        self.skipped: list[tuple[str, str]] = []
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
                }
            ),
        )

    def _split_generators(self, dl_manager):
        if self._examples is None:
            raise ValueError("This builder was opened for reading; give examples= to prepare.")
        return {SPLIT: self._generate_examples()}

    def _generate_examples(self):
        work = [(ex, self.image_size, self.box_frame) for ex in self._examples]
        if self._num_workers > 0:
            pool = multiprocessing.get_context("spawn").Pool(self._num_workers)
            results = pool.imap(_encode, work, chunksize=8)
        else:
            pool, results = None, map(_encode, work)
        try:
            for ex, (record, error) in zip(self._examples, results, strict=True):
                if error is None:
                    yield ex.key, record
                elif self._on_bad_image == "skip":
                    self.skipped.append((ex.image_path, error))
                    logging.warning("Skipping %s: %s", ex.image_path, error)
                else:
                    raise DataFormatError(
                        f"{error} (pass --on_bad_image=skip to leave such images out and "
                        "count them)"
                    )
        finally:
            if pool is not None:
                pool.terminate()


class NIHChestXray14(_ChestXrayBuilder, skip_registration=True):
    name = "nih_chest_xray14"
    CLASSES = NIH_CLASSES
    box_frame = NIH_BOX_FRAME


class CheXpert(_ChestXrayBuilder, skip_registration=True):
    name = "chexpert"
    CLASSES = CHEXPERT_CLASSES


BUILDERS = {"nih": NIHChestXray14, "chexpert": CheXpert}


def _encode(args):
    """One raw example -> (TFDS record, None) or (None, error message naming the file)."""
    ex, size, box_frame = args
    try:
        image = load_grayscale(ex.image_path)
    except (FileNotFoundError, DataFormatError) as e:
        return None, str(e)
    h, w = image.shape
    boxes = np.asarray(ex.boxes, np.float32).reshape(-1, 4)
    if boxes.size:
        # Box coordinates live in a fixed frame (NIH: 1024 x 1024), whatever size the
        # stored file has: first map them onto this file, then letterbox them with it.
        fh, fw = (box_frame, box_frame) if box_frame else (h, w)
        boxes = boxes * np.asarray([w / fw, h / fh, w / fw, h / fh], np.float32)
        boxes = letterbox_boxes(boxes, h, w, size)
    record = {
        "image": letterbox(image, size)[..., None],
        "labels": np.asarray(ex.labels, np.int32),
        "mask": np.asarray(ex.mask, np.int32),
        "key": ex.key,
        "patient_id": ex.patient_id,
        "view": ex.view,
        "sex": ex.sex,
        "age": np.int32(ex.age),
        "source_split": ex.source_split,
        "boxes": boxes.astype(np.float32),
        "box_labels": np.asarray(ex.box_labels, np.int32).reshape(-1),
    }
    return record, None


def open_builder(dataset: str, data_dir: str, image_size: int, **kwargs) -> _ChestXrayBuilder:
    if dataset not in BUILDERS:
        raise ValueError(f"Unknown dataset {dataset!r}; expected one of {', '.join(BUILDERS)}.")
    return BUILDERS[dataset](data_dir=data_dir, image_size=image_size, **kwargs)


def _remove_stale_incomplete(builder) -> None:
    """Deletes ``incomplete.*`` folders that a killed prepare left (TFDS keeps them)."""
    parent = os.path.dirname(os.fspath(builder.data_dir))
    if not os.path.isdir(parent):
        return
    for name in os.listdir(parent):
        if name.startswith("incomplete."):
            logging.info("Removing the leftovers of an interrupted prepare: %s", name)
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def read_raw(
    dataset: str, raw_dir: str, *, nih_views=("PA", "AP"), frontal_only: bool = True
) -> list[RawExample]:
    """Every example of a raw layout with the data set's full class list."""
    if not os.path.isdir(raw_dir):
        raise FileNotFoundError(f"--raw_dir {raw_dir!r} is not a directory.")
    if dataset == "nih":
        return nih.load(raw_dir, NIH_CLASSES, views=tuple(nih_views))
    # Uncertain labels are kept apart (mask 0) so the policy can be chosen at training time.
    return chexpert.load(raw_dir, CHEXPERT_CLASSES, uncertainty="ignore", frontal_only=frontal_only)


def prepare(
    dataset: str,
    raw_dir: str,
    data_dir: str,
    image_size: int = 224,
    *,
    on_bad_image: str = "error",
    num_workers: int = 0,
    nih_views=("PA", "AP"),
    frontal_only: bool = True,
    examples=None,
) -> str:
    """Builds the TFDS data set and its index; returns the prepared version folder."""
    if examples is None:
        examples = read_raw(dataset, raw_dir, nih_views=nih_views, frontal_only=frontal_only)
    if not examples:
        raise DataFormatError(f"No examples found in {raw_dir} for dataset {dataset!r}.")
    builder = open_builder(
        dataset,
        data_dir,
        image_size,
        examples=examples,
        on_bad_image=on_bad_image,
        num_workers=num_workers,
    )
    if builder.is_prepared():
        logging.info("%s is already prepared; delete it to prepare again.", builder.data_dir)
    else:
        _remove_stale_incomplete(builder)
        builder.download_and_prepare()
        report = {
            "examples_read": len(examples),
            "examples_written": len(examples) - len(builder.skipped),
            "skipped": [{"file": f, "error": e} for f, e in builder.skipped],
        }
        with open(os.path.join(builder.data_dir, REPORT_FILE), "w") as f:
            json.dump(report, f, indent=2)
        if builder.skipped:
            logging.warning(
                "Skipped %d of %d images (listed in %s).",
                len(builder.skipped),
                len(examples),
                REPORT_FILE,
            )
    load_index(builder)  # writes the index now rather than at the first training run
    return os.fspath(builder.data_dir)


def load_index(builder) -> dict:
    """The non-image fields of every record of split ``full``, as arrays.

    Computed once by reading the records without decoding their images, then
    cached in the version folder (written atomically; local or ``gs://``).
    """
    path = epath.Path(builder.data_dir) / INDEX_FILE
    fields = ("labels", "mask", "patient_id", "view", "sex", "age", "source_split", "key")
    if path.exists():
        with np.load(io.BytesIO(path.read_bytes())) as z:
            if "num_boxes" in z.files:  # else an index from before boxes were counted
                return {k: z[k] for k in z.files}
    source = builder.as_data_source(SPLIT, decoders={"image": tfds.decode.SkipDecoding()})
    rows = {f: [] for f in (*fields, "num_boxes")}
    for i in range(len(source)):
        rec = source[i]
        for f in fields:
            v = rec[f]
            rows[f].append(v.decode() if isinstance(v, bytes) else v)
        rows["num_boxes"].append(len(rec["box_labels"]))
    index = {f: np.asarray(v) for f, v in rows.items()}
    buffer = io.BytesIO()
    np.savez(buffer, **index)
    tmp = path.parent / (INDEX_FILE + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.rename(path)
    return index


def main(argv):
    del argv
    from absl import flags

    f = flags.FLAGS
    path = prepare(
        f.dataset,
        f.raw_dir,
        f.data_dir,
        f.image_size,
        on_bad_image=f.on_bad_image,
        num_workers=f.num_workers,
        nih_views=f.nih_views,
        frontal_only=f.frontal_only,
    )
    print(f"Prepared {path}")
    print(
        f"Train with: --config.data.data_dir={f.data_dir} --config.data.image_size={f.image_size}"
    )


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_enum("dataset", None, list(BUILDERS), "Which raw layout to read.")
    flags.DEFINE_string("raw_dir", None, "Folder of the raw data set as distributed.")
    flags.DEFINE_string("data_dir", None, "Where to write the TFDS data set.")
    flags.DEFINE_integer("image_size", 224, "Side of the stored square images in pixels.")
    flags.DEFINE_enum(
        "on_bad_image",
        "error",
        list(ON_BAD_IMAGE),
        "error: stop at an unreadable image; skip: leave it out and count it.",
    )
    flags.DEFINE_integer(
        "num_workers",
        max(1, (os.cpu_count() or 1) - 1),
        "Processes decoding and resizing images (0: in this process).",
    )
    flags.DEFINE_list("nih_views", ["PA", "AP"], "NIH view positions to keep.")
    flags.DEFINE_bool("frontal_only", True, "CheXpert: keep frontal images only.")
    flags.mark_flags_as_required(["dataset", "raw_dir", "data_dir"])
    app.run(main)
