"""The raw-layout readers of NIH ChestX-ray14 and CheXpert."""

from __future__ import annotations

import collections
import gzip
import os
import pathlib
import re
import shutil

import numpy as np
import pytest
from conftest import REPO
from raw_fixtures import (
    CHEXPERT_LABEL_COLUMNS,
    write_chexpert_fixture,
    write_nih_fixture,
)

from chestattn_jax.data import chexpert, nih
from chestattn_jax.data.classes import CHEXPERT_CLASSES, NIH_CLASSES
from chestattn_jax.data.raw import DataFormatError, positive_counts

REAL = REPO.parent / "shared" / "data" / "real"


def _replace_in(path, old: str, new: str, count: int = 1):
    text = pathlib.Path(path).read_text()
    assert old in text, f"{old!r} not in {path}"
    pathlib.Path(path).write_text(text.replace(old, new, count))


def _set_cell(path, line: int, column: str, value: str):
    """Rewrites one cell of a CSV without quoted fields (line 1 is the header)."""
    lines = pathlib.Path(path).read_text().splitlines()
    fields = lines[line - 1].split(",")
    fields[lines[0].split(",").index(column)] = value
    lines[line - 1] = ",".join(fields)
    pathlib.Path(path).write_text("".join(line + "\n" for line in lines))


# --- NIH ChestX-ray14 -------------------------------------------------------------------------


@pytest.mark.parametrize("release", ["2017", "v2020"])
def test_nih_fixture_reads_back_its_truths(tmp_path, release):
    truth = write_nih_fixture(tmp_path, release=release)
    # The 2017 layout's quirk is really there: a trailing comma on every line.
    lines = pathlib.Path(truth["data_entry"]).read_text().splitlines()
    assert all(line.endswith(",") for line in lines) == (release == "2017")

    assert nih.read_data_entry(truth["data_entry"]) == truth["entries"]
    examples = nih.load(tmp_path)
    assert [e.key for e in examples] == [e["image_index"] for e in truth["entries"]]
    entries = {e["image_index"]: e for e in truth["entries"]}
    for ex in examples:
        entry = entries[ex.key]
        np.testing.assert_array_equal(ex.labels, truth["labels"][ex.key])
        assert ex.labels.dtype == np.int32 and ex.mask.dtype == np.int32
        np.testing.assert_array_equal(ex.mask, np.ones(len(NIH_CLASSES), np.int32))
        assert (ex.patient_id, ex.view, ex.sex, ex.age) == (
            entry["patient_id"],
            entry["view"],
            entry["sex"],
            entry["age"],
        )
        assert ex.source_split == truth["source_split"][ex.key]
        assert ex.image_path == os.path.join(truth["images_dir"], ex.key)
        assert os.path.isfile(ex.image_path)
        written = truth["boxes"].get(ex.key, [])
        assert ex.boxes.shape == (len(written), 4) and ex.boxes.dtype == np.float32
        assert ex.box_labels.shape == (len(written),) and ex.box_labels.dtype == np.int32
        assert [NIH_CLASSES[i] for i in ex.box_labels] == [b[0] for b in written]
        np.testing.assert_allclose(
            ex.boxes, np.reshape([b[1:] for b in written], (-1, 4)), rtol=1e-6
        )
    np.testing.assert_array_equal(positive_counts(examples), truth["positive_counts"])
    assert len({e.patient_id for e in examples}) == truth["num_patients"]
    assert sum(not e.labels.any() for e in examples) == truth["num_no_finding"]
    assert {e.view for e in examples} == {"PA", "AP"}
    assert sum(len(e.boxes) for e in examples) == truth["num_boxes"]
    # The official split is patient-disjoint.
    patients = collections.defaultdict(set)
    for e in examples:
        patients[e.source_split].add(e.patient_id)
    assert patients["train_val"] and patients["test"]
    assert not patients["train_val"] & patients["test"]
    # Examples share label arrays; they must not be able to change each other.
    with pytest.raises(ValueError, match="read-only"):
        examples[0].labels[0] = 1


