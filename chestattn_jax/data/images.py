"""Radiograph decoding and the one-time resize of the prepare step.

Every image becomes 8-bit grayscale ``(H, W)``: RGB and RGBA files (a few NIH
PNGs are RGBA; PadChest-style JPEGs repeat one channel three times) are converted
to luminance, and 16-bit files are windowed to their own min-max range, because
their stored bit depth (often 12 of 16 bits) varies between sources.

DICOM files (``.dcm``/``.dicom``, or any file with the ``DICM`` preamble) are read
with pydicom: the first frame; its modality LUT applied (Rescale Slope and
Intercept, or a Modality LUT Sequence: pydicom's ``apply_modality_lut``); then its
VOI LUT (pydicom's ``apply_voi_lut``: the VOI LUT Sequence when there is one, else
the first Window Center / Width with its VOI LUT Function, LINEAR, LINEAR_EXACT or
SIGMOID), its output range mapped to 0-255; without either, the min-max range like
16-bit PNGs; and MONOCHROME1 (bright = air) inverted, so that bone is bright as in
every other format. An 8-bit MONOCHROME2 DICOM without rescale or window is taken as is,
exactly like the same pixels in a PNG.
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
import warnings

import numpy as np
from PIL import Image

from chestattn_jax import files
from chestattn_jax.data.raw import DataFormatError

DICOM_PREFIX_END = 132  # the 128-byte preamble and "DICM"
UNDEFINED_LENGTH = 0xFFFFFFFF


def load_grayscale(path: str) -> np.ndarray:
    """Reads a PNG, JPEG or DICOM radiograph as ``(H, W)`` uint8.

    Raises ``FileNotFoundError`` for a missing file and ``DataFormatError``, naming
    the file, for every other reason it cannot be read: a folder, a file it may not
    read, an unknown format, a truncated, empty or damaged file, one larger than
    Pillow's decompression-bomb limit, non-finite pixels, or a DICOM without pixels.
    """
    path = os.fspath(path)
    if not files.is_local(path):
        return _load_from_bucket(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Image file not found: {path}")
    if os.path.isdir(path):
        raise DataFormatError(f"{path} is a directory, not an image file.")
    try:
        dicom = is_dicom(path)
    except OSError as e:
        raise DataFormatError(f"Cannot read image file {path}: {e.strerror or e}.") from e
    if dicom:
        return load_dicom(path)
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so a truncated file fails here and not later
            return to_uint8_gray(im)
    except Image.DecompressionBombError as e:
        raise DataFormatError(
            f"Refusing to decode image {path}: {e} (Pillow's limit, Image.MAX_IMAGE_PIXELS; a "
            "radiograph has far fewer pixels)."
        ) from e
    except Exception as e:  # Pillow's decoders raise many types for damaged files
        raise DataFormatError(f"Cannot decode image {path}: {type(e).__name__}: {e}") from e


def _load_from_bucket(url: str) -> np.ndarray:
    """``load_grayscale`` of an object in a bucket (``gs://``, through etils.epath): its
    bytes are copied to a temporary file of the same name, and errors name the URL."""
    from etils import epath

    remote = epath.Path(url)
    try:
        exists = remote.exists()
        is_dir = exists and remote.is_dir()
        data = remote.read_bytes() if exists and not is_dir else b""
    except OSError as e:  # no permission, no such bucket, the server unreachable
        raise DataFormatError(f"Cannot read image file {url}: {e}") from e
    if not exists:
        raise FileNotFoundError(f"Image file not found: {url}")
    if is_dir:
        raise DataFormatError(f"{url} is a directory, not an image file.")
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, remote.name or "image")
        with open(local, "wb") as f:
            f.write(data)
        try:
            return load_grayscale(local)
        except DataFormatError as e:
            raise DataFormatError(str(e).replace(local, url)) from e


# DICOM View Position (0018,5101) values of the frontal radiographs the models are trained
# on; others (LL, RL, LATERAL, ...) are warned about when predicting.
FRONTAL_VIEWS = ("PA", "AP")


def dicom_view(path: str) -> str | None:
    """The View Position of a local DICOM file, upper case (``"PA"``, ``"LL"``, ...), or
    ``None``: not a DICOM, no View Position, or a file that cannot be read (its reader
    reports why)."""
    try:
        if not files.is_local(path) or not os.path.isfile(path) or not is_dicom(path):
            return None
    except OSError:  # unreadable: load_grayscale says what is wrong
        return None
    return (dicom_header(path) or {}).get("view") or None


# DICOM Age String (AS): a number of years, months, weeks or days; a plain number (NIH's
# table, RSNA's headers) is years.
_AGE = re.compile(r"(\d+)([YMWD]?)", re.IGNORECASE)
_AGE_UNIT_DIVISOR = {"": 1, "Y": 1, "M": 12, "W": 52, "D": 365}


def dicom_age(text) -> int | None:
    """Whole years of a DICOM age (``058Y``, ``18M``, ``58``); -1 if blank, None if not an
    age (a reader decides whether that is an error)."""
    text = str(text or "").strip()
    if not text:
        return -1
    m = _AGE.fullmatch(text)
    return None if m is None else int(m.group(1)) // _AGE_UNIT_DIVISOR[m.group(2).upper()]


def dicom_header(path: str) -> dict | None:
    """``{"rows", "columns", "patient_id", "sex", "age", "view"}`` of a DICOM file's header
    (pixels not read): sex ``M``/``F``/``''``, age in years (-1 unknown or not an age), view
    upper case (``''`` none), rows/columns 0 if absent. None if the file is absent or not
    readable as DICOM: the prepare step reports it under ``--on_bad_image``."""
    if not os.path.isfile(path):
        return None
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        sex = _header_text(ds, "PatientSex").upper()
        age = dicom_age(_header_text(ds, "PatientAge"))
        return {
            "rows": int(ds.get("Rows", 0) or 0),
            "columns": int(ds.get("Columns", 0) or 0),
            "patient_id": _header_text(ds, "PatientID"),
            "sex": sex if sex in ("M", "F") else "",
            "age": -1 if age is None else age,
            "view": _header_text(ds, "ViewPosition").upper(),
        }
    except Exception:  # damaged: load_grayscale names what is wrong when prepare decodes it
        return None


def _header_text(ds, keyword: str) -> str:
    """A text attribute as its raw bytes spell it, stripped (``''`` if absent): read
    without pydicom's value checks, which warn once per file about values such as RSNA's
    plain-number ages."""
    from pydicom.datadict import tag_for_keyword

    raw = ds.get_item(tag_for_keyword(keyword))
    value = getattr(raw, "value", None)
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value or "").strip(" \x00")


def is_dicom(path: str) -> bool:
    """A ``.dcm``/``.dicom`` name, or the ``DICM`` magic after the 128-byte preamble."""
    if os.path.splitext(path)[1].lower() in (".dcm", ".dicom"):
        return True
    with open(path, "rb") as f:
        head = f.read(132)
    return head[128:132] == b"DICM"


def load_dicom(path: str) -> np.ndarray:
    """A DICOM radiograph as ``(H, W)`` uint8 (see the module docstring).

    Raises ``DataFormatError`` naming the file for anything that keeps it from
    being read; a truncated file is reported as truncated.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    size = os.path.getsize(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path)
    except InvalidDicomError as e:
        if size < DICOM_PREFIX_END:
            raise DataFormatError(
                f"DICOM file {path} is truncated: it has {size} bytes, fewer than the "
                f"{DICOM_PREFIX_END} of the preamble and 'DICM' prefix."
            ) from e
        with open(path, "rb") as f:
            prefix = f.read(DICOM_PREFIX_END)[128:]
        if prefix != b"DICM":
            ds = _legacy_dicom(path)  # a bare data set without the Part 10 preamble
            if ds is None:
                raise DataFormatError(
                    f"{path} is not a DICOM file: no 'DICM' prefix after the 128-byte preamble, "
                    "and not a bare DICOM data set with an image either."
                ) from e
            caught = []
        else:
            raise DataFormatError(f"Cannot read DICOM file {path}: {e}") from e
    except (struct.error, EOFError) as e:  # the file ends inside an element's header
        raise DataFormatError(
            f"DICOM file {path} is truncated ({size} bytes): it ends inside a data element "
            f"header ({type(e).__name__}: {e})."
        ) from e
    except Exception as e:  # pydicom raises many types for damaged files
        raise DataFormatError(f"Cannot read DICOM file {path}: {type(e).__name__}: {e}") from e
    try:
        return _dicom_image(path, _with_transfer_syntax(ds), size, caught)
    except DataFormatError:
        raise
    except Exception as e:  # a malformed attribute value (e.g. a text Rescale Slope)
        raise DataFormatError(f"DICOM file {path}: {type(e).__name__}: {e}") from e


def _legacy_dicom(path: str):
    """A data set written without the Part 10 preamble and file meta (older archives
    and ACR-NEMA-style exports), read with pydicom's ``force``; None unless it parses
    and describes an image with pixel data."""
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True)
            ok = "PixelData" in ds and "Rows" in ds and "Columns" in ds
    except Exception:  # not a data set at all
        return None
    if not ok:
        return None
    return _with_transfer_syntax(ds)


