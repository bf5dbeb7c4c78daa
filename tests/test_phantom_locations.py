"""PhantomConfig.location_variability: 0 keeps today's phantoms; 1 spreads each finding
over the places its pathology plausibly lies, with the truth masks following it."""

import math

import numpy as np
import pytest
from conftest import dilate, only

from chestattn_jax.data import synthetic as phantom
from chestattn_jax.data.synthetic import (
    PHANTOM_CLASSES,
    PhantomChestXray,
    PhantomConfig,
    render,
    sample_labels,
)

S = 64
TYPICAL = PhantomConfig(image_size=S)
WIDE = PhantomConfig(image_size=S, location_variability=1.0)
CLASS = {name: k for k, name in enumerate(PHANTOM_CLASSES)}
KEYS = ("image", "labels", "masks", "boxes", "body", "lungs", "heart")


def finding(name: str, index: int, config: PhantomConfig, seed: int = 7) -> dict:
    """A phantom with ``name`` as its only finding; adds that finding's mask as ``mask``
    and its centre of mass as ``side`` (1: the patient's left, the image's right, as
    seen from the lungs' midline) and ``height`` (0 at the lung apices, 1 at the bases)."""
    out = phantom._render(seed, index, config, only(name))
    out["mask"] = mask = out["masks"][CLASS[name]]
    ys, xs = np.nonzero(mask)
    lung_rows = np.flatnonzero(out["lungs"].any(1))
    lung_cols = np.flatnonzero(out["lungs"].any(0))
    midline = 0.5 * (lung_cols[0] + lung_cols[-1])
    out["side"] = int(xs.mean() > midline)
    out["height"] = (ys.mean() - lung_rows[0]) / (lung_rows[-1] - lung_rows[0])
    return out


def test_zero_variability_renders_the_default_phantoms():
    config = PhantomConfig(image_size=48, prevalence_scale=3.0, location_variability=0.0)
    default = PhantomConfig(image_size=48, prevalence_scale=3.0)
    everything = np.ones(len(PHANTOM_CLASSES), np.int32)
    for index in range(5):
        a, b = render(1, index, config), render(1, index, default)
        for key in KEYS:
            np.testing.assert_array_equal(a[key], b[key])
        a = phantom._render(1, index, config, everything)
        b = phantom._render(1, index, default, everything)
        for key in ("image", "masks", "boxes"):
            np.testing.assert_array_equal(a[key], b[key])
    # No draw at all from the placement stream at 0: every finding takes its typical place.
    assert not phantom._wide_placements(1, 0, 0.0).any()


def test_each_finding_takes_its_wide_placement_with_probability_variability():
    for v, low, high in ((0.25, 0.2, 0.3), (0.5, 0.45, 0.55), (1.0, 1.0, 1.0)):
        share = np.mean([phantom._wide_placements(0, i, v) for i in range(300)])
        assert low <= share <= high, (v, share)
    # Nested: a finding wide at a lower variability is wide at every higher one.
    for i in range(20):
        assert not (
            phantom._wide_placements(0, i, 0.3) & ~phantom._wide_placements(0, i, 0.6)
        ).any()


def test_the_knob_changes_no_label_and_keeps_masks_consistent():
    base = PhantomConfig(image_size=48, prevalence_scale=3.0)
    for v in (0.5, 1.0):
        config = PhantomConfig(image_size=48, prevalence_scale=3.0, location_variability=v)
        for index in range(10):
            out = render(3, index, config)
            np.testing.assert_array_equal(out["labels"], sample_labels(3, index, base))
            np.testing.assert_array_equal(out["masks"].any((1, 2)), out["labels"] == 1)
            assert not (out["masks"] & ~out["body"]).any()  # inside the body, so the image
            for key in ("body", "lungs"):  # the anatomy is the typical one
                np.testing.assert_array_equal(out[key], render(3, index, base)[key])
            for k in np.flatnonzero(out["labels"]):
                rows = np.flatnonzero(out["masks"][k].any(1))
                cols = np.flatnonzero(out["masks"][k].any(0))
                box = [cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]
                np.testing.assert_array_equal(out["boxes"][k], box)
    source = PhantomChestXray(size=8, split="test", config=WIDE)
    for i in range(8):
        np.testing.assert_array_equal(
            source[i]["labels"], PhantomChestXray(size=8, split="test").labels(i)
        )


@pytest.mark.parametrize("size", [32, 48])
def test_small_wide_phantoms_still_mark_every_present_finding_in_the_body(size):
    config = PhantomConfig(image_size=size, location_variability=1.0)
    for index in range(40):
        out = phantom._render(0, index, config, np.ones(len(PHANTOM_CLASSES), np.int32))
        assert out["masks"].any((1, 2)).all()
        assert not (out["masks"] & ~out["body"]).any()


def test_typical_findings_are_untouched_at_intermediate_variability():
    """A finding whose coin says typical renders exactly as at 0.0, whatever the others do."""
    config = PhantomConfig(image_size=48, prevalence_scale=3.0, location_variability=0.5)
    base = PhantomConfig(image_size=48, prevalence_scale=3.0)
    compared = 0
    for index in range(12):
        wide = phantom._wide_placements(5, index, 0.5)
        a, b = render(5, index, config), render(5, index, base)
        for k in np.flatnonzero(a["labels"] & ~wide):
            np.testing.assert_array_equal(a["masks"][k], b["masks"][k])
            compared += 1
    assert compared >= 5


@pytest.mark.parametrize("name", ["Cardiomegaly", "Consolidation", "Nodule", "Pneumothorax"])
def test_classes_without_a_wide_placement_are_unchanged(name):
    for index in range(3):
        a, b = finding(name, index, WIDE), finding(name, index, TYPICAL)
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["mask"], b["mask"])


