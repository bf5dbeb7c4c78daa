"""Raw layouts -> TFDS ArrayRecord -> grain batches, end to end on generated fixtures."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import tiny_config, tiny_nih_config
from raw_fixtures import write_chexpert_fixture, write_nih_fixture

from chestattn_jax.data import prepare as prep
from chestattn_jax.data import records
from chestattn_jax.data.augment import Augment
from chestattn_jax.data.classes import CHEXPERT_CLASSES, NIH_CLASSES
from chestattn_jax.data.images import letterbox, load_grayscale
from chestattn_jax.data.input_pipeline import create_source, eval_batches, train_dataset
from chestattn_jax.data.raw import DataFormatError

SIZE = 32

tfds.disable_progress_bar()


@pytest.fixture(scope="module")
def nih(tmp_path_factory):
    root = tmp_path_factory.mktemp("nih")
    truth = write_nih_fixture(root / "raw", release="2017")
    data_dir = str(root / "prepared")
    version_dir = prep.prepare("nih", truth["root"], data_dir, SIZE)
    return truth, data_dir, version_dir


@pytest.fixture(scope="module")
def chexpert(tmp_path_factory):
    root = tmp_path_factory.mktemp("chexpert")
    truth = write_chexpert_fixture(root / "raw", num_patients=16)
    data_dir = str(root / "prepared")
    prep.prepare("chexpert", truth["root"], data_dir, SIZE)
    return truth, data_dir


def nih_config(data_dir, **data):
    config = tiny_config("class")
    config.data.name = "nih"
    config.data.classes = tuple(NIH_CLASSES)
    config.data.data_dir = data_dir
    config.data.image_size = SIZE
    for k, v in data.items():
        config.data[k] = v
    return config


def read_all(data_dir, dataset="nih"):
    builder = records.open_builder(dataset, data_dir, SIZE)
    source = builder.as_data_source(records.SPLIT)
    return {r["key"].decode(): r for r in (source[i] for i in range(len(source)))}


def test_decoding_rgba_and_16_bit(nih):
    truth, _, _ = nih
    rgba = truth["rgba_image"]
    path = os.path.join(truth["images_dir"], rgba)
    np.testing.assert_array_equal(load_grayscale(path), truth["pixels"][rgba])
    # 16-bit images are windowed to their own min-max range (their bit depth varies).
    wide = truth["uint16_image"]
    p = truth["pixels"][wide].astype(np.float64)
    expected = np.round((p - p.min()) / (p.max() - p.min()) * 255).astype(np.uint8)
    got = load_grayscale(os.path.join(truth["images_dir"], wide))
    np.testing.assert_array_equal(got, expected)


def test_records_hold_resized_images_labels_and_boxes(nih):
    truth, data_dir, version_dir = nih
    assert sorted(os.listdir(version_dir)).count("dataset_info.json") == 1
    records = read_all(data_dir)
    assert len(records) == truth["num_images"]
    for name, rec in records.items():
        assert rec["image"].shape == (SIZE, SIZE, 1) and rec["image"].dtype == np.uint8
        decoded = load_grayscale(os.path.join(truth["images_dir"], name))
        np.testing.assert_array_equal(rec["image"][..., 0], letterbox(decoded, SIZE))
        np.testing.assert_array_equal(rec["labels"], truth["labels"][name])
        assert rec["source_split"].decode() == truth["source_split"][name]
    n_boxes = 0
    for name, boxes in truth["boxes"].items():
        rec = records[name]
        assert len(rec["boxes"]) == len(boxes)
        for (cls, x, y, w, h), got, label in zip(
            boxes, rec["boxes"], rec["box_labels"], strict=True
        ):
            # 1024-px box frame -> stored SIZE-px image.
            np.testing.assert_allclose(got, np.array([x, y, w, h]) * SIZE / 1024, rtol=1e-5)
            assert NIH_CLASSES[label] == cls
            n_boxes += 1
    assert n_boxes == truth["num_boxes"]


def test_splits_are_patient_disjoint_and_complete(nih):
    truth, data_dir, _ = nih
    for split, kwargs in (("random", {}), ("kfold", {"fold": 1}), ("official", {})):
        config = nih_config(data_dir, split=split, **kwargs)
        sources = {s: create_source(config, s) for s in ("train", "validation", "test")}
        rows = {s: src._indices for s, src in sources.items()}
        assert sum(len(r) for r in rows.values()) == truth["num_images"]
        index = records.load_index(records.open_builder("nih", data_dir, SIZE))
        patients = {s: set(index["patient_id"][r]) for s, r in rows.items()}
        assert not patients["train"] & patients["test"]
        assert not patients["train"] & patients["validation"]
        assert not patients["validation"] & patients["test"]
        if split == "official":
            assert set(index["source_split"][rows["test"]]) == {"test"}


@pytest.mark.slow
def test_same_seed_same_batches_and_workers_agree(nih):
    _, data_dir, _ = nih
    source = create_source(nih_config(data_dir), "train")

    def take(seed, workers=0, n=3):
        it = iter(
            train_dataset(source, batch_size=4, seed=seed, num_workers=workers, augment=Augment())
        )
        batches = [next(it) for _ in range(n)]
        if hasattr(it, "close"):
            it.close()
        return batches

    a, b, c = take(0), take(0), take(1)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["labels"], y["labels"])
    assert not all(np.array_equal(x["image"], y["image"]) for x, y in zip(a, c, strict=True))
    # Real grain worker processes produce the same batches as the in-process pipeline.
    for x, y in zip(a, take(0, workers=2), strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])


def test_eval_is_exact(nih):
    _, data_dir, _ = nih
    source = create_source(nih_config(data_dir), "test")
    batches = list(eval_batches(source, 3))
    assert sum(int(b["valid"].sum()) for b in batches) == len(source)
    labels = np.concatenate([b["labels"][b["valid"]] for b in batches])
    np.testing.assert_array_equal(
        labels, np.stack([source[i]["labels"] for i in range(len(source))])
    )


def test_sources_hand_on_the_patient_attributes_of_the_index(nih):
    _, data_dir, _ = nih
    index = records.load_index(records.open_builder("nih", data_dir, SIZE))
    for split in ("train", "test"):
        source = create_source(nih_config(data_dir), split)
        attributes = source.attributes()
        assert sorted(attributes) == ["age", "sex", "view"]
        for name, values in attributes.items():
            np.testing.assert_array_equal(values, index[name][source._indices])
    assert set(index["view"]) == {"PA", "AP"}  # the fixture films every third image AP


def test_chexpert_uncertainty_policies_and_official_split(chexpert):
    truth, data_dir = chexpert
    config = nih_config(data_dir)
    config.data.name = "chexpert"
    config.data.classes = tuple(CHEXPERT_CLASSES)
    rows = [r for r in truth["rows"] if r["frontal"]]
    assert len(read_all(data_dir, "chexpert")) == len(rows)
    col = CHEXPERT_CLASSES.index("Edema")
    index = records.load_index(records.open_builder("chexpert", data_dir, SIZE))
    uncertain = int(np.sum(index["mask"][:, col] == 0))
    assert uncertain > 0
    counts = {}
    for policy in ("ones", "zeros", "ignore"):
        config.data.uncertainty = policy
        config.data.split = "official"
        sources = [create_source(config, s) for s in ("train", "validation", "test")]
        counts[policy] = sum(s.positive_counts()[col] for s in sources)
        masked = sum(int(np.sum(s._mask[:, col] == 0)) for s in sources)
        assert masked == (uncertain if policy == "ignore" else 0)
    assert counts["ones"] == counts["zeros"] + uncertain == counts["ignore"] + uncertain
    config.data.uncertainty = "zeros"
    config.data.uncertainty_per_class = {"Edema": "ones"}
    per_class = sum(
        create_source(config, s).positive_counts()[col] for s in ("train", "validation", "test")
    )
    assert per_class == counts["ones"]
    test = create_source(config, "test")
    assert len(test) == sum(1 for r in rows if r["split"] == "valid")


def test_bad_images_stop_or_are_skipped_and_counted(tmp_path):
    truth = write_nih_fixture(tmp_path / "raw", num_images=36)
    names = sorted(truth["labels"])
    truncated = os.path.join(truth["images_dir"], names[3])
    with open(truncated, "rb") as f:
        head = f.read(60)
    with open(truncated, "wb") as f:
        f.write(head)
    os.remove(os.path.join(truth["images_dir"], names[5]))
    data_dir = str(tmp_path / "prepared")
    with pytest.raises(DataFormatError, match=names[3]):
        prep.prepare("nih", truth["root"], data_dir, SIZE)
    builder = records.open_builder("nih", data_dir, SIZE)
    assert not builder.is_prepared()  # an interrupted prepare leaves nothing complete
    assert not os.path.exists(builder.data_dir)
    version_dir = prep.prepare("nih", truth["root"], data_dir, SIZE, on_bad_image="skip")
    with open(os.path.join(version_dir, records.REPORT_FILE)) as f:
        report = json.load(f)
    assert report["examples_written"] == truth["num_images"] - 2
    assert {os.path.basename(s["file"]) for s in report["skipped"]} == {names[3], names[5]}
    assert len(read_all(data_dir)) == truth["num_images"] - 2


def test_leftovers_of_a_killed_prepare_are_removed(tmp_path):
    truth = write_nih_fixture(tmp_path / "raw", num_images=36)
    data_dir = str(tmp_path / "prepared")
    builder = records.open_builder("nih", data_dir, SIZE)
    stale = os.path.join(os.path.dirname(builder.data_dir), "incomplete.ABC123_1.0.0")
    os.makedirs(stale)
    prep.prepare("nih", truth["root"], data_dir, SIZE)
    assert not os.path.exists(stale)
    assert records.open_builder("nih", data_dir, SIZE).is_prepared()


def test_unprepared_or_unset_data_dir(tmp_path):
    config = nih_config(None)
    with pytest.raises(ValueError, match=re.escape("config.data.data_dir is not set")):
        create_source(config, "train")
    config.data.data_dir = str(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape("python -m chestattn_jax.data.prepare")):
        create_source(config, "train")


def test_unknown_class_names_the_class(nih):
    _, data_dir, _ = nih
    config = nih_config(data_dir)
    config.data.classes = ("Atelectasis", "Hernias")
    with pytest.raises(ValueError, match="Hernias"):
        create_source(config, "train")


@pytest.mark.slow
def test_nih_config_trains_and_evaluates_from_prepared_data(nih, tmp_path):
    from chestattn_jax import train

    _, data_dir, _ = nih
    # The official split: the box list, as in the real data, is on official test images.
    # The tiny model and batches of the other runs on NIH-layout data (their compiled steps).
    config = tiny_nih_config(data_dir, num_steps=4, log_every_steps=2, eval_every_steps=4)
    config.data.split = "official"
    metrics = train.train_and_evaluate(config, str(tmp_path / "w"))
    assert metrics["num_examples"] == len(create_source(config, "test"))
    assert set(metrics["auc"]) == set(NIH_CLASSES)
    assert metrics["mean_auc"] is None or 0.0 <= metrics["mean_auc"] <= 1.0
    # The boxed test images are scored for localisation; counts are their boxes' classes.
    test = create_source(config, "test")
    boxed = [test.truth(i) for i in test.truth_indices()]
    assert boxed, "the fixture puts boxes on test images"
    expected = np.sum([(t["masks"].any((1, 2)) & (t["labels"] > 0)) for t in boxed], 0)
    counts = metrics["localization"]["overlap"]["count"]
    assert [counts[c] for c in NIH_CLASSES] == expected.tolist()
    # The class prior, per class: the training split's boxes where it has some for the
    # class (the fixture boxes the first image of each box class, some of them training
    # images), else the test boxes' own average, each image scored without its own boxes.
    prior = metrics["localization"]["baselines"]["class_prior"]
    train = create_source(config, "train")
    trained = [train.truth(i) for i in train.truth_indices()]
    in_training = np.any([t["masks"].any((1, 2)) & (t["labels"] > 0) for t in trained], 0)
    assert in_training.any() and not in_training.all(), "the fixture boxes both splits"
    assert prior["built_from_class"] == {
        c: "training split" if t else "evaluated split, leave-one-out"
        for c, t in zip(NIH_CLASSES, in_training, strict=True)
    }
    assert prior["images_from"] == {
        "training split": len(trained),
        "evaluated split, leave-one-out": len(boxed),
    }
    assert prior["pointing_game"]["count"] == metrics["localization"]["pointing_game"]["count"]
    assert os.path.exists(os.path.join(tmp_path, "w", "eval", "average_masks.png"))
    # The predictions record names each row's image as NIH does.
    with np.load(os.path.join(tmp_path, "w", "eval", "predictions.npz")) as z:
        ids = list(z["example_ids"])
    assert ids == list(test.example_ids) and all(i.endswith(".png") for i in ids)
    assert len(set(ids)) == len(ids) == metrics["num_examples"]


def test_real_radiographs_decode_and_letterbox():
    from conftest import REPO

    real = REPO.parent / "shared" / "data" / "real"
    if not real.is_dir():
        pytest.skip(f"{real} not present")
    shapes = {
        "00000001_000.png": (512, 512),
        "00027426_000.png": (512, 512),
        "16747_3_1.jpg": (885, 1036),
    }
    for name, shape in shapes.items():
        image = load_grayscale(str(real / name))
        assert image.shape == shape and image.dtype == np.uint8
        assert image.std() > 10  # a radiograph, not a blank
        boxed = letterbox(image, 64)
        assert boxed.shape == (64, 64)
    # The PadChest JPEG is wider than tall: black bands above and below, none at the sides.
    boxed = letterbox(load_grayscale(str(real / "16747_3_1.jpg")), 64)
    assert boxed[0].max() == 0 and boxed[-1].max() == 0 and boxed[32].max() > 0


def test_prepared_sources_carry_patient_ids(nih):
    _, data_dir, _ = nih
    source = create_source(nih_config(data_dir), "test")
    index = records.load_index(records.open_builder("nih", data_dir, SIZE))
    np.testing.assert_array_equal(source.patient_ids, index["patient_id"][source._indices])


def test_nih_boxes_are_localisation_truth(nih):
    truth, data_dir, _ = nih
    config = nih_config(data_dir, classes=("Effusion", "Atelectasis", "Infiltration", "Mass"))
    builder_index = records.load_index(records.open_builder("nih", data_dir, SIZE))
    seen = 0
    for split in ("train", "validation", "test"):
        source = create_source(config, split)
        keys = builder_index["key"][source._indices]
        boxed = [i for i, k in enumerate(keys) if len(truth["boxes"].get(str(k), []))]
        np.testing.assert_array_equal(source.truth_indices(), boxed)
        for i in boxed:
            t = source.truth(i)
            assert t["masks"].shape == (4, SIZE, SIZE)
            for cls, x, y, w, h in truth["boxes"][str(keys[i])]:
                if cls not in config.data.classes:
                    continue
                m = t["masks"][config.data.classes.index(cls)]
                s = SIZE / 1024
                cx, cy = int((x + w / 2) * s), int((y + h / 2) * s)
                assert m[cy, cx]  # the box's centre is inside its class's mask
                assert m.sum() <= (w * s + 2) * (h * s + 2) * 2  # and the mask is box-sized
                seen += 1
            np.testing.assert_array_equal(t["labels"], source[i]["labels"])
    assert seen > 0