def _with_transfer_syntax(ds):
    """``ds`` with a Transfer Syntax UID if its file meta has none (a bare data set, or a
    writer that left it out): the encoding the data set was read in, which is right
    for native (uncompressed) pixel data. Encapsulated pixel data is left alone: its
    compression cannot be guessed, and decoding then fails with pydicom's message."""
    if "TransferSyntaxUID" in getattr(ds, "file_meta", {}):
        return ds
    if "PixelData" not in ds or ds["PixelData"].is_undefined_length:
        return ds
    from pydicom import uid
    from pydicom.dataset import FileMetaDataset

    implicit, little = ds.original_encoding
    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = (
        uid.ImplicitVRLittleEndian
        if implicit
        else uid.ExplicitVRLittleEndian
        if little
        else uid.ExplicitVRBigEndian
    )
    return ds


def _dicom_image(path: str, ds, size: int, caught) -> np.ndarray:
    """The checks and decoding of :func:`load_dicom` after the file is parsed."""
    truncated = _dicom_truncation(ds, size, caught)
    if truncated:
        raise DataFormatError(f"DICOM file {path} is truncated ({size} bytes): {truncated}.")
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        cut = _cut_header_bytes(ds, size)
        if cut:
            raise DataFormatError(
                f"DICOM file {path} is truncated ({size} bytes): it ends {cut} bytes into a data "
                "element header, before any pixel data."
            )
        described = (
            f"; it describes a {ds.Rows} x {ds.Columns} image, so it may be truncated before its "
            f"pixel data ({size} bytes)"
            if "Rows" in ds and "Columns" in ds
            else ""
        )
        raise DataFormatError(
            f"DICOM file {path} has no pixel data (no PixelData element){described}."
        )
    try:
        a = np.asarray(ds.pixel_array)
    except Exception as e:  # pydicom raises many types for unsupported transfer syntaxes
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise DataFormatError(
            f"Cannot decode the pixel data of DICOM file {path} (transfer syntax {syntax}): {e}"
        ) from e
    return _dicom_to_uint8(path, ds, a)


