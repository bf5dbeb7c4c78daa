"""Phantoms written out in the raw layouts of the DICOM data sets: RSNA Pneumonia (stage 2)
and VinDr-CXR (PhysioNet, or Kaggle's VinBigData with ``kaggle=True``).

  python -m chestattn_jax.data.export --layout=rsna_pneumonia --out_dir=/tmp/rsna_phantom
  python -m chestattn_jax.data.export --layout=vindr_cxr --out_dir=/tmp/vindr_phantom

The images are 16-bit DICOMs (12 bits used, as in many radiographs), every other one
MONOCHROME1 (stored inverted), with sex, age and view position in their headers. Boxes are
the phantom truth's, in the DICOM's own pixels.

RSNA: ``Lung Opacity`` is an opacity among the phantom findings (pneumonia, consolidation,
infiltration: our mapping), one box per such finding; the detailed class is ``Lung
Opacity``, else ``No Lung Opacity / Not Normal`` with any other finding, else ``Normal``.

VinDr-CXR: phantom findings become VinDr labels (:data:`VINDR_FROM_PHANTOM`; Hernia has
none and is not written). Each image of the training split is read by three readers,
each of whom misses each finding with probability ``miss_rate`` (so that the label rules
``any`` and ``majority`` differ) and boxes what they mark; the test split is one consensus
reader without misses. The images are wider than tall (a quarter of the side is added on
the right), so that letterboxing moves the boxes.

The export claims its folder as :func:`chestattn_jax.data.export.claim_out_dir` does.
"""

from __future__ import annotations

import csv
import os
import uuid

import numpy as np

from chestattn_jax.data import rsna_pneumonia, vindr_cxr
from chestattn_jax.data.export import EXPORT_FILE, Layout, claim_out_dir
from chestattn_jax.data.synthetic import PHANTOM_CLASSES, PhantomConfig, render

RSNA_OPACITIES = ("Pneumonia", "Consolidation", "Infiltration")
VINDR_FROM_PHANTOM = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Effusion": "Pleural effusion",
    "Infiltration": "Infiltration",
    "Mass": "Nodule/Mass",
    "Nodule": "Nodule/Mass",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Emphysema": "Emphysema",
    "Fibrosis": "Pulmonary fibrosis",
    "Pleural_Thickening": "Pleural thickening",
}
BITS = 12  # of the 16 stored
RADIOLOGISTS = tuple(f"R{i}" for i in range(1, 18))


def rsna_image_id(index: int) -> str:
    """A ``patientId`` of the form RSNA's have (a UUID), fixed by ``index``."""
    return str(uuid.UUID(int=(0x9E3779B97F4A7C15 * (index + 1)) % 2**128))


def vindr_image_id(index: int) -> str:
    """An ``image_id`` of the form VinDr's have (32 hex digits), fixed by ``index``."""
    return rsna_image_id(index).replace("-", "")


def write_dicom(
    path: str, image: np.ndarray, *, bits: int = BITS, monochrome1: bool = False, **header
) -> None:
    """Writes the uint8 ``image`` as a DX DICOM (explicit VR little endian) with ``bits``
    stored bits (8: the pixels as they are; more: scaled to the range and stored in 16),
    MONOCHROME1 and inverted where ``monochrome1``. ``header``: attributes set on the data
    set after the writer's own (a ``SOPInstanceUID`` there is the file's too)."""
    from pydicom import config
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        DigitalXRayImageStorageForPresentation,
        ExplicitVRLittleEndian,
        generate_uid,
    )

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = header.get("SOPInstanceUID") or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    for name, value in header.items():
        # Unchecked: RSNA's plain-number ages are not valid DICOM AS, as in its files.
        tag = tag_for_keyword(name)
        ds.add(DataElement(tag, dictionary_VR(tag), value, validation_mode=config.IGNORE))
    top = 2**bits - 1
    stored = np.uint8 if bits == 8 else np.uint16
    pixels = np.round(image.astype(np.float64) * (top / 255.0)).astype(stored)
    if monochrome1:
        pixels = top - pixels
    ds.set_pixel_data(pixels, "MONOCHROME1" if monochrome1 else "MONOCHROME2", bits)
    ds.save_as(path, enforce_file_format=True)


def _meta(seed: int, index: int):
    rng = np.random.default_rng((seed, 19, index))
    sex = "M" if rng.random() < 0.55 else "F"
    return sex, int(rng.integers(18, 90)), ("AP" if rng.random() < 0.3 else "PA"), rng


def _present(labels) -> list[str]:
    return [c for c, y in zip(PHANTOM_CLASSES, labels, strict=True) if y]


# ------------------------------------------------------------------------ RSNA


