"""The procedural phantom: purity, truth masks, anatomy, locality, labels, gallery."""

import pickle

import numpy as np
import pytest
from conftest import dilate, only
from PIL import Image

from chestattn_jax.data import synthetic as phantom
from chestattn_jax.data.synthetic import (
    PHANTOM_CLASSES,
    PREVALENCE,
    PhantomChestXray,
    PhantomConfig,
    render,
    sample_attributes,
    sample_labels,
)

SMALL = PhantomConfig(image_size=96)
CLASS = {name: k for k, name in enumerate(PHANTOM_CLASSES)}
LUNG_FINDINGS = (
    "Atelectasis",
    "Consolidation",
    "Edema",
    "Fibrosis",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
)


def lung_rows(lungs: np.ndarray) -> tuple[int, int]:
    rows = np.flatnonzero(lungs.any(1))
    return rows[0], rows[-1]


def width(mask: np.ndarray) -> int:
    cols = np.flatnonzero(mask.any(0))
    return cols[-1] - cols[0] + 1


def test_examples_are_pure_functions_of_seed_and_index():
    a, b = render(3, 11, SMALL), render(3, 11, SMALL)
    for key in ("image", "labels", "masks", "boxes", "body", "lungs", "heart"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["image"], render(3, 12, SMALL)["image"])
    assert not np.array_equal(a["image"], render(4, 11, SMALL)["image"])
    train = PhantomChestXray(size=4, seed=3, config=SMALL)
    test = PhantomChestXray(size=4, split="test", seed=3, config=SMALL)
    assert not np.array_equal(train[0]["image"], test[0]["image"])
    # The train split's example i is render(seed, i).
    np.testing.assert_array_equal(train[2]["image"][..., 0], render(3, 2, SMALL)["image"])


def test_render_outputs_are_consistent():
    config = PhantomConfig(image_size=96, prevalence_scale=3.0)
    seen = np.zeros(len(PHANTOM_CLASSES), bool)
    for index in range(24):
        out = render(0, index, config)
        s = config.image_size
        assert out["image"].shape == (s, s) and out["image"].dtype == np.uint8
        assert out["masks"].shape == (len(PHANTOM_CLASSES), s, s) and out["masks"].dtype == bool
        assert out["boxes"].shape == (len(PHANTOM_CLASSES), 4) and out["boxes"].dtype == np.float32
        np.testing.assert_array_equal(out["labels"], sample_labels(0, index, config))
        present = out["masks"].any((1, 2))
        np.testing.assert_array_equal(present, out["labels"] == 1)
        assert not (out["masks"] & ~out["body"]).any()
        assert not (out["lungs"] & out["heart"]).any() or out["labels"][CLASS["Cardiomegaly"]]
        for k in range(len(PHANTOM_CLASSES)):
            if not present[k]:
                assert np.isnan(out["boxes"][k]).all()
                continue
            rows = np.flatnonzero(out["masks"][k].any(1))
            cols = np.flatnonzero(out["masks"][k].any(0))
            expected = [cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]
            np.testing.assert_array_equal(out["boxes"][k], expected)
        seen |= present
    assert seen.sum() >= 10


