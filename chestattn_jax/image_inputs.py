"""Images as the models take them, without the model code: paths (PNG, JPEG, DICOM,
read by :func:`chestattn_jax.data.images.load_grayscale`) and uint8 or [0, 1] float arrays,
one image or a stack, converted to ``(H, W)`` uint8 and letterboxed; and what ``predict``
returns for them. :meth:`chestattn_jax.trained_model.Model.predict` and
:meth:`chestattn_jax.bundle.Bundle.predict` both read their inputs here (the bundle's
loading side imports no flax, optax or model code, nor does this module)."""

from __future__ import annotations

import functools
import os
import stat

import numpy as np
from PIL import Image

from chestattn_jax import files
from chestattn_jax.data.images import (
    FRONTAL_VIEWS,
    dicom_view,
    letterbox,
    load_grayscale,
    to_uint8_gray,
)
from chestattn_jax.data.raw import DataFormatError

_COLOUR = {3: "RGB", 4: "RGBA"}
# How a model's inference compiles on a CPU: with XLA's own (Eigen) convolutions rather than
# YNNPACK's. On the 2-core Intel Xeon, ResNet-50 class-model inference at 224 px ran at 1.47x
# the images/s in a micro-benchmark of the jitted inference function at batch 8 (1.34x at
# batch 1), and at 1.70x through the bundle's predict in benchmarks/bundle_cpu.py (batch 8,
# 15.85 -> 26.94 images/s: BENCHMARKS.md, docs/bundle.md), both cores busy where YNNPACK
# kept 1.4 of them. Our choice for prediction only: training and evaluation keep XLA's
# defaults, under which YNNPACK was the faster train step (AMD EPYC, BENCHMARKS.md).
CPU_INFERENCE_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


_FILE_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


@functools.cache
def cpu_inference_options() -> dict | None:
    """:data:`CPU_INFERENCE_OPTIONS` where JAX's default backend is a CPU whose XLA takes
    them (``jax.jit(..., compiler_options=)`` of the model's inference function); None on
    an accelerator, or where this jaxlib does not know the option (its defaults then)."""
    import jax

    if jax.default_backend() != "cpu":
        return None
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_INFERENCE_OPTIONS)(np.float32(0))
    except Exception:  # an XLA without the option: it refuses unknown ones
        return None
    return dict(CPU_INFERENCE_OPTIONS)


def image_items(images) -> list:
    """``images`` (a path, a list of paths and arrays, or one array: ``(H, W)``, ``(H, W,
    1)``, ``(N, H, W)`` or ``(N, H, W, C)`` with C = 1, 3, 4; see
    :meth:`chestattn_jax.trained_model.Model.predict`) as a list of single images."""
    if isinstance(images, list | tuple):
        return list(images)
    if isinstance(images, str | os.PathLike):
        return [images]
    a = np.asarray(images)
    if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 1):
        return [a]
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        raise ValueError(
            f"an array of shape {a.shape} is ambiguous: one {_COLOUR[a.shape[-1]]} image, or "
            f"{a.shape[0]} grayscale images of {a.shape[1]}x{a.shape[2]} pixels? Pass one "
            f"colour image in a list ([image]) or as a stack of one (image[None], shape "
            f"(1, {a.shape[0]}, {a.shape[1]}, {a.shape[2]})); a stack of grayscale images "
            "with a channel axis, (N, H, W, 1)."
        )
    if a.ndim == 3:
        return list(a)
    if a.ndim == 4 and a.shape[-1] in (1, 3, 4):
        return list(a)
    raise ValueError(
        f"cannot read an array of shape {a.shape} as images: give (H, W), (H, W, 1), "
        "(N, H, W) or (N, H, W, C) with C = 1, 3 or 4 (or a list of images)."
    )