def test_nih_box_list_renames_infiltrate(tmp_path):
    truth = write_nih_fixture(tmp_path)
    assert ",Infiltrate," in pathlib.Path(truth["bbox_list"]).read_text()
    boxes = nih.read_bbox_list(truth["bbox_list"])
    assert sum(len(b) for b in boxes.values()) == truth["num_boxes"] == 9
    assert len(boxes) == truth["num_box_images"] == 8
    labels = {b[0] for image_boxes in boxes.values() for b in image_boxes}
    assert "Infiltration" in labels and "Infiltrate" not in labels
    by_key = {e.key: e for e in nih.load(tmp_path)}
    image = next(k for k, b in truth["boxes"].items() if b[0][0] == "Infiltration")
    assert list(by_key[image].box_labels) == [NIH_CLASSES.index("Infiltration")]


def test_nih_class_subset_and_view_filter(tmp_path):
    truth = write_nih_fixture(tmp_path, release="v2020")
    classes = ("Mass", "Infiltration", "Effusion")
    columns = [NIH_CLASSES.index(c) for c in classes]
    examples = nih.load(tmp_path, classes=classes)
    assert len(examples) == truth["num_images"]
    for ex in examples:
        np.testing.assert_array_equal(ex.labels, truth["labels"][ex.key][columns])
        kept = [b for b in truth["boxes"].get(ex.key, []) if b[0] in classes]
        assert [classes[i] for i in ex.box_labels] == [b[0] for b in kept]
        assert ex.boxes.shape == (len(kept), 4)
    # Boxes of Atelectasis, Nodule, ... are dropped; Effusion's two and the others stay.
    assert sum(len(e.boxes) for e in examples) == 4

    ap = nih.load(tmp_path, views=("AP",))
    expected_ap = [e["image_index"] for e in truth["entries"] if e["view"] == "AP"]
    assert [e.key for e in ap] == expected_ap and 0 < len(ap) < truth["num_images"]
    assert len(nih.load(tmp_path, views=None)) == truth["num_images"]


def test_nih_archive_layout_and_missing_image(tmp_path):
    """Images under images_001/images/ ... are found; a missing one gets raw_dir/images/<name>."""
    truth = write_nih_fixture(tmp_path)
    names = sorted(os.listdir(truth["images_dir"]))
    for n, name in enumerate(names):
        archive = tmp_path / f"images_{1 + n % 2:03d}" / "images"
        archive.mkdir(parents=True, exist_ok=True)
        shutil.move(os.path.join(truth["images_dir"], name), archive / name)
    os.rmdir(truth["images_dir"])
    missing = names[5]
    os.remove(tmp_path / "images_002" / "images" / missing)

    paths = {e.key: e.image_path for e in nih.load(tmp_path)}
    assert paths[names[0]] == str(tmp_path / "images_001" / "images" / names[0])
    assert paths[names[1]] == str(tmp_path / "images_002" / "images" / names[1])
    assert paths[missing] == str(tmp_path / "images" / missing)
    assert sum(os.path.isfile(p) for p in paths.values()) == truth["num_images"] - 1


def test_nih_gzipped_metadata_without_lists_or_boxes(tmp_path):
    truth = write_nih_fixture(tmp_path)
    data_entry = pathlib.Path(truth["data_entry"])
    with gzip.open(f"{data_entry}.gz", "wb") as f:
        f.write(data_entry.read_bytes())
    for name in ("data_entry", "train_val_list", "test_list", "bbox_list"):
        os.remove(truth[name])

    examples = nih.load(tmp_path)
    assert len(examples) == truth["num_images"]
    assert {e.source_split for e in examples} == {""}
    assert all(e.boxes.shape == (0, 4) and e.box_labels.shape == (0,) for e in examples)
    for ex in examples:
        np.testing.assert_array_equal(ex.labels, truth["labels"][ex.key])


def test_nih_data_entry_older_ages_and_padded_ids(tmp_path):
    path = tmp_path / "Data_Entry_2017.csv"
    header = (
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
        "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
    )
    path.write_text(
        f"{header}\n"
        "00000007_000.png,Mass|Nodule,0, 7 ,058Y,F,PA,2500,2048,0.168,0.168,\n"
        "00000007_001.png,No Finding,1, 7 ,009M,F,AP,2500,2048,0.168,0.168,\n"
        "00000008_000.png,Hernia,0,8,,O,PA,2500,2048,0.168,0.168,\n"
    )
    entries = nih.read_data_entry(path)
    assert [(e["patient_id"], e["age"], e["sex"]) for e in entries] == [
        ("7", 58, "F"),
        ("7", 0, "F"),
        ("8", -1, ""),
    ]
    assert [e["findings"] for e in entries] == [("Mass", "Nodule"), (), ("Hernia",)]


