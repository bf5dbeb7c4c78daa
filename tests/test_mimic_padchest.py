"""MIMIC-CXR-JPG and PadChest as distributed: the readers against hand truth on fixture
folders with the files' quirks, their errors, and a phantom export prepared and trained."""

import csv
import gzip
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import tiny_config
from raw_fixtures import (
    CHEXPERT_LABEL_COLUMNS,
    write_mimic_fixture,
    write_padchest_fixture,
)

from chestattn_jax.data import mimic_cxr, padchest, records
from chestattn_jax.data import prepare as prep
from chestattn_jax.data.export import export_files
from chestattn_jax.data.export_csv_sets import export_mimic_cxr, export_padchest
from chestattn_jax.data.images import letterbox
from chestattn_jax.data.raw import DataFormatError
from chestattn_jax.data.synthetic import PhantomConfig

SIZE = 32
tfds.disable_progress_bar()

# (label, mask) of each labeller cell, written out here by hand; None: the policy's.
CELL = {"1.0": (1, 1), "0.0": (0, 1), "": (0, 1), "-1.0": None}
UNCERTAIN = {"ones": (1, 1), "zeros": (0, 1), "ignore": (0, 0)}


@pytest.fixture(scope="module")
def mimic(tmp_path_factory):
    return write_mimic_fixture(tmp_path_factory.mktemp("mimic"))


@pytest.fixture(scope="module")
def pad(tmp_path_factory):
    return write_padchest_fixture(tmp_path_factory.mktemp("padchest"))


def unique_images(truth):
    """The fixture's images, each once, in metadata order."""
    return list({im["dicom_id"]: im for im in truth["images"]}.values())


@pytest.mark.parametrize("policy", ["ones", "zeros", "ignore"])
def test_mimic_labels_of_a_study_apply_to_each_of_its_images(mimic, policy):
    examples = mimic_cxr.load(mimic["root"], uncertainty=policy, views=None)
    # The unlabelled study's image is left out; the image listed twice is read once.
    expected = [im for im in unique_images(mimic) if im["cells"] is not None]
    assert [e.key for e in examples] == [im["dicom_id"] for im in expected]
    for e, im in zip(examples, expected, strict=True):
        for j, column in enumerate(mimic_cxr.CLASSES):
            cell = im["cells"][column]
            assert (e.labels[j], e.mask[j]) == (CELL[cell] or UNCERTAIN[policy]), (e.key, column)
        assert e.image_path == im["path"] and os.path.isfile(e.image_path)
        assert (e.patient_id, e.view, e.source_split) == (im["subject_id"], im["view"], im["split"])
        assert (e.sex, e.age, e.boxes.shape) == ("", -1, (0, 4))
    # Images of one study share one labels array: the study's.
    by_study = {}
    for e, im in zip(examples, expected, strict=True):
        by_study.setdefault(im["study_id"], []).append(e.labels.tolist())
    assert all(len({tuple(x) for x in v}) == 1 for v in by_study.values())
    assert max(len(v) for v in by_study.values()) == 2


def test_mimic_views_and_the_prepare_reader(mimic):
    frontal = mimic_cxr.load(mimic["root"])
    expected = [
        im["dicom_id"]
        for im in unique_images(mimic)
        if im["cells"] is not None and im["view"] in ("PA", "AP")
    ]
    assert [e.key for e in frontal] == expected
    lateral = mimic_cxr.load(mimic["root"], views=("LATERAL", ""))
    assert sorted(e.view for e in lateral) == ["", "LATERAL"]
    # prepare's reader: all 14 observations, uncertain kept apart (label 0, mask 0).
    raw = mimic_cxr.read_raw(mimic["root"], mimic_views=("PA", "AP"))
    ignored = mimic_cxr.load(mimic["root"], uncertainty="ignore")
    assert [e.key for e in raw] == expected
    for a, b in zip(raw, ignored, strict=True):
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.mask, b.mask)
    # CheXpert's 14 observations, spelled and ordered as CheXpert's CSV.
    assert mimic_cxr.SOURCE.classes == CHEXPERT_LABEL_COLUMNS


def _rewrite_gz(path, edit):
    with gzip.open(path, "rt", newline="") as f:
        lines = f.read().splitlines()
    with gzip.open(path, "wt", newline="") as f:
        f.write("".join(line + "\n" for line in edit(lines)))


def _replace_line(number, text):
    def edit(lines):
        lines[number - 1] = text(lines[number - 1])
        return lines

    return edit