def rsna_files(num_images: int) -> list[str]:
    """Every file :func:`export_rsna` writes (:func:`chestattn_jax.data.export.export_files`)."""
    images = [f"{rsna_pneumonia.IMAGE_DIR}/{rsna_image_id(i)}.dcm" for i in range(num_images)]
    return [EXPORT_FILE, *images, rsna_pneumonia.LABELS_FILE, rsna_pneumonia.CLASS_INFO_FILE]


def export_rsna(
    out_dir: str,
    num_images: int,
    *,
    seed: int = 0,
    config: PhantomConfig | None = None,
    overwrite: bool = False,
    truth: dict | None = None,
) -> dict:
    """Writes ``num_images`` phantoms in the RSNA Pneumonia stage 2 layout into ``out_dir``
    (empty, absent, or with ``overwrite`` an earlier export); returns counts. ``truth``, if
    given, is filled with ``{patientId: (target, boxes (n, 4) [x, y, w, h])}``."""
    config = config or PhantomConfig()
    truth = {} if truth is None else truth
    about = {"layout": "rsna_pneumonia", "num_images": num_images, "seed": seed}
    claim_out_dir(out_dir, rsna_files(num_images), overwrite=overwrite, about=about)
    os.makedirs(os.path.join(out_dir, rsna_pneumonia.IMAGE_DIR), exist_ok=True)
    labels, info = [], []
    for index in range(num_images):
        ex = render(seed, index, config)
        image_id = rsna_image_id(index)
        sex, age, view, _ = _meta(seed, index)
        write_dicom(
            os.path.join(out_dir, rsna_pneumonia.IMAGE_DIR, f"{image_id}.dcm"),
            ex["image"],
            monochrome1=bool(index % 2),
            PatientID=image_id,
            PatientSex=sex,
            PatientAge=str(age),  # RSNA's ages are plain numbers
            ViewPosition=view,
        )
        present = _present(ex["labels"])
        opacities = [c for c in present if c in RSNA_OPACITIES]
        boxes = np.asarray([ex["boxes"][PHANTOM_CLASSES.index(c)] for c in opacities], np.float32)
        truth[image_id] = (int(bool(opacities)), boxes.reshape(-1, 4))
        detailed = (
            "Lung Opacity" if opacities else "No Lung Opacity / Not Normal" if present else "Normal"
        )
        for box in boxes:
            labels.append([image_id, *(f"{v:.1f}" for v in box), 1])
            info.append([image_id, detailed])
        if not opacities:
            labels.append([image_id, "", "", "", "", 0])
            info.append([image_id, detailed])
    _write_csv(out_dir, rsna_pneumonia.LABELS_FILE, rsna_pneumonia.LABEL_COLUMNS, labels)
    _write_csv(out_dir, rsna_pneumonia.CLASS_INFO_FILE, ("patientId", "class"), info)
    return {
        "num_images": num_images,
        "num_positive": sum(t for t, _ in truth.values()),
        "num_boxes": sum(len(b) for _, b in truth.values()),
        "root": out_dir,
    }


