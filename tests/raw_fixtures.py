"""Tiny NIH ChestX-ray14 and CheXpert folders in their exact raw layouts.

Each writer lays out the files as the data sets are distributed (the layouts that the
docstrings of chestattn_jax/data/nih.py and chexpert.py describe), with the quirks of
the real files, and returns the truths a test can assert against.
Both are deterministic in ``seed`` and take a few tens of milliseconds.
"""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image

from chestattn_jax.data.classes import NIH_BOX_CLASSES, NIH_CLASSES

NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
# The 8 classes of the NIH box list (written under its own spelling of Infiltration).
BOX_CLASSES = NIH_BOX_CLASSES
BOX_SPELLING = {"Infiltration": "Infiltrate"}
NIH_PNG_SIZE = 1024  # the side of the distributed PNGs, in which boxes are given
IMAGES_PER_PATIENT = 3

CHEXPERT_DIR = "CheXpert-v1.0-small"
CHEXPERT_LABEL_COLUMNS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
CHEXPERT_HEADER = ",".join(
    ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABEL_COLUMNS)
)
CHEXPERT_VALUES = ("", "1.0", "0.0", "-1.0")
# The official validation patients are numbered after the training ones.
CHEXPERT_FIRST_VALID_PATIENT = 64541
FRONTAL_SIZE = (52, 64)  # (width, height): portrait and non-square, as the real images
LATERAL_SIZE = (60, 64)