@pytest.mark.parametrize("table", ["labels", "metadata", "split"])
def test_mimic_a_missing_table_is_named_with_the_data_set(tmp_path, table):
    truth = write_mimic_fixture(tmp_path)
    os.remove(truth["tables"][table])
    name = os.path.basename(truth["tables"][table])
    with pytest.raises(FileNotFoundError, match=f"No {name} .*MIMIC-CXR-JPG folder"):
        mimic_cxr.load(truth["root"])


@pytest.mark.parametrize(
    "table, line, edit, message",
    [
        ("labels", 3, lambda r: r.replace("1.0", "yes", 1), r"line 3: label 'yes' in column"),
        ("labels", 2, lambda r: r + ",", r"line 2: 17 fields where the header has 16"),
        # The twice-listed study, listed again with other labels.
        (
            "labels",
            4,
            lambda r: r.replace("-1.0", "1.0"),
            r"line 4: study 50414267 is listed again",
        ),
        (
            "metadata",
            2,
            lambda r: r.replace(",50414267,", ",5041x267,"),
            r"line 2: study_id '5041x267'",
        ),
        (
            "metadata",
            5,
            lambda r: r.replace(",AP,", ",PA,"),
            r"line 5: image 2a2277a9-.* is listed again",
        ),
        ("split", 3, lambda r: r.replace(",train", ",training"), r"line 3: split 'training'"),
        (
            "split",
            2,
            lambda r: r.replace(",50414267,", ",50414268,"),
            r"line 2: image .* is in study 50414267 .*, but .*line 2 puts it in study 50414268",
        ),
    ],
)
def test_mimic_a_malformed_row_names_its_file_and_line(tmp_path, table, line, edit, message):
    truth = write_mimic_fixture(tmp_path)
    _rewrite_gz(truth["tables"][table], _replace_line(line, edit))
    with pytest.raises(DataFormatError, match=message) as e:
        mimic_cxr.load(truth["root"], views=None)
    path = truth["tables"]["metadata" if "is in study" in message else table]
    assert str(e.value).startswith(f"{path}, line ")


def test_mimic_an_image_the_split_does_not_place_is_an_error(tmp_path):
    truth = write_mimic_fixture(tmp_path)
    _rewrite_gz(truth["tables"]["split"], lambda lines: lines[:-1])
    with pytest.raises(DataFormatError, match=r"image 9a0d37f2-.* has no row in .*split\.csv\.gz"):
        mimic_cxr.load(truth["root"])


def test_mimic_a_study_of_another_subject_in_the_labeller_table_is_an_error(tmp_path):
    truth = write_mimic_fixture(tmp_path)
    _rewrite_gz(
        truth["tables"]["labels"], _replace_line(5, lambda r: r.replace("10000032", "10000033", 1))
    )
    labels = truth["tables"]["labels"]
    with pytest.raises(
        DataFormatError,
        match=rf"study 53189527 is of subject 10000032, but {labels}, line 5 gives subject 1000003",
    ) as e:
        mimic_cxr.load(truth["root"])
    assert str(e.value).startswith(f"{truth['tables']['metadata']}, line ")


def test_mimic_prepare_stores_each_image_once_and_follows_on_bad_image(tmp_path):
    truth = write_mimic_fixture(tmp_path / "raw", missing_image=True)
    (missing,) = truth["missing"]
    with pytest.raises(DataFormatError, match=f"{missing}.*--on_bad_image=skip"):
        prep.prepare("mimic_cxr", truth["root"], str(tmp_path / "a"), SIZE)
    version = prep.prepare(
        "mimic_cxr", truth["root"], str(tmp_path / "b"), SIZE, on_bad_image="skip"
    )
    report = records.read_report(version)
    assert [s["file"] for s in report["skipped"]] == [missing]
    index = records.load_index(records.open_builder("mimic_cxr", str(tmp_path / "b"), SIZE))
    frontal = [
        im
        for im in unique_images(truth)
        if im["cells"] is not None and im["view"] in ("PA", "AP") and im["path"] != missing
    ]
    stored = dict(zip(index["key"].tolist(), index["source_split"].tolist(), strict=True))
    assert len(index["key"]) == len(stored)  # the image listed twice: stored once
    assert stored == {im["dicom_id"]: im["split"] for im in frontal}
    assert report["options"]["mimic_views"] == ["AP", "PA"]


# ---------------------------------------------------------------------------- PadChest


def _vector(names):
    return [int(c in names) for c in padchest.CLASSES]