def as_gray_uint8(x) -> np.ndarray:
    """A path, or a uint8 / [0, 1] float array (``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)``
    RGB or ``(H, W, 4)`` RGBA) -> (H, W) uint8, colour converted as files are."""
    if isinstance(x, str | os.PathLike):
        return load_grayscale(regular_file(os.fspath(x)))
    a = np.asarray(x)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in _COLOUR)):
        raise ValueError(
            "expected one image, (H, W) grayscale or (H, W, 1), (H, W, 3) RGB, (H, W, 4) "
            f"RGBA; got an array of shape {a.shape}."
        )
    if a.dtype == np.bool_:
        raise ValueError(
            "got a bool array, a mask rather than an image: give uint8 pixels (0-255) or "
            "floats in [0, 1]."
        )
    if np.issubdtype(a.dtype, np.floating):
        if a.size and (not np.isfinite(a).all() or a.min() < 0 or a.max() > 1):
            raise ValueError(
                "a float image must hold finite values in [0, 1] "
                f"(this one spans {np.nanmin(a):.4g} to {np.nanmax(a):.4g}); scale it first."
            )
        a = np.round(a * 255.0).astype(np.uint8)
    elif a.dtype in (np.uint16, np.int16):
        raise ValueError(
            f"expected a uint8 or float image, got {a.dtype}; a 16-bit image needs a window "
            "first (or pass its file: files are read as the prepare step reads them)."
        )
    elif a.dtype != np.uint8:
        span = (
            f" (its values span {a.min()} to {a.max()})" if a.size and a.dtype.kind in "iu" else ""
        )
        raise ValueError(
            f"expected a uint8 image (0-255) or floats in [0, 1], got {a.dtype}{span}: convert "
            "it first, e.g. image.astype(np.uint8) if it holds 0-255."
        )
    if a.ndim == 3:  # colour: the conversion of RGB and RGBA files (alpha dropped, luminance)
        return to_uint8_gray(Image.fromarray(a, _COLOUR[a.shape[-1]]))
    if a.size == 0:
        raise ValueError(f"got an empty image of shape {a.shape}.")
    return a


def regular_file(path: str) -> str:
    """``path``, after checking that a local one is a regular file: reading a FIFO (or a
    device) blocks or never ends. Missing files and folders are left to the reader,
    which names them."""
    if files.is_local(path) and os.path.exists(path) and not os.path.isdir(path):
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            kind = _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
            raise DataFormatError(
                f"{path} is {kind}, not an image file: it is not read (reading it could "
                "block forever)."
            )
    return path


def view_warnings(path) -> list[str]:
    """Warnings about how ``path`` was taken, from what its file says: a DICOM whose View
    Position is not frontal (AP or PA). Other formats carry no view."""
    view = dicom_view(os.fspath(path))
    if view and view not in FRONTAL_VIEWS:
        return [
            f"{os.fspath(path)}: the DICOM's View Position is {view!r}, not a frontal view "
            f"({' or '.join(FRONTAL_VIEWS)}); the models are trained on frontal radiographs, "
            "so its scores are not to be trusted."
        ]
    return []


def calls(probs, classes, values: dict) -> list[dict]:
    """Per row of ``(N, k)`` ``probs`` (columns in ``classes`` order): ``{class: True
    where the probability is at least the class's threshold in ``values``, False below it,
    None where the class has none}``."""
    t = np.array([np.nan if values[c] is None else values[c] for c in classes], np.float64)
    positive = np.asarray(probs, np.float64) >= t[None, :]  # False against NaN
    has = ~np.isnan(t)
    return [
        {c: bool(row[j]) if has[j] else None for j, c in enumerate(classes)} for row in positive
    ]


def letterboxed(images, size: int, what: str) -> tuple[np.ndarray, list[list[str]]]:
    """``images`` (see :func:`image_items`) read, converted and letterboxed to ``size``:
    ``((N, S, S) uint8, warnings per image)`` (:func:`view_warnings` of each path, none for
    an array). ``what`` names the caller in the error for no images."""
    items = image_items(images)
    if not items:
        raise ValueError(f"{what}: no images given.")
    boxed = np.stack([letterbox(as_gray_uint8(x), size) for x in items])
    warnings = [view_warnings(x) if isinstance(x, str | os.PathLike) else [] for x in items]
    return boxed, warnings


def check_batch_size(batch_size) -> None:
    """Refuses a ``batch_size`` that is neither ``None`` (the model's default) nor a
    positive integer."""
    if batch_size is None:
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise ValueError(f"batch_size={batch_size!r}: give a positive integer or None.")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: give a positive integer or None.")


def predictions(model, boxed, warnings, batch_size: int | None = None) -> dict:
    """What ``predict`` returns for ``(N, S, S)`` uint8 letterboxed ``boxed`` images and
    their ``warnings``, from ``model`` (a :class:`~chestattn_jax.trained_model.Model` or a
    :class:`~chestattn_jax.bundle.Bundle`: ``predict_letterboxed``, ``calls``,
    ``recalibrated``, ``classes``, ``thresholds``, ``thresholds_why``):
    ``{"probabilities", "maps", "images", "classes", "warnings", "calls",
    "recalibrated_probabilities", "thresholds", "thresholds_why"}``."""
    probs, maps = model.predict_letterboxed(boxed, batch_size)
    return {
        "probabilities": probs,
        "maps": maps,
        "images": boxed,
        "classes": model.classes,
        "warnings": warnings,
        "calls": model.calls(probs),
        "recalibrated_probabilities": model.recalibrated(probs),
        "thresholds": model.thresholds,
        "thresholds_why": model.thresholds_why,
    }