def _dicom_truncation(ds, size: int, caught) -> str | None:
    """Why a DICOM data set read from a file of ``size`` bytes is truncated, or None.

    pydicom reads a truncated file without an error: a value cut short keeps its
    declared length, and an undefined-length value (encapsulated pixel data)
    without its end is dropped with a warning.
    """
    from pydicom.datadict import keyword_for_tag

    for w in caught:
        if "end of file" in str(w.message).lower():
            return f"pydicom: {w.message}"
    meta = getattr(ds, "file_meta", None)
    group_length = meta.get("FileMetaInformationGroupLength") if meta is not None else None
    if group_length is not None:
        try:
            meta_end = DICOM_PREFIX_END + 12 + int(group_length)
        except (TypeError, ValueError):  # its value was cut off
            meta_end = DICOM_PREFIX_END + 12
        if size < meta_end:
            return f"it ends inside the file meta information, which needs {meta_end} bytes"
    for tag in ds.keys():
        raw = ds.get_item(tag)
        value = getattr(raw, "value", None)
        length = getattr(raw, "length", None)
        if isinstance(value, bytes) and length not in (None, UNDEFINED_LENGTH):
            if len(value) < length:
                name = keyword_for_tag(tag) or str(tag)
                return f"its {name} element has {len(value)} of its {length} bytes"
    return None