@pytest.mark.parametrize(
    "edit, match",
    [
        # A missing required column.
        (
            lambda t: _replace_in(t["data_entry"], "View Position,", "View,"),
            r"Data_Entry_2017\.csv: missing column 'View Position'",
        ),
        # An unknown finding, named with its line.
        (
            lambda t: _replace_in(t["data_entry"], "Cardiomegaly,1,", "Cardiomegally,1,"),
            r"Data_Entry_2017\.csv, line 3: unknown finding 'Cardiomegally' in column "
            r"'Finding Labels'",
        ),
        # 'No Finding' cannot come with findings.
        (
            lambda t: _replace_in(t["data_entry"], "Atelectasis,0,", "Atelectasis|No Finding,0,"),
            r"Data_Entry_2017\.csv, line 2: 'No Finding' with other findings in column",
        ),
        # A row that lost a field.
        (
            lambda t: _replace_in(t["data_entry"], ",0.143,0.143,\n", ",0.143,\n"),
            r"Data_Entry_2017\.csv, line 2: 11 fields where the header has 12",
        ),
        (
            lambda t: _replace_in(t["data_entry"], f",{t['entries'][0]['age']},M,", ",seventy,M,"),
            r"Data_Entry_2017\.csv, line 2: bad age 'seventy' in column 'Patient Age'",
        ),
        (
            lambda t: _replace_in(t["bbox_list"], ",Infiltrate,", ",Infiltrates,"),
            r"BBox_List_2017\.csv, line \d+: unknown label 'Infiltrates' in column "
            r"'Finding Label'",
        ),
        (
            lambda t: _replace_in(t["bbox_list"], "Atelectasis,", "Atelectasis,x"),
            r"BBox_List_2017\.csv, line 2: box field 'x' is 'x[\d.]+', not a number",
        ),
        (
            lambda t: _replace_in(t["bbox_list"], "Label,Bbox", "Label,Box"),
            r"BBox_List_2017\.csv: missing column 'Bbox \[x,y,w,h\]'",
        ),
        (
            lambda t: _replace_in(t["test_list"], "\n", "\n00000001_000.png\n"),
            r"test_list\.txt: '00000001_000\.png' is also in the train_val list",
        ),
    ],
    ids=[
        "missing-column",
        "unknown-finding",
        "no-finding-mixed",
        "field-count",
        "bad-age",
        "unknown-box-label",
        "bad-box-number",
        "box-header",
        "image-in-both-lists",
    ],
)
def test_nih_bad_files_are_named(tmp_path, edit, match):
    truth = write_nih_fixture(tmp_path, release="2017")
    edit(truth)
    with pytest.raises(DataFormatError, match=match):
        nih.load(tmp_path)


def test_nih_unknown_class_or_folder(tmp_path):
    write_nih_fixture(tmp_path)
    with pytest.raises(DataFormatError, match=r"NIH ChestX-ray14 has no class 'Lung Opacity'"):
        nih.load(tmp_path, classes=("Mass", "Lung Opacity"))
    with pytest.raises(DataFormatError, match=r"'Mass' is asked for twice"):
        nih.load(tmp_path, classes=("Mass", "Mass"))
    with pytest.raises(DataFormatError, match=r"no image with a view in \('LL',\)"):
        nih.load(tmp_path, views=("LL",))
    with pytest.raises(
        FileNotFoundError, match=r"No Data_Entry_2017_v2020\.csv or Data_Entry_2017\.csv"
    ):
        nih.load(tmp_path / "images")


# --- CheXpert ---------------------------------------------------------------------------------


def _expected(value: str, policy: str) -> tuple[int, int]:
    """(label, mask) of one CSV cell under one uncertainty policy, written out by hand."""
    if value == "1.0":
        return 1, 1
    if value in ("0.0", ""):
        return 0, 1
    assert value == "-1.0"
    return {"ones": (1, 1), "zeros": (0, 1), "ignore": (0, 0)}[policy]


