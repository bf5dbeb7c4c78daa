"""RSNA Pneumonia and VinDr-CXR: readers of their raw layouts against hand-written
fixtures, their errors, boxes clipped and counted by prepare, and phantom exports that
prepare and train."""

import os
import re
import shutil

import numpy as np
import pytest
from conftest import tiny_config
from raw_fixtures import write_rsna_fixture, write_vindr_fixture

from chestattn_jax.data import prepare as prep
from chestattn_jax.data import records, rsna_pneumonia, vindr_cxr
from chestattn_jax.data.export_dicom_sets import (
    RSNA_OPACITIES,
    VINDR_FROM_PHANTOM,
    export_rsna,
    export_vindr,
)
from chestattn_jax.data.images import letterbox_geometry, load_grayscale
from chestattn_jax.data.raw import DataFormatError
from chestattn_jax.data.synthetic import PHANTOM_CLASSES, PhantomConfig, render

SIZE = 32


def _by_key(examples):
    return {e.key: e for e in examples}


def _min_max(p, invert=False):
    p = p.astype(np.float64)
    s = (p - p.min()) / (p.max() - p.min())
    return np.round((1 - s if invert else s) * 255).astype(np.uint8)


# ------------------------------------------------------------------------ RSNA


def test_rsna_reader_matches_the_hand_truth(tmp_path, caplog):
    fx = write_rsna_fixture(tmp_path)
    with caplog.at_level("WARNING"):
        examples = rsna_pneumonia.load(fx["root"])
    # The box outside its image is named with its file, line and image (prepare clips it).
    outside = [r.getMessage() for r in caplog.records if "reaches outside" in r.getMessage()]
    assert len(outside) == 1
    assert "stage_2_train_labels.csv, line 5" in outside[0] and fx["outside"] in outside[0]
    assert [e.key for e in examples] == list(fx["truth"])  # file order, each image once
    for e in examples:
        t = fx["truth"][e.key]
        assert e.patient_id == e.key and e.source_split == ""
        assert e.labels.tolist() == t["labels"] and e.mask.tolist() == [1]
        assert (e.sex, e.age, e.view) == (t["sex"], t["age"], t["view"])
        np.testing.assert_array_equal(e.boxes, np.asarray(t["boxes"], np.float32).reshape(-1, 4))
        assert e.box_labels.tolist() == [0] * len(t["boxes"])
        assert e.image_path.endswith(os.path.join("stage_2_train_images", f"{e.key}.dcm"))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("stage_2_train_labels.csv", "aaa-1,2.0,3.0,10.0,12.0,1", "aaa-1,,,,,1"),
            r"stage_2_train_labels.csv, line 2: image aaa-1: box field 'x' is ''",
        ),
        (
            ("stage_2_train_labels.csv", "aaa-1,20.0,5.5,8.0,9.0,1", "aaa-1,20.0,5.5,8.0,9.0,0"),
            r"line 4: image aaa-1 has Target 0 here and Target 1 on line 2",
        ),
        (
            ("stage_2_train_labels.csv", "ccc-3,-4.0,10.0,44.0,6.0,1", "ccc-3,1,1,0,6.0,1"),
            r"line 5: image ccc-3: box .* width, height > 0",
        ),
        (
            (
                "stage_2_detailed_class_info.csv",
                "bbb-2,No Lung Opacity / Not Normal",
                "bbb-2,Lung Opacity",
            ),
            r"detailed_class_info.csv, line 3: image bbb-2 has class 'Lung Opacity' but Target 0",
        ),
        (
            ("stage_2_detailed_class_info.csv", "ddd-4,Normal", "ddd-4,Pneumonia"),
            r"line 6: image ddd-4: unknown class 'Pneumonia'",
        ),
        (
            ("stage_2_detailed_class_info.csv", "ddd-4,Normal\n", ""),
            r"stage_2_train_labels.csv, line 6: image ddd-4 is not in .*detailed_class_info",
        ),
    ],
)
def test_rsna_malformed_rows_name_file_row_and_image(tmp_path, edit, message):
    fx = write_rsna_fixture(tmp_path)
    name, old, new = edit
    path = os.path.join(fx["root"], name)
    text = open(path).read()
    assert old in text
    with open(path, "w") as f:
        f.write(text.replace(old, new))
    with pytest.raises(DataFormatError, match=message):
        rsna_pneumonia.load(fx["root"])