def _cut_header_bytes(ds, size: int) -> int:
    """How many bytes at the end of the file are an element header cut short (0 if none).

    pydicom ignores them: the last bytes of a file too short for an element header.
    """
    ends = [
        raw.value_tell + raw.length
        for raw in map(ds.get_item, ds.keys())
        if getattr(raw, "value_tell", None) is not None and raw.length != UNDEFINED_LENGTH
    ]
    left = size - max(ends) if ends else 0
    return left if 0 < left < 8 else 0


def _dicom_to_uint8(path: str, ds, a: np.ndarray) -> np.ndarray:
    """The pixel array of DICOM data set ``ds`` -> ``(H, W)`` uint8 (module docstring)."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1:
        a = a[0]
    if samples > 1:  # colour (pydicom 3 returns YBR as RGB): luminance, as for RGB PNGs
        rgb = np.asarray(a[..., :3])
        if rgb.dtype != np.uint8:  # 16-bit colour: window to its own range, as 16-bit gray
            rgb = _min_max_uint8(rgb.astype(np.float64))
        return to_uint8_gray(Image.fromarray(rgb, "RGB"))
    if a.ndim != 2 or a.size == 0:
        raise DataFormatError(f"DICOM file {path}: expected a 2-D image, got shape {a.shape}.")
    lut = _voi_lut(ds)
    window = None if lut else _first_window(ds)
    identity = (
        float(ds.get("RescaleSlope", 1) or 1) == 1
        and float(ds.get("RescaleIntercept", 0) or 0) == 0
        and not ds.get("ModalityLUTSequence")
    )
    if a.dtype == np.uint8 and identity and lut is None and window is None:
        return 255 - a if photometric == "MONOCHROME1" else a
    # Every step below maps each stored value on its own, except the min-max range, which
    # is taken over the values present: so they are computed once per value of the span
    # (4096 for 12 bits) and looked up, instead of over a million pixels (the same floats,
    # so the same bytes; benchmarks/prepare_dicom.py). Without a Modality LUT Sequence the
    # modality values are monotonic in the stored ones (a rescale, correctly rounded), so
    # the range's ends are those of the smallest and largest stored value.
    levels = _integer_levels(a, every_value=bool(ds.get("ModalityLUTSequence")))
    if levels is not None:
        first, index, present = levels
        values = np.arange(first, first + present.size, dtype=np.int64)
        table = _values_to_uint8(path, ds, values, present, photometric, lut, window)
        return np.take(table, index)
    return _values_to_uint8(path, ds, a, None, photometric, lut, window)


# The largest span of stored values (max - min + 1) mapped through a table of them.
MAX_TABLE = 2**16


def _integer_levels(a: np.ndarray, every_value: bool = True):
    """``(first, index, present)`` of an integer image whose values span at most
    :data:`MAX_TABLE`: its smallest value, each pixel's value less it (an index), and which
    of the values in the span occur (``every_value``), or only its two ends, which always
    do; None for another image."""
    if a.dtype.kind not in "ui" or a.size == 0:
        return None
    lo, hi = int(a.min()), int(a.max())
    if hi - lo >= MAX_TABLE:
        return None
    if a.dtype.kind == "u":
        index = a - a.dtype.type(lo)
    else:
        index = a.astype(np.int64) - lo
    if every_value:
        present = np.bincount(index.ravel(), minlength=hi - lo + 1) > 0
    else:
        present = np.zeros(hi - lo + 1, bool)
        present[[0, -1]] = True
    return lo, index, present


def _values_to_uint8(path, ds, a, present, photometric, lut, window) -> np.ndarray:
    """Stored values ``a`` -> uint8 by the modality LUT, the VOI LUT or window, or the
    min-max range (over the values flagged ``present`` when given, else over all of
    ``a``), and MONOCHROME1's inversion (the module docstring)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    # Modality units: Rescale Slope / Intercept, or a Modality LUT Sequence.
    v = np.asarray(apply_modality_lut(a, ds), np.float64)
    occurring = v if present is None else v[present]
    if not np.isfinite(occurring).all():
        raise DataFormatError(f"DICOM file {path}: its pixel data holds NaN or infinite values.")
    # The VOI LUT Sequence if there is one, else the first window with its VOI LUT
    # Function (LINEAR, LINEAR_EXACT or SIGMOID), by pydicom as DICOM PS3.3 C.11.2
    # specifies; its output range is then mapped to [0, 1]. Without either, min-max.
    if lut is not None:
        first, entries, top = lut
        # A table is indexed by whole modality values (rounded when a rescale made
        # floats), clamped to the table's span here: pydicom 3.0's apply_voi computes
        # the indices in the table's output type, so with an 8-bit table an index of
        # 256 or more wraps around instead of taking the last entry.
        x = np.clip(np.round(v), first, first + entries - 1).astype(np.int64)
        v, lo, hi = np.asarray(apply_voi_lut(x, ds, index=0), np.float64), 0.0, top
    elif window is not None:
        center, width = window
        far = 50.0 * width + 1.0  # beyond the window: a sigmoid is within 1e-80 of its ends
        probe = np.array([center - far, center + far])
        lo, hi = np.asarray(apply_voi_lut(probe, ds, index=0), np.float64)
        v = np.asarray(apply_voi_lut(v, ds, index=0), np.float64)
    else:
        lo, hi = float(occurring.min()), float(occurring.max())
    scaled = np.clip((v - lo) / (hi - lo), 0.0, 1.0) if hi != lo else np.zeros_like(v)
    if photometric == "MONOCHROME1":
        scaled = 1.0 - scaled
    return np.round(scaled * 255.0).astype(np.uint8)


