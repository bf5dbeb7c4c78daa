"""Phantoms written out in the MIMIC-CXR-JPG and PadChest raw layouts.

The two data sets whose labels come in CSV tables beside an image tree
(:mod:`chestattn_jax.data.mimic_cxr`, :mod:`chestattn_jax.data.padchest`), so that their
readers, prepare and training run end to end on files laid out as distributed:

  python -m chestattn_jax.data.export --layout=mimic_cxr --out_dir=/tmp/mimic_phantom
  python -m chestattn_jax.data.export --layout=padchest --out_dir=/tmp/padchest_phantom

MIMIC-CXR-JPG: the three gzipped tables and JPEGs at
``files/p<2 digits>/p<subject_id>/s<study_id>/<dicom_id>.jpg``; one image per study, three
studies per patient; findings map onto CheXpert's observations as in the CheXpert export
(:data:`chestattn_jax.data.export.CHEXPERT_FROM_NIH`), a tenth of the positives of the
training studies written uncertain (``-1.0``), unmentioned observations blank; the
official split patient-disjoint (the last patients ``test``, those before them
``validate``). PadChest: its CSV and 16-bit PNGs under numbered folders, findings in
PadChest's spelling (``['normal']`` for none), with the file's quirks: stray spaces in
``Labels`` entries, a repeated entry, a term that is no class, a quoted Spanish report
with commas, floats for years, and ``MethodLabel`` ``Physician`` for about a third of
the images (``RNN_model`` for the rest).

Each export claims its folder as the other layouts' do
(:func:`chestattn_jax.data.export.claim_out_dir`).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os

import numpy as np
from PIL import Image

from chestattn_jax.data import mimic_cxr, padchest
from chestattn_jax.data.chexpert import LABEL_COLUMNS
from chestattn_jax.data.export import (
    EXPORT_FILE,
    IMAGES_PER_PATIENT,
    Layout,
    chexpert_values,
    claim_out_dir,
)
from chestattn_jax.data.synthetic import PHANTOM_CLASSES, PhantomConfig, render

MIMIC_TABLES = tuple(
    name + ".gz" for name in (mimic_cxr.LABELS_FILE, mimic_cxr.METADATA_FILE, mimic_cxr.SPLIT_FILE)
)
MIMIC_METADATA_COLUMNS = (
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
# The labeller table's observation columns are in alphabetical order.
MIMIC_LABEL_COLUMNS = ("subject_id", "study_id", *sorted(LABEL_COLUMNS))
# Phantom (NIH) findings in PadChest's spelling.
PADCHEST_FROM_NIH = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation",
    "Edema": "pulmonary edema",
    "Effusion": "pleural effusion",
    "Emphysema": "emphysema",
    "Fibrosis": "pulmonary fibrosis",
    "Hernia": "hiatal hernia",
    "Infiltration": "infiltrates",
    "Mass": "mass",
    "Nodule": "nodule",
    "Pleural_Thickening": "pleural thickening",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
}
PADCHEST_COLUMNS = (
    "ImageID",
    "ImageDir",
    "StudyDate_DICOM",
    "StudyID",
    "PatientID",
    "PatientBirth",
    "PatientSex_DICOM",
    "ViewPosition_DICOM",
    "Projection",
    "MethodProjection",
    "Pediatric",
    "Modality_DICOM",
    "Report",
    "MethodLabel",
    "Labels",
    "Localizations",
)
PADCHEST_IMAGES_PER_DIR = 50
_PADCHEST_DICOM_VIEW = {"PA": "POSTEROANTERIOR", "AP": "ANTEROPOSTERIOR", "AP_horizontal": ""}


def _patient(seed: int, patient: int) -> tuple[str, int, np.random.Generator]:
    rng = np.random.default_rng((seed, 17, patient))
    return ("M" if rng.random() < 0.55 else "F"), int(rng.integers(18, 90)), rng


def _present(labels) -> list[str]:
    return [c for c, y in zip(PHANTOM_CLASSES, labels, strict=True) if y]


def _mimic_ids(index: int) -> tuple[str, str, str]:
    """``(subject_id, study_id, dicom_id)`` of image ``index``: subjects ``p10`` to
    ``p18``, one study per image, a dicom_id of 5 groups of 8 hex digits."""
    patient = index // IMAGES_PER_PATIENT
    subject = 10_000_000 + (patient * 2_750_003) % 9_000_000
    digest = hashlib.sha1(f"mimic_cxr:{index}".encode()).hexdigest()
    dicom = "-".join(digest[i : i + 8] for i in range(0, 40, 8))
    return str(subject), str(50_000_000 + 13 * index + 1), dicom


def _mimic_image(index: int) -> str:
    subject, study, dicom = _mimic_ids(index)
    return f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"


def mimic_files(num_images: int) -> list[str]:
    """Every file :func:`export_mimic_cxr` writes (``export.export_files``)."""
    return [EXPORT_FILE, *(_mimic_image(i) for i in range(num_images)), *MIMIC_TABLES]


def _mimic_splits(num_patients: int, test_fraction: float, validate_fraction: float):
    """The split of each patient: the last ``test``, those before them ``validate``."""
    num_test = max(1, round(test_fraction * num_patients))
    num_validate = max(1, round(validate_fraction * num_patients))
    if num_test + num_validate >= num_patients:
        raise ValueError(
            f"A MIMIC-CXR export needs more patients than its {num_test} test and "
            f"{num_validate} validate ones: export more images."
        )
    first_validate = num_patients - num_test - num_validate
    return [
        "train" if p < first_validate else "validate" if p < num_patients - num_test else "test"
        for p in range(num_patients)
    ]


def _write_gz_csv(path: str, header, rows) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
        gz.write(text.getvalue().encode())


def export_mimic_cxr(
    out_dir: str,
    num_images: int,
    *,
    test_fraction: float = 0.2,  # of the patients
    validate_fraction: float = 0.1,  # of the patients
    uncertain_fraction: float = 0.1,  # of the positive labels of training studies
    seed: int = 0,
    config: PhantomConfig | None = None,
    overwrite: bool = False,
) -> dict:
    """Writes ``num_images`` phantoms in the MIMIC-CXR-JPG layout into ``out_dir`` (empty,
    absent, or with ``overwrite`` an earlier export: ``export.claim_out_dir``); returns
    counts and paths."""
    config = config or PhantomConfig()
    num_patients = -(-num_images // IMAGES_PER_PATIENT)
    split_of = _mimic_splits(num_patients, test_fraction, validate_fraction)
    about = {"layout": "mimic_cxr", "num_images": num_images, "seed": seed}
    claim_out_dir(out_dir, mimic_files(num_images), overwrite=overwrite, about=about)
    labels, metadata, splits = [], [], []
    for index in range(num_images):
        patient = index // IMAGES_PER_PATIENT
        subject, study, dicom = _mimic_ids(index)
        split = split_of[patient]
        rng = np.random.default_rng((seed, 19, index))
        ex = render(seed, index, config)
        path = os.path.join(out_dir, _mimic_image(index))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(ex["image"]).save(path, quality=95)
        cells = dict(
            zip(
                (
                    c
                    for c in LABEL_COLUMNS
                    if c not in ("No Finding", "Fracture", "Support Devices")
                ),
                chexpert_values(ex["labels"], rng, uncertain_fraction if split == "train" else 0),
                strict=True,
            )
        )
        cells["No Finding"] = "" if any(cells.values()) else "1.0"
        cells["Fracture"] = cells["Support Devices"] = ""
        labels.append([subject, study, *(cells[c] for c in MIMIC_LABEL_COLUMNS[2:])])
        view = "AP" if rng.random() < 0.4 else "PA"
        size = ex["image"].shape
        metadata.append(
            [
                dicom,
                subject,
                study,
                "CHEST (PA AND LAT)" if view == "PA" else "CHEST (PORTABLE AP)",
                view,
                size[0],
                size[1],
                21800101 + index,
                "120000.000",
                "CHEST (PA AND LAT)",
                "postero-anterior" if view == "PA" else "antero-posterior",
                "Erect",
            ]
        )
        splits.append([dicom, study, subject, split])
    tables = dict(zip(MIMIC_TABLES, (labels, metadata, splits), strict=True))
    headers = (
        MIMIC_LABEL_COLUMNS,
        MIMIC_METADATA_COLUMNS,
        ("dicom_id", "study_id", "subject_id", "split"),
    )
    for (name, rows), header in zip(tables.items(), headers, strict=True):
        _write_gz_csv(os.path.join(out_dir, name), header, rows)
    return {
        "num_images": num_images,
        "num_patients": num_patients,
        "num_test": sum(r[3] == "test" for r in splits),
        "num_validate": sum(r[3] == "validate" for r in splits),
        "root": out_dir,
    }


def _padchest_image(index: int) -> tuple[int, str]:
    """``(ImageDir, ImageID)`` of image ``index``."""
    name = f"2168401113669640{index:029d}_00-{index % 997:03d}-{index * 7 % 1000:03d}.png"
    return index // PADCHEST_IMAGES_PER_DIR, name


def padchest_files(num_images: int) -> list[str]:
    """Every file :func:`export_padchest` writes (``export.export_files``)."""
    images = ["{}/{}".format(*_padchest_image(i)) for i in range(num_images)]
    return [EXPORT_FILE, *images, padchest.CSV_FILE]


def padchest_terms(labels, rng) -> list[str]:
    """Phantom labels ``(14,)`` -> a ``Labels`` list in PadChest's spelling, with the
    file's quirks: a stray space, a repeated term, a term that is no class."""
    terms = [PADCHEST_FROM_NIH[c] for c in _present(labels)] or ["normal"]
    if rng.random() < 0.3:
        terms[0] = " " + terms[0]
    if rng.random() < 0.1:
        terms.append(terms[-1])
    if rng.random() < 0.2 and terms != ["normal"]:
        terms.append("aortic elongation")
    return terms


