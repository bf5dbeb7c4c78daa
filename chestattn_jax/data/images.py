"""Radiograph decoding and the one-time resize of the prepare step.

Every image becomes 8-bit grayscale ``(H, W)``: RGB and RGBA files (a few NIH
PNGs are RGBA; PadChest-style JPEGs repeat one channel three times) are converted
to luminance, and 16-bit files are windowed to their own min-max range, because
their stored bit depth (often 12 of 16 bits) varies between sources.

DICOM files (``.dcm``/``.dicom``, or any file with the ``DICM`` preamble) are read
with pydicom: the first frame; rescale slope and intercept applied (modality
units); then the file's own first window (Window Center / Width, the DICOM linear
VOI function) when it has one, else the min-max range like 16-bit PNGs; and
MONOCHROME1 (bright = air) inverted, so that bone is bright as in every other
format. An 8-bit MONOCHROME2 DICOM without rescale or window is taken as is,
exactly like the same pixels in a PNG.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from chestattn_jax.data.raw import DataFormatError


def load_grayscale(path: str) -> np.ndarray:
    """Reads a PNG, JPEG or DICOM radiograph as ``(H, W)`` uint8.

    Raises ``FileNotFoundError`` for a missing file and ``DataFormatError`` (naming
    the file) for an unreadable, truncated or empty one, or a DICOM without pixels.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"Image file not found: {path}")
    if is_dicom(path):
        return load_dicom(path)
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so a truncated file fails here and not later
            return to_uint8_gray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataFormatError(f"Cannot decode image {path}: {e}") from e


def is_dicom(path: str) -> bool:
    """A ``.dcm``/``.dicom`` name, or the ``DICM`` magic after the 128-byte preamble."""
    if os.path.splitext(path)[1].lower() in (".dcm", ".dicom"):
        return True
    with open(path, "rb") as f:
        head = f.read(132)
    return head[128:132] == b"DICM"


def load_dicom(path: str) -> np.ndarray:
    """A DICOM radiograph as ``(H, W)`` uint8 (see the module docstring)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as e:
        raise DataFormatError(f"Cannot read DICOM file {path}: {e}") from e
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DataFormatError(f"DICOM file {path} has no pixel data (no PixelData element).")
    try:
        a = np.asarray(ds.pixel_array)
    except Exception as e:  # pydicom raises many types for unsupported transfer syntaxes
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise DataFormatError(
            f"Cannot decode the pixel data of DICOM file {path} (transfer syntax {syntax}): {e}"
        ) from e
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1:
        a = a[0]
    if samples > 1:  # colour (pydicom 3 returns YBR as RGB): luminance, as for RGB PNGs
        return to_uint8_gray(Image.fromarray(np.asarray(a[..., :3], np.uint8), "RGB"))
    if a.ndim != 2 or a.size == 0:
        raise DataFormatError(f"DICOM file {path}: expected a 2-D image, got shape {a.shape}.")
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    window = _first_window(ds)
    if a.dtype == np.uint8 and slope == 1 and intercept == 0 and window is None:
        return 255 - a if photometric == "MONOCHROME1" else a
    v = a.astype(np.float64) * slope + intercept
    if window is not None:
        # DICOM PS3.3 C.11.2.1.2.1, the linear VOI function, to [0, 1].
        center, width = window
        scaled = np.clip((v - (center - 0.5)) / max(width - 1.0, 1e-6) + 0.5, 0.0, 1.0)
    else:
        lo, hi = float(v.min()), float(v.max())
        scaled = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    if photometric == "MONOCHROME1":
        scaled = 1.0 - scaled
    return np.round(scaled * 255.0).astype(np.uint8)


def _first_window(ds) -> tuple[float, float] | None:
    """The first (Window Center, Window Width) of a DICOM data set, if it has a usable one."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    from pydicom.multival import MultiValue

    first = lambda v: float(v[0] if isinstance(v, MultiValue | list | tuple) else v)
    try:
        c, w = first(center), first(width)
    except (TypeError, ValueError, IndexError):
        return None
    return (c, w) if w >= 1 else None


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
