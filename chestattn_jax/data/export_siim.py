"""Phantoms written out in the SIIM-ACR Pneumothorax layout
(:mod:`chestattn_jax.data.siim_pneumothorax`):

  python -m chestattn_jax.data.export --layout=siim_pneumothorax --out_dir=/tmp/siim_phantom

``train-rle.csv`` (header ``ImageId, EncodedPixels``, every value after a space) and one
DICOM per image at ``dicom-images-train/<study UID>/<series UID>/<ImageId>.dcm``, whose
header gives the patient, sex, age and view. A phantom with a pneumothorax gets its truth
mask (:func:`chestattn_jax.data.synthetic.render`), mapped onto the 1024-px frame of the
challenge's code (nearest neighbour) and encoded as its relative, column-major run-length
code in two rows, its upper and lower part, whose union is its truth (real files have a
row per separate region; two rows per positive image exercise the union on each); one
without gets ``-1``. The image itself is written at the phantom's size,
as a copy with smaller DICOMs would be. Every other phantom finding is drawn in the
image and not labelled: the set has the one class.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from chestattn_jax.data.export import EXPORT_FILE, Layout, _patient_meta, claim_out_dir
from chestattn_jax.data.siim_pneumothorax import IMAGE_DIR, MASK_FRAME, RLE_FILE, encode_rle
from chestattn_jax.data.synthetic import PHANTOM_CLASSES, PhantomConfig, render

RLE_HEADER = "ImageId, EncodedPixels"
IMAGES_PER_PATIENT = 2
# The UID root of the distributed files' ImageIds (1.2.276.0.7230010.3.1.4.<...>).
UID_ROOT = "1.2.276.0.7230010.3.1"
_PNEUMOTHORAX = PHANTOM_CLASSES.index("Pneumothorax")


def _uids(index: int) -> tuple[str, str, str]:
    """``(study, series, image)`` UIDs of image ``index``."""
    tail = f"{index + 1}"
    return f"{UID_ROOT}.2.{tail}", f"{UID_ROOT}.3.{tail}", f"{UID_ROOT}.4.{tail}"


def _image_path(index: int) -> str:
    """``dicom-images-train/<study>/<series>/<ImageId>.dcm``, relative to the folder."""
    study, series, image = _uids(index)
    return f"{IMAGE_DIR}/{study}/{series}/{image}.dcm"


def siim_files(num_images: int) -> list[str]:
    """Every file :func:`export_siim` writes (:func:`chestattn_jax.data.export.export_files`)."""
    return [EXPORT_FILE, RLE_FILE, *(_image_path(i) for i in range(num_images))]


def frame_mask(mask: np.ndarray, frame: int = MASK_FRAME) -> np.ndarray:
    """An ``(S, S)`` bool mask -> ``(frame, frame)``, nearest neighbour."""
    up = Image.fromarray(np.asarray(mask, np.uint8) * 255).resize(
        (frame, frame), Image.Resampling.NEAREST
    )
    return np.asarray(up) > 0


def regions(mask: np.ndarray) -> list[np.ndarray]:
    """``mask`` as the rows of one image: its upper and lower halves (split at the middle
    of the rows it spans; one part if it spans one row), whose union is ``mask``."""
    rows = np.flatnonzero(mask.any(1))
    middle = (rows[0] + rows[-1] + 1) // 2
    upper, lower = mask.copy(), mask.copy()
    upper[middle:], lower[:middle] = False, False
    return [part for part in (upper, lower) if part.any()]


def write_dicom(path: str, pixels: np.ndarray, uids, *, patient: str, sex: str, age: int, view):
    """A DX DICOM (explicit VR little endian, 8-bit MONOCHROME2) of ``pixels`` with the
    header fields the reader takes (patient, sex, age as ``NNNY``, view)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    study, series, image = uids
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = image
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = image
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.Modality = "CR"
    ds.PatientID, ds.PatientSex, ds.PatientAge = patient, sex, f"{age:03d}Y"
    ds.ViewPosition = view
    ds.set_pixel_data(np.asarray(pixels, np.uint8), "MONOCHROME2", 8)
    ds.save_as(path, enforce_file_format=True)


def export_siim(
    out_dir: str,
    num_images: int,
    *,
    seed: int = 0,
    config: PhantomConfig | None = None,
    overwrite: bool = False,
) -> dict:
    """Writes ``num_images`` phantoms in the SIIM-ACR layout into ``out_dir`` (empty,
    absent, or with ``overwrite`` an earlier export:
    :func:`chestattn_jax.data.export.claim_out_dir`).

    Returns ``{"num_images", "num_patients", "num_positive", "num_rows", "root",
    "positive": {ImageId: index of the phantom (render(seed, index, config))}}``.
    """
    config = config or PhantomConfig()
    about = {"layout": "siim_pneumothorax", "num_images": num_images, "seed": seed}
    claim_out_dir(out_dir, siim_files(num_images), overwrite=overwrite, about=about)
    lines, positive = [RLE_HEADER], {}
    for index in range(num_images):
        patient = index // IMAGES_PER_PATIENT
        sex, age, rng = _patient_meta(seed, patient)
        ex = render(seed, index, config)
        uids = _uids(index)
        rel = _image_path(index)
        path = os.path.join(out_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        view = "AP" if rng.random() < 0.3 else "PA"
        write_dicom(path, ex["image"], uids, patient=f"p{patient:05d}", sex=sex, age=age, view=view)
        image_id = uids[2]
        truth = ex["masks"][_PNEUMOTHORAX] if ex["labels"][_PNEUMOTHORAX] else None
        if truth is None or not truth.any():
            lines.append(f"{image_id}, -1")
            continue
        positive[image_id] = index
        lines += [f"{image_id}, {encode_rle(frame_mask(r))}" for r in regions(truth)]
    with open(os.path.join(out_dir, RLE_FILE), "w", newline="") as f:
        f.write("\n".join(lines) + "\n")
    return {
        "num_images": num_images,
        "num_patients": -(-num_images // IMAGES_PER_PATIENT),
        "num_positive": len(positive),
        "num_rows": len(lines) - 1,
        "root": out_dir,
        "positive": positive,
    }


SIIM = Layout(siim_files, export_siim)