@pytest.mark.parametrize("name", PHANTOM_CLASSES)
def test_each_finding_lies_where_that_pathology_lives(name):
    config = PhantomConfig(image_size=128)
    s = config.image_size
    k = CLASS[name]
    for index in range(4):
        out = phantom._render(7, index, config, only(name))
        mask, lungs, body = out["masks"][k], out["lungs"], out["body"]
        assert mask.any() and not (mask & ~body).any()
        top, bottom = lung_rows(lungs)
        ys, xs = np.nonzero(mask)
        height = (ys.mean() - top) / (bottom - top)  # 0 at the apices, 1 at the bases
        in_lungs = (mask & lungs).sum() / mask.sum()
        if name in LUNG_FINDINGS:
            assert in_lungs > 0.9, in_lungs
        if name == "Emphysema":
            assert in_lungs > 0.85 and (mask & lungs).sum() > 0.95 * lungs.sum()
        elif name == "Effusion":
            assert np.mean(ys > top + (bottom - top) * 2 / 3) > 0.9  # the costophrenic angles
        elif name == "Cardiomegaly":
            assert xs.mean() > s / 2 and ys.mean() > s / 2  # patient's left, low
            assert width(mask) / width(lungs) > 0.5  # cardiothoracic ratio
            np.testing.assert_array_equal(mask, out["heart"])
        elif name == "Hernia":
            assert abs(xs.mean() - s / 2) < 0.1 * s and height > 0.7  # retrocardiac, low
            assert (mask & out["heart"]).sum() > 0.5 * mask.sum()
        elif name == "Pneumothorax":
            assert height < 0.5  # apical
        elif name == "Pleural_Thickening":
            assert not (mask & ~dilate(~lungs, int(0.05 * s))).any()  # along the chest wall
        elif name in ("Nodule", "Mass"):
            diameter = 2.0 * np.sqrt(mask.sum() / np.pi) / s
            low, high = (0.015, 0.06) if name == "Nodule" else (0.06, 0.17)
            assert low < diameter < high, diameter
        elif name in ("Atelectasis", "Pneumonia"):
            assert height > 0.25  # lower or middle zone


@pytest.mark.parametrize("name", PHANTOM_CLASSES)
def test_a_finding_changes_only_its_own_region(name):
    config = PhantomConfig(image_size=96, noise=0.0)
    k = CLASS[name]
    for index in range(2):
        base = phantom._render(2, index, config, np.zeros(len(PHANTOM_CLASSES)))
        out = phantom._render(2, index, config, only(name))
        changed = base["image"] != out["image"]
        assert changed.any()
        assert not (changed & ~dilate(out["masks"][k], 4)).any()
        assert not np.delete(out["masks"], k, 0).any()
        np.testing.assert_array_equal(base["lungs"], out["lungs"])


def test_findings_add_float32_attenuation():
    # A float64 change rounds differently through the film curve and flips stray pixels.
    anatomy = phantom._Anatomy(phantom._stream(0, 0, phantom._STREAM_ANATOMY), 64)
    assert anatomy.attenuation.dtype == np.float32
    for k, name in enumerate(PHANTOM_CLASSES):
        rng = phantom._stream(0, 0, phantom._STREAM_FINDING + k)
        delta, mask = phantom._GENERATORS[name](anatomy, rng, 1.0)
        assert delta.dtype == np.float32 and mask.dtype == bool, name


def test_lesion_contrast_zero_hides_findings():
    config = PhantomConfig(image_size=64, noise=0.0, lesion_contrast=0.0)
    labels = np.ones(len(PHANTOM_CLASSES), np.int32)
    a = phantom._render(1, 0, config, labels)
    b = phantom._render(1, 0, config, np.zeros(len(PHANTOM_CLASSES)))
    np.testing.assert_array_equal(a["image"], b["image"])
    assert a["masks"].any((1, 2)).all()  # the truth is still there


def test_heart_size_is_continuous_around_the_threshold():
    normal = [phantom._Anatomy(phantom._stream(0, i, 1), 32).ctr for i in range(300)]
    enlarged = [phantom._cardiomegaly_ctr(phantom._stream(0, i, 4)) for i in range(300)]
    assert max(normal) < 0.5 < min(enlarged)
    assert np.mean(np.asarray(normal) > 0.48) > 0.05 and np.mean(np.asarray(enlarged) < 0.55) > 0.2


def test_prevalence_and_co_occurrence():
    labels = np.array([sample_labels(0, i) for i in range(3000)])
    rate = dict(zip(PHANTOM_CLASSES, labels.mean(0), strict=True))
    assert all(labels.sum(0) > 0)
    assert rate["Hernia"] < rate["Fibrosis"] < rate["Effusion"] < rate["Infiltration"]
    for name, p in PREVALENCE.items():
        assert abs(rate[name] - p) < 0.3 * p + 0.01, name
    assert 0.4 < np.mean(labels.sum(1) == 0) < 0.65  # No Finding

    def given(child, parent):
        return labels[labels[:, CLASS[parent]] == 1, CLASS[child]].mean()

    assert given("Effusion", "Cardiomegaly") > 1.5 * rate["Effusion"]
    assert given("Atelectasis", "Effusion") > rate["Atelectasis"]
    assert given("Pneumonia", "Infiltration") > rate["Pneumonia"]
    doubled = np.array(
        [sample_labels(0, i, PhantomConfig(prevalence_scale=2.0)) for i in range(3000)]
    )
    assert doubled.sum() > 1.6 * labels.sum()