@pytest.mark.parametrize(
    "name", ["stage_2_train_labels.csv", "stage_2_detailed_class_info.csv", "stage_2_train_images"]
)
def test_rsna_a_missing_file_is_named_with_the_set(tmp_path, name):
    fx = write_rsna_fixture(tmp_path)
    path = os.path.join(fx["root"], name)
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    with pytest.raises(FileNotFoundError, match=rf"No {name} .*RSNA Pneumonia"):
        rsna_pneumonia.load(fx["root"])


def test_rsna_prepare_decodes_scales_clips_and_counts(tmp_path):
    """MONOCHROME1 16-bit and 8-bit DICOMs decode; boxes are letterboxed from the DICOM's
    own pixels; the box outside is clipped and counted in the report; the absent image
    follows --on_bad_image."""
    fx = write_rsna_fixture(tmp_path / "raw")
    data_dir = str(tmp_path / "prepared")
    with pytest.raises(DataFormatError, match=re.escape(fx["missing"])):
        prep.prepare("rsna_pneumonia", fx["root"], data_dir, SIZE)
    version = prep.prepare("rsna_pneumonia", fx["root"], data_dir, SIZE, on_bad_image="skip")
    report = records.read_report(version)
    assert [os.path.basename(s["file"]) for s in report["skipped"]] == [f"{fx['missing']}.dcm"]
    assert report["boxes_clipped"] == [
        {
            "file": os.path.join(fx["root"], "stage_2_train_images", f"{fx['outside']}.dcm"),
            "key": fx["outside"],
            "clipped": 1,
            "outside": 0,
        }
    ]
    source = records.open_builder("rsna_pneumonia", data_dir, SIZE).as_data_source(records.SPLIT)
    stored = {r["key"].decode(): r for r in (source[i] for i in range(len(source)))}
    assert set(stored) == set(fx["truth"]) - {fx["missing"]}
    height, width = fx["size"]
    scale, pad_x, pad_y = letterbox_geometry(height, width, SIZE)
    for key, r in stored.items():
        t = fx["truth"][key]
        # Clipped by hand: [-4, 10, 44, 6] in a 36-px-wide image is [0, 10, 36, 6].
        raw = [[0, 10, 36, 6]] if key == fx["outside"] else t["boxes"]
        expected = np.asarray(raw, np.float64).reshape(-1, 4) * scale + [pad_x, pad_y, 0, 0]
        np.testing.assert_allclose(r["boxes"], expected, atol=1e-4)
        invert = t["photometric"] == "MONOCHROME1"
        if t["dtype"] == np.uint16:
            decoded = _min_max(t["pixels"], invert)
        else:
            decoded = 255 - t["pixels"] if invert else t["pixels"]
        path = os.path.join(fx["root"], "stage_2_train_images", f"{key}.dcm")
        np.testing.assert_array_equal(load_grayscale(path), decoded)
        assert (r["sex"].decode(), int(r["age"]), r["view"].decode()) == (
            t["sex"],
            t["age"],
            t["view"],
        )


# ----------------------------------------------------------------------- VinDr


@pytest.mark.parametrize("rule", ["any", "majority"])
def test_vindr_physionet_reader_votes_and_keeps_every_readers_boxes(tmp_path, rule):
    fx = write_vindr_fixture(tmp_path)
    examples = _by_key(vindr_cxr.load(fx["root"], label_rule=rule))
    assert set(examples) == set(fx["split"])
    classes = vindr_cxr.CLASSES
    for key, e in examples.items():
        expected = [int(c in fx[rule][key]) for c in classes]
        assert e.labels.tolist() == expected, key
        assert e.mask.tolist() == [1] * len(classes)
        assert e.source_split == fx["split"][key] and e.patient_id == key
        got = [(classes[i], b.tolist()) for b, i in zip(e.boxes, e.box_labels, strict=True)]
        assert got == [(c, [float(v) for v in b]) for c, b in fx["boxes"][key]]
        assert e.image_path == os.path.join(fx["root"], fx["split"][key], f"{key}.dicom")
    i = list(fx["split"]).index("t3")
    assert (examples["t3"].sex, examples["t3"].age) == ("F", 40 + i)