def _write_csv(out_dir: str, rel: str, header, rows) -> None:
    with open(os.path.join(out_dir, rel), "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


# ----------------------------------------------------------------------- VinDr


def _vindr_split(index: int, num_images: int, test_fraction: float) -> str:
    return "test" if index >= num_images - round(test_fraction * num_images) else "train"


def vindr_files(
    num_images: int, *, kaggle: bool = False, test_fraction: float = 0.2, **_
) -> list[str]:
    """Every file :func:`export_vindr` writes (:func:`chestattn_jax.data.export.export_files`)."""
    if kaggle:
        images = [f"train/{vindr_image_id(i)}.dicom" for i in range(num_images)]
        return [EXPORT_FILE, *images, vindr_cxr.KAGGLE_FILE]
    images = [
        f"{_vindr_split(i, num_images, test_fraction)}/{vindr_image_id(i)}.dicom"
        for i in range(num_images)
    ]
    tables = [rel for split in vindr_cxr.SPLITS for rel in vindr_cxr.PHYSIONET_FILES[split]]
    return [EXPORT_FILE, *images, *tables]


def export_vindr(
    out_dir: str,
    num_images: int,
    *,
    kaggle: bool = False,
    test_fraction: float = 0.2,  # of the images, the PhysioNet test split
    miss_rate: float = 0.3,
    seed: int = 0,
    config: PhantomConfig | None = None,
    overwrite: bool = False,
    truth: dict | None = None,
) -> dict:
    """Writes ``num_images`` phantoms in the VinDr-CXR PhysioNet layout (or Kaggle's, with
    ``kaggle``) into ``out_dir`` (empty, absent, or with ``overwrite`` an earlier export).

    Returns counts; ``truth``, if given, is filled with ``{image_id: {"split", "width",
    "height", "readers": {rad_id: {VinDr label: [(x, y, w, h) boxes]}}}}``. A Kaggle copy
    writes all images as training ones, with Kaggle's 14 classes only.
    """
    config = config or PhantomConfig()
    truth = {} if truth is None else truth
    planned = vindr_files(num_images, kaggle=kaggle, test_fraction=test_fraction)
    about = {"layout": "vindr_cxr", "kaggle": kaggle, "num_images": num_images, "seed": seed}
    claim_out_dir(out_dir, planned, overwrite=overwrite, about=about)
    known = set(vindr_cxr.KAGGLE_CLASSES if kaggle else vindr_cxr.CLASSES)
    for index, rel in enumerate(planned[1 : num_images + 1]):
        split = rel.split("/")[0]
        ex = render(seed, index, config)
        image_id = vindr_image_id(index)
        sex, age, _, rng = _meta(seed, index)
        side = ex["image"].shape[0]
        image = np.zeros((side, side + side // 4), np.uint8)
        image[:, :side] = ex["image"]
        os.makedirs(os.path.join(out_dir, split), exist_ok=True)
        write_dicom(
            os.path.join(out_dir, rel),
            image,
            monochrome1=bool(index % 2),
            PatientSex=sex,
            PatientAge=f"{age:03d}Y",
        )
        findings = [
            (VINDR_FROM_PHANTOM[c], c) for c in _present(ex["labels"]) if c in VINDR_FROM_PHANTOM
        ]
        findings = [(name, c) for name, c in findings if name in known]
        readers = (
            (vindr_cxr.CONSENSUS,)
            if split == "test"
            else tuple(rng.choice(RADIOLOGISTS, 3, replace=False).tolist())
        )
        marks = {}
        for reader in readers:
            marks[reader] = {}
            for name, c in findings:
                if split == "train" and rng.random() < miss_rate:
                    continue
                boxes = marks[reader].setdefault(name, [])
                if name in vindr_cxr.LOCAL_CLASSES:
                    boxes.append(tuple(float(v) for v in ex["boxes"][PHANTOM_CLASSES.index(c)]))
        truth[image_id] = {
            "split": split,
            "width": image.shape[1],
            "height": image.shape[0],
            "readers": marks,
        }
    if kaggle:
        _write_kaggle(out_dir, truth)
    else:
        _write_physionet(out_dir, truth)
    return {
        "num_images": num_images,
        "num_test": sum(t["split"] == "test" for t in truth.values()),
        "num_boxes": sum(
            len(b) for t in truth.values() for m in t["readers"].values() for b in m.values()
        ),
        "root": out_dir,
    }


def _corners(box) -> list[str]:
    x, y, w, h = box
    return [f"{x:.3f}", f"{y:.3f}", f"{x + w:.3f}", f"{y + h:.3f}"]


def _write_physionet(out_dir: str, truth: dict) -> None:
    os.makedirs(os.path.join(out_dir, vindr_cxr.ANNOTATIONS_DIR), exist_ok=True)
    label_columns = (*vindr_cxr.CLASSES, vindr_cxr.NO_FINDING)
    for split in vindr_cxr.SPLITS:
        boxes_rel, labels_rel = vindr_cxr.PHYSIONET_FILES[split]
        box_rows, label_rows = [], []
        for image_id, t in truth.items():
            if t["split"] != split:
                continue
            for reader, marks in t["readers"].items():
                cells = [int(c in marks) for c in vindr_cxr.CLASSES]
                reader_cell = [reader] if split == "train" else []
                label_rows.append([image_id, *reader_cell, *cells, int(not marks)])
                if not marks:
                    box_rows.append([image_id, reader, vindr_cxr.NO_FINDING, "", "", "", ""])
                for name, boxes in marks.items():
                    box_rows += [[image_id, reader, name, *_corners(b)] for b in boxes]
        # The test labels are a consensus: that file has no reader column.
        reader_column = ["rad_id"] if split == "train" else []
        _write_csv(out_dir, labels_rel, ("image_id", *reader_column, *label_columns), label_rows)
        header = ("image_id", "rad_id", "class_name", *vindr_cxr.BOX_COLUMNS)
        _write_csv(out_dir, boxes_rel, header, box_rows)


def _write_kaggle(out_dir: str, truth: dict) -> None:
    rows = []
    no_finding = vindr_cxr.KAGGLE_CLASSES.index(vindr_cxr.NO_FINDING)
    for image_id, t in truth.items():
        for reader, marks in t["readers"].items():
            if not marks:
                rows.append([image_id, vindr_cxr.NO_FINDING, no_finding, reader, "", "", "", ""])
            for name, boxes in marks.items():
                class_id = vindr_cxr.KAGGLE_CLASSES.index(name)
                rows += [[image_id, name, class_id, reader, *_corners(b)] for b in boxes]
    header = ("image_id", "class_name", "class_id", "rad_id", *vindr_cxr.BOX_COLUMNS)
    _write_csv(out_dir, vindr_cxr.KAGGLE_FILE, header, rows)


RSNA = Layout(rsna_files, export_rsna)
VINDR = Layout(vindr_files, export_vindr)