def test_source_matches_labels_and_truth():
    classes = ("Nodule", "Cardiomegaly", "Hernia")
    src = PhantomChestXray(size=12, seed=1, config=PhantomConfig(image_size=48), classes=classes)
    assert len(src) == 12
    ex = src[5]
    assert ex["image"].shape == (48, 48, 1) and ex["image"].dtype == np.uint8
    assert ex["labels"].shape == (3,) and ex["labels"].dtype == np.int32
    np.testing.assert_array_equal(ex["mask"], np.ones(3, np.int32))
    assert ex["index"] == 5 and ex["index"].dtype == np.int32
    np.testing.assert_array_equal(ex["labels"], src.labels(5))
    counts = src.positive_counts()
    np.testing.assert_array_equal(counts, sum(src[i]["labels"] for i in range(12)))
    full = render(1, 5, src.config)
    truth = src.truth(5)
    columns = [CLASS[c] for c in classes]
    np.testing.assert_array_equal(truth["masks"], full["masks"][columns])
    np.testing.assert_array_equal(truth["boxes"], full["boxes"][columns])
    np.testing.assert_array_equal(truth["labels"], ex["labels"])
    clone = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(clone[3]["image"], src[3]["image"])
    with pytest.raises(IndexError):
        src[12]


def test_bad_source_arguments():
    with pytest.raises(ValueError, match="no class 'Fracture'"):
        PhantomChestXray(size=4, classes=("Fracture",))
    with pytest.raises(ValueError, match="Unknown split 'val'"):
        PhantomChestXray(size=4, split="val")
    with pytest.raises(ValueError, match="size 0"):
        PhantomChestXray(size=0)


def test_gallery_writes_a_png(tmp_path):
    path = tmp_path / "gallery.png"
    phantom.main(["--gallery", str(path), "--image_size", "64", "--seed", "1"])
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        assert image.width == 4 * 64 and image.height > 4 * 64


def test_bad_config():
    with pytest.raises(ValueError, match="at least 16"):
        PhantomConfig(image_size=8)
    with pytest.raises(ValueError, match="non-negative"):
        PhantomConfig(noise=-1.0)


def test_tiny_images_still_mark_every_present_finding():
    config = PhantomConfig(image_size=32)
    for index in range(3):
        out = phantom._render(0, index, config, np.ones(len(PHANTOM_CLASSES), np.int32))
        assert out["masks"].any((1, 2)).all()
        assert not np.isnan(out["boxes"]).any()


# ------------------------------------------------------------------ patient attributes


def test_attributes_are_pure_plausible_and_leave_the_labels_alone():
    assert sample_attributes(3, 11) == sample_attributes(3, 11)
    rows = [sample_attributes(0, i) for i in range(3000)]
    sex = np.asarray([r["sex"] for r in rows])
    age = np.asarray([r["age"] for r in rows])
    view = np.asarray([r["view"] for r in rows])
    assert set(sex) == {"M", "F"} and 0.45 < np.mean(sex == "M") < 0.55
    assert age.dtype.kind == "i" and age.min() >= 18 and age.max() <= 95
    assert 40 < np.median(age) < 60
    assert set(view) == {"PA", "AP"} and 0.2 < np.mean(view == "AP") < 0.45
    # Drawn from a stream of their own: the labels are those sample_labels gives.
    out = render(0, 5, SMALL)
    assert out["attributes"] == rows[5]
    np.testing.assert_array_equal(out["labels"], sample_labels(0, 5))
    # The source lists the attributes of its own examples (a split's own indices).
    src = PhantomChestXray(size=6, split="test", seed=2, config=SMALL)
    attributes = src.attributes()
    assert attributes["age"].dtype == np.int32
    for i in range(6):
        expected = sample_attributes(2, 2 * 2**40 + i, SMALL)
        assert {k: v[i].item() for k, v in attributes.items()} == expected