def _gray(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A ``(height, width)`` uint8 gradient with noise: distinct pixels for every image."""
    ramp = np.linspace(30, 220, width)[None, :] + np.linspace(0, 20, height)[:, None]
    return np.clip(ramp + rng.normal(0, 12, (height, width)), 0, 255).astype(np.uint8)


def write_nih_fixture(
    root, num_images: int = 36, seed: int = 0, image_size: int = 64, release: str = "2017"
) -> dict:
    """Writes an NIH ChestX-ray14 folder under ``root``.

    Layout: ``Data_Entry_2017.csv`` (``release='2017'``: every line, header
    included, ends with a comma) or ``Data_Entry_2017_v2020.csv`` (no trailing
    comma); ``images/`` of ``image_size`` px PNGs, 8-bit grayscale except one RGBA
    and one 16-bit (``I;16``); ``train_val_list.txt`` and ``test_list.txt``
    (patient-disjoint; every fifth patient is a test patient) and
    ``BBox_List_2017.csv``. For ``release='2017'`` the box rows are padded with
    three empty fields to the header's 9, as in some copies; for ``'v2020'`` they
    have 6, as in others.

    Patients have ``IMAGES_PER_PATIENT`` images each (follow-ups 0, 1, ...); every
    third image is AP, the others PA. Images 0 to 27 carry class ``i % 14``
    (so every class is positive at least twice), some with a second finding;
    the rest alternate ``No Finding`` and one or two random findings.

    Boxes: one on the first image positive for each of the 8 box classes and a
    second one on the first Effusion image, in 1024-px coordinates as in the
    real list, while ``OriginalImage[Width,Height]`` says 1024,1024 and the
    stored PNG is ``image_size`` px. (In the real file OriginalImage is the
    size of the source scan, e.g. 2500,2048, and says nothing of the PNG.)
    A box in stored pixels is ``box * image_size / 1024``.

    Pixels: the RGBA image has R = G = B = the gray value and A = 255, the 16-bit
    one stores ``gray * 257``, so each decodes to ``pixels[name]`` in 8 bits.

    Returns:
      A dict with ``root``, ``data_entry``, ``images_dir``, ``train_val_list``,
      ``test_list``, ``bbox_list`` (paths, str); ``release``, ``image_size``,
      ``original_size`` (1024); ``num_images``, ``num_patients``,
      ``num_no_finding``; ``entries`` (what ``nih.read_data_entry`` must return);
      ``labels`` (``{image: (14,) int32}``, NIH_CLASSES order);
      ``positive_counts`` (``(14,)`` int64); ``source_split`` (``{image:
      'train_val' | 'test'}``); ``boxes`` (``{image: [(class, x, y, w, h)]}``, 1024-px,
      ``Infiltration`` spelled as a class); ``num_boxes``, ``num_box_images``;
      ``rgba_image``, ``uint16_image`` (names); ``pixels`` (``{image: (S, S) uint8}``).
    """
    if release not in ("2017", "v2020"):
        raise ValueError(f"release must be '2017' or 'v2020', not {release!r}")
    k = len(NIH_CLASSES)
    if num_images < 2 * k + 4:
        raise ValueError(f"num_images must be at least {2 * k + 4} to give every class twice")
    rng = np.random.default_rng(seed)
    root = pathlib.Path(root)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)

    entries, labels, pixels, source_split = [], {}, {}, {}
    patient_ages = rng.integers(20, 80, num_images // IMAGES_PER_PATIENT + 1)
    for i in range(num_images):
        if i < 2 * k:
            findings = {NIH_CLASSES[i % k]}
            if rng.random() < 0.3:
                findings.add(NIH_CLASSES[rng.integers(k)])
        elif (i - 2 * k) % 2 == 0:
            findings = set()
        else:
            findings = set(rng.choice(NIH_CLASSES, size=rng.integers(1, 3), replace=False))
        patient, follow_up = divmod(i, IMAGES_PER_PATIENT)
        patient += 1
        name = f"{patient:08d}_{follow_up:03d}.png"
        entries.append(
            {
                "image_index": name,
                # NIH lists findings in alphabetical order.
                "findings": tuple(sorted(findings)),
                "patient_id": str(patient),
                "age": int(patient_ages[patient - 1]) + follow_up,
                "sex": "M" if patient % 2 else "F",
                "view": "AP" if i % 3 == 1 else "PA",
            }
        )
        labels[name] = np.asarray([c in findings for c in NIH_CLASSES], np.int32)
        source_split[name] = "test" if patient % 5 == 0 else "train_val"
        pixels[name] = _gray(rng, image_size, image_size)

    names = [e["image_index"] for e in entries]
    rgba_image, uint16_image = names[3], names[4]
    for name in names:
        gray = pixels[name]
        if name == rgba_image:
            image = Image.fromarray(np.stack([gray, gray, gray, np.full_like(gray, 255)], -1))
        elif name == uint16_image:
            image = Image.fromarray(gray.astype(np.uint16) * 257)
        else:
            image = Image.fromarray(gray)
        image.save(images_dir / name)

    data_entry = root / (
        "Data_Entry_2017.csv" if release == "2017" else "Data_Entry_2017_v2020.csv"
    )
    end = ",\n" if release == "2017" else "\n"
    lines = [NIH_HEADER]
    for e in entries:
        follow_up = int(e["image_index"][9:12])
        findings = "|".join(e["findings"]) or "No Finding"
        lines.append(
            f"{e['image_index']},{findings},{follow_up},{e['patient_id']},{e['age']},"
            f"{e['sex']},{e['view']},{NIH_PNG_SIZE},{NIH_PNG_SIZE},0.143,0.143"
        )
    data_entry.write_text("".join(line + end for line in lines))

    for split, file_name in (("train_val", "train_val_list.txt"), ("test", "test_list.txt")):
        listed = [n for n in names if source_split[n] == split]
        (root / file_name).write_text("".join(n + "\n" for n in listed))

    boxes: dict[str, list[tuple]] = {}
    for c in BOX_CLASSES:
        first = next(n for n in names if labels[n][NIH_CLASSES.index(c)])
        for _ in range(2 if c == "Effusion" else 1):
            x, y = rng.uniform(50, 600, 2)
            w, h = rng.uniform(40, 300, 2)
            boxes.setdefault(first, []).append((c, float(x), float(y), float(w), float(h)))
    pad = ",,," if release == "2017" else ""
    box_lines = [BBOX_HEADER]
    # The real list is grouped by class; so is this one.
    for c in BOX_CLASSES:
        for name, image_boxes in boxes.items():
            for label, x, y, w, h in image_boxes:
                if label == c:
                    box_lines.append(
                        f"{name},{BOX_SPELLING.get(c, c)},{x!r},{y!r},{w!r},{h!r}{pad}"
                    )
    (root / "BBox_List_2017.csv").write_text("".join(line + "\n" for line in box_lines))

    return {
        "root": str(root),
        "data_entry": str(data_entry),
        "images_dir": str(images_dir),
        "train_val_list": str(root / "train_val_list.txt"),
        "test_list": str(root / "test_list.txt"),
        "bbox_list": str(root / "BBox_List_2017.csv"),
        "release": release,
        "image_size": image_size,
        "original_size": NIH_PNG_SIZE,
        "num_images": num_images,
        "num_patients": len({e["patient_id"] for e in entries}),
        "num_no_finding": sum(not e["findings"] for e in entries),
        "entries": entries,
        "labels": labels,
        "positive_counts": np.sum(list(labels.values()), axis=0, dtype=np.int64),
        "source_split": source_split,
        "boxes": boxes,
        "num_boxes": sum(len(b) for b in boxes.values()),
        "num_box_images": len(boxes),
        "rgba_image": rgba_image,
        "uint16_image": uint16_image,
        "pixels": pixels,
    }


def write_chexpert_fixture(root, num_patients: int = 12, seed: int = 0) -> dict:
    """Writes a CheXpert-v1.0-small folder under ``root``.

    Layout: ``root/CheXpert-v1.0-small/{train,valid}.csv`` and JPEGs at the CSV
    ``Path`` values, ``{train,valid}/patientNNNNN/studyN/view1_frontal.jpg`` and
    ``view2_lateral.jpg`` (8-bit grayscale, frontal ``FRONTAL_SIZE``, lateral
    ``LATERAL_SIZE``, as (width, height)). A quarter of the patients (at least
    2) are validation patients numbered from 64541 as in the real release.

    Training patients have 1 or 2 studies; a study of an even-numbered patient
    also has a lateral view (``AP/PA`` blank, as in the real file). Frontal
    views are AP, every third patient's PA, and one frontal is ``LL`` (a quirk
    of 16 real rows). Sex cycles Male, Female, and one patient is ``Unknown``.
    Training label cells: the first 4 rows hold every one of blank, ``1.0``,
    ``0.0``, ``-1.0`` in every column, later ones random; validation cells are
    ``0.0`` or ``1.0`` only, as in the real valid.csv.

    Returns:
      A dict with ``root``, ``dataset_dir``, ``train_csv``, ``valid_csv`` (str);
      ``rows`` (one dict per CSV row, train then valid, in file order: ``path``
      (the CSV Path), ``image_path``, ``split``, ``patient_id``, ``sex``
      (CSV text), ``age`` (int), ``frontal`` (bool), ``ap_pa`` (CSV text),
      ``values`` (``{column: CSV text}`` for all 14 observations), ``size``);
      ``num_rows`` and ``num_frontal`` (``{'train': n, 'valid': n}``); ``patients``
      (``{'train': [...], 'valid': [...]}``, ``patientNNNNN``).
    """
    num_valid = max(2, num_patients // 4)
    if num_patients - num_valid < 3:
        raise ValueError("num_patients must be at least 5")
    rng = np.random.default_rng(seed)
    root = pathlib.Path(root)
    dataset = root / CHEXPERT_DIR
    patients = {
        "train": [f"patient{p:05d}" for p in range(1, num_patients - num_valid + 1)],
        "valid": [
            f"patient{p:05d}"
            for p in range(CHEXPERT_FIRST_VALID_PATIENT, CHEXPERT_FIRST_VALID_PATIENT + num_valid)
        ],
    }
    sexes = ("Male", "Female", "Unknown")
    rows = []
    for split, split_patients in patients.items():
        for p, patient in enumerate(split_patients):
            sex = sexes[2] if (split, p) == ("train", 2) else sexes[p % 2]
            age = int(rng.integers(18, 90))
            for study in range(1, (2 if split == "train" and p % 2 else 1) + 1):
                views = [("frontal", "PA" if p % 3 == 2 else "AP")]
                if p % 2 == 0:
                    views.append(("lateral", ""))
                for v, (kind, ap_pa) in enumerate(views, start=1):
                    path = f"{CHEXPERT_DIR}/{split}/{patient}/study{study}/view{v}_{kind}.jpg"
                    rows.append(
                        {
                            "path": path,
                            "image_path": str(root / path),
                            "split": split,
                            "patient_id": patient,
                            "sex": sex,
                            "age": age + study - 1,
                            "frontal": kind == "frontal",
                            "ap_pa": ap_pa,
                            "size": FRONTAL_SIZE if kind == "frontal" else LATERAL_SIZE,
                        }
                    )
    next(r for r in reversed(rows) if r["split"] == "train" and r["frontal"])["ap_pa"] = "LL"
    for n, row in enumerate(rows):
        if row["split"] == "valid":
            cells = rng.choice(CHEXPERT_VALUES[1:3], len(CHEXPERT_LABEL_COLUMNS))
        elif n < len(CHEXPERT_VALUES):
            cells = [
                CHEXPERT_VALUES[(n + c) % len(CHEXPERT_VALUES)]
                for c in range(len(CHEXPERT_LABEL_COLUMNS))
            ]
        else:
            cells = rng.choice(
                CHEXPERT_VALUES, len(CHEXPERT_LABEL_COLUMNS), p=(0.6, 0.15, 0.1, 0.15)
            )
        row["values"] = dict(zip(CHEXPERT_LABEL_COLUMNS, map(str, cells), strict=True))

    for split in patients:
        lines = [CHEXPERT_HEADER]
        for r in rows:
            if r["split"] == split:
                orientation = "Frontal" if r["frontal"] else "Lateral"
                cells = ",".join(r["values"][c] for c in CHEXPERT_LABEL_COLUMNS)
                lines.append(
                    f"{r['path']},{r['sex']},{r['age']},{orientation},{r['ap_pa']},{cells}"
                )
        dataset.mkdir(parents=True, exist_ok=True)
        (dataset / f"{split}.csv").write_text("".join(line + "\n" for line in lines))
    for r in rows:
        image_path = pathlib.Path(r["image_path"])
        image_path.parent.mkdir(parents=True, exist_ok=True)
        width, height = r["size"]
        Image.fromarray(_gray(rng, height, width)).save(image_path, quality=90)

    return {
        "root": str(root),
        "dataset_dir": str(dataset),
        "train_csv": str(dataset / "train.csv"),
        "valid_csv": str(dataset / "valid.csv"),
        "rows": rows,
        "num_rows": {s: sum(r["split"] == s for r in rows) for s in patients},
        "num_frontal": {s: sum(r["split"] == s and r["frontal"] for r in rows) for s in patients},
        "patients": patients,
    }


def write_dicom(
    path,
    pixels,
    photometric: str = "MONOCHROME2",
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    with_pixels: bool = True,
    voi_function: str | None = None,
    voi_lut: tuple[int, int, list[int]] | None = None,
    view_position: str | None = None,
) -> None:
    """A DX DICOM file (explicit VR little endian) holding ``pixels`` (uint8 or uint16).

    ``voi_function``: the VOI LUT Function of the window (LINEAR, LINEAR_EXACT, SIGMOID);
    ``voi_lut``: ``(first mapped value, output bits, table)``, one VOI LUT Sequence item.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PatientID = "fixture"
    pixels = np.asarray(pixels)
    if with_pixels:
        ds.set_pixel_data(pixels, photometric, pixels.dtype.itemsize * 8)
    else:
        ds.PhotometricInterpretation = photometric
        ds.Rows, ds.Columns = pixels.shape
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_function is not None:
        ds.VOILUTFunction = voi_function
    if view_position is not None:
        ds.ViewPosition = view_position
    if voi_lut is not None:
        from pydicom.sequence import Sequence

        first, bits, table = voi_lut
        item = Dataset()
        item.add_new(0x00283002, "US", [len(table), first, bits])  # LUT Descriptor
        item.add_new(0x00283006, "US", [int(x) for x in table])  # LUT Data
        ds.VOILUTSequence = Sequence([item])
    ds.save_as(str(path), enforce_file_format=True)