def test_wide_findings_add_float32_attenuation():
    # A float64 change rounds differently through the film curve and flips stray pixels.
    anatomy = phantom._Anatomy(phantom._stream(0, 0, phantom._STREAM_ANATOMY), 48)
    for name in sorted(phantom._WIDE_PLACEMENTS):
        for index in range(12):  # every wide variant of every class
            rng = phantom._stream(0, index, phantom._STREAM_FINDING + CLASS[name])
            delta, mask = phantom._GENERATORS[name](anatomy, rng, 1.0, wide=True)
            assert delta.dtype == np.float32 and mask.dtype == bool, name


@pytest.mark.parametrize("name", sorted(phantom._WIDE_PLACEMENTS))
def test_a_wide_finding_changes_only_its_own_region(name):
    config = PhantomConfig(image_size=S, noise=0.0, location_variability=1.0)
    for index in range(6):
        base = phantom._render(2, index, config, np.zeros(len(PHANTOM_CLASSES)))
        out = finding(name, index, config, seed=2)
        assert out["mask"].any()
        changed = base["image"] != out["image"]
        assert changed.any()
        assert not (changed & ~dilate(out["mask"], 4)).any()
        np.testing.assert_array_equal(base["lungs"], out["lungs"])


def test_effusion_and_pneumothorax_occur_on_both_sides():
    for name in ("Effusion", "Pneumothorax"):
        found = [finding(name, i, WIDE) for i in range(16)]
        sides = {
            f["side"] for f in found if f["mask"][:, S // 2 :].any() != f["mask"][:, : S // 2].any()
        }
        assert sides == {0, 1}, name
        if name == "Pneumothorax":
            assert all(f["height"] < 0.5 for f in found)  # apical: upright air rises


def test_wide_effusions_include_loculated_collections_off_the_base():
    heights = [finding("Effusion", i, WIDE)["height"] for i in range(24)]
    typical = [finding("Effusion", i, TYPICAL)["height"] for i in range(24)]
    assert min(typical) > 0.6
    assert 0 < sum(h < 0.6 for h in heights) < len(heights)


def test_nodules_and_masses_spread_over_the_lung_fields():
    for name in ("Nodule", "Mass"):
        cells = set()
        for i in range(20):
            f = finding(name, i, WIDE)
            assert (f["mask"] & f["lungs"]).sum() > 0.5 * f["mask"].sum()
            cells.add((f["side"], min(int(f["height"] * 3), 2)))
        assert len(cells) >= 5, (name, cells)  # both lungs, most of the three zones


def test_lung_findings_reach_every_zone_of_either_lung():
    for name in ("Pneumonia", "Atelectasis"):
        typical = [finding(name, i, TYPICAL)["height"] for i in range(12)]
        assert min(typical) > 0.25  # lower or middle zone
        found = [finding(name, i, WIDE) for i in range(24)]
        assert {f["side"] for f in found} == {0, 1}
        assert min(f["height"] for f in found) < 0.3, name  # the upper zone too


def test_wide_patterns_of_the_diffuse_and_diaphragmatic_findings():
    # Edema: sometimes one lung only; emphysema: sometimes one zone only.
    edema = [finding("Edema", i, WIDE) for i in range(12)]
    one_sided = [e["mask"][:, : S // 2].any() != e["mask"][:, S // 2 :].any() for e in edema]
    assert any(one_sided) and not all(one_sided)
    emphysema = [finding("Emphysema", i, WIDE) for i in range(12)]
    cover = [(e["mask"] & e["lungs"]).sum() / e["lungs"].sum() for e in emphysema]
    assert min(cover) < 0.7 and max(cover) > 0.95
    # Fibrosis: upper-zone forms besides the basal one.
    fibrosis = [finding("Fibrosis", i, WIDE)["height"] for i in range(12)]
    assert min(fibrosis) < 0.45 and max(fibrosis) > 0.6
    # Hernia: at the diaphragm, but not always at the midline (Bochdalek, Morgagni).
    hernia = [finding("Hernia", i, WIDE) for i in range(16)]
    offset = [abs(np.nonzero(h["mask"])[1].mean() - S / 2) / S for h in hernia]
    assert min(offset) < 0.1 and max(offset) > 0.15
    assert all(h["height"] > 0.6 for h in hernia)


def test_cardiomegaly_stays_on_the_heart():
    for index in range(4):
        out = finding("Cardiomegaly", index, WIDE)
        np.testing.assert_array_equal(out["mask"], out["heart"])
        assert out["side"] == 1 and out["height"] > 0.5


@pytest.mark.parametrize("value", [-0.1, 1.01, math.nan, math.inf])
def test_invalid_variability_is_refused(value):
    with pytest.raises(ValueError, match="location_variability must be between 0 and 1"):
        PhantomConfig(location_variability=value)


def test_extreme_values_are_accepted():
    assert PhantomConfig(location_variability=0).location_variability == 0
    assert PhantomConfig(location_variability=1).location_variability == 1


def test_the_config_reaches_the_phantoms_and_their_fingerprint():
    from conftest import tiny_config

    from chestattn_jax.data.input_pipeline import create_source, dataset_fingerprint

    config = tiny_config("class")
    assert config.data.synthetic.location_variability == 0.75  # the default
    assert create_source(config, "test").config.location_variability == 0.75
    moved = dataset_fingerprint(config)["fingerprint"]
    config.data.synthetic.location_variability = 0.0
    assert dataset_fingerprint(config)["fingerprint"] != moved
