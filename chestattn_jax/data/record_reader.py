"""Reads a prepared data set (:mod:`chestattn_jax.data.records`): sources with the
chosen classes, uncertainty policy and split.

A source reads the one build of the data set whose index its rows and labels come
from (:func:`chestattn_jax.data.records.build_id`). ``prepare --overwrite`` may
replace the data set while a run reads it: a process that has opened a local source
holds every shard file open and reads that build to the end (the replaced files live
on until closed); one that opens it afterwards (a grain worker started later, a
source first read after) stops with :class:`DatasetReplacedError` rather than read
other images under the old labels.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import tensorflow_datasets as tfds

from chestattn_jax import files
from chestattn_jax.data import records, sources
from chestattn_jax.data.chexpert import UNCERTAIN_AS, uncertainty_policies
from chestattn_jax.data.raw import DataFormatError
from chestattn_jax.data.splits import make_splits

# The per-image patient attributes of the index that a source hands on (``attributes()``).
ATTRIBUTES = ("sex", "age", "view")


class DatasetReplacedError(OSError):
    """The prepared data set that a source was opened on was prepared again (or is being
    prepared again) before this process opened its records."""


def _replaced(version: str, now: str | None) -> DatasetReplacedError:
    if now is None:
        state = (
            f"{version} is being prepared again (prepare --overwrite) while this run reads "
            "it: it holds no complete data set now, and once rebuilt not the records"
        )
    else:
        state = (
            f"{version} was prepared again (prepare --overwrite) while this run read it: "
            "it no longer holds the records"
        )
    return DatasetReplacedError(
        f"{state} that this run took its splits and labels from, so the run stops rather "
        "than read other images under the old labels. Run it again once prepare is done: "
        "it resumes from its last checkpoint if the data set was prepared from the same "
        "inputs, and refuses another one (give a new --workdir for that). To prepare while "
        "a run reads a data set, prepare into another --data_dir."
    )


def apply_uncertainty(labels, mask, classes, policy):
    """Stored labels (uncertain = label 0, mask 0) -> labels and mask under ``policy``.

    ``policy`` is ``ones`` | ``zeros`` | ``ignore`` for every class, or a dict
    ``{class: policy}`` (unlisted classes: ``zeros``). ``(N, k)`` int32 arrays. The
    policies and what each does are CheXpert's reader's (``chexpert.UNCERTAIN_AS``).
    """
    if not isinstance(policy, str):
        unknown = [c for c in policy if c not in classes]
        if unknown:
            raise ValueError(
                f"config.data.uncertainty names classes not in config.data.classes:"
                f" {', '.join(unknown)}."
            )
    try:
        policies = uncertainty_policies(policy, classes, known=classes)
    except DataFormatError as e:
        raise ValueError(f"config.data.uncertainty: {e}") from None
    labels, mask = np.array(labels, np.int32), np.array(mask, np.int32)
    uncertain = mask == 0
    for j, p in enumerate(policies):
        labels[uncertain[:, j], j], mask[uncertain[:, j], j] = UNCERTAIN_AS[p]
    return labels, mask


class PreparedSource:
    """A grain random-access source over some records of a prepared data set.

    ``source[i]`` is ``{"image": (S, S, 1) uint8, "labels": (k,), "mask": (k,)}``,
    labels and mask for ``classes`` after the uncertainty policy; ``attributes()`` gives
    each example's ``sex``, ``age`` and ``view`` as the index holds them. Picklable, so
    grain worker processes can open it. ``build`` (:func:`records.build_id`) is the build
    that ``indices`` and ``labels`` come from: records are opened only from that build
    (else :class:`DatasetReplacedError`), and, in a local folder, every shard at once,
    so that a rebuild after the open does not change what this process reads.
    """

    def __init__(
        self,
        builder_kwargs: dict,
        indices,
        labels,
        mask,
        name: str = "",
        patient_ids=None,
        num_boxes=None,
        columns=None,
        example_ids=None,
        build: str | None = None,
        attributes: dict | None = None,
        num_masks=None,
    ):
        self._builder_kwargs = builder_kwargs
        self._build = build
        # (N,) patient of each example, for patient-level bootstrap intervals.
        self.patient_ids = None if patient_ids is None else np.asarray(patient_ids)
        # (N,) the raw data set's name of each example (NIH's Image Index, CheXpert's Path).
        self.example_ids = None if example_ids is None else np.asarray(example_ids)
        # {"sex", "age", "view"}: (N,) arrays, for subgroup scores.
        self._attributes = {k: np.asarray(v) for k, v in (attributes or {}).items()}
        self._indices = np.asarray(indices, np.int64)
        self._labels = np.asarray(labels, np.int32)
        self._mask = np.asarray(mask, np.int32)
        # Boxes (NIH) and truth masks (SIIM): how many each example has, and the data set
        # column of each class.
        zeros = np.zeros(len(self._indices), np.int64)
        self._num_boxes = zeros if num_boxes is None else np.asarray(num_boxes)
        self._num_masks = zeros if num_masks is None else np.asarray(num_masks)
        self._columns = None if columns is None else np.asarray(columns, np.int64)
        self.name = name
        self._records = None
        self._full_records = None

    def __len__(self) -> int:
        return len(self._indices)

    def __getstate__(self):
        # reopened lazily in each worker
        return {**self.__dict__, "_records": None, "_full_records": None}

    def attributes(self) -> dict[str, np.ndarray]:
        """``{"sex": (N,) str ('M', 'F', '' unknown), "age": (N,) int (-1 unknown),
        "view": (N,) str}`` of every example, from the index (no record is read)."""
        return dict(self._attributes)

    def truth_indices(self) -> np.ndarray:
        """The examples with at least one box (NIH's box list) or truth mask (SIIM's), for
        localisation scores."""
        return np.flatnonzero((self._num_boxes > 0) | (self._num_masks > 0))

    def truth(self, i: int) -> dict:
        """``{"labels": (k,), "masks": (k, S, S) bool, "boxes": (n, 4), "box_labels": (n,)}``:
        the boxes of example ``i`` (stored pixels, data set class indices) filled in, and
        its stored truth masks, as one mask per class of ``classes`` (the union of the
        class's boxes and masks); a class without either has an empty mask."""
        if self._full_records is None:
            self._full_records = self._open_records(skip_all_but_image=False)
        record = self._full_records[int(self._indices[i])]
        size = int(self._builder_kwargs["image_size"])
        boxes = np.asarray(record["boxes"], np.float32).reshape(-1, 4)
        box_labels = np.asarray(record["box_labels"], np.int64).reshape(-1)
        columns = list(self._columns) if self._columns is not None else []
        masks = np.zeros((len(self._labels[i]), size, size), bool)
        for (x, y, w, h), c in zip(boxes, box_labels, strict=True):
            if c in columns:
                x0, y0 = max(int(np.floor(x)), 0), max(int(np.floor(y)), 0)
                x1, y1 = min(int(np.ceil(x + w)), size), min(int(np.ceil(y + h)), size)
                masks[columns.index(c), y0:y1, x0:x1] = True
        stored = np.asarray(record["truth_masks"], bool).reshape(-1, size, size)
        mask_labels = np.asarray(record["truth_mask_labels"], np.int64).reshape(-1)
        for m, c in zip(stored, mask_labels, strict=True):
            if c in columns:
                masks[columns.index(c)] |= m
        return {"labels": self._labels[i], "masks": masks, "boxes": boxes, "box_labels": box_labels}

    def _open(self):
        if self._records is None:
            # Only the image is read from the record; labels come from the index.
            self._records = self._open_records(skip_all_but_image=True)
        return self._records

    def _open_records(self, skip_all_but_image: bool):
        """The TFDS data source of split ``full`` of build ``self._build``."""
        version = records.version_dir(**self._builder_kwargs)
        self._check_build(version)
        try:
            builder = records.open_builder(**self._builder_kwargs)
            skip = tfds.decode.SkipDecoding()
            decoders = (
                {f: skip for f in builder.info.features if f != "image"}
                if skip_all_but_image
                else None
            )
            opened = builder.as_data_source(records.SPLIT, decoders=decoders)
            if files.is_local(version):
                # array_record opens a shard at its first read: one opened later could be
                # a shard of another build, written under the same name. Open all now.
                start = 0
                for length in builder.info.splits[records.SPLIT].shard_lengths:
                    if length:
                        opened[start]
                    start += length
        except Exception as e:
            # A folder moved aside or rebuilt under the open: say so, not TFDS's error.
            now = records.build_id(version)
            if self._build is not None and now != self._build:
                raise _replaced(version, now) from e
            raise
        # Both checks saw this build: the shards opened in between are its own.
        self._check_build(version)
        return opened

    def _check_build(self, version: str) -> None:
        if self._build is not None:
            now = records.build_id(version)
            if now != self._build:
                raise _replaced(version, now)

    def __getitem__(self, i: int) -> dict:
        record = self._open()[int(self._indices[i])]
        return {"image": record["image"], "labels": self._labels[i], "mask": self._mask[i]}

    def positive_counts(self) -> np.ndarray:
        return np.sum(self._labels * self._mask, axis=0)

    def labelled_counts(self) -> np.ndarray:
        """``(k,)`` examples whose label of each class is known (mask 1)."""
        return np.sum(self._mask, axis=0)

    def __repr__(self):
        return f"PreparedSource({self.name}, {len(self)} examples)"


def _load_index(dataset: str, data_dir: str, image_size: int):
    """``(build, classes, index)``: the index of the build the folder holds now."""
    build = records.build_id(records.version_dir(dataset, data_dir, image_size))
    # Keyed by the build, so that one rebuilt in place (--overwrite) is read anew.
    return (build, *_cached_index(dataset, data_dir, image_size, build))


def _require_data_dir(dataset: str, data_dir) -> None:
    if not data_dir:
        raise ValueError(
            f"config.data.data_dir is not set: config.data.name={dataset!r} trains from a "
            f"prepared data set (python -m chestattn_jax.data.prepare --dataset={dataset} ...)."
        )


def _not_prepared(dataset: str, data_dir: str, image_size: int, version_dir: str):
    older = records.older_versions(dataset, data_dir, image_size)
    if older:
        return FileNotFoundError(
            f"{os.path.dirname(version_dir)} holds {dataset!r} in record format "
            f"{', '.join(older)}, from an earlier release; this one reads format "
            f"{records.VERSION} only (it stores localisation masks): prepare it again with "
            f"python -m chestattn_jax.data.prepare --dataset={dataset} --raw_dir=RAW "
            f"--data_dir={data_dir} --image_size={image_size}"
        )
    return FileNotFoundError(
        f"No prepared {dataset!r} data set at {version_dir} "
        f"(config.data.data_dir={data_dir!r}, config.data.image_size={image_size}). "
        f"Prepare it with: python -m chestattn_jax.data.prepare --dataset={dataset} "
        f"--raw_dir=RAW --data_dir={data_dir} --image_size={image_size}"
    )


@functools.lru_cache(maxsize=4)
def _cached_index(dataset: str, data_dir: str, image_size: int, build):
    builder = records.open_builder(dataset, data_dir, image_size)
    version = os.fspath(builder.data_dir)
    if not builder.is_prepared():
        raise _not_prepared(dataset, data_dir, image_size, version)
    index = records.load_index(builder)
    now = records.build_id(version)
    if now != build:  # rebuilt while read: not to be cached as ``build``'s
        raise _replaced(version, now)
    return builder.CLASSES, index


def provenance(dataset: str, data_dir: str, image_size: int) -> dict:
    """What the prepared data set of ``dataset`` at ``data_dir`` was prepared from.

    Reads its ``chestattn_prepare.json`` (no image, no record): see
    :func:`chestattn_jax.data.input_pipeline.dataset_fingerprint` for the keys.

    Raises:
      FileNotFoundError: nothing is prepared there.
      DataFormatError: its record is damaged or has no fingerprint.
    """
    _require_data_dir(dataset, data_dir)
    builder = records.open_builder(dataset, data_dir, image_size)
    version_dir = os.fspath(builder.data_dir)
    if not builder.is_prepared():
        raise _not_prepared(dataset, data_dir, image_size, version_dir)
    report = records.read_report(version_dir)
    if "fingerprint" not in report:
        raise DataFormatError(
            f"{os.path.join(version_dir, records.REPORT_FILE)} has no field fingerprint: this "
            "data set was not prepared by this version of chestattn_jax. Prepare it again "
            "with --overwrite."
        )
    return {
        "name": dataset,
        "image_size": int(image_size),
        "num_records": int(builder.info.splits[records.SPLIT].num_examples),
        "fingerprint": report["fingerprint"],
        "raw_dir": report.get("raw_dir"),
        "options": report.get("options"),
        "num_skipped": len(report.get("skipped", [])),
    }


def open_split(config, split: str) -> PreparedSource:
    """The ``split`` (train / validation / test) of the prepared data set of ``config.data``."""
    d = config.data
    _require_data_dir(d.name, d.data_dir)
    build, all_classes, index = _load_index(d.name, d.data_dir, int(d.image_size))
    unknown = [c for c in d.classes if c not in all_classes]
    if unknown:
        raise ValueError(
            f"config.data.classes has classes the {d.name!r} data set does not: "
            f"{', '.join(unknown)}; it has {', '.join(all_classes)}."
        )
    cols = [all_classes.index(c) for c in d.classes]
    keep = np.ones(len(index["key"]), bool)
    if d.views:
        keep &= np.isin(index["view"], list(d.views))
    rows = np.flatnonzero(keep)
    if rows.size == 0:
        raise ValueError(f"No record of {d.data_dir} has a view in config.data.views={d.views}.")
    policy = {c: d.uncertainty_per_class.get(c, d.uncertainty) for c in d.classes}
    extra = [c for c in d.uncertainty_per_class if c not in d.classes]
    if extra:
        raise ValueError(
            f"config.data.uncertainty_per_class names classes not in "
            f"config.data.classes: {', '.join(extra)}."
        )
    labels, mask = index["labels"][rows][:, cols], index["mask"][rows][:, cols]
    if sources.get(d.name).uncertain_labels:  # a stored mask 0 is an uncertain label
        labels, mask = apply_uncertainty(labels, mask, list(d.classes), policy)
    # Elsewhere a stored mask 0 is a label the copy does not have (a VinDr-CXR Kaggle copy's
    # classes beyond its 14): it stays masked, never a negative.
    official_test = np.isin(index["source_split"][rows], ["test", "valid"])
    splits = make_splits(
        d.split,
        index["patient_id"][rows],
        is_official_test=official_test,
        fold=d.fold,
        num_folds=d.num_folds,
        fractions=tuple(d.split_fractions),
        val_fraction=d.val_fraction,
        seed=d.split_seed,
    )
    chosen = splits[split]
    source = PreparedSource(
        {"dataset": d.name, "data_dir": d.data_dir, "image_size": int(d.image_size)},
        rows[chosen],
        labels[chosen],
        mask[chosen],
        name=f"{d.name}/{split}",
        patient_ids=index["patient_id"][rows][chosen],
        example_ids=index["key"][rows][chosen],
        num_boxes=index["num_boxes"][rows][chosen],
        num_masks=index["num_masks"][rows][chosen],
        columns=cols,
        build=build,
        attributes={k: index[k][rows][chosen] for k in ATTRIBUTES},
    )
    # Opened now, in this process, so that it reads the build of its index to the end.
    source._open()
    return source