# The NIH expert relabelling as distributed (google2019_nih-chest-xray-labels.csv): the
# Data_Entry columns, the four expert columns as YES / NO, and the set each image is in.
NIH_EXPERT_COLUMNS = ("Fracture", "Pneumothorax", "Airspace opacity", "Nodule or mass")
NIH_EXPERT_HEADER = NIH_HEADER + "," + ",".join(NIH_EXPERT_COLUMNS) + ",Set Id"


def write_nih_expert_labels(path, images, seed: int = 0, blank: int = -1) -> dict:
    """Writes ``google2019_nih-chest-xray-labels.csv`` at ``path`` for the NIH image names
    ``images``, in its layout (CRLF line ends, as the real file), each image's expert
    columns drawn YES / NO at random (every column both ways where there are 8 images or
    more), ``Set Id`` alternating ``test`` and ``validation``. ``blank``: the row whose
    ``Airspace opacity`` is left blank (-1: none).

    Returns ``{image: {column: 1, 0 or None (blank)}}``, the truth a test scores against.
    """
    rng = np.random.default_rng(seed)
    truth, lines = {}, [NIH_EXPERT_HEADER]
    for i, image in enumerate(images):
        values = rng.integers(0, 2, len(NIH_EXPERT_COLUMNS))
        if i < 2 * len(NIH_EXPERT_COLUMNS):  # each column YES once and NO once at least
            values[i % len(NIH_EXPERT_COLUMNS)] = i // len(NIH_EXPERT_COLUMNS) == 0
            values[(i + 1) % len(NIH_EXPERT_COLUMNS)] = i // len(NIH_EXPERT_COLUMNS) == 1
        cells = ["YES" if v else "NO" for v in values]
        row = {c: int(v) for c, v in zip(NIH_EXPERT_COLUMNS, values, strict=True)}
        if i == blank:
            cells[2], row["Airspace opacity"] = "", None
        patient = image.split("_")[0]
        lines.append(
            f"{image},No Finding,0,{int(patient)},50,M,PA,2500,2048,0.143,0.143,"
            + ",".join(cells)
            + ("," + ("test" if i % 2 == 0 else "validation"))
        )
        truth[image] = row
    pathlib.Path(path).write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return truth


