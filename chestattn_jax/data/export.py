"""Phantoms written out in the NIH ChestX-ray14 and CheXpert raw layouts.

So that the real readers, the prepare step and training run end to end on data
that looks, file for file, like the data sets as distributed:

  python -m chestattn_jax.data.export --layout=nih --out_dir=/tmp/nih_phantom --num_images=2000
  python -m chestattn_jax.data.export --layout=chexpert --out_dir=/tmp/chexpert_phantom

NIH: ``Data_Entry_2017_v2020.csv``, ``images/*.png``, ``train_val_list.txt`` /
``test_list.txt`` (patient-disjoint) and ``BBox_List_2017.csv`` (boxes of the eight
NIH box classes, on test images, in the 1024-px frame, ``Infiltrate`` spelled as
NIH spells it). CheXpert: ``CheXpert-v1.0-small/{train,valid}.csv`` and JPEGs under
``train/patientNNNNN/studyM/view1_frontal.jpg``; findings map onto CheXpert's
observations (below), a tenth of the training positives are written as uncertain
(``-1.0``), and unmentioned observations are blank, as in the real files.
"""

from __future__ import annotations

import csv
import os
import sys

import numpy as np
from PIL import Image

from chestattn_jax import files
from chestattn_jax.data.chexpert import LABEL_COLUMNS, METADATA_COLUMNS
from chestattn_jax.data.classes import CHEXPERT_CLASSES, NIH_BOX_CLASSES
from chestattn_jax.data.nih import BOX_LABEL_ALIASES, NIH_BOX_FRAME
from chestattn_jax.data.synthetic import PHANTOM_CLASSES, PhantomConfig, render

# The box list's own spelling of our class names ("Infiltrate"), as the reader undoes it.
BOX_LABEL_SPELLING = {ours: theirs for theirs, ours in BOX_LABEL_ALIASES.items()}

NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
IMAGES_PER_PATIENT = 3

CHEXPERT_COLUMNS = (*METADATA_COLUMNS, *LABEL_COLUMNS)
# Which phantom findings make each CheXpert observation positive.
CHEXPERT_FROM_NIH = {
    "Enlarged Cardiomediastinum": ("Cardiomegaly",),
    "Cardiomegaly": ("Cardiomegaly",),
    "Lung Opacity": (
        "Atelectasis",
        "Consolidation",
        "Edema",
        "Fibrosis",
        "Infiltration",
        "Mass",
        "Nodule",
        "Pneumonia",
    ),
    "Lung Lesion": ("Mass", "Nodule"),
    "Edema": ("Edema",),
    "Consolidation": ("Consolidation",),
    "Pneumonia": ("Pneumonia",),
    "Atelectasis": ("Atelectasis",),
    "Pneumothorax": ("Pneumothorax",),
    "Pleural Effusion": ("Effusion",),
    "Pleural Other": ("Pleural_Thickening",),
}


def _patient_meta(seed: int, patient: int):
    rng = np.random.default_rng((seed, 7, patient))
    return ("M" if rng.random() < 0.55 else "F"), int(rng.integers(18, 90)), rng