def test_padchest_labels_views_ages_and_sexes_against_hand_truth(pad):
    examples = padchest.load(pad["root"], views=None)
    labelled = [r for r in pad["rows"] if r["expected"] is not None]
    # The blank Labels row is left out; the row listed twice is read once.
    assert [e.key for e in examples] == [r["id"] for r in labelled]
    for e, r in zip(examples, labelled, strict=True):
        assert e.labels.tolist() == _vector(r["expected"]), r["labels"]
        assert e.mask.all()
        assert (e.view, e.age, e.patient_id) == (r["view"], r["age"], r["patient"])
        assert e.sex == (r["sex"] if r["sex"] in ("M", "F") else "")
        assert e.image_path == r["path"] and os.path.isfile(e.image_path)
        assert e.source_split == ""


def test_padchest_options_keep_frontal_views_and_physician_labels(pad, tmp_path):
    frontal = padchest.load(pad["root"])
    assert [e.key for e in frontal] == [
        r["id"]
        for r in pad["rows"]
        if r["expected"] is not None and r["view"] in ("PA", "AP", "AP_horizontal")
    ]
    physician = padchest.read_raw(
        pad["root"], padchest_views=("PA", "AP", "L"), padchest_physician_only=True
    )
    assert [e.key for e in physician] == [
        r["id"]
        for r in pad["rows"]
        if r["expected"] is not None
        and r["method"] == "Physician"
        and r["view"] in ("PA", "AP", "L")
    ]
    gz = write_padchest_fixture(tmp_path, gz=True)
    assert [e.key for e in padchest.load(gz["root"])] == [e.key for e in frontal]