def export_padchest(
    out_dir: str,
    num_images: int,
    *,
    physician_fraction: float = 0.3,
    seed: int = 0,
    config: PhantomConfig | None = None,
    overwrite: bool = False,
) -> dict:
    """Writes ``num_images`` phantoms in the PadChest layout into ``out_dir`` (empty,
    absent, or with ``overwrite`` an earlier export: ``export.claim_out_dir``); returns
    counts and paths."""
    config = config or PhantomConfig()
    about = {"layout": "padchest", "num_images": num_images, "seed": seed}
    claim_out_dir(out_dir, padchest_files(num_images), overwrite=overwrite, about=about)
    rows, physician = [], 0
    for index in range(num_images):
        patient, follow_up = divmod(index, IMAGES_PER_PATIENT)
        sex, age, _ = _patient(seed, patient)
        rng = np.random.default_rng((seed, 23, index))
        ex = render(seed, index, config)
        folder, name = _padchest_image(index)
        path = os.path.join(out_dir, str(folder), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # 16-bit, as distributed: the reader windows it back to the phantom's 8 bits.
        Image.fromarray(ex["image"].astype(np.uint16) * 257).save(path)
        year = 2009 + (index % 9)
        projection = ("PA", "AP", "AP_horizontal")[int(rng.choice(3, p=(0.6, 0.25, 0.15)))]
        method = padchest.PHYSICIAN if rng.random() < physician_fraction else padchest.MODEL
        physician += method == padchest.PHYSICIAN
        rows.append(
            [
                name,
                folder,
                f"{year}{1 + index % 12:02d}{1 + index % 28:02d}",
                f"{patient}{follow_up}",
                f"{patient * 31 + 7}",
                f"{2009 - age}.0",  # the age in 2009: older by the study year
                sex,
                _PADCHEST_DICOM_VIEW[projection],
                projection,
                "Manual review of DICOM fields",
                "No",
                "CR",
                'sin hallazgos, ni derrame. "normal"',
                method,
                repr(padchest_terms(ex["labels"], rng)),
                "[]",
            ]
        )
    with open(os.path.join(out_dir, padchest.CSV_FILE), "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(PADCHEST_COLUMNS)
        writer.writerows(rows)
    return {
        "num_images": num_images,
        "num_patients": -(-num_images // IMAGES_PER_PATIENT),
        "num_physician": physician,
        "root": out_dir,
    }


MIMIC_CXR = Layout(mimic_files, export_mimic_cxr)
PADCHEST = Layout(padchest_files, export_padchest)
