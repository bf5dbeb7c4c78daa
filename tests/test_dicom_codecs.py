"""The compressed DICOM transfer syntaxes clinical radiographs come in, decoded through
pydicom's pixel-data plugins (pylibjpeg with libjpeg and openjpeg, pyjpegls).

Each file is generated here from one 12-bit image: pydicom's own encoders write RLE,
JPEG-LS and JPEG 2000; imagecodecs (libjpeg-turbo 3) writes JPEG Lossless, Process 14
Selection Value 1 (the usual syntax of CR/DX archives), and 12-bit JPEG Extended, which
pydicom cannot encode. The lossless syntaxes must give exactly the uncompressed file's
pixels.
"""

import numpy as np
import pytest
from pydicom import uid

from chestattn_jax.data.images import load_grayscale

H, W = 64, 48


def _image() -> np.ndarray:
    """12-bit pixels: a smooth ramp (lossy codecs keep it) with a little noise."""
    y, x = np.mgrid[0:H, 0:W]
    noise = np.random.default_rng(0).integers(0, 64, (H, W))
    return (y * 50 + x * 20 + noise).clip(0, 4095).astype(np.uint16)


def _dataset(pixels: np.ndarray):
    from pydicom.dataset import Dataset, FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = uid.DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.set_pixel_data(pixels, "MONOCHROME2", 12)
    return ds


@pytest.fixture(scope="module")
def uncompressed(tmp_path_factory):
    """The reference: the same pixels, uncompressed, through the same reader."""
    path = tmp_path_factory.mktemp("dicom") / "plain.dcm"
    _dataset(_image()).save_as(path, enforce_file_format=True)
    out = load_grayscale(str(path))
    assert out.min() == 0 and out.max() == 255  # windowed to its own range
    return out


def _read(ds, tmp_path, name: str) -> np.ndarray:
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return load_grayscale(str(path))


@pytest.mark.parametrize(
    "syntax",
    [uid.RLELossless, uid.JPEGLSLossless, uid.JPEG2000Lossless],
    ids=["RLE", "JPEG-LS", "JPEG 2000"],
)
def test_lossless_syntaxes_written_by_pydicom(syntax, uncompressed, tmp_path):
    ds = _dataset(_image())
    ds.compress(syntax)
    assert ds.file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(_read(ds, tmp_path, "c.dcm"), uncompressed)


def _encapsulated(frame: bytes, syntax):
    from pydicom.encaps import encapsulate

    ds = _dataset(_image())
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return ds


def test_jpeg_lossless_process_14(uncompressed, tmp_path):
    imagecodecs = pytest.importorskip("imagecodecs")
    frame = imagecodecs.jpeg8_encode(_image(), lossless=True, predictor=1, bitspersample=12)
    ds = _encapsulated(frame, uid.JPEGLosslessSV1)
    np.testing.assert_array_equal(_read(ds, tmp_path, "p14.dcm"), uncompressed)


def test_jpeg_extended_12_bit(uncompressed, tmp_path):
    imagecodecs = pytest.importorskip("imagecodecs")
    frame = imagecodecs.jpeg8_encode(_image(), level=95, bitspersample=12)
    out = _read(_encapsulated(frame, uid.JPEGExtended12Bit), tmp_path, "ext.dcm")
    # Lossy: close to the original, not equal (a 12-bit baseline decoder would fail or
    # return 8-bit garbage, far from it).
    diff = np.abs(out.astype(int) - uncompressed.astype(int))
    assert diff.mean() < 3 and diff.max() < 40, (diff.mean(), diff.max())


def test_an_unsupported_syntax_names_the_file_and_the_syntax(tmp_path):
    from chestattn_jax.data.raw import DataFormatError

    ds = _encapsulated(b"\xff\xd8 not really a jpeg \xff\xd9", uid.JPEGLosslessSV1)
    path = tmp_path / "broken.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DataFormatError, match=r"broken\.dcm.*1\.2\.840\.10008\.1\.2\.4\.70"):
        load_grayscale(str(path))


@pytest.mark.parametrize("explicit", [True, False], ids=["explicit VR", "implicit VR"])
def test_a_file_meta_without_transfer_syntax_reads_as_it_was_encoded(
    explicit, uncompressed, tmp_path
):
    """Some writers leave (0002,0010) out; native pixel data then decodes in the encoding
    the data set was read in (pydicom alone refuses such a file)."""
    ds = _dataset(_image())
    if not explicit:
        ds.file_meta.TransferSyntaxUID = uid.ImplicitVRLittleEndian
    path = tmp_path / "no_syntax.dcm"
    ds.save_as(path, enforce_file_format=True)
    import pydicom

    written = pydicom.dcmread(path)
    del written.file_meta.TransferSyntaxUID
    written.save_as(path, implicit_vr=not explicit, little_endian=True)
    assert "TransferSyntaxUID" not in pydicom.dcmread(path).file_meta
    np.testing.assert_array_equal(load_grayscale(str(path)), uncompressed)