def export_nih(
    out_dir: str,
    num_images: int,
    *,
    seed: int = 0,
    config: PhantomConfig | None = None,
    test_fraction: float = 0.2,
) -> dict:
    """Writes ``num_images`` phantoms in the NIH layout; returns counts and paths."""
    config = config or PhantomConfig()
    images_dir = os.path.join(out_dir, "images")
    os.makedirs(images_dir, exist_ok=True)
    rows, boxes, train_val, test = [], [], [], []
    num_patients = -(-num_images // IMAGES_PER_PATIENT)
    test_patients = set(
        np.random.default_rng((seed, 11))
        .permutation(num_patients)[: round(test_fraction * num_patients)]
        .tolist()
    )
    for index in range(num_images):
        patient, follow_up = divmod(index, IMAGES_PER_PATIENT)
        sex, age, rng = _patient_meta(seed, patient)
        ex = render(seed, index, config)
        name = f"{patient + 1:08d}_{follow_up:03d}.png"
        Image.fromarray(ex["image"]).save(os.path.join(images_dir, name))
        present = [c for c, y in zip(PHANTOM_CLASSES, ex["labels"], strict=True) if y]
        view = "AP" if rng.random() < 0.3 else "PA"
        rows.append(
            [
                name,
                "|".join(present) or "No Finding",
                follow_up,
                patient + 1,
                age,
                sex,
                view,
                NIH_BOX_FRAME,
                NIH_BOX_FRAME,
                0.143,
                0.143,
            ]
        )
        is_test = patient in test_patients
        (test if is_test else train_val).append(name)
        if is_test:
            scale = NIH_BOX_FRAME / ex["image"].shape[0]
            for c in present:
                if c in NIH_BOX_CLASSES:
                    x, y, w, h = (ex["boxes"][PHANTOM_CLASSES.index(c)] * scale).tolist()
                    label = BOX_LABEL_SPELLING.get(c, c)
                    boxes.append([name, label, f"{x:.6f}", f"{y:.6f}", f"{w:.6f}", f"{h:.6f}"])
    with open(os.path.join(out_dir, "Data_Entry_2017_v2020.csv"), "w", newline="") as f:
        f.write(NIH_HEADER + "\n")
        csv.writer(f, lineterminator="\n").writerows(rows)
    with open(os.path.join(out_dir, "BBox_List_2017.csv"), "w", newline="") as f:
        f.write("Image Index,Finding Label,Bbox [x,y,w,h],,,\n")
        csv.writer(f, lineterminator="\n").writerows(boxes)
    for name, items in (("train_val_list.txt", train_val), ("test_list.txt", test)):
        with open(os.path.join(out_dir, name), "w") as f:
            f.write("".join(f"{n}\n" for n in items))
    return {
        "num_images": num_images,
        "num_patients": num_patients,
        "num_boxes": len(boxes),
        "num_test": len(test),
        "root": out_dir,
    }


def chexpert_values(labels, rng, uncertain_fraction: float) -> list[str]:
    """Phantom labels ``(14,)`` -> the 11 CheXpert cells: ``1.0``, ``-1.0`` or blank."""
    present = {c for c, y in zip(PHANTOM_CLASSES, labels, strict=True) if y}
    cells = []
    for observation in CHEXPERT_CLASSES:
        if present & set(CHEXPERT_FROM_NIH[observation]):
            cells.append("-1.0" if rng.random() < uncertain_fraction else "1.0")
        else:
            cells.append("")
    return cells


def export_chexpert(
    out_dir: str,
    num_images: int,
    *,
    seed: int = 0,
    config: PhantomConfig | None = None,
    valid_fraction: float = 0.1,
    uncertain_fraction: float = 0.1,
) -> dict:
    """Writes ``num_images`` phantoms in the CheXpert-v1.0-small layout."""
    config = config or PhantomConfig()
    base = os.path.join(out_dir, "CheXpert-v1.0-small")
    num_patients = -(-num_images // IMAGES_PER_PATIENT)
    num_valid = max(1, round(valid_fraction * num_patients))
    tables = {"train": [], "valid": []}
    for index in range(num_images):
        patient, study = divmod(index, IMAGES_PER_PATIENT)
        split = "valid" if patient >= num_patients - num_valid else "train"
        sex, age, rng = _patient_meta(seed, patient)
        rng = np.random.default_rng((seed, 13, index))
        ex = render(seed, index, config)
        rel = (
            f"CheXpert-v1.0-small/{split}/patient{patient + 1:05d}/study{study + 1}/"
            "view1_frontal.jpg"
        )
        path = os.path.join(out_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(ex["image"]).save(path, quality=95)
        cells = chexpert_values(ex["labels"], rng, uncertain_fraction if split == "train" else 0)
        no_finding = "" if any(cells) else "1.0"
        tables[split].append(
            [
                rel,
                "Male" if sex == "M" else "Female",
                age,
                "Frontal",
                "AP" if rng.random() < 0.7 else "PA",
                no_finding,
                *cells,
                "",
                "",
            ]
        )
    for split, table in tables.items():
        with open(os.path.join(base, f"{split}.csv"), "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(CHEXPERT_COLUMNS)
            writer.writerows(table)
    return {
        "num_images": num_images,
        "num_patients": num_patients,
        "num_valid": len(tables["valid"]),
        "root": out_dir,
    }


def main(argv):
    del argv
    from absl import flags

    f = flags.FLAGS
    if not files.is_local(f.out_dir):  # os.path would make a local folder named "gs:"
        sys.exit(
            f"FATAL: --out_dir={f.out_dir}: the export writes to a local folder only. Export "
            "and prepare locally, then copy the prepared folder up (docs/tpu.md)."
        )
    if f.num_images < 1:
        sys.exit(f"FATAL: --num_images={f.num_images}: export at least one image.")
    config = PhantomConfig(image_size=f.image_size, location_variability=f.location_variability)
    export = export_nih if f.layout == "nih" else export_chexpert
    result = export(f.out_dir, f.num_images, seed=f.seed, config=config)
    print(result)


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_enum("layout", "nih", ["nih", "chexpert"], "Which raw layout to write.")
    flags.DEFINE_string("out_dir", None, "Folder to write the raw data set into.")
    flags.DEFINE_integer("num_images", 1000, "Number of images.")
    flags.DEFINE_integer("image_size", 256, "Side of the written images in pixels.")
    flags.DEFINE_integer("seed", 0, "Phantom seed.")
    flags.DEFINE_float(
        "location_variability",
        0.75,
        "How far findings stray from their typical place (PhantomConfig); the default is "
        "config.data.synthetic.location_variability's.",
    )
    flags.mark_flags_as_required(["out_dir"])
    app.run(main)