SIIM_RLE_HEADER = "ImageId, EncodedPixels"  # as distributed: the second name after a space


def write_siim_fixture(root, rows, images=None, size: int = 16) -> dict:
    """Writes a SIIM-ACR Pneumothorax folder under ``root``: ``train-rle.csv`` with
    ``rows`` (``(ImageId, EncodedPixels)``, each value written after a space as in the
    distributed file) and, for each of ``images`` (default: every ImageId of ``rows``), a
    ``size``-px DICOM nested ``dicom-images-train/<study>/<series>/<ImageId>.dcm`` whose
    header gives patient ``P<i // 2>``, sex, age ``0NNY`` and view.

    Returns ``{"paths": {ImageId: path}, "meta": {ImageId: (patient, sex, age, view)}}``.
    """
    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lines = [SIIM_RLE_HEADER, *(f"{image}, {code}" for image, code in rows)]
    (root / "train-rle.csv").write_text("\n".join(lines) + "\n")
    if images is None:
        images = list(dict.fromkeys(image for image, _ in rows))
    paths, meta = {}, {}
    for i, image in enumerate(images):
        folder = root / "dicom-images-train" / f"1.2.3.{i}" / f"1.2.4.{i}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{image}.dcm"
        write_dicom(path, np.full((size, size), 20 * i, np.uint8), view_position="PA")
        import pydicom

        ds = pydicom.dcmread(path)
        info = (f"P{i // 2}", "F" if i % 2 else "M", 30 + i, "AP" if i % 3 else "PA")
        ds.PatientID, ds.PatientSex, ds.PatientAge, ds.ViewPosition = (
            info[0],
            info[1],
            f"{info[2]:03d}Y",
            info[3],
        )
        ds.save_as(path, enforce_file_format=True)
        paths[image], meta[image] = str(path), info
    return {"paths": paths, "meta": meta}