@pytest.mark.parametrize(
    "uncertainty",
    [
        "ones",
        "zeros",
        "ignore",
        {"Atelectasis": "ones", "Edema": "ones", "Cardiomegaly": "ignore", "Fracture": "ignore"},
    ],
    ids=["ones", "zeros", "ignore", "per-class"],
)
def test_chexpert_uncertainty_policies(tmp_path, uncertainty):
    truth = write_chexpert_fixture(tmp_path)
    # Every class column of the training CSV holds all four kinds of cell.
    for column in CHEXPERT_LABEL_COLUMNS:
        cells = {r["values"][column] for r in truth["rows"] if r["split"] == "train"}
        assert cells == {"", "1.0", "0.0", "-1.0"}, column

    examples = chexpert.load(tmp_path, uncertainty=uncertainty, frontal_only=False)
    rows = {r["path"]: r for r in truth["rows"]}
    assert [e.key for e in examples] == [r["path"] for r in truth["rows"]]
    for ex in examples:
        values = rows[ex.key]["values"]
        for i, c in enumerate(CHEXPERT_CLASSES):
            policy = uncertainty if isinstance(uncertainty, str) else uncertainty.get(c, "zeros")
            assert (ex.labels[i], ex.mask[i]) == _expected(values[c], policy), (ex.key, c)
    if uncertainty == "ignore":
        assert any(not e.mask.all() for e in examples)


def test_chexpert_metadata_and_frontal_filter(tmp_path):
    truth = write_chexpert_fixture(tmp_path)
    everything = chexpert.load(tmp_path, frontal_only=False)
    frontal = chexpert.load(tmp_path)
    assert len(everything) == sum(truth["num_rows"].values())
    assert len(frontal) == sum(truth["num_frontal"].values()) < len(everything)
    assert [e.key for e in frontal] == [r["path"] for r in truth["rows"] if r["frontal"]]

    rows = {r["path"]: r for r in truth["rows"]}
    sexes = {"Male": "M", "Female": "F", "Unknown": ""}
    for ex in everything:
        row = rows[ex.key]
        assert ex.patient_id == row["patient_id"] and re.fullmatch(r"patient\d{5}", ex.patient_id)
        assert ex.source_split == row["split"]
        assert ex.view == (row["ap_pa"] if row["frontal"] else "Lateral")
        assert (ex.sex, ex.age) == (sexes[row["sex"]], row["age"])
        assert ex.image_path == row["image_path"] and os.path.isfile(ex.image_path)
        assert ex.boxes.shape == (0, 4) and ex.box_labels.shape == (0,)
    assert {e.view for e in everything} == {"AP", "PA", "LL", "Lateral"}
    assert {e.sex for e in everything} == {"M", "F", ""}
    for split in ("train", "valid"):
        assert (
            sorted({e.patient_id for e in everything if e.source_split == split})
            == (truth["patients"][split])
        )


def test_chexpert_folder_variants_and_gzip(tmp_path):
    truth = write_chexpert_fixture(tmp_path / "a")
    keys = [r["path"] for r in truth["rows"] if r["frontal"]]
    # raw_dir may be the CheXpert-v1.0-small folder itself.
    assert [e.key for e in chexpert.load(truth["dataset_dir"])] == keys

    # The full-size release: the folder and every Path start with CheXpert-v1.0.
    full = tmp_path / "a" / "CheXpert-v1.0"
    os.rename(truth["dataset_dir"], full)
    for name in ("train.csv", "valid.csv"):
        text = (full / name).read_text()
        (full / name).write_text(text.replace("CheXpert-v1.0-small/", "CheXpert-v1.0/"))
    examples = chexpert.load(tmp_path / "a")
    assert len(examples) == len(keys)
    assert all(e.image_path.startswith(str(full) + os.sep) for e in examples)
    assert all(os.path.isfile(e.image_path) for e in examples)

    # A gzipped CSV anywhere, with its images elsewhere.
    train_gz = tmp_path / "chexpert_train.csv.gz"
    with gzip.open(train_gz, "wb") as f:
        f.write((full / "train.csv").read_bytes())
    examples = chexpert.read_csv(train_gz, frontal_only=False, image_root=tmp_path / "a")
    assert len(examples) == truth["num_rows"]["train"]
    assert all(os.path.isfile(e.image_path) for e in examples)


