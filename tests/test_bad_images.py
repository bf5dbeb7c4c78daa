"""Bad image files: each is named, and under --on_bad_image=skip none stops a prepare."""

import json
import os
import struct
import zlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from raw_fixtures import write_dicom, write_nih_fixture

from chestattn_jax.data import prepare as prep
from chestattn_jax.data import records
from chestattn_jax.data.images import letterbox, letterbox_boxes, load_grayscale
from chestattn_jax.data.raw import DataFormatError

SIZE = 32

tfds.disable_progress_bar()


def write_png_header(path, width: int, height: int) -> None:
    """A PNG that declares ``width`` x ``height`` 8-bit gray pixels and holds none."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("shape", [(2, 3000), (1, 1000), (3000, 2), (0, 5)])
def test_a_degenerate_image_cannot_be_letterboxed(shape):
    h, w = shape
    with pytest.raises(DataFormatError, match=rf"{w} x {h}"):
        letterbox(np.zeros(shape, np.uint8), 224)
    with pytest.raises(DataFormatError, match=rf"{w} x {h}"):
        letterbox_boxes(np.zeros((1, 4), np.float32), h, w, 224)


def test_a_narrow_image_that_keeps_a_pixel_is_letterboxed():
    # 3000 x 20 at 224 px: the short side becomes 1.49 -> 1 pixel, which is still an image.
    out = letterbox(np.full((20, 3000), 200, np.uint8), 224)
    rows = np.flatnonzero(out.max(axis=1))
    assert out.shape == (224, 224) and rows.tolist() == [111] and out[111].min() > 0


def test_every_unreadable_file_is_a_named_data_format_error(tmp_path):
    folder = tmp_path / "folder.png"
    folder.mkdir()
    with pytest.raises(DataFormatError, match=r"folder\.png is a directory"):
        load_grayscale(str(folder))
    bomb = tmp_path / "bomb.png"
    write_png_header(bomb, 20000, 20000)  # 400 megapixels
    with pytest.raises(DataFormatError, match=r"bomb\.png.*exceeds limit"):
        load_grayscale(str(bomb))
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataFormatError, match=r"junk\.png"):
        load_grayscale(str(junk))
    nan = tmp_path / "nan.tif"
    Image.fromarray(np.array([[0.0, np.nan], [1.0, 2.0]], np.float32)).save(nan)
    with pytest.raises(DataFormatError, match=r"nan\.tif.*NaN"):
        load_grayscale(str(nan))
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        load_grayscale(str(tmp_path / "missing.png"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_a_file_it_may_not_read_is_named(tmp_path):
    locked = tmp_path / "locked.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(locked)
    locked.chmod(0)
    with pytest.raises(DataFormatError, match=r"locked\.png.*Permission denied"):
        load_grayscale(str(locked))


def _dicom_bytes(tmp_path, compressed: bool) -> tuple[bytes, int]:
    """A 64 x 64 16-bit DICOM (RLE-compressed or not) and the offset of its PixelData tag."""
    path = tmp_path / "full.dcm"
    write_dicom(path, (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16))
    if compressed:
        import pydicom
        from pydicom.uid import RLELossless

        ds = pydicom.dcmread(path)
        ds.compress(RLELossless)
        ds.save_as(path)
    data = path.read_bytes()
    np.testing.assert_array_equal(load_grayscale(str(path)).shape, (64, 64))
    return data, data.find(b"\xe0\x7f\x10\x00")  # (7FE0,0010), little endian


# Where the file is cut, relative to its PixelData tag (None: counted from the start).
CUTS = {
    "in-the-preamble": (None, 100),
    "in-the-file-meta": (None, 150),
    "before-pixel-data-mid-header": (-4, None),
    "in-the-pixel-data-tag": (2, None),
    "in-the-pixel-data-length": (8, None),
    "first-pixel-bytes": (12 + 88, None),
}


@pytest.mark.parametrize("compressed", [False, True], ids=["native", "rle"])
@pytest.mark.parametrize("cut", list(CUTS), ids=list(CUTS))
def test_a_truncated_dicom_is_reported_as_truncated(tmp_path, cut, compressed):
    data, tag = _dicom_bytes(tmp_path, compressed)
    after_tag, absolute = CUTS[cut]
    end = absolute if absolute is not None else tag + after_tag
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[:end])
    with pytest.raises(DataFormatError, match=rf"DICOM file {path} is truncated"):
        load_grayscale(str(path))


def test_a_dicom_missing_only_its_last_pixel_byte_is_truncated(tmp_path):
    data, _ = _dicom_bytes(tmp_path, compressed=False)
    path = tmp_path / "short.dcm"
    path.write_bytes(data[:-1])
    with pytest.raises(DataFormatError, match=r"short\.dcm is truncated.*8191 of its 8192 bytes"):
        load_grayscale(str(path))


def test_prepare_names_and_skips_every_bad_file(tmp_path):
    truth = write_nih_fixture(tmp_path / "raw", num_images=36)
    images = truth["images_dir"]
    names = sorted(truth["labels"])
    narrow = names[6]
    Image.fromarray(np.full((2, 3000), 128, np.uint8)).save(os.path.join(images, narrow))
    data_dir = str(tmp_path / "prepared")
    with pytest.raises(DataFormatError, match=rf"{narrow}.*3000 x 2 pixels.*too narrow"):
        prep.prepare("nih", truth["root"], data_dir, SIZE)
    assert not records.open_builder("nih", data_dir, SIZE).is_prepared()

    bad = {narrow: "too narrow"}
    folder = os.path.join(images, names[7])  # a folder named like the image
    os.remove(folder)
    os.mkdir(folder)
    bad[names[7]] = "is a directory"
    write_png_header(tmp_path / "raw" / "images" / names[8], 20000, 20000)
    bad[names[8]] = "decompression bomb"
    with open(os.path.join(images, names[9]), "r+b") as f:
        f.truncate(60)
    bad[names[9]] = "Cannot decode image"
    os.remove(os.path.join(images, names[10]))
    bad[names[10]] = "not found"

    # In worker processes, as the command runs by default.
    version = prep.prepare("nih", truth["root"], data_dir, SIZE, on_bad_image="skip", num_workers=2)
    with open(os.path.join(version, records.REPORT_FILE)) as f:
        report = json.load(f)
    assert report["examples_written"] == truth["num_images"] - len(bad)
    skipped = {os.path.basename(s["file"]): s["error"] for s in report["skipped"]}
    assert set(skipped) == set(bad)
    for name, reason in bad.items():
        assert name in skipped[name] and reason in skipped[name], skipped[name]


def test_a_16_bit_colour_dicom_is_windowed_not_wrapped(tmp_path):
    gray = (np.arange(64).reshape(8, 8) * 64).astype(np.uint16)  # 0 ... 4032: 12 bits
    write_dicom(tmp_path / "rgb16.dcm", np.stack([gray] * 3, axis=-1), photometric="RGB")
    expected = np.round(gray / gray.max() * 255).astype(np.uint8)
    np.testing.assert_allclose(load_grayscale(str(tmp_path / "rgb16.dcm")), expected, atol=1)
