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

Each export first lists the files it writes in ``chestattn_export.json``. A non-empty
``--out_dir`` is refused (the two exports' files would mix); with ``--overwrite``, the
files that the earlier export listed there are removed first, and only those: a folder
that also holds other files is refused all the same, so nothing that an export did not
write is ever removed.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
from collections.abc import Callable

import numpy as np
from PIL import Image

from chestattn_jax import files
from chestattn_jax.data import sources
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
# What an export wrote into its folder: the files --overwrite may remove, and only those.
EXPORT_FILE = "chestattn_export.json"
NIH_TABLES = (
    "Data_Entry_2017_v2020.csv",
    "BBox_List_2017.csv",
    "train_val_list.txt",
    "test_list.txt",
)
CHEXPERT_DIR = "CheXpert-v1.0-small"

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


def _nih_image(index: int) -> str:
    """``images/PPPPPPPP_FFF.png`` of image ``index``, relative to the folder."""
    patient, follow_up = divmod(index, IMAGES_PER_PATIENT)
    return f"images/{patient + 1:08d}_{follow_up:03d}.png"


def _chexpert_split(num_images: int, valid_fraction: float) -> tuple[int, int]:
    """``(num_patients, num_valid)``: the last ``num_valid`` patients are ``valid``."""
    num_patients = -(-num_images // IMAGES_PER_PATIENT)
    return num_patients, max(1, round(valid_fraction * num_patients))


def _chexpert_image(index: int, num_patients: int, num_valid: int) -> tuple[str, str]:
    """``(split, path relative to the folder)`` of image ``index``, as CheXpert's CSVs
    spell it."""
    patient, study = divmod(index, IMAGES_PER_PATIENT)
    split = "valid" if patient >= num_patients - num_valid else "train"
    return (
        split,
        f"{CHEXPERT_DIR}/{split}/patient{patient + 1:05d}/study{study + 1}/view1_frontal.jpg",
    )


@dataclasses.dataclass(frozen=True)
class Layout:
    """A raw layout that phantoms are written in: a data set's exporter
    (:attr:`chestattn_jax.data.source.Prepared.exporter`)."""

    # (num_images, **options) -> every file an export writes, relative to its folder.
    files: Callable[..., list[str]]
    # (out_dir, num_images, *, seed, config, overwrite, **options) -> counts and paths.
    write: Callable[..., dict]


def layouts() -> tuple[str, ...]:
    """The data sets whose raw layout phantoms can be written in (``--layout``)."""
    return tuple(n for n in sources.prepared_names() if sources.get(n).prepared.exporter)


def layout(name: str) -> Layout:
    """The exporter of the raw layout of data set ``name``."""
    if name not in layouts():
        raise ValueError(f"Unknown layout {name!r}; expected {' or '.join(layouts())}.")
    return sources.get(name).prepared.export()


def export_files(name: str, num_images: int, **options) -> list[str]:
    """Every file an export of ``num_images`` in the layout of data set ``name`` writes,
    relative to its folder, ``/``-separated (its ``chestattn_export.json`` included)."""
    return layout(name).files(num_images, **options)


def nih_files(num_images: int) -> list[str]:
    """Every file :func:`export_nih` writes (:func:`export_files`)."""
    images = [_nih_image(i) for i in range(num_images)]
    return [EXPORT_FILE, *images, *NIH_TABLES]


def chexpert_files(num_images: int, *, valid_fraction: float = 0.1) -> list[str]:
    """Every file :func:`export_chexpert` writes (:func:`export_files`)."""
    split = _chexpert_split(num_images, valid_fraction)
    images = [_chexpert_image(i, *split)[1] for i in range(num_images)]
    return [EXPORT_FILE, *images, f"{CHEXPERT_DIR}/train.csv", f"{CHEXPERT_DIR}/valid.csv"]


def _existing(out_dir: str) -> tuple[list[str], list[str]]:
    """``(files, folders)`` under ``out_dir``, relative and ``/``-separated; a link
    counts as a file (it is not followed)."""
    found, folders = [], []

    def unreadable(e: OSError):  # else os.walk passes over it and --overwrite stops half-way
        raise e

    for root, dirs, names in os.walk(out_dir, onerror=unreadable):
        rel = os.path.relpath(root, out_dir).replace(os.sep, "/")
        prefix = "" if rel == "." else rel + "/"
        for d in list(dirs):
            if os.path.islink(os.path.join(root, d)):
                dirs.remove(d)
                names.append(d)
            else:
                folders.append(prefix + d)
        found.extend(prefix + n for n in names)
    return sorted(found), sorted(folders)


def _recorded(out_dir: str) -> list[str] | None:
    """The files that the earlier export in ``out_dir`` listed; None if it listed none
    (no ``chestattn_export.json``, or one that is not an export's)."""
    try:
        with open(os.path.join(out_dir, EXPORT_FILE)) as f:
            listed = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
        return None
    for p in listed:
        # Never a path outside the folder, whatever the file says.
        if not p or os.path.isabs(p) or ".." in p.split("/") or "\\" in p:
            return None
    return listed


def _examples(paths: list[str]) -> str:
    shown = ", ".join(paths[:3])
    return shown + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def claim_out_dir(
    out_dir: str, planned: list[str], *, overwrite: bool = False, about: dict | None = None
) -> None:
    """Readies ``out_dir`` for an export that writes ``planned`` (relative paths, as
    :func:`export_files` gives them); ``about`` goes into the new record beside them.

    An empty or absent folder is taken as it is; a non-empty one raises unless
    ``overwrite``, and even then unless everything in it is listed in the
    ``chestattn_export.json`` of an earlier export. Only then are those files (and the
    folders they leave empty) removed, and ``planned`` is written into a new
    ``chestattn_export.json`` before any image, so that an export killed half-way can
    be replaced too.

    Raises:
      FileExistsError: ``out_dir`` is not empty (and not ``overwrite``), or holds
        files that no export wrote; ``NotADirectoryError``: it is a file. Nothing
        was written or removed.
    """
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(
            f"--out_dir={out_dir} is a file, not a folder. Nothing was written."
        )
    found, folders = _existing(out_dir) if os.path.isdir(out_dir) else ([], [])
    if found or folders:
        if not overwrite:
            holds = f"{len(found)} files, e.g. {_examples(found)}" if found else _examples(folders)
            raise FileExistsError(
                f"--out_dir={out_dir} is not empty (it holds {holds}): an export into it "
                "would mix its files with those. "
                "Nothing was written. Run again with --overwrite to replace an earlier export "
                "there (it removes the files that export wrote, and only those), or give an "
                "empty or new --out_dir."
            )
        recorded = _recorded(out_dir)
        ours = set(recorded or [])
        ours.add(EXPORT_FILE)
        parents = {p.rsplit("/", i)[0] for p in ours for i in range(1, p.count("/") + 1)}
        foreign = [p for p in found if p not in ours] + [d for d in folders if d not in parents]
        if recorded is None or foreign:
            what = (
                f"files that no export wrote (e.g. {_examples(foreign)})"
                if recorded is not None
                else f"files that no export listed (it has no readable {EXPORT_FILE})"
            )
            raise FileExistsError(
                f"--out_dir={out_dir} holds {what}, and --overwrite removes only the files "
                f"that an earlier export listed in its {EXPORT_FILE}. Nothing was written or "
                "removed. Move those files away, or give an empty or new --out_dir."
            )
        # The record last: an --overwrite killed here can be run again.
        for p in [p for p in recorded if p != EXPORT_FILE] + [EXPORT_FILE]:
            path = os.path.join(out_dir, p)
            if os.path.lexists(path):
                os.remove(path)
        for d in sorted(parents, key=lambda d: d.count("/"), reverse=True):
            path = os.path.join(out_dir, d)
            if os.path.isdir(path) and not os.listdir(path):
                os.rmdir(path)
    os.makedirs(out_dir, exist_ok=True)
    files.write_bytes(
        os.path.join(out_dir, EXPORT_FILE),
        json.dumps({**(about or {}), "files": planned}, indent=0).encode(),
    )


def _start(layout: str, out_dir: str, planned, num_images: int, seed: int, overwrite: bool):
    """Claims ``out_dir`` for an export of ``layout`` that writes ``planned`` files: it must
    be empty or absent, or, with ``overwrite``, hold an earlier export only
    (:func:`claim_out_dir`, which raises ``FileExistsError`` otherwise)."""
    about = {"layout": layout, "num_images": num_images, "seed": seed}
    claim_out_dir(out_dir, planned, overwrite=overwrite, about=about)


def export_nih(
    out_dir: str,
    num_images: int,
    *,
    test_fraction: float = 0.2,  # of the patients, listed in test_list.txt
    seed: int = 0,
    config: PhantomConfig | None = None,
    overwrite: bool = False,
) -> dict:
    """Writes ``num_images`` phantoms in the NIH layout into ``out_dir`` (empty, absent, or
    with ``overwrite`` an earlier export: :func:`claim_out_dir`); returns counts and paths."""
    config = config or PhantomConfig()
    _start("nih", out_dir, nih_files(num_images), num_images, seed, overwrite)
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
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
        rel = _nih_image(index)
        name = rel.split("/")[-1]
        Image.fromarray(ex["image"]).save(os.path.join(out_dir, rel))
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
    valid_fraction: float = 0.1,  # of the patients, in valid.csv
    uncertain_fraction: float = 0.1,  # of the positive training labels, written -1.0
    seed: int = 0,
    config: PhantomConfig | None = None,
    overwrite: bool = False,
) -> dict:
    """Writes ``num_images`` phantoms in the CheXpert-v1.0-small layout into ``out_dir``
    (empty, absent, or with ``overwrite`` an earlier export: :func:`claim_out_dir`);
    returns counts and paths."""
    config = config or PhantomConfig()
    planned = chexpert_files(num_images, valid_fraction=valid_fraction)
    _start("chexpert", out_dir, planned, num_images, seed, overwrite)
    base = os.path.join(out_dir, CHEXPERT_DIR)
    num_patients, num_valid = _chexpert_split(num_images, valid_fraction)
    tables = {"train": [], "valid": []}
    for index in range(num_images):
        patient = index // IMAGES_PER_PATIENT
        split, rel = _chexpert_image(index, num_patients, num_valid)
        sex, age, rng = _patient_meta(seed, patient)
        rng = np.random.default_rng((seed, 13, index))
        ex = render(seed, index, config)
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


NIH = Layout(nih_files, export_nih)
CHEXPERT = Layout(chexpert_files, export_chexpert)


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
    try:
        result = layout(f.layout).write(
            f.out_dir, f.num_images, seed=f.seed, config=config, overwrite=f.overwrite
        )
    except (OSError, ValueError) as e:
        sys.exit(f"FATAL: {e}")
    print(result)


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_enum("layout", "nih", list(layouts()), "Which raw layout to write.")
    flags.DEFINE_string(
        "out_dir",
        None,
        "Folder to write the raw data set into: a new or empty one (or --overwrite).",
    )
    flags.DEFINE_integer("num_images", 1000, "Number of images.")
    flags.DEFINE_integer("image_size", 256, "Side of the written images in pixels.")
    flags.DEFINE_integer("seed", 0, "Phantom seed.")
    flags.DEFINE_float(
        "location_variability",
        0.75,
        "How far findings stray from their typical place (PhantomConfig); the default is "
        "config.data.synthetic.location_variability's.",
    )
    flags.DEFINE_bool(
        "overwrite",
        False,
        "Replace an earlier export in --out_dir: the files it listed in "
        f"{EXPORT_FILE} are removed first, and only those (a folder that holds other "
        "files is refused).",
    )
    flags.mark_flags_as_required(["out_dir"])
    app.run(main)
