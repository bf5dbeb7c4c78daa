"""Restoring a trained model and running it: what ``--mode=evaluate``, ``--mode=predict``
and a notebook share, and the library's public Python API.

  import chestattn_jax
  model = chestattn_jax.load("workdirs/nih_class")          # the best checkpoint
  out = model.predict(["a.png", "b.dcm"])                     # or uint8 / float arrays
  out["probabilities"]   # (N, k), in model.classes order
  out["maps"]            # (N, k, h, w) class-based, (N, h, w) image-based, None for resnet
  out["images"]          # (N, S, S) uint8: what the model saw, letterboxed as in training

Files are read as the prepare step reads them (PNG and JPEG of any bit depth and mode,
DICOM through pydicom) and every image is letterboxed to the training image size and
normalised as in training, so ``predict`` gives what ``--mode=predict`` writes.
"""

from __future__ import annotations

import functools
import os

import jax
import ml_collections
import numpy as np

from chestattn_jax import sharding as shd
from chestattn_jax import workdir as workdir_lib
from chestattn_jax.checkpointing import Checkpointer, CheckpointMismatch
from chestattn_jax.data.images import letterbox, load_grayscale
from chestattn_jax.data.input_pipeline import normalize_images
from chestattn_jax.models import create_model
from chestattn_jax.train_state import abstract_train_state, create_optimizer, create_train_state

# Config fields that decide the model: a checkpoint is never evaluated under other values.
MODEL_FIELDS = (
    "model.variant",
    "model.stage_sizes",
    "model.num_filters",
    "model.attention_dim",
    "model.compatibility",
    "model.attention_norm",
    "model.gate_stages",
    "data.classes",
    "data.channels",
)


