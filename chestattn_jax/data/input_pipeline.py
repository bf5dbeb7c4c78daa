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

from chestattn_jax.data import augment, mixture, sources, splits

BATCH_KEYS = ("image", "labels", "mask")
# The smallest image side: the ResNet backbone's total stride (gate 3's maps are 16 times
# smaller than the image).
MIN_IMAGE_SIZE = 32


def check_config(p, mode: str) -> None:
    """The rules of ``config.data``, added to ``p`` (a
    :class:`chestattn_jax.config_checks.Problems`): the data set and its classes, the image
    and pipeline settings, then each part's own rules (splits, augmentation, each data
    set's settings), and the settings the chosen data set would silently ignore."""
    name = p.choice("data.name", sources.names())
    source = sources.get(name) if name is not None else None
    mixed = isinstance(p.value("data.mixture"), str) and bool(p.value("data.mixture"))
    # A mixture's classes are resolved per set (mixture.check_config).
    _check_classes(p, None if mixed else source)
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

    splits.check_config(p, mode)
    mixture.check_config(p, mode)
    views = p.value("data.views")
    if not isinstance(views, list | tuple) or not all(isinstance(v, str) for v in views):
        p.add("data.views", "must be a tuple of view names, e.g. ('PA',); () keeps every view.")
    elif len(set(views)) != len(views):
        p.add("data.views", "names a view more than once.")
    elif source is not None and source.views is not None and not set(views) <= set(source.views):
        unknown = [v for v in views if v not in source.views]
        p.add(
            "data.views",
            f"{name} has no view {', '.join(map(repr, unknown))}; its views are "
            f"{', '.join(source.views)} (() keeps every view).",
        )
    augment.check_config(p, mode)
    for each in sources.SOURCES.values():  # named even where the chosen data set ignores it
        if each.check_config is not None:
            each.check_config(p, mode)
    if source is None:
        return
    # Settings the chosen data set would silently ignore: the other data sets' own.
    for other in sources.SOURCES.values():
        if other is not source and other.settings is not None:
            for field in p.default(other.settings).keys():
                p.ignored(
                    f"{other.settings}.{field}",
                    f"is read for config.data.name={other.name!r} only, not {name!r}",
                )
    # A cross-dataset evaluation reads the data settings for the evaluated data set.
    evaluated = p.value("eval.dataset")
    evaluated = sources.SOURCES.get(evaluated) if isinstance(evaluated, str) else None
    if evaluated is not None and not evaluated.prepared:
        evaluated = None
    if source.check_chosen is not None:
        source.check_chosen(p, source, evaluated)


def _check_classes(p, source) -> None:
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
    if source is None:
        return
    known = source.classes
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
            f"the {source.name} data set has no class {', '.join(map(repr, unknown))}{hint}; its "
            f"classes are {', '.join(known)}.",
        )


def normalize_images(images, mean: float, std: float):
    """uint8 ``(B, H, W, C)`` in [0, 255] -> float32 ``(x / 255 - mean) / std``."""
    return (images.astype(jnp.float32) / 255.0 - mean) / std


def create_source(config, split: str):
    """The random-access source of ``split`` for ``config.data``: of its data set, or of
    its mixture of data sets (:class:`chestattn_jax.data.mixture.MixtureSource`).

    Every source yields ``{"image": (H, W, C) uint8, "labels": (k,), "mask": (k,)}``
    and has ``positive_counts()`` and ``labelled_counts()`` (``(k,)`` positives, and examples
    whose label is known, over the split).
    """
    if mixture.is_mixture(config):
        return mixture.open_split(config, split)
    return sources.get(config.data.name, "config.data.name").open_split(config, split)


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

    A mixture of data sets (:class:`chestattn_jax.data.mixture.MixtureSource`) is drawn
    set by set: each set shuffled and repeated on its own (seeded apart), the sets
    interleaved in the proportions of its ``weights`` (grain's ``MapDataset.mix``).

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
    if isinstance(source, mixture.MixtureSource):
        parts = [
            grain.MapDataset.source(source.part(p))
            .shuffle(seed=(seed + 1_000_003 * p) % 2**32)
            .repeat()
            for p in range(len(source.parts))
        ]
        ds = grain.MapDataset.mix(parts, list(source.weights)).seed(seed)
    else:
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

      A mixture of data sets (``config.data.mixture``) has ``name`` the sets' names
      joined by ``+``, ``datasets`` (each set's own fingerprint, in order), a
      ``fingerprint`` hashing their names and fingerprints, ``num_records`` their sum
      and ``raw_dir`` None (:func:`chestattn_jax.data.mixture.fingerprint`).

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
    if mixture.is_mixture(config):
        return mixture.fingerprint(config)
    return sources.get(config.data.name, "config.data.name").fingerprint(config)