def test_vindr_kaggle_copy_masks_the_classes_it_lacks(tmp_path):
    fx = write_vindr_fixture(tmp_path, kaggle=True)
    examples = _by_key(vindr_cxr.load(fx["root"]))
    kaggle = set(vindr_cxr.KAGGLE_CLASSES)
    for key, e in examples.items():
        assert e.mask.tolist() == [int(c in kaggle) for c in vindr_cxr.CLASSES]
        assert e.labels.tolist() == [int(c in fx["any"][key]) for c in vindr_cxr.CLASSES]
        got = [
            (vindr_cxr.CLASSES[i], b.tolist()) for b, i in zip(e.boxes, e.box_labels, strict=True)
        ]
        assert got == [(c, [float(v) for v in b]) for c, b in fx["boxes"][key]]
        assert e.source_split == "train"
    assert sum(e.mask.sum() for e in examples.values()) == 2 * 14


def test_a_kaggle_copys_missing_classes_stay_masked_for_training(tmp_path):
    """Prepared and opened for training, the classes a Kaggle copy lacks stay masked: the
    uncertainty policy (whose mask 0 means "uncertain") is not theirs to make labels of."""
    from chestattn_jax.data.input_pipeline import create_source

    export_vindr(str(tmp_path / "raw"), 24, kaggle=True, seed=2, config=CONFIG)
    data_dir = str(tmp_path / "prepared")
    prep.prepare("vindr_cxr", str(tmp_path / "raw"), data_dir, SIZE)
    config = tiny_config()
    config.data.name, config.data.data_dir = "vindr_cxr", data_dir  # a random split
    config.data.classes = ("Cardiomegaly", "Edema", "COPD")
    splits = [create_source(config, s) for s in ("train", "validation", "test")]
    rows = [split[i] for split in splits for i in range(len(split))]
    assert len(rows) == 24 and all(r["mask"].tolist() == [1, 0, 0] for r in rows)
    assert all(r["labels"][1:].tolist() == [0, 0] for r in rows)
    assert any(r["labels"][0] == 1 for r in rows)  # Cardiomegaly, which the copy has


def test_vindr_prepare_clips_the_box_past_the_edge_and_keeps_the_official_split(tmp_path):
    fx = write_vindr_fixture(tmp_path / "raw")
    data_dir = str(tmp_path / "prepared")
    version = prep.prepare("vindr_cxr", fx["root"], data_dir, SIZE, vindr_label_rule=("majority",))
    report = records.read_report(version)
    assert report["options"]["vindr_label_rule"] == ["majority"]
    assert [(c["key"], c["clipped"], c["outside"]) for c in report["boxes_clipped"]] == [
        ("t3", 1, 0)
    ]
    index = records.load_index(records.open_builder("vindr_cxr", data_dir, SIZE))
    split = dict(zip(index["key"].tolist(), index["source_split"].tolist(), strict=True))
    assert split == fx["split"]


# --------------------------------------------------------------------- exports


CONFIG = PhantomConfig(image_size=48, prevalence_scale=2.0)


def test_rsna_export_parses_into_the_phantom_truth(tmp_path):
    info = export_rsna(str(tmp_path), 8, seed=3, config=CONFIG)
    examples = rsna_pneumonia.load(str(tmp_path))
    assert len(examples) == 8 and info["num_boxes"] > 0
    for index, e in enumerate(examples):
        phantom = render(3, index, CONFIG)
        # Lung Opacity: the phantom's pneumonia, consolidation and infiltration, boxed.
        opacities = [PHANTOM_CLASSES.index(c) for c in RSNA_OPACITIES]
        present = [i for i in opacities if phantom["labels"][i]]
        assert e.labels.tolist() == [int(bool(present))]
        boxes = phantom["boxes"][present].reshape(-1, 4)
        np.testing.assert_allclose(e.boxes, boxes, atol=0.051)  # written with one decimal
        decoded = load_grayscale(e.image_path)
        p = phantom["image"].astype(np.float64)
        # 12-bit values of the phantom, windowed back to 8 bits over their own range.
        twelve = np.round(p * 4095 / 255)
        if index % 2:  # MONOCHROME1: stored inverted, inverted back after windowing
            np.testing.assert_array_equal(decoded, _min_max(4095 - twelve, invert=True))
        else:
            np.testing.assert_array_equal(decoded, _min_max(twelve))


