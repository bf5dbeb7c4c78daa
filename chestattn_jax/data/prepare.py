"""Prepare once: raw NIH / CheXpert files -> a TFDS ArrayRecord data set.

  python -m chestattn_jax.data.prepare --dataset=nih --raw_dir=/data/nih \
      --data_dir=/data/prepared --image_size=224

writes ``DATA_DIR/nih_chest_xray14/224px/1.0.0/`` (``chexpert/224px/1.0.0`` for
CheXpert), in the record format of :mod:`chestattn_jax.data.records`: one TFDS split
``full`` of ArrayRecord shards with, per image,

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
  (NIH's box list, scaled from its 1024-px frame; empty elsewhere);
- ``truth_masks`` ``(m, S, S)`` uint8 and ``truth_mask_labels`` ``(m,)``: the masks of an
  example that has some (SIIM's pneumothorax: an example with ``truth_masks()``, such as
  :class:`chestattn_jax.data.siim_pneumothorax.MaskedExample`), mapped from their frame
  onto the image and letterboxed with it (:func:`stored_masks`); none elsewhere.

No TensorFlow is needed. TFDS writes into a temporary ``incomplete.*`` folder and
renames it only when every shard is written, so an interrupted prepare never
leaves a data set that looks complete; leftovers of a killed run are removed at
the next build. Beside the shards, ``chestattn_index.npz`` holds the non-image
fields of every record (for splits and class counts without decoding images),
and ``chestattn_prepare.json`` what the data set was prepared from: the raw
folder, the options, the number of examples read and a fingerprint of them (see
:func:`inputs_fingerprint`), the images left out under ``--on_bad_image=skip``, and
a ``build_id`` of its own (:func:`chestattn_jax.data.records.build_id`).

Preparing into a folder that already holds the version folder compares that
record with the new inputs: the same inputs and options reuse it (nothing is
rebuilt, and the command says so); anything else is refused, naming what differs,
unless ``--overwrite`` is given. ``--overwrite`` moves the old version folder
aside, builds, and deletes the old one only once the new one is complete; a
failed build puts it back (a killed one, at the next prepare). A training run
that reads the data set meanwhile reads the build it opened to the end where it
has opened it, and stops with one message where it opens it afterwards
(:mod:`chestattn_jax.data.record_reader`): prepare into another ``--data_dir`` while
runs read one.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import uuid
from concurrent import futures

import numpy as np
from absl import logging
from etils import epath
from PIL import Image

from chestattn_jax import config_fields, files
from chestattn_jax.data import records, sources
from chestattn_jax.data.images import letterbox, letterbox_boxes, load_grayscale
from chestattn_jax.data.raw import DataFormatError, RawExample
from chestattn_jax.data.records import REPORT_FILE, SPLIT, load_index, read_report, version_dir

ON_BAD_IMAGE = ("error", "skip")
# A version folder moved aside by --overwrite: ``replaced.<id>_1.0.0`` beside it.
ASIDE_PREFIX = "replaced."


class WorkerDied(RuntimeError):
    """A process decoding images for prepare died before it was done."""


class DatasetConflictError(ValueError):
    """The data set folder already holds a data set prepared from other inputs or options."""


class ExampleWriter(records.RecordBuilder, skip_registration=True):
    """The builder that writes the records of :class:`RawExample` s given in Python (one
    class per data set: ``records.builder_class(dataset, ExampleWriter)``)."""

    def __init__(
        self,
        *,
        examples=None,
        on_bad_image: str = "error",
        num_workers: int = 0,
        record: dict | None = None,
        **kwargs,
    ):
        if on_bad_image not in ON_BAD_IMAGE:
            raise ValueError(f"Unknown on_bad_image {on_bad_image!r}; expected error or skip.")
        self._examples = examples
        self._record = record
        self._on_bad_image = on_bad_image
        self._num_workers = num_workers
        self.skipped: list[tuple[str, str]] = []
        super().__init__(**kwargs)
        # The fixed frame of the raw box coordinates, if any.
        self.box_frame = sources.get_prepared(self.DATASET).prepared.box_frame

    def _split_generators(self, dl_manager):
        if self._examples is None:
            raise ValueError("This builder was opened for reading; give examples= to prepare.")
        return {SPLIT: self._generate_examples()}

    def _download_and_prepare(self, dl_manager, download_config):
        super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)
        if self._record is not None:
            # data_dir is TFDS's incomplete.* folder here, so the record appears with the
            # shards, in one rename: a version folder never lacks its record.
            report = {
                **self._record,
                # This build's own name: a run tells by it whether the folder still holds
                # the data set it opened (build_id), whatever the inputs were.
                "build_id": uuid.uuid4().hex,
                "examples_written": len(self._examples) - len(self.skipped),
                "skipped": [{"file": f, "error": e} for f, e in self.skipped],
            }
            files.write_bytes(
                epath.Path(self.data_dir) / REPORT_FILE, json.dumps(report, indent=2).encode()
            )

    def _generate_examples(self):
        work = [(ex, self.image_size, self.box_frame) for ex in self._examples]
        if self._num_workers > 0:
            # Not multiprocessing.Pool: its imap waits forever for the images of a worker
            # that died (the out-of-memory killer); an executor's map raises instead.
            pool = futures.ProcessPoolExecutor(
                self._num_workers, mp_context=multiprocessing.get_context("spawn")
            )
            results = pool.map(_encode, work, chunksize=8)
        else:
            pool, results = None, map(_encode, work)
        try:
            for ex, (record, error) in zip(self._examples, _alive(results), strict=True):
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
                pool.shutdown(wait=False, cancel_futures=True)


def _alive(results):
    """``results`` of the worker processes, or :class:`WorkerDied` if one of them died."""
    try:
        yield from results
    except futures.BrokenExecutor as e:  # BrokenProcessPool
        raise WorkerDied(
            "A prepare worker process died while decoding images (killed from outside, or by "
            "the system for want of memory); nothing was prepared. Run again, with fewer "
            "--num_workers if memory is short."
        ) from e


def _encode(args):
    """One raw example -> (TFDS record, None) or (None, error message naming the file).

    Any error of one file is its own (a decoder's, a degenerate size, a permission):
    it must not stop the others, and its message names the file.
    """
    ex, size, box_frame = args
    try:
        return _tfds_example(ex, size, box_frame), None
    except Exception as e:  # not KeyboardInterrupt / SystemExit
        message = str(e)
        if ex.image_path in message:
            return None, message
        if isinstance(e, DataFormatError):
            return None, f"Cannot store image {ex.image_path}: {message}"
        return None, f"Cannot store image {ex.image_path}: {type(e).__name__}: {message}"


def _tfds_example(ex: RawExample, size: int, box_frame: int | None) -> dict:
    image = load_grayscale(ex.image_path)
    h, w = image.shape
    boxes = np.asarray(ex.boxes, np.float32).reshape(-1, 4)
    if boxes.size:
        # Box coordinates live in a fixed frame (NIH: 1024 x 1024), whatever size the
        # stored file has: first map them onto this file, then letterbox them with it.
        fh, fw = (box_frame, box_frame) if box_frame else (h, w)
        boxes = boxes * np.asarray([w / fw, h / fh, w / fw, h / fh], np.float32)
        boxes = letterbox_boxes(boxes, h, w, size)
    masks, mask_labels = stored_masks(ex, h, w, size)
    return {
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
        "truth_masks": masks,
        "truth_mask_labels": mask_labels,
    }


def stored_masks(ex, height: int, width: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``((m, size, size) uint8, (m,) int32)``: the truth masks of ``ex`` (its
    ``truth_masks()`` in its ``mask_frame``; none without) as stored with its
    ``(height, width)`` image: resized onto the image (nearest neighbour) where the frame
    differs, then letterboxed exactly as the image is, a stored pixel in the mask where
    at least half of it was."""
    if not hasattr(ex, "truth_masks") or not len(ex.mask_labels):
        return np.zeros((0, size, size), np.uint8), np.zeros((0,), np.int32)
    out = []
    for m in ex.truth_masks():
        m = m.astype(np.uint8) * 255
        if m.shape != (height, width):
            m = np.asarray(Image.fromarray(m).resize((width, height), Image.Resampling.NEAREST))
        out.append((letterbox(m, size) >= 128).astype(np.uint8))
    return np.stack(out), np.asarray(ex.mask_labels, np.int32).reshape(-1)


def _remove_stale_incomplete(builder) -> None:
    """Deletes ``incomplete.*`` folders that a killed prepare left (TFDS keeps them)."""
    parent = os.path.dirname(os.fspath(builder.data_dir))
    if not os.path.isdir(parent):
        return
    for name in os.listdir(parent):
        if name.startswith("incomplete."):
            logging.info("Removing the leftovers of an interrupted prepare: %s", name)
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def _set_aside(version: str) -> list[str]:
    """The version folders that an ``--overwrite`` moved aside beside ``version``."""
    parent, name = os.path.split(version)
    if not os.path.isdir(parent):
        return []
    return sorted(
        os.path.join(parent, n)
        for n in os.listdir(parent)
        if n.startswith(ASIDE_PREFIX) and n.endswith(f"_{name}")
    )


def _restore_interrupted_overwrite(version: str) -> None:
    """Puts back a version folder that a killed ``--overwrite`` had moved aside."""
    aside = _set_aside(version)
    if aside and not os.path.exists(version):
        logging.warning(
            "Restoring %s, which an interrupted --overwrite had moved aside to %s.",
            version,
            aside[-1],
        )
        os.rename(aside[-1], version)


def read_raw(dataset: str, raw_dir: str, **options) -> list[RawExample]:
    """Every example of a raw layout with the data set's full class list (``options``:
    the data set's prepare options, :attr:`chestattn_jax.data.source.Prepared.options`)."""
    read = sources.get_prepared(dataset).prepared.read_raw
    if not os.path.isdir(raw_dir):
        raise FileNotFoundError(f"--raw_dir {raw_dir!r} is not a directory.")
    if not os.access(raw_dir, os.R_OK | os.X_OK):
        raise PermissionError(f"--raw_dir {raw_dir!r} cannot be read (permissions).")
    return read(raw_dir, **options)


def prepare_options(dataset: str, options: dict) -> dict:
    """``options`` (keyword arguments of :func:`prepare`) as the data set's reader takes
    them: each of its own options, given or at its default. A ``TypeError`` names one
    that it does not take."""
    own = {o.name: o.default for o in sources.get_prepared(dataset).prepared.options}
    unknown = sorted(set(options) - set(own))
    if unknown:
        raise TypeError(
            f"--dataset={dataset} takes no option {', '.join(unknown)}; its options are "
            f"{', '.join(own) or 'none'}."
        )
    return {**own, **options}


def recorded_options(dataset: str, options: dict, on_bad_image: str) -> dict:
    """The options that shape a prepared ``dataset``, as its record holds them."""
    own = sources.get_prepared(dataset).prepared.options
    return {"on_bad_image": on_bad_image, **{o.name: o.recorded(options[o.name]) for o in own}}


def inputs_fingerprint(examples, raw_dir: str = "") -> str:
    """``sha256:<hex>`` over every example's fields and image file size, in order.

    Hashes the key, the image path (relative to ``raw_dir`` when given, so the
    fingerprint does not depend on where the folder is), labels, mask, patient,
    view, sex, age, source split, boxes, box labels and the size in bytes of the
    image file (-1 if missing); for an example with truth masks, their frame, labels
    and a hash of their runs. Reads no image: about 1 s for NIH's 112k images.
    """
    root = os.path.abspath(raw_dir) if raw_dir else None
    h = hashlib.sha256()
    for ex in examples:
        path = os.path.relpath(ex.image_path, root) if root else ex.image_path
        try:
            nbytes = os.stat(ex.image_path).st_size
        except OSError:
            nbytes = -1
        fields = (
            ex.key,
            path.replace(os.sep, "/"),
            np.asarray(ex.labels).tolist(),
            np.asarray(ex.mask).tolist(),
            ex.patient_id,
            ex.view,
            ex.sex,
            int(ex.age),
            ex.source_split,
            np.asarray(ex.boxes, np.float32).reshape(-1, 4).tolist(),
            np.asarray(ex.box_labels).reshape(-1).tolist(),
            nbytes,
        )
        if getattr(ex, "mask_runs", ()):  # masks (SIIM), as runs: hashed, not decoded
            runs = hashlib.sha256(b"".join(np.asarray(r, "<i8").tobytes() for r in ex.mask_runs))
            fields += (list(ex.mask_frame), np.asarray(ex.mask_labels).tolist(), runs.hexdigest())
        h.update(json.dumps(fields, separators=(",", ":")).encode())
        h.update(b"\n")
    return f"sha256:{h.hexdigest()}"


def _differences(old: dict, new: dict) -> list[str]:
    """What differs between the record of a prepared data set and a new one."""
    out = []
    old_dir, new_dir = old.get("raw_dir", ""), new["raw_dir"]
    if old_dir != new_dir and not (
        old_dir and new_dir and os.path.realpath(old_dir) == os.path.realpath(new_dir)
    ):
        out.append(f"raw folder: {old_dir or '(examples given in Python)'} -> {new_dir}")
    for name, (a, b) in config_fields.differences(old.get("options", {}), new["options"]).items():
        # With every image readable, error and skip build the same data set.
        if not (name == "on_bad_image" and not old.get("skipped")):
            out.append(f"option {name}: {a} -> {b}")
    if old.get("examples_read") != new["examples_read"]:
        out.append(f"examples read: {old.get('examples_read')} -> {new['examples_read']}")
    if old.get("fingerprint") != new["fingerprint"]:
        out.append(
            f"fingerprint of the examples (keys, labels, metadata, image file sizes): "
            f"{old.get('fingerprint')} -> {new['fingerprint']}"
        )
    return out


def check_local_folders(raw_dir: str, data_dir: str) -> None:
    """Refuses a bucket (``gs://``) for either folder, with the way round it.

    array_record writes its shards through local files only (it reads ``gs://``, but
    its writer fails on the first shard), and the raw readers list and open files on
    disk. So preparing happens on a local disk, and the prepared folder is copied up;
    training reads it from the bucket (docs/tpu.md).
    """
    if data_dir and not files.is_local(data_dir):
        raise ValueError(
            f"--data_dir={data_dir}: prepare writes to a local folder only (array_record "
            "cannot write its shards to a bucket). Prepare to a local --data_dir, then copy "
            f"that folder up: gcloud storage rsync --recursive LOCAL_DATA_DIR {data_dir} "
            "(docs/tpu.md). Training reads it from there."
        )
    if raw_dir and not files.is_local(raw_dir):
        raise ValueError(
            f"--raw_dir={raw_dir}: the raw data set is read from a local folder only. Copy it "
            f"down first: gcloud storage rsync --recursive {raw_dir} LOCAL_RAW_DIR."
        )


def prepare(*args, **kwargs) -> str:
    """Builds the TFDS data set and its index; returns the prepared version folder.

    Takes the arguments of :func:`prepare_with_status`, which also says whether the data
    set was built or reused.
    """
    return prepare_with_status(*args, **kwargs)[0]


def prepare_with_status(
    dataset: str,
    raw_dir: str,
    data_dir: str,
    image_size: int = 224,
    *,
    on_bad_image: str = "error",
    num_workers: int = 0,
    examples=None,
    overwrite: bool = False,
    **options,
) -> tuple[str, str]:
    """Builds the TFDS data set and its index, unless it exists and matches.

    Args:
      dataset: a prepared data set (``nih``, ``chexpert``: :mod:`chestattn_jax.data.sources`).
      raw_dir: the raw folder (``""`` with ``examples``).
      data_dir: where the data set goes (``DATA_DIR`` of the module docstring).
      image_size: side of the stored square images in pixels.
      on_bad_image: ``error`` stops at the first unreadable image; ``skip`` leaves
        it out and lists it in ``chestattn_prepare.json``.
      num_workers: processes decoding and resizing images (0: this process).
      examples: :class:`RawExample` s to prepare instead of reading ``raw_dir``.
      overwrite: replace an existing data set whatever it was prepared from.
      options: the data set's own options, which images to keep (NIH: ``nih_views``;
        CheXpert: ``frontal_only``); unset ones take their defaults.

    Returns:
      ``(version folder, status)``: ``built`` (nothing was there), ``rebuilt``
      (``overwrite``) or ``reused`` (the existing data set was prepared from the same
      examples, raw folder and options; nothing was written).

    Raises:
      DatasetConflictError: the existing data set was prepared from other inputs or
        options, or does not say (an earlier version of chestattn_jax), and not
        ``overwrite``. Nothing is written.
      FileNotFoundError, PermissionError, DataFormatError, ValueError: bad inputs,
        found before anything is written; or (DataFormatError) an unreadable image
        under ``on_bad_image='error'``, in which case an overwritten data set is
        put back as it was.
    """
    # Everything is checked and read before anything is written, moved or deleted.
    check_local_folders(raw_dir, data_dir)
    version = version_dir(dataset, data_dir, image_size)
    if int(image_size) < 1:
        raise ValueError(f"--image_size must be a positive number of pixels, got {image_size}.")
    if on_bad_image not in ON_BAD_IMAGE:
        raise ValueError(f"Unknown on_bad_image {on_bad_image!r}; expected error or skip.")
    options = prepare_options(dataset, options)
    if examples is None:
        examples = read_raw(dataset, raw_dir, **options)
    if not examples:
        raise DataFormatError(f"No examples found in {raw_dir} for dataset {dataset!r}.")
    record = {
        "dataset": dataset,
        "image_size": int(image_size),
        "raw_dir": os.path.abspath(raw_dir) if raw_dir else "",
        "options": recorded_options(dataset, options, on_bad_image),
        "examples_read": len(examples),
        "fingerprint": inputs_fingerprint(examples, raw_dir),
    }
    kwargs = {
        "examples": examples,
        "on_bad_image": on_bad_image,
        "num_workers": num_workers,
        "record": record,
    }
    _restore_interrupted_overwrite(version)
    builder = _writer(dataset, data_dir, image_size, **kwargs)
    if not epath.Path(version).exists():
        _build(builder)
        return version, "built"
    if overwrite:
        _rebuild(version, lambda: _writer(dataset, data_dir, image_size, **kwargs))
        return version, "rebuilt"
    if not builder.is_prepared():  # TFDS would "reuse" it
        raise DatasetConflictError(
            f"{version} exists but holds no complete data set (no dataset_info.json). Nothing "
            "was written. Run again with --overwrite to replace it, or give another --data_dir."
        )
    old = _matching_record(version, record)
    skipped = len(old.get("skipped", []))
    logging.info(
        "%s already holds this data set: prepared from %s with the same options and "
        "examples (fingerprint %s%s). Nothing was rebuilt.",
        version,
        old["raw_dir"] or "examples given in Python",
        old["fingerprint"],
        f"; {skipped} bad images were skipped, listed in {REPORT_FILE}" if skipped else "",
    )
    for aside in _set_aside(version):
        logging.warning("%s is the old data set of an interrupted --overwrite.", aside)
    return version, "reused"


def _writer(dataset: str, data_dir: str, image_size: int, **kwargs) -> ExampleWriter:
    return records.open_builder(dataset, data_dir, image_size, ExampleWriter, **kwargs)


def _matching_record(version: str, record: dict) -> dict:
    """The record of the data set in ``version`` if it matches ``record``; else raises
    :class:`DatasetConflictError` saying what differs and how to proceed."""
    how = (
        "Nothing was written. To replace it, run again with --overwrite (the old one is "
        "deleted only once the new one is complete); to keep it, give another --data_dir."
    )
    old = read_report(version)
    if "fingerprint" not in old:
        raise DatasetConflictError(
            f"{version} holds a data set prepared by an earlier version of chestattn_jax, "
            f"which did not record what it was prepared from ({REPORT_FILE} has no "
            f"fingerprint), so it cannot tell whether it matches --raw_dir="
            f"{record['raw_dir']} and these options. {how}"
        )
    differences = _differences(old, record)
    if differences:
        raise DatasetConflictError(
            f"{version} already holds a data set prepared from other inputs or options "
            f"(recorded in {REPORT_FILE}; prepared -> now):\n  "
            + "\n  ".join(differences)
            + f"\n{how}"
        )
    return old


def _build(builder) -> None:
    """Writes the shards with the record (in one rename), then the index."""
    _remove_stale_incomplete(builder)
    builder.download_and_prepare()
    if builder.skipped:
        logging.warning(
            "Skipped %d of %d images (listed in %s).",
            len(builder.skipped),
            len(builder._examples),
            REPORT_FILE,
        )
    load_index(builder)  # writes the index now rather than at the first training run


def _rebuild(version: str, new_builder) -> None:
    """Replaces ``version``: moves it aside, builds, and deletes it only on success."""
    parent, name = os.path.split(version)
    aside = os.path.join(parent, f"{ASIDE_PREFIX}{uuid.uuid4().hex[:8]}_{name}")
    logging.info("--overwrite: moving %s aside to %s while the new one is built.", version, aside)
    os.rename(version, aside)
    try:
        # A new builder: one opened on the old folder holds its DatasetInfo.
        _build(new_builder())
    except BaseException:
        if os.path.exists(version):  # complete, but its index failed
            shutil.rmtree(version)
        os.rename(aside, version)
        logging.error("The rebuild failed; %s is back as it was.", version)
        raise
    shutil.rmtree(aside)
    for stale in _set_aside(version):  # of earlier interrupted --overwrite runs
        logging.info("Removing %s, left by an interrupted --overwrite.", stale)
        shutil.rmtree(stale, ignore_errors=True)


def main(argv):
    del argv
    from absl import flags

    f = flags.FLAGS
    for name in sources.prepared_names():
        for option in sources.get(name).prepared.options:
            if f.dataset != name and f[option.name].present:
                flag = f"--[no]{option.name}" if f[option.name].boolean else f"--{option.name}"
                sys.exit(f"FATAL: {flag} applies to --dataset={name} only.")
    own = sources.get(f.dataset).prepared.options
    try:
        path, status = prepare_with_status(
            f.dataset,
            f.raw_dir,
            f.data_dir,
            f.image_size,
            on_bad_image=f.on_bad_image,
            num_workers=f.num_workers,
            examples=None,
            overwrite=f.overwrite,
            **{option.name: f[option.name].value for option in own},
        )
    except (DatasetConflictError, DataFormatError, OSError, ValueError, WorkerDied) as e:
        sys.exit(f"FATAL: {e}")
    report = read_report(path)
    if status == "reused":
        print(
            f"Nothing rebuilt: {path} already holds this data set, prepared from "
            f"{report['raw_dir']} with the same options and examples "
            f"(fingerprint {report['fingerprint']})."
        )
    else:
        print(f"{'Rebuilt' if status == 'rebuilt' else 'Prepared'} {path}")
    skipped = len(report.get("skipped", []))
    if skipped:
        print(f"{skipped} bad images were left out; they are listed in {path}/{REPORT_FILE}.")
    print(
        f"Train with: --config.data.data_dir={f.data_dir} --config.data.image_size={f.image_size}"
    )


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_enum("dataset", None, list(sources.prepared_names()), "Which raw layout to read.")
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
    for name in sources.prepared_names():  # each data set's own options
        for option in sources.get(name).prepared.options:
            if isinstance(option.default, bool):
                flags.DEFINE_bool(option.name, option.default, option.help)
            else:
                flags.DEFINE_list(option.name, list(option.default), option.help)
    flags.DEFINE_bool(
        "overwrite",
        False,
        "Replace a data set already prepared here from other inputs or options (the old "
        "one is deleted only once the new one is complete).",
    )
    flags.mark_flags_as_required(["dataset", "raw_dir", "data_dir"])
    app.run(main)
