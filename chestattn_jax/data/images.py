"""Radiograph decoding and the one-time resize of the prepare step.

Every image becomes 8-bit grayscale ``(H, W)``: RGB and RGBA files (a few NIH
PNGs are RGBA; PadChest-style JPEGs repeat one channel three times) are converted
to luminance, and 16-bit files are windowed to their own min-max range, because
their stored bit depth (often 12 of 16 bits) varies between sources.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from chestattn_jax.data.raw import DataFormatError


def load_grayscale(path: str) -> np.ndarray:
    """Reads a PNG or JPEG radiograph as ``(H, W)`` uint8.

    Raises ``FileNotFoundError`` for a missing file and ``DataFormatError`` (naming
    the file) for an unreadable, truncated or empty one.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"Image file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so a truncated file fails here and not later
            return to_uint8_gray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataFormatError(f"Cannot decode image {path}: {e}") from e


def to_uint8_gray(im: Image.Image) -> np.ndarray:
    """Any Pillow image -> ``(H, W)`` uint8 grayscale."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        scaled = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        return np.round(scaled).astype(np.uint8)
    if im.mode == "RGBA":
        im = im.convert("RGB")  # drop alpha: NIH's RGBA files carry the image in RGB
    if im.mode != "L":
        im = im.convert("L")
    a = np.asarray(im, dtype=np.uint8)
    if a.size == 0:
        raise ValueError("image has no pixels")
    return a


def letterbox_geometry(height: int, width: int, size: int):
    """Scale and offsets that fit an ``(height, width)`` image centred in ``size x size``.

    The long side becomes ``size``; the short side is padded equally on both sides
    with black (air), so the whole thorax is kept and nothing is stretched.
    Returns ``(scale, pad_x, pad_y)``: stored = original * scale + pad.
    """
    scale = size / max(height, width)
    new_w, new_h = round(width * scale), round(height * scale)
    return scale, (size - new_w) // 2, (size - new_h) // 2


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W)`` uint8 -> ``(size, size)`` uint8: aspect kept, padded to a square."""
    h, w = image.shape
    scale, pad_x, pad_y = letterbox_geometry(h, w, size)
    new_w, new_h = round(w * scale), round(h * scale)
    resized = np.asarray(
        Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=3.0)
    )
    out = np.zeros((size, size), np.uint8)
    out[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
    return out


def letterbox_boxes(boxes: np.ndarray, height: int, width: int, size: int) -> np.ndarray:
    """``(n, 4)`` ``[x, y, w, h]`` boxes in an ``(height, width)`` frame -> the stored frame."""
    scale, pad_x, pad_y = letterbox_geometry(height, width, size)
    out = np.asarray(boxes, np.float32).reshape(-1, 4) * scale
    out[:, 0] += pad_x
    out[:, 1] += pad_y
    return out