def test_vindr_export_parses_into_the_readers_truth_in_both_layouts(tmp_path):
    for kaggle in (False, True):
        root = str(tmp_path / str(kaggle))
        truth = {}
        info = export_vindr(root, 10, kaggle=kaggle, seed=2, config=CONFIG, truth=truth)
        examples = _by_key(vindr_cxr.load(root, label_rule="majority"))
        assert len(examples) == 10 and info["num_boxes"] > 0
        known = set(vindr_cxr.KAGGLE_CLASSES if kaggle else vindr_cxr.CLASSES)
        for index, (key, t) in enumerate(truth.items()):
            e = examples[key]
            # The readers' marks are the phantom's findings by the mapping (a consensus
            # reader all of them), boxed where the phantom has them.
            phantom = render(2, index, CONFIG)
            mapped = {}
            for c, y in zip(PHANTOM_CLASSES, phantom["labels"], strict=True):
                if y and VINDR_FROM_PHANTOM.get(c) in known:
                    mapped.setdefault(VINDR_FROM_PHANTOM[c], []).append(
                        phantom["boxes"][PHANTOM_CLASSES.index(c)].tolist()
                    )
            for reader, marks in t["readers"].items():
                assert set(marks) <= set(mapped)
                if reader == vindr_cxr.CONSENSUS:
                    assert set(marks) == set(mapped)
                for name, boxes in marks.items():
                    boxes = [list(b) for b in boxes]
                    if name not in vindr_cxr.LOCAL_CLASSES:
                        assert boxes == []
                    elif reader == vindr_cxr.CONSENSUS:
                        assert boxes == mapped[name]
                    else:  # a reader may miss Nodule and box Mass, both Nodule/Mass
                        assert boxes and all(b in mapped[name] for b in boxes)
            readers = list(t["readers"].values())
            votes = [sum(c in m for m in readers) for c in vindr_cxr.CLASSES]
            assert e.labels.tolist() == [int(2 * v > len(readers)) for v in votes]
            boxes = [(c, b) for m in readers for c, bs in m.items() for b in bs]
            assert len(e.boxes) == len(boxes)
            assert e.source_split == t["split"]
        assert {e.source_split for e in examples.values()} == (
            {"train"} if kaggle else {"train", "test"}
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dataset", "cls", "export"),
    [("rsna_pneumonia", "Lung Opacity", export_rsna), ("vindr_cxr", "Infiltration", export_vindr)],
)
def test_export_prepares_and_trains(tmp_path, dataset, cls, export):
    from chestattn_jax import config as config_lib
    from chestattn_jax import train

    export(
        str(tmp_path / "raw"), 48, seed=0, config=PhantomConfig(image_size=64, prevalence_scale=2.0)
    )
    data_dir = str(tmp_path / "prepared")
    prep.prepare(dataset, str(tmp_path / "raw"), data_dir, SIZE)
    # One class, 32 px, batch 16: the compiled steps all new data sets' train tests share.
    config = tiny_config(num_steps=2, log_every_steps=1, eval_every_steps=2)
    config.data.name, config.data.data_dir = dataset, data_dir
    config.data.classes = (cls,)
    config.data.synthetic = config_lib.get_base_config().data.synthetic  # read by nothing
    config.loss.class_weights = "none"
    # VinDr: its official test split (the export's last fifth), which holds boxes of the class.
    config.data.split = "official" if dataset == "vindr_cxr" else "random"
    metrics = train.train_and_evaluate(config, str(tmp_path / "w"))
    assert metrics["num_examples"] > 0
    assert set(metrics["auc"]) == {cls}
    # The set's boxes reach the localisation evaluator.
    assert metrics["localization"]["overlap"]["count"][cls] > 0
    report = records.read_report(records.version_dir(dataset, data_dir, SIZE))
    assert report["examples_written"] == 48


def test_clip_boxes_cuts_counts_and_leaves_out_by_hand():
    boxes = np.asarray(
        [[1.1, 2.2, 3.3, 4.4], [-2, 5, 6, 3], [8, 8, 5, 5], [11, 0, 3, 3], [2, -9, 4, 5]],
        np.float32,
    )
    out, labels, clipped, outside = prep.clip_boxes(boxes, np.arange(5, dtype=np.int32), 10, 10)
    # In a 10 x 10 image: the first unchanged (bit for bit), the second and third cut, the
    # fourth right of the image and the fifth above it left out.
    np.testing.assert_array_equal(out, np.asarray([boxes[0], [0, 5, 4, 3], [8, 8, 2, 2]]))
    assert labels.tolist() == [0, 1, 2] and (clipped, outside) == (2, 2)