def _field(tree, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return _plain(tree)


def _plain(value):
    """Config values as JSON has them: tuples as lists, ConfigDicts as dicts."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _differences(saved: dict, config, fields) -> dict[str, tuple]:
    """``{field: (saved value, config value)}`` for each of ``fields`` that differs;
    fields missing from ``saved`` (written by an older version) are not compared."""
    out = {}
    for name in fields:
        try:
            was = _field(saved, name)
        except (KeyError, TypeError):
            continue
        now = _field(config, name)
        if was != now:
            out[name] = (was, now)
    return out


def _describe_changes(changes: dict[str, tuple], then: str) -> str:
    def name(k):
        return f"config.{k}" if "." in k else f"the {k}"

    return "; ".join(
        f"{name(k)} is {now!r} but {then} {was!r}" for k, (was, now) in changes.items()
    )


def abstract_state(config, mesh):
    """The train state of ``config`` as shapes, dtypes and (replicated) shardings."""
    init = functools.partial(
        create_train_state,
        create_model(config),
        create_optimizer(config.train),
        jax.random.key(config.seed),
        (config.data.image_size, config.data.image_size, config.data.channels),
        shd.replicated(mesh),
    )
    return abstract_train_state(init, shd.replicated(mesh))


def restore_for_inference(config, workdir: str, which: str = "best"):
    """The train state of checkpoint ``which`` (``best`` or ``latest``) of ``workdir``,
    checked against ``config``'s model. Returns ``(state, step, mesh)``.

    An unreadable checkpoint is passed over, with a warning, for the next in order
    (the rule training resumes by; :meth:`Checkpointer.restore_for_inference`).
    """
    check_model_fields(workdir, config)  # the model fields, named, before any read
    checkpointer = Checkpointer(workdir, read_only=True)
    try:
        mesh = shd.make_mesh()
        step, state, _ = checkpointer.restore_for_inference(abstract_state(config, mesh), which)
    except CheckpointMismatch as e:
        raise CheckpointMismatch(
            f"{e} Evaluate with the config the workdir was trained with "
            f"(variant {config.model.variant!r}, {len(config.data.classes)} classes now)."
        ) from None
    finally:
        checkpointer.close()
    return state, step, mesh


def inference_fn(config, mesh):
    """``jit``: ``(state, uint8 images) -> (logits (B, k) float32, gate-3 maps or None)``,
    outputs replicated. Gate-3 maps are ``(B, k, h, w)`` (class) or ``(B, h, w)`` (image)."""
    mean, std = config.data.mean, config.data.std

    def fn(state, images):
        logits, aux = state.apply_fn(
            {"params": state.params, "batch_stats": state.batch_stats},
            normalize_images(images, mean, std),
            train=False,
        )
        return logits.astype(np.float32), aux["attention"].get("gate3")

    return jax.jit(
        fn,
        in_shardings=(shd.replicated(mesh), shd.batch_sharded(mesh)),
        out_shardings=shd.replicated(mesh),
    )


def check_model_fields(
    workdir: str,
    config,
    advice: str = "Evaluate with the config the workdir was trained with.",
    saved: dict | None = None,
) -> None:
    """Raises a ``ValueError`` naming each :data:`MODEL_FIELDS` value of ``config`` that
    differs from the config ``workdir`` was trained with (``saved``, its ``config.json``,
    read here unless given): its checkpoints cannot be restored so. Nothing to compare
    (no ``config.json``) is no error."""
    if saved is None:
        saved = workdir_lib.read_json(workdir_lib.workdir_path(workdir) / workdir_lib.CONFIG_FILE)
    if saved is None:
        return
    model = _differences(saved, config, MODEL_FIELDS)
    if model:
        raise ValueError(
            f"The checkpoints of {workdir} do not fit config.model / config.data "
            f"(variant {config.model.variant!r}, {len(config.data.classes)} classes): "
            + _describe_changes(model, "the checkpoint was trained with")
            + f". {advice}"
        )


def _tuples(value):
    """JSON lists back to the tuples the config files use (classes, stage sizes, ...)."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def workdir_config(workdir: str) -> ml_collections.ConfigDict:
    """The config ``workdir`` was trained with (``WORKDIR/config.json``)."""
    path = workdir_lib.workdir_path(workdir) / workdir_lib.CONFIG_FILE
    saved = workdir_lib.read_json(path)
    if saved is None:
        raise FileNotFoundError(
            f"{path} does not exist: {workdir} holds no finished training run's config. "
            "Pass the config it was trained with (load(workdir, config=...))."
        )
    return ml_collections.ConfigDict(_tuples(saved))


class Model:
    """A restored model: ``predict`` on files or arrays; ``classes``, ``variant``,
    ``image_size``, ``step`` (of the checkpoint) and ``config`` describe it."""

    def __init__(self, config, state, step: int, mesh):
        self.config, self.state, self.step, self.mesh = config, state, int(step), mesh
        self.classes = list(config.data.classes)
        self.variant = config.model.variant
        self.image_size = int(config.data.image_size)
        self._fn = inference_fn(config, mesh)

    def predict(self, images, batch_size: int | None = None) -> dict:
        """Probabilities and gate-3 maps of ``images``: a file path, an ``(H, W)`` array,
        an ``(N, H, W)`` stack, or a list of paths and arrays. Arrays are uint8, or float
        in [0, 1] (scaled to 0-255 and rounded, as 8-bit files are stored). Every image is
        letterboxed to ``image_size`` as in training.

        Returns ``{"probabilities": (N, k) float64, "maps": (N, k, h, w) | (N, h, w) |
        None, "images": (N, S, S) uint8, "classes": [...]}``. A file that cannot be read
        raises :class:`~chestattn_jax.data.raw.DataFormatError` (or ``OSError``) naming it.
        """
        if isinstance(images, np.ndarray) and (
            images.ndim == 4 or (images.ndim == 3 and images.shape[-1] != 1)
        ):
            items = list(images)
        elif isinstance(images, list | tuple):
            items = list(images)
        else:
            items = [images]
        if not items:
            raise ValueError("predict: no images given.")
        boxed = np.stack([letterbox(_as_gray_uint8(x), self.image_size) for x in items])
        probs, maps = self.predict_letterboxed(boxed, batch_size)
        return {"probabilities": probs, "maps": maps, "images": boxed, "classes": self.classes}

    def predict_letterboxed(self, images, batch_size: int | None = None):
        """``(N, S, S)`` uint8 images already letterboxed to ``image_size`` ->
        ``(probabilities (N, k) float64, maps or None)``, in batches of ``batch_size``
        (default ``config.eval.batch_size``) padded to a multiple of the device count."""
        images = np.asarray(images, np.uint8)
        n, size = len(images), self.image_size
        if images.shape[1:] != (size, size):
            raise ValueError(f"expected (N, {size}, {size}) images, got {images.shape}.")
        devices = self.mesh.devices.size
        batch_size = min(batch_size or self.config.eval.batch_size, max(n, 1))
        batch_size = -(-batch_size // devices) * devices  # one compiled shape per call
        sharding = shd.batch_sharded(self.mesh)
        probs, maps = [], []
        for start in range(0, n, batch_size):
            chunk = images[start : start + batch_size]
            batch = np.zeros((batch_size, size, size, 1), np.uint8)
            batch[: len(chunk), ..., 0] = chunk
            logits, gate3 = self._fn(self.state, shd.to_global({"image": batch}, sharding)["image"])
            logits = np.asarray(jax.device_get(logits), np.float64)[: len(chunk)]
            probs.append(1.0 / (1.0 + np.exp(-logits)))
            if gate3 is not None:
                maps.append(np.asarray(jax.device_get(gate3), np.float32)[: len(chunk)])
        return np.concatenate(probs), (np.concatenate(maps) if maps else None)


def _as_gray_uint8(x) -> np.ndarray:
    """A path, or a uint8 / [0, 1] float array (``(H, W)`` or ``(H, W, 1)``) -> (H, W) uint8."""
    if isinstance(x, str | os.PathLike):
        return load_grayscale(os.fspath(x))
    a = np.asarray(x)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"expected a grayscale (H, W) image, got an array of shape {a.shape}.")
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise ValueError(
                "a float image must hold finite values in [0, 1] "
                f"(this one spans {np.nanmin(a):.4g} to {np.nanmax(a):.4g}); scale it first."
            )
        return np.round(a * 255.0).astype(np.uint8)
    raise ValueError(
        f"expected a uint8 or float image, got {a.dtype}; a 16-bit image needs a window "
        "first (or pass its file: files are read as the prepare step reads them)."
    )


def restore(config, workdir: str, which: str = "best") -> Model:
    """The :class:`Model` of checkpoint ``which`` (``best`` or ``latest``) of ``workdir``
    under ``config``."""
    state, step, mesh = restore_for_inference(config, workdir, which)
    return Model(config, state, step, mesh)


def load(workdir: str, config=None, checkpoint: str = "best") -> Model:
    """The trained model of ``workdir``: its ``best`` (lowest validation loss) or
    ``latest`` checkpoint, with the config it was trained with unless ``config`` is
    given."""
    return restore(config if config is not None else workdir_config(workdir), workdir, checkpoint)
