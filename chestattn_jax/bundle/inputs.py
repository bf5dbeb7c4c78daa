"""What :meth:`chestattn_jax.bundle.Bundle.predict` takes, read as
:meth:`chestattn_jax.trained_model.Model.predict` reads it, without the model code:
paths (PNG, JPEG, DICOM through :func:`chestattn_jax.data.images.load_grayscale`) and
uint8 or [0, 1] float arrays, one image or a stack, converted to ``(H, W)`` uint8 the
same way; what one refuses the other refuses (``tests/test_bundle.py`` holds the two to the
same results)."""

from __future__ import annotations

import os
import stat

import numpy as np
from PIL import Image

from chestattn_jax import files
from chestattn_jax.data.images import FRONTAL_VIEWS, dicom_view, load_grayscale, to_uint8_gray
from chestattn_jax.data.raw import DataFormatError

_COLOUR = {3: "RGB", 4: "RGBA"}
_FILE_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def image_items(images) -> list:
    """``images`` (a path, a list of paths and arrays, or one array: ``(H, W)``, ``(H, W,
    1)``, ``(N, H, W)`` or ``(N, H, W, C)`` with C = 1, 3, 4) as a list of single images."""
    if isinstance(images, list | tuple):
        return list(images)
    if isinstance(images, str | os.PathLike):
        return [images]
    a = np.asarray(images)
    if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 1):
        return [a]
    if a.ndim == 3 and a.shape[-1] in _COLOUR:
        raise ValueError(
            f"an array of shape {a.shape} is ambiguous: one {_COLOUR[a.shape[-1]]} image, or "
            f"{a.shape[0]} grayscale images of {a.shape[1]}x{a.shape[2]} pixels? Pass one "
            "colour image in a list ([image]) or as a stack of one (image[None]); a stack of "
            "grayscale images with a channel axis, (N, H, W, 1)."
        )
    if a.ndim == 3 or (a.ndim == 4 and a.shape[-1] in (1, 3, 4)):
        return list(a)
    raise ValueError(
        f"cannot read an array of shape {a.shape} as images: give (H, W), (H, W, 1), "
        "(N, H, W) or (N, H, W, C) with C = 1, 3 or 4 (or a list of images)."
    )


def as_gray_uint8(x) -> np.ndarray:
    """A path, or a uint8 / [0, 1] float array (``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)``
    RGB or ``(H, W, 4)`` RGBA) -> ``(H, W)`` uint8, colour converted as files are."""
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
    elif a.dtype != np.uint8:
        raise ValueError(
            f"expected a uint8 image (0-255) or floats in [0, 1], got {a.dtype}: a 16-bit "
            "image needs a window first (or pass its file), other integers a conversion."
        )
    if a.ndim == 3:  # colour: the conversion of RGB and RGBA files (alpha dropped, luminance)
        return to_uint8_gray(Image.fromarray(a, _COLOUR[a.shape[-1]]))
    if a.size == 0:
        raise ValueError(f"got an empty image of shape {a.shape}.")
    return a


def regular_file(path: str) -> str:
    """``path``, after checking that a local one is a regular file (a FIFO or a device
    would block the reader)."""
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
    """A warning for a DICOM whose View Position is not frontal (AP or PA)."""
    view = dicom_view(os.fspath(path))
    if view and view not in FRONTAL_VIEWS:
        return [
            f"{os.fspath(path)}: the DICOM's View Position is {view!r}, not a frontal view "
            f"({' or '.join(FRONTAL_VIEWS)}); the models are trained on frontal radiographs, "
            "so its scores are not to be trusted."
        ]
    return []


def calls(probs, classes, values: dict) -> list[dict]:
    """Per row of ``(N, k)`` ``probs``: ``{class: probability >= its threshold, or None
    where the class has none}``."""
    t = np.array([np.nan if values[c] is None else values[c] for c in classes], np.float64)
    positive = np.asarray(probs, np.float64) >= t[None, :]
    has = ~np.isnan(t)
    return [
        {c: bool(row[j]) if has[j] else None for j, c in enumerate(classes)} for row in positive
    ]