# ------------------------------------------------------- MIMIC-CXR-JPG and PadChest

MIMIC_LABEL_COLUMNS = tuple(sorted(CHEXPERT_LABEL_COLUMNS))  # alphabetical, as distributed
MIMIC_METADATA_HEADER = (
    "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,"
    "Columns,StudyDate,StudyTime,ProcedureCodeSequence_CodeMeaning,"
    "ViewCodeSequence_CodeMeaning,PatientOrientationCodeSequence_CodeMeaning"
)
MIMIC_METADATA_REST = (
    "48,40,21800506,213014.531,CHEST (PA AND LAT),postero-anterior,Erect"  # Rows, Columns, ...
)
# (subject, study, split, {observation: cell}, [(dicom_id, ViewPosition), ...]); a study
# whose cells are None has no row in the labeller table.
MIMIC_STUDIES = (
    (
        "10000032",
        "50414267",
        "train",
        {"Cardiomegaly": "1.0", "Edema": "-1.0"},
        [
            ("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "PA"),
            ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "LATERAL"),
        ],
    ),
    (
        "10000032",
        "53189527",
        "train",
        {"No Finding": "1.0", "Cardiomegaly": "0.0"},
        [("2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "AP")],
    ),
    (
        "11000011",
        "51000001",
        "validate",
        {"Pleural Effusion": "-1.0", "Atelectasis": "1.0", "Support Devices": "1.0"},
        [
            ("68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714", "AP"),
            ("6ad819bb-bae74eb9-7b663e90-b8deabd7-57f8054a", ""),
        ],
    ),
    (
        "11000011",
        "52000002",
        "train",
        None,
        [("7c1cbd54-5b4e8f4d-0b2b1f4f-51ed4b3d-9b0c1b69", "PA")],
    ),
    (
        "19999987",
        "55555555",
        "test",
        {"Pneumothorax": "-1.0", "Lung Opacity": "1.0", "Fracture": "0.0"},
        [
            ("0c4eb1e1-b801903c-bcebe8a4-3da9cd3c-3b94a27c", "PA"),
            ("f2b2ffd5-2c8a4f88-25b9ddb0-2d3d9d1b-8d4c0f1f", "AP AXIAL"),
        ],
    ),
    ("12345678", "56789012", "test", {}, [("9a0d37f2-fa3f6df5-8b6c3b63-3c6d9ffb-5a70c5dd", "AP")]),
)
# The labeller table also lists a study that has no image in the metadata.
MIMIC_STUDY_WITHOUT_IMAGES = ("10000032", "59999999", {"Edema": "1.0"})


def _gz(path: pathlib.Path, text: str) -> None:
    import gzip

    with gzip.open(path, "wt", newline="") as f:
        f.write(text)


def write_mimic_fixture(root, missing_image: bool = False) -> dict:
    """Writes a MIMIC-CXR-JPG folder under ``root`` from :data:`MIMIC_STUDIES`.

    Layout: ``mimic-cxr-2.0.0-{chexpert,metadata,split}.csv.gz`` and JPEGs at
    ``files/p<2 digits>/p<subject>/s<study>/<dicom_id>.jpg`` (8-bit, 40 x 48). Quirks: the
    labeller's columns in alphabetical order, cells ``1.0``, ``0.0``, ``-1.0`` or blank;
    one study listed twice (same cells) in the labeller table, one image twice (same
    fields) in the metadata; a blank ViewPosition; a study without a labeller row; a
    labeller row without images. ``missing_image``: the AP image of the last study is
    not written.

    Returns:
      ``{"root", "tables": {"labels", "metadata", "split"}, "images": [one dict per image,
      metadata order: dicom_id, subject_id, study_id, split, view, path, cells ({column:
      text} of its study, None if unlabelled)], "missing": [paths not written]}``.
    """
    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    labels = [",".join(("subject_id", "study_id", *MIMIC_LABEL_COLUMNS))]
    metadata, split, images, missing = (
        [MIMIC_METADATA_HEADER],
        ["dicom_id,study_id,subject_id,split"],
        [],
        [],
    )
    subject, study, cells = MIMIC_STUDY_WITHOUT_IMAGES
    labels.append(",".join((subject, study, *(cells.get(c, "") for c in MIMIC_LABEL_COLUMNS))))
    for n, (subject, study, which, cells, dicoms) in enumerate(MIMIC_STUDIES):
        if cells is not None:
            row = ",".join((subject, study, *(cells.get(c, "") for c in MIMIC_LABEL_COLUMNS)))
            labels += [row, row] if n == 0 else [row]
        for dicom, view in dicoms:
            path = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
            row = f"{dicom},{subject},{study},CHEST (PA AND LAT),{view},{MIMIC_METADATA_REST}"
            metadata += [row, row] if n == 1 else [row]
            split.append(f"{dicom},{study},{subject},{which}")
            images.append(
                {
                    "dicom_id": dicom,
                    "subject_id": subject,
                    "study_id": study,
                    "split": which,
                    "view": view,
                    "path": str(path),
                    "cells": None
                    if cells is None
                    else {c: cells.get(c, "") for c in MIMIC_LABEL_COLUMNS},
                }
            )
            if missing_image and n == len(MIMIC_STUDIES) - 1:
                missing.append(str(path))
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_gray(rng, 48, 40)).save(path, quality=90)
    tables = {
        "labels": root / "mimic-cxr-2.0.0-chexpert.csv.gz",
        "metadata": root / "mimic-cxr-2.0.0-metadata.csv.gz",
        "split": root / "mimic-cxr-2.0.0-split.csv.gz",
    }
    for key, lines in (("labels", labels), ("metadata", metadata), ("split", split)):
        _gz(tables[key], "".join(line + "\n" for line in lines))
    return {
        "root": str(root),
        "tables": {k: str(v) for k, v in tables.items()},
        "images": images,
        "missing": missing,
    }


PADCHEST_CSV = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
PADCHEST_HEADER = (
    "ImageID,ImageDir,StudyDate_DICOM,StudyID,PatientID,PatientBirth,PatientSex_DICOM,"
    "ViewPosition_DICOM,Projection,MethodProjection,Report,MethodLabel,Labels,Localizations"
)
# One dict per CSV row: the cells, and the hand truth of the reader with every view kept
# (``expected``: the class names that are positive; None: the row is left out, unlabelled).
PADCHEST_ROWS = (
    {
        "id": "a_00-001-001.png",
        "dir": "0",
        "date": "20140502",
        "patient": "p1",
        "birth": "1950.0",
        "sex": "M",
        "dicom_view": "POSTEROANTERIOR",
        "projection": "PA",
        "method": "Physician",
        "labels": "['cardiomegaly', 'pleural effusion']",
        "expected": {"cardiomegaly", "pleural effusion"},
        "age": 64,
        "view": "PA",
    },
    {
        "id": "b_00-001-002.png",
        "dir": "0",
        "date": "20150101",
        "patient": "p1",
        "birth": "1950.0",
        "sex": "M",
        "dicom_view": "ANTEROPOSTERIOR",
        "projection": "AP",
        "method": "RNN_model",
        "labels": "[' pleural effusion']",
        "expected": {"pleural effusion"},
        "age": 65,
        "view": "AP",
    },
    {
        "id": "c_00-002-001.png",
        "dir": "1",
        "date": "20090611",
        "patient": "p2",
        "birth": "1931",
        "sex": "F",
        "dicom_view": "POSTEROANTERIOR",
        "projection": "PA",
        "method": "Physician",
        "labels": "['normal']",
        "expected": {"normal"},
        "age": 78,
        "view": "PA",
    },
    {
        "id": "d_00-002-002.png",
        "dir": "1",
        "date": "20090611",
        "patient": "p2",
        "birth": "1931",
        "sex": "F",
        "dicom_view": "LATERAL",
        "projection": "L",
        "method": "RNN_model",
        "labels": "['rib fracture', 'aortic elongation']",
        "expected": {"fracture"},
        "age": 78,
        "view": "L",
    },
    {
        "id": "e_00-003-001.png",
        "dir": "3.0",
        "date": "20120303",
        "patient": "p3",
        "birth": "",
        "sex": "O",
        "dicom_view": "",
        "projection": "AP_horizontal",
        "method": "RNN_model",
        "labels": "['laminar atelectasis', 'nodule', ' nodule']",
        "expected": {"atelectasis", "nodule"},
        "age": -1,
        "view": "AP_horizontal",
    },
    {
        "id": "f_00-003-002.png",
        "dir": "3",
        "date": "",
        "patient": "p3",
        "birth": "1960.0",
        "sex": "",
        "dicom_view": "POSTEROANTERIOR",
        "projection": "",
        "method": "Physician",
        "labels": "['']",
        "expected": set(),
        "age": -1,
        "view": "PA",
    },
    {
        "id": "g_00-004-001.png",
        "dir": "4",
        "date": "20100910",
        "patient": "p4",
        "birth": "1970.0",
        "sex": "F",
        "dicom_view": "POSTEROANTERIOR",
        "projection": "PA",
        "method": "RNN_model",
        "labels": "",
        "expected": None,
        "age": 40,
        "view": "PA",
    },
    {
        "id": "h_00-004-002.png",
        "dir": "4",
        "date": "20101010",
        "patient": "p4",
        "birth": "1970.0",
        "sex": "F",
        "dicom_view": "ANTEROPOSTERIOR",
        "projection": "AP",
        "method": "Physician",
        "labels": "[\"pneumonia\", 'infiltrates', 'COPD signs']",
        "expected": {"pneumonia", "infiltrates"},
        "age": 40,
        "view": "AP",
    },
)
PADCHEST_REPORT = 'derrame pleural, cardiomegalia. "sin cambios"'


def write_padchest_fixture(root, missing_image: bool = False, gz: bool = False) -> dict:
    """Writes a PadChest folder under ``root`` from :data:`PADCHEST_ROWS`.

    Layout: ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` (``.gz`` with
    ``gz``) and 16-bit grayscale PNGs (``I;16``, 44 x 36, 12 bits used) at
    ``<ImageDir>/<ImageID>`` (``ImageDir`` ``3.0`` is folder ``3``). Quirks: the Spanish
    report quoted, with commas and quotes; stray spaces and a repeat in ``Labels``;
    ``['']``; a blank ``Labels``; terms that are no class; a blank Projection (read from
    ``ViewPosition_DICOM``); the first row listed twice. ``missing_image``: the last
    row's image is not written.

    Returns:
      ``{"root", "csv", "rows": PADCHEST_ROWS with "path" and "pixels" (uint16) added,
      "missing": [paths not written]}``.
    """
    import csv

    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(9)
    rows, missing = [], []
    lines = [PADCHEST_HEADER.split(",")]
    for n, r in enumerate(PADCHEST_ROWS):
        folder = str(int(float(r["dir"])))
        path = root / folder / r["id"]
        cells = [
            r["id"],
            r["dir"],
            r["date"],
            f"s{n}",
            r["patient"],
            r["birth"],
            r["sex"],
            r["dicom_view"],
            r["projection"],
            "Manual review of DICOM fields",
            PADCHEST_REPORT,
            r["method"],
            r["labels"],
            "[]",
        ]
        lines += [cells, cells] if n == 0 else [cells]
        pixels = (rng.integers(200, 4000, (36, 44))).astype(np.uint16)
        rows.append({**r, "path": str(path), "pixels": pixels})
        if missing_image and n == len(PADCHEST_ROWS) - 1:
            missing.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
    csv_path = root / (PADCHEST_CSV + (".gz" if gz else ""))
    import io

    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(lines)
    if gz:
        _gz(csv_path, text.getvalue())
    else:
        csv_path.write_text(text.getvalue())
    return {"root": str(root), "csv": str(csv_path), "rows": rows, "missing": missing}