def _drop_column(path, column: str):
    lines = pathlib.Path(path).read_text().splitlines()
    i = lines[0].split(",").index(column)
    kept = [",".join(f for j, f in enumerate(line.split(",")) if j != i) for line in lines]
    pathlib.Path(path).write_text("".join(line + "\n" for line in kept))


def test_chexpert_bad_input_is_named(tmp_path):
    truth = write_chexpert_fixture(tmp_path)
    train_csv = truth["train_csv"]
    with pytest.raises(DataFormatError, match=r"Unknown uncertainty policy 'maybe'"):
        chexpert.load(tmp_path, uncertainty="maybe")
    with pytest.raises(DataFormatError, match=r"policy 'one' for class 'Edema'"):
        chexpert.load(tmp_path, uncertainty={"Edema": "one"})
    with pytest.raises(DataFormatError, match=r"given for 'Oedema', which is no CheXpert"):
        chexpert.load(tmp_path, uncertainty={"Oedema": "ones"})
    with pytest.raises(DataFormatError, match=r"CheXpert has no class 'Effusion'"):
        chexpert.load(tmp_path, classes=("Edema", "Effusion"))

    _set_cell(train_csv, 3, "No Finding", "2.0")
    with pytest.raises(
        DataFormatError, match=r"train\.csv, line 3: label '2\.0' in column 'No Finding'"
    ):
        chexpert.load(tmp_path, classes=("No Finding", "Edema"))
    # The bad cell is in a column that was not asked for: no error.
    assert len(chexpert.load(tmp_path, classes=("Edema",))) == sum(truth["num_frontal"].values())

    _drop_column(train_csv, "Edema")
    with pytest.raises(DataFormatError, match=r"train\.csv: missing column 'Edema'"):
        chexpert.load(tmp_path)
    _drop_column(truth["valid_csv"], "AP/PA")
    with pytest.raises(DataFormatError, match=r"valid\.csv: missing column 'AP/PA'"):
        chexpert.read_csv(truth["valid_csv"])


def test_chexpert_accepts_other_spellings_of_the_values(tmp_path):
    truth = write_chexpert_fixture(tmp_path)
    classes = ("Cardiomegaly", "Edema", "Pneumonia")
    for column, value in zip(classes, ("1", "0", "-1"), strict=True):
        _set_cell(truth["train_csv"], 2, column, value)
    ex = chexpert.read_csv(truth["train_csv"], classes=classes, uncertainty="ignore")[0]
    assert ex.key == truth["rows"][0]["path"]
    np.testing.assert_array_equal(ex.labels, [1, 0, 0])
    np.testing.assert_array_equal(ex.mask, [1, 1, 0])


def test_chexpert_bad_rows_are_named(tmp_path):
    truth = write_chexpert_fixture(tmp_path)
    train_csv = truth["train_csv"]
    _set_cell(train_csv, 2, "Frontal/Lateral", "Front")
    with pytest.raises(DataFormatError, match=r"train\.csv, line 2: 'Front' in column"):
        chexpert.read_csv(train_csv)
    _set_cell(train_csv, 2, "Frontal/Lateral", "Frontal")
    _set_cell(train_csv, 2, "Age", "79y")
    with pytest.raises(DataFormatError, match=r"train\.csv, line 2: age '79y' in column 'Age'"):
        chexpert.read_csv(train_csv)
    _set_cell(train_csv, 2, "Age", "²")  # a digit to str.isdigit(), not to int()
    with pytest.raises(DataFormatError, match=r"train\.csv, line 2: age '²' in column 'Age'"):
        chexpert.read_csv(train_csv)
    _set_cell(train_csv, 2, "Age", "79")
    _set_cell(train_csv, 2, "Path", truth["rows"][0]["path"].replace("patient", "p"))
    with pytest.raises(DataFormatError, match=r"train\.csv, line 2: Path .* no '<split>/patient"):
        chexpert.read_csv(train_csv)
    _set_cell(train_csv, 2, "Path", truth["rows"][1]["path"])
    with pytest.raises(
        DataFormatError, match=r"train\.csv, line 3: Path .* already listed on line 2"
    ):
        chexpert.read_csv(train_csv)