def test_attributes_carry_the_documented_effects():
    labels = np.array([sample_labels(0, i) for i in range(4000)])
    rows = [sample_attributes(0, i) for i in range(4000)]
    age = np.asarray([r["age"] for r in rows])
    ap = np.asarray([r["view"] == "AP" for r in rows])
    male = np.asarray([r["sex"] == "M" for r in rows])

    def rate(name, where):
        return labels[where, CLASS[name]].mean()

    # The old and the sick are filmed AP: AP films carry more cardiomegaly and effusion.
    for name in phantom._AP_FINDINGS:
        assert rate(name, ap) > 1.5 * rate(name, ~ap), name
    assert np.median(age[ap]) > np.median(age[~ap])
    # Age-related findings grow more prevalent with age; the others hardly.
    for name in phantom._AGE_RELATED:
        assert rate(name, age >= 60) > 2 * rate(name, age < 40), name
    assert rate("Infiltration", age >= 60) < 2 * rate("Infiltration", age < 40)
    # Sex has no effect.
    abnormal = labels.any(1)
    assert abs(abnormal[male].mean() - abnormal[~male].mean()) < 0.05


def test_ap_films_magnify_the_heart_and_leave_pa_films_alone():
    views = {sample_attributes(4, i)["view"]: i for i in range(40)}
    plain = PhantomConfig(image_size=128, noise=0.0)
    magnified = PhantomConfig(image_size=128, noise=0.0, ap_heart_magnification=0.15)
    pa, ap = views["PA"], views["AP"]
    a, b = render(4, pa, plain), render(4, pa, magnified)
    for key in ("image", "labels", "masks", "boxes", "body", "lungs", "heart"):
        np.testing.assert_array_equal(a[key], b[key])
    cardiomegaly = only("Cardiomegaly")
    for labels in (np.zeros(len(PHANTOM_CLASSES), np.int32), cardiomegaly):
        a = phantom._render(4, ap, plain, labels)
        b = phantom._render(4, ap, magnified, labels)
        assert 1.08 < width(b["heart"]) / width(a["heart"]) < 1.22
        assert not np.array_equal(a["image"], b["image"])
    # Adding the finding still changes only its own region on a magnified AP film.
    base = phantom._render(4, ap, magnified, np.zeros(len(PHANTOM_CLASSES)))
    out = phantom._render(4, ap, magnified, cardiomegaly)
    changed = base["image"] != out["image"]
    assert changed.any() and not (changed & ~dilate(out["masks"][CLASS["Cardiomegaly"]], 4)).any()
    for bad in (-0.1, 0.6, float("nan")):
        with pytest.raises(ValueError, match="ap_heart_magnification"):
            PhantomConfig(ap_heart_magnification=bad)


def test_the_magnification_setting_reaches_the_phantoms_once_the_config_has_it():
    from conftest import tiny_config

    from chestattn_jax import config_checks
    from chestattn_jax.data.input_pipeline import create_source

    config = tiny_config("class")
    if "ap_heart_magnification" not in config.data.synthetic:  # until the config has it
        assert create_source(config, "test").config.ap_heart_magnification == 0.0
        with config.unlocked():
            config.data.synthetic.ap_heart_magnification = 0.1
    config.data.synthetic.ap_heart_magnification = 0.1
    assert create_source(config, "test").config.ap_heart_magnification == 0.1
    for value, problems in ((0.1, 0), (0.7, 1), (-0.1, 1)):
        config.data.synthetic.ap_heart_magnification = value
        p = config_checks.Problems(config, config)
        phantom.check_config(p, "train")
        found = [f for f in p.found if "ap_heart_magnification" in f]
        assert len(found) == problems, found