def _voi_lut(ds) -> tuple[int, int, float] | None:
    """``(first mapped value, number of entries, top of the output range)`` of the first
    item of the VOI LUT Sequence, or None without a usable one.

    Its LUT Descriptor gives the output bits (PS3.3 C.11.2.1.1); a table whose entries
    exceed them (a descriptor that understates its bits, seen in the wild) is taken at
    its own maximum. 0 entries means 65536.
    """
    items = ds.get("VOILUTSequence")
    if not items:
        return None
    item = items[0]
    descriptor = item.get("LUTDescriptor")
    if descriptor is None or len(descriptor) < 3 or "LUTData" not in item:
        return None
    entries, first, bits = (int(x) for x in descriptor[:3])
    top = float(2**bits - 1)
    data = item.LUTData
    try:  # a list of values (US); raw bytes (OW) are trusted to follow the descriptor
        if not isinstance(data, bytes | bytearray):
            top = max(top, float(np.max(np.asarray(data, float))))
    except (TypeError, ValueError):
        pass
    return first, entries or 2**16, top


def _min_max_uint8(a: np.ndarray) -> np.ndarray:
    """Float pixels -> uint8 over their own min-max range (all zero if constant)."""
    if not np.isfinite(a).all():
        raise ValueError("the image holds NaN or infinite pixel values")
    lo, hi = float(a.min()), float(a.max())
    scaled = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
    return np.round(scaled).astype(np.uint8)


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
        if im.width * im.height == 0:
            raise ValueError("image has no pixels")
        return _min_max_uint8(np.asarray(im, dtype=np.float64))
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

    Raises ``DataFormatError`` for an image so narrow (e.g. 3000 x 2 pixels) that
    its short side would become less than one pixel, and for an empty one.
    """
    if size < 1:
        raise ValueError(f"The stored image size must be at least 1 pixel, got {size}.")
    if min(height, width) < 1:
        raise DataFormatError(f"The image has no pixels ({width} x {height}, width x height).")
    scale = size / max(height, width)
    new_w, new_h = round(width * scale), round(height * scale)
    if min(new_w, new_h) < 1:
        raise DataFormatError(
            f"An image of {width} x {height} pixels (width x height) is too narrow to store at "
            f"{size} px: its short side would become {min(width, height) * scale:.2g} pixels "
            "(less than 1). It is not a radiograph, or it is damaged."
        )
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