# --- Text encodings and compressed files ----------------------------------------------------


def _latin1_in(path, line: int) -> int:
    """Writes a Latin-1 'é' into ``line`` (1-based) of a text file; returns its column."""
    lines = pathlib.Path(path).read_bytes().split(b"\n")
    column = len(lines[line - 1]) // 2
    lines[line - 1] = lines[line - 1][:column] + b"\xe9" + lines[line - 1][column:]
    pathlib.Path(path).write_bytes(b"\n".join(lines))
    return column + 1


def _not_utf8(name: str, line: int, column: int) -> str:
    return (
        rf"{re.escape(name)}, line {line}, column {column}: byte 0xE9 is not valid UTF-8 "
        r"\('é' if the file is Windows-1252 or Latin-1\)\. Save the file as UTF-8"
    )


def test_a_file_that_is_not_utf8_is_named_with_its_line_and_byte(tmp_path):
    # 200 images: the bad line lies past the first 8 KB, the buffer Python's error counts in.
    truth = write_nih_fixture(tmp_path / "nih", num_images=200)
    column = _latin1_in(truth["data_entry"], 151)
    with pytest.raises(DataFormatError, match=_not_utf8("Data_Entry_2017.csv", 151, column)):
        nih.load(tmp_path / "nih")
    # The same gzipped.
    data_entry = pathlib.Path(truth["data_entry"])
    with gzip.open(f"{data_entry}.gz", "wb") as f:
        f.write(data_entry.read_bytes())
    os.remove(data_entry)
    with pytest.raises(DataFormatError, match=_not_utf8("Data_Entry_2017.csv.gz", 151, column)):
        nih.load(tmp_path / "nih")
    # The official split lists are read as text too.
    column = _latin1_in(truth["test_list"], 2)
    with pytest.raises(DataFormatError, match=_not_utf8("test_list.txt", 2, column)):
        nih.read_split_list(truth["test_list"])

    chex = write_chexpert_fixture(tmp_path / "chexpert")
    column = _latin1_in(chex["valid_csv"], 3)
    with pytest.raises(DataFormatError, match=_not_utf8("valid.csv", 3, column)):
        chexpert.load(tmp_path / "chexpert")


def test_utf16_and_damaged_gzip_files_are_named(tmp_path):
    truth = write_chexpert_fixture(tmp_path)
    train = pathlib.Path(truth["train_csv"])
    text = train.read_text()
    train.write_text(text, encoding="utf-16")
    with pytest.raises(DataFormatError, match=r"train\.csv: the file is UTF-16"):
        chexpert.read_csv(train)
    train.write_text(text)
    gz = tmp_path / "train.csv.gz"
    with gzip.open(gz, "wb") as f:
        f.write(text.encode())
    gz.write_bytes(gz.read_bytes()[:-12])  # a cut-off copy
    with pytest.raises(DataFormatError, match=r"train\.csv\.gz: not a readable gzip file"):
        chexpert.read_csv(gz, image_root=tmp_path)
    gz.write_bytes(text.encode())  # named .gz, but not gzipped
    with pytest.raises(DataFormatError, match=r"train\.csv\.gz: not a readable gzip file"):
        chexpert.read_csv(gz, image_root=tmp_path)


def test_an_unclosed_quote_is_named_with_its_line(tmp_path):
    truth = write_chexpert_fixture(tmp_path)
    lines = pathlib.Path(truth["train_csv"]).read_text().splitlines()
    lines[2] = lines[2].replace(",Male,", ',"Male,').replace(",Female,", ',"Female,')
    # Enough rows after it for the run-on field to pass the csv module's 128 KB field limit.
    lines += [lines[1]] * 3000
    pathlib.Path(truth["train_csv"]).write_text("\n".join(lines) + "\n")
    with pytest.raises(
        DataFormatError, match=r"train\.csv, line 3: a field opens a quote .* still open at line"
    ):
        chexpert.read_csv(truth["train_csv"])


