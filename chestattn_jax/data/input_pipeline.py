"""Data sources and grain pipelines.

Images travel as uint8 ``(B, H, W, C)`` from the host and are normalised on the
device (:func:`normalize_images`), which keeps host-to-device traffic 4x smaller
than float32 and keeps the normalisation in one place for training, evaluation
and inference.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time
from collections.abc import Iterator

import grain
import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from chestattn_jax.config_fields import PREPARED_FIELDS
from chestattn_jax.data import augment, chexpert, nih, splits, synthetic
from chestattn_jax.data.classes import CHEXPERT_CLASSES, NIH_CLASSES
from chestattn_jax.data.synthetic import PHANTOM_CLASSES, PhantomChestXray, PhantomConfig
from chestattn_jax.files import require_gcs

DATASETS = ("synthetic", "nih", "chexpert")
BATCH_KEYS = ("image", "labels", "mask")
# The classes and view positions of each data set.
CLASSES = {"synthetic": PHANTOM_CLASSES, "nih": NIH_CLASSES, "chexpert": CHEXPERT_CLASSES}
VIEWS = {"nih": nih.VIEWS, "chexpert": chexpert.VIEWS}
# The smallest image side: the ResNet backbone's total stride (gate 3's maps are 16 times
# smaller than the image).
MIN_IMAGE_SIZE = 32


def known_classes(name: str) -> tuple[str, ...]:
    """The classes a data set (``config.data.name``) has."""
    return CLASSES[name]


def check_config(p, mode: str) -> None:
    """The rules of ``config.data``, added to ``p`` (a
    :class:`chestattn_jax.config_checks.Problems`): the data set and its classes, the image
    and pipeline settings, then each part's own rules (splits, augmentation, phantoms,
    uncertain labels), and the settings the chosen data set would silently ignore."""
    name = p.choice("data.name", DATASETS)
    _check_classes(p, name)
    p.int(
        "data.image_size",
        MIN_IMAGE_SIZE,
        f"at least {MIN_IMAGE_SIZE} pixels, the ResNet backbone's total stride (gate 3's "
        "attention maps are 16 times smaller than the image)",
    )
    channels = p.value("data.channels")
    if channels != 1 or not p.is_int(channels):
        p.add("data.channels", "must be 1: every data set and reader yields grayscale images.")
    p.real("data.mean")
    p.positive("data.std")
    p.int("data.num_workers", 0, "at least 0 (0: decode in the training process)")
    p.int("data.read_threads", 0, "at least 0")
    p.int("data.prefetch_batches", 0, "at least 0")

    split = splits.check_config(p, mode)
    views = p.value("data.views")
    known_views = VIEWS.get(name, ())
    if not isinstance(views, list | tuple) or not all(isinstance(v, str) for v in views):
        p.add("data.views", "must be a tuple of view names, e.g. ('PA',); () keeps every view.")
    elif len(set(views)) != len(views):
        p.add("data.views", "names a view more than once.")
    elif name in VIEWS and not set(views) <= set(known_views):
        unknown = [v for v in views if v not in known_views]
        p.add(
            "data.views",
            f"{name} has no view {', '.join(map(repr, unknown))}; its views are "
            f"{', '.join(known_views)} (() keeps every view).",
        )
    chexpert.check_config(p, mode)
    augment.check_config(p, mode)
    synthetic.check_config(p, mode)

    # Settings the chosen data set would silently ignore (unless a cross-dataset evaluation
    # reads them for the evaluated data set).
    cross = p.value("eval.dataset") in ("nih", "chexpert")
    if name == "synthetic" and not cross:
        for field in PREPARED_FIELDS:
            p.ignored(
                f"data.{field}",
                "is ignored on synthetic data (config.data.name='synthetic'), whose splits "
                "are config.data.synthetic.*_size",
            )
    elif name == "synthetic":
        p.ignored("data.data_dir", "is not read: the evaluated data set is config.eval.data_dir")
    elif name is not None:
        for field in p.default("data.synthetic").keys():
            p.ignored(
                f"data.synthetic.{field}",
                f"is read for config.data.name='synthetic' only, not {name!r}",
            )
        if not p.value("data.data_dir"):
            p.add(
                "data.data_dir",
                f"not set: config.data.name={name!r} reads a prepared "
                f"data set; give its folder with --config.data.data_dir=DIR (made by python -m "
                f"chestattn_jax.data.prepare --dataset={name} ...).",
            )
        elif not isinstance(p.value("data.data_dir"), str):
            p.add("data.data_dir", "must be a folder name.")
        if name == "nih" and p.value("eval.dataset") != "chexpert":
            for field in ("uncertainty", "uncertainty_per_class"):
                p.ignored(f"data.{field}", "has no effect on nih, whose labels are never uncertain")
        if split is not None:
            splits.check_scheme_fields(p, split)


def _check_classes(p, name: str | None) -> None:
    classes = p.value("data.classes")
    if (
        not isinstance(classes, list | tuple)
        or not classes
        or not all(isinstance(c, str) for c in classes)
    ):
        p.add("data.classes", "must be a non-empty tuple of class names.")
        return
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        p.add("data.classes", f"names {', '.join(map(repr, repeated))} more than once.")
    if name is None:
        return
    known = known_classes(name)
    unknown = [c for c in classes if c not in known]
    if unknown:
        hint = ""
        if any("," in c for c in unknown):
            hint = (
                " (a tuple on the command line is written "
                "--config.data.classes=\"('Mass','Nodule')\", not Mass,Nodule)"
            )
        p.add(
            "data.classes",
            f"the {name} data set has no class {', '.join(map(repr, unknown))}{hint}; its "
            f"classes are {', '.join(known)}.",
        )


def normalize_images(images, mean: float, std: float):
    """uint8 ``(B, H, W, C)`` in [0, 255] -> float32 ``(x / 255 - mean) / std``."""
    return (images.astype(jnp.float32) / 255.0 - mean) / std


def create_source(config, split: str):
    """The random-access source of ``split`` for ``config.data``.

    Every source yields ``{"image": (H, W, C) uint8, "labels": (k,), "mask": (k,)}``
    and has ``positive_counts()`` (``(k,)`` positives over the split).
    """
    d = config.data
    if d.name not in DATASETS:
        raise ValueError(
            f"Unknown dataset {d.name!r} (config.data.name); expected one of {', '.join(DATASETS)}."
        )
    if d.name == "synthetic":
        syn = d.synthetic
        return PhantomChestXray(
            size=int(syn[f"{split}_size"]),
            split=split,
            seed=syn.seed,
            config=PhantomConfig(
                image_size=d.image_size,
                lesion_contrast=syn.lesion_contrast,
                lesion_size=syn.lesion_size,
                noise=syn.noise,
                prevalence_scale=syn.prevalence_scale,
                location_variability=syn.location_variability,
            ),
            classes=tuple(d.classes),
        )
    require_gcs(d.data_dir, "config.data.data_dir")
    from chestattn_jax.data.prepared_source import open_split  # TFDS is imported only for real data

    return open_split(config, split)


@dataclasses.dataclass(frozen=True)
class _SelectKeys:
    keys: tuple[str, ...] = BATCH_KEYS

    def __call__(self, example):
        return {k: example[k] for k in self.keys}


def train_dataset(
    source,
    *,
    batch_size: int,
    seed: int,
    num_workers: int = 0,
    augment=None,
    read_threads: int = 4,
    prefetch_batches: int = 8,
    shard: tuple[int, int] | None = None,
):
    """An endless, shuffled, batched grain pipeline: this process's rows of each global batch.

    Every process describes the same global stream (shuffle, augmentation and
    batching of the whole source), cut into local batches of ``batch_size``;
    process ``p`` of ``P`` reads and decodes only local batches ``p, p + P, ...``,
    which are rows ``p * batch_size ...`` of global batches of ``P * batch_size``.
    So the processes' shards are disjoint, and the global batches (their examples
    and their augmentation) do not depend on the number of processes.

    Args:
      source: a random-access source (``__len__``, ``__getitem__``).
      batch_size: examples per batch on this process (global batch / processes).
      seed: shuffle seed; each epoch is reshuffled from it.
      num_workers: grain worker processes (0: decode in this process).
      augment: an optional ``(example, np.random.Generator) -> example`` transform
        (:class:`chestattn_jax.data.augment.Augment`), seeded per example.
      read_threads: threads reading and transforming examples in each process.
      prefetch_batches: batches prepared ahead of the training loop.
      shard: ``(p, P)``, this process's index and the number of processes
        (default: JAX's).

    Returns:
      A ``grain.IterDataset``; ``iter()`` of it is checkpointable with
      ``grain.checkpoint.CheckpointSave``.
    """
    ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat()
    ds = ds.map(_SelectKeys())
    if augment is not None:
        ds = ds.random_map(augment)  # seeded by the index in the global stream
    # MapDatasets are lazy: slicing the batches means no other process's rows are read.
    index, count = shard or (jax.process_index(), jax.process_count())
    ds = ds.batch(batch_size, drop_remainder=True)[index::count]
    # grain's default (16 threads, 500 prefetched elements) would here mean 500 batches
    # decoded ahead, holding the GIL against the training loop and evaluation.
    it = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_batches)
    )
    if num_workers > 0:
        if not flags.FLAGS.is_parsed():
            # grain reads its absl flags when it starts workers; outside an absl app
            # (tests, notebooks) take their defaults instead of failing.
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=num_workers),
            worker_init_fn=exit_with_parent,
        )
    return it


def exit_with_parent(worker_index: int, worker_count: int) -> None:
    """In each grain worker: ignores Ctrl-C, and starts a thread that ends the worker
    once its parent is gone.

    Ctrl-C in a terminal sends ``SIGINT`` to the whole process group, grain's workers
    included: each would die printing a ``KeyboardInterrupt`` traceback while the
    training process saves a checkpoint (``train._PreemptionNotice``) and still needs
    them. Their parent stops them when it ends, however it ends.

    grain's workers outlive a training process killed with SIGKILL (``kill -9``, the
    out-of-memory killer), decoding on and holding memory and the parent's output
    pipes, until killed by hand. The check (``os.getppid`` changes when the parent dies)
    costs one system call a second.
    """
    del worker_index, worker_count
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="exit_with_parent", daemon=True).start()


def eval_batches(source, batch_size: int) -> Iterator[dict]:
    """Every example of this process's shard exactly once, in order.

    The last batch is padded to ``batch_size`` with copies of an example and
    ``valid`` (``(B,)`` bool) marks the real ones, so nothing is dropped and
    every process runs the same number of batches.
    """
    count, index = jax.process_count(), jax.process_index()
    per_process = math.ceil(len(source) / count)
    num_batches = math.ceil(per_process / batch_size)
    ds = grain.MapDataset.source(source)[index::count].map(_SelectKeys())
    for b in range(num_batches):
        idx = list(range(b * batch_size, min((b + 1) * batch_size, len(ds))))
        examples = [ds[i] for i in idx]
        valid = np.zeros((batch_size,), bool)
        valid[: len(examples)] = True
        examples += [examples[-1] if examples else ds[0]] * (batch_size - len(examples))
        batch = {k: np.stack([e[k] for e in examples]) for k in BATCH_KEYS}
        batch["mask"] = batch["mask"] * valid[:, None].astype(batch["mask"].dtype)
        batch["valid"] = valid
        yield batch


def dataset_fingerprint(config) -> dict:
    """What data ``config.data`` trains and evaluates on, for logs and the workdir.

    Cheap: reads the prepared data set's ``chestattn_prepare.json`` (no image is
    decoded, no record read); for phantoms, hashes their settings.

    Returns:
      A JSON-serialisable dict:

      - ``name``: ``config.data.name`` (``synthetic``, ``nih``, ``chexpert``);
      - ``image_size``: side of the images in pixels;
      - ``fingerprint``: ``"sha256:<64 hex>"``. Prepared data sets: the fingerprint
        of the raw examples they were prepared from (each example's key, image path
        relative to the raw folder, labels, mask, metadata, boxes and image file
        size; ``chestattn_jax.data.prepare.inputs_fingerprint``); with
        ``image_size`` and ``options`` it identifies the data set. Synthetic: a hash
        of ``config.data.synthetic`` (seed, split sizes, difficulty), ``image_size``
        and ``classes``;
      - ``num_records``: records in the prepared data set, skipped images excluded
        (synthetic: train + validation + test sizes);
      - ``raw_dir``: the raw folder it was prepared from (``""`` if its examples were
        given in Python; None for synthetic).

      Prepared data sets also have ``options`` (``on_bad_image`` and ``nih_views``
      or ``frontal_only``) and ``num_skipped`` (bad images left out). Compare data
      sets by ``fingerprint`` (and ``image_size``), not by ``raw_dir``: the same data
      may be mounted elsewhere.

    Raises:
      ValueError: an unknown ``config.data.name`` or an unset ``data_dir``; a
        ``DataFormatError`` (a ``ValueError``) when the prepared data set's record
        (``chestattn_prepare.json``) is damaged or has no fingerprint.
      FileNotFoundError: the prepared data set does not exist.
      chestattn_jax.files.CloudStorageUnavailable: a ``gs://`` ``data_dir`` without the
        ``gcs`` extra installed.
    """
    import hashlib
    import json

    d = config.data
    if d.name not in DATASETS:
        raise ValueError(
            f"Unknown dataset {d.name!r} (config.data.name); expected one of {', '.join(DATASETS)}."
        )
    if d.name != "synthetic":
        require_gcs(d.data_dir, "config.data.data_dir")
        from chestattn_jax.data.prepared_source import provenance  # TFDS only for real data

        return provenance(d.name, d.data_dir, int(d.image_size))
    syn = d.synthetic
    synthetic = syn.to_dict() if hasattr(syn, "to_dict") else dict(syn)
    settings = {
        "image_size": int(d.image_size),
        "classes": list(d.classes),
        "synthetic": synthetic,
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return {
        "name": "synthetic",
        "image_size": int(d.image_size),
        "fingerprint": f"sha256:{digest}",
        "num_records": int(syn.train_size) + int(syn.validation_size) + int(syn.test_size),
        "raw_dir": None,
    }