@pytest.mark.parametrize(
    "text",
    ["cardiomegaly", "['cardiomegaly', 3]", "__import__('os').getcwd()", "['unclosed", "{'a': 1}"],
)
def test_padchest_a_labels_cell_that_is_no_list_of_terms_names_file_and_line(tmp_path, text):
    truth = write_padchest_fixture(tmp_path)
    with open(truth["csv"], newline="") as f:
        rows = list(csv.reader(f))
    rows[3][rows[0].index("Labels")] = text
    with open(truth["csv"], "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    with pytest.raises(
        DataFormatError, match=r"line 4: Labels .* is not a list of quoted terms"
    ) as e:
        padchest.load(truth["root"])
    assert str(e.value).startswith(truth["csv"])


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r.replace(",Physician,", ",Doctor,"), r"line 2: MethodLabel 'Doctor'"),
        (
            lambda r: r.replace(",20140502,", ",2014-05-02,"),
            r"line 2: StudyDate_DICOM '2014-05-02'",
        ),
        (lambda r: r.replace(",1950.0,", ",nineteen,"), r"line 2: PatientBirth 'nineteen'"),
        (
            lambda r: r.replace("a_00-001-001.png,0,", "a_00-001-001.png,x,"),
            r"line 2: ImageDir 'x'",
        ),
        (lambda r: r + ",", r"line 2: 15 fields where the header has 14"),
    ],
)
def test_padchest_a_malformed_row_names_file_and_line(tmp_path, edit, message):
    truth = write_padchest_fixture(tmp_path)
    lines = open(truth["csv"]).read().splitlines()
    lines[1] = edit(lines[1])
    open(truth["csv"], "w").write("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=message) as e:
        padchest.load(truth["root"])
    assert str(e.value).startswith(truth["csv"])


@pytest.mark.parametrize(
    "edit",
    [
        lambda r: r.replace("'pleural effusion'", "'pneumothorax'"),
        # Another view: an error even though the first listing (PA) is kept, the second not.
        lambda r: r.replace("POSTEROANTERIOR,PA,", "LATERAL,L,"),
    ],
)
def test_padchest_an_image_listed_twice_with_other_fields_or_a_missing_csv(tmp_path, edit):
    truth = write_padchest_fixture(tmp_path)
    lines = open(truth["csv"]).read().splitlines()
    assert lines[1] == lines[2] != edit(lines[2])
    lines[2] = edit(lines[2])
    open(truth["csv"], "w").write("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"line 3: image 'a_00-001-001\.png' is listed again"):
        padchest.load(truth["root"])
    os.remove(truth["csv"])
    with pytest.raises(FileNotFoundError, match=f"No {padchest.CSV_FILE} .*PadChest folder"):
        padchest.load(truth["root"])


def test_padchest_prepare_windows_16_bit_pngs_and_follows_on_bad_image(tmp_path):
    truth = write_padchest_fixture(tmp_path / "raw", missing_image=True)
    (missing,) = truth["missing"]
    with pytest.raises(DataFormatError, match=f"{missing}.*--on_bad_image=skip"):
        prep.prepare("padchest", truth["root"], str(tmp_path / "a"), SIZE)
    version = prep.prepare(
        "padchest", truth["root"], str(tmp_path / "b"), SIZE, on_bad_image="skip"
    )
    assert [s["file"] for s in records.read_report(version)["skipped"]] == [missing]
    builder = records.open_builder("padchest", str(tmp_path / "b"), SIZE)
    source = builder.as_data_source(records.SPLIT)
    stored = {r["key"].decode(): r for r in (source[i] for i in range(len(source)))}
    kept = [
        r
        for r in truth["rows"]
        if r["expected"] is not None and r["view"] != "L" and r["path"] != missing
    ]
    assert sorted(stored) == sorted(r["id"] for r in kept)
    for r in kept:
        p = r["pixels"].astype(np.float64)  # 16-bit: windowed to its own min-max range
        gray = np.round((p - p.min()) / (p.max() - p.min()) * 255).astype(np.uint8)
        np.testing.assert_array_equal(stored[r["id"]]["image"][..., 0], letterbox(gray, SIZE))
        assert stored[r["id"]]["labels"].tolist() == _vector(r["expected"])


# ------------------------------------------------------------- export, prepare, train

PHANTOMS = PhantomConfig(image_size=SIZE, prevalence_scale=2.0)


@pytest.mark.parametrize(
    "name, export, read",
    [("mimic_cxr", export_mimic_cxr, mimic_cxr.load), ("padchest", export_padchest, padchest.load)],
)
def test_an_export_writes_exactly_its_listed_files_and_reads_back(tmp_path, name, export, read):
    info = export(str(tmp_path), 12, seed=3, config=PHANTOMS)
    written = sorted(
        os.path.relpath(os.path.join(d, n), tmp_path).replace(os.sep, "/")
        for d, _, names in os.walk(tmp_path)
        for n in names
    )
    assert written == sorted(export_files(name, 12))
    assert len(read(str(tmp_path))) == info["num_images"] == 12


# The phantoms' (NIH) findings in PadChest's spelling, written out here by hand.
PADCHEST_SPELLING = {
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


def test_the_exports_carry_the_phantoms_findings_and_split(tmp_path):
    from chestattn_jax.data.classes import NIH_CLASSES
    from chestattn_jax.data.export import CHEXPERT_FROM_NIH
    from chestattn_jax.data.synthetic import render

    info = export_mimic_cxr(str(tmp_path / "m"), 30, seed=5, config=PHANTOMS, uncertain_fraction=0)
    examples = mimic_cxr.load(str(tmp_path / "m"), uncertainty="ignore")
    for index, e in enumerate(examples):
        truth = render(5, index, PHANTOMS)["labels"]
        present = {c for c, y in zip(NIH_CLASSES, truth, strict=True) if y}
        for j, c in enumerate(mimic_cxr.CLASSES):
            expected = bool(present & set(CHEXPERT_FROM_NIH.get(c, ())))
            if c == "No Finding":
                expected = not any(present & set(v) for v in CHEXPERT_FROM_NIH.values())
            assert (e.labels[j], e.mask[j]) == (expected, 1), (index, c)
    by_split = {}
    for e in examples:
        by_split.setdefault(e.source_split, set()).add(e.patient_id)
    assert set(by_split) == {"train", "validate", "test"}
    assert sum(map(len, by_split.values())) == info["num_patients"]  # patient-disjoint
    assert sum(e.source_split == "test" for e in examples) == info["num_test"]

    export_padchest(str(tmp_path / "p"), 30, seed=5, config=PHANTOMS)
    examples = padchest.load(str(tmp_path / "p"))
    for index, e in enumerate(examples):
        truth = render(5, index, PHANTOMS)["labels"]
        present = {c for c, y in zip(NIH_CLASSES, truth, strict=True) if y}
        names = {PADCHEST_SPELLING[c] for c in present} or {"normal"}
        assert e.labels.tolist() == _vector(names), index


@pytest.mark.slow
@pytest.mark.parametrize("name, cls", [("mimic_cxr", "Cardiomegaly"), ("padchest", "cardiomegaly")])
def test_a_phantom_export_prepares_and_trains(tmp_path, name, cls):
    from chestattn_jax import config as config_lib
    from chestattn_jax import train
    from chestattn_jax.data.export import layout

    layout(name).write(str(tmp_path / "raw"), 60, seed=4, config=PHANTOMS)
    prep.prepare(name, str(tmp_path / "raw"), str(tmp_path / "prepared"), SIZE)
    config = tiny_config(num_steps=4, log_every_steps=2, eval_every_steps=4)
    config.data.name, config.data.data_dir = name, str(tmp_path / "prepared")
    config.data.classes = (cls,)
    config.data.synthetic = config_lib.get_base_config().data.synthetic  # read by nothing
    metrics = train.train_and_evaluate(config, str(tmp_path / "w"))
    assert set(metrics["auc"]) == {cls}
    assert metrics["num_examples"] > 0