def test_fixtures_are_deterministic(tmp_path):
    a = write_nih_fixture(tmp_path / "a", seed=3)
    b = write_nih_fixture(tmp_path / "b", seed=3)
    c = write_nih_fixture(tmp_path / "c", seed=4)
    assert pathlib.Path(a["data_entry"]).read_bytes() == pathlib.Path(b["data_entry"]).read_bytes()
    assert pathlib.Path(a["bbox_list"]).read_bytes() == pathlib.Path(b["bbox_list"]).read_bytes()
    assert pathlib.Path(a["bbox_list"]).read_bytes() != pathlib.Path(c["bbox_list"]).read_bytes()
    name = a["entries"][0]["image_index"]
    np.testing.assert_array_equal(a["pixels"][name], b["pixels"][name])
    x = write_chexpert_fixture(tmp_path / "x", seed=3)
    y = write_chexpert_fixture(tmp_path / "y", seed=3)
    assert pathlib.Path(x["train_csv"]).read_bytes() == pathlib.Path(y["train_csv"]).read_bytes()


# --- The real files (skipped where ../shared/data/real is absent) ---------------------------

# Published per-class positives of ChestX-ray14 (Data_Entry_2017_v2020.csv, all 112,120 images).
NIH_PUBLISHED_COUNTS = {
    "Atelectasis": 11559,
    "Cardiomegaly": 2776,
    "Consolidation": 4667,
    "Edema": 2303,
    "Effusion": 13317,
    "Emphysema": 2516,
    "Fibrosis": 1686,
    "Hernia": 227,
    "Infiltration": 19894,
    "Mass": 5782,
    "Nodule": 6331,
    "Pleural_Thickening": 3385,
    "Pneumonia": 1431,
    "Pneumothorax": 5302,
}


def _real(name: str) -> pathlib.Path:
    path = REAL / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (real data files are not part of the repository)")
    return path


@pytest.mark.slow
def test_real_nih_metadata_and_boxes():
    entries = nih.read_data_entry(_real("Data_Entry_2017_v2020.csv.gz"))
    assert len(entries) == 112_120
    assert len({e["patient_id"] for e in entries}) == 30_805
    _real("BBox_List_2017.csv.gz")
    # The real folder has no images; load still joins the metadata with the box list.
    examples = nih.load(REAL)
    counts = dict(zip(NIH_CLASSES, positive_counts(examples).tolist(), strict=True))
    print("NIH positives per class:", counts)
    assert counts == NIH_PUBLISHED_COUNTS
    assert sum(not e.labels.any() for e in examples) == 60_361  # No Finding
    assert collections.Counter(e.view for e in examples) == {"PA": 67_310, "AP": 44_810}
    assert sum(len(e.boxes) for e in examples) == 984
    assert sum(len(e.boxes) > 0 for e in examples) == 880
    box_counts = collections.Counter(NIH_CLASSES[i] for e in examples for i in e.box_labels)
    assert box_counts["Infiltration"] == 123 and len(box_counts) == 8
    boxes = np.concatenate([e.boxes for e in examples])
    assert (boxes >= 0).all() and (boxes[:, :2] + boxes[:, 2:] <= 1024).all()


@pytest.mark.slow
def test_real_chexpert_train_csv(tmp_path):
    path = _real("chexpert_train.csv.gz")
    everything = chexpert.read_csv(path, frontal_only=False, image_root=tmp_path)
    assert len(everything) == 223_414
    assert {e.source_split for e in everything} == {"train"}
    assert len({e.patient_id for e in everything}) == 64_540
    assert everything[0].image_path == str(
        tmp_path / "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    )
    views = collections.Counter(e.view for e in everything)
    print("CheXpert views:", dict(views))
    assert views["Lateral"] == 32_387
    frontal = chexpert.read_csv(path, uncertainty="ignore", image_root=tmp_path)
    assert len(frontal) == 191_027 == len(everything) - views["Lateral"]
    counts = dict(zip(CHEXPERT_CLASSES, positive_counts(everything).tolist(), strict=True))
    print("CheXpert positives per class (uncertain as 0):", counts)
    assert counts["Lung Opacity"] == 105_581 and counts["Pleural Effusion"] == 86_187
