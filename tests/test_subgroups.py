"""Subgroup AUCs (sex, age band, view) against the rest of the split, with paired
patient-bootstrap intervals: numpy only, checked against sklearn on explicitly resampled
patients; the attributes in the predictions record; the evaluator plug-in."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import evaluator_option_problems
from sklearn.metrics import roc_auc_score

from chestattn_jax import config as config_lib
from chestattn_jax.evaluation.evaluators.subgroups import Evaluator
from chestattn_jax.evaluation.inference_pass import Record, _attributes
from chestattn_jax.metrics import patient_draw_weights
from chestattn_jax.subgroups import (
    AGE_BANDS,
    MIN_POSITIVES,
    age_band_names,
    define_subgroups,
    partition_aucs,
    subgroup_auc,
)

CLASSES = ("common", "tied", "rare")


def split(n=400, seed=0):
    """A split with patients of several images (some in two views), unknown attributes,
    masked labels, a common class with continuous scores, a class with many tied scores
    and a rare one."""
    rng = np.random.default_rng(seed)
    patients = rng.integers(0, n // 3, n)
    labels = (rng.random((n, 3)) < [0.35, 0.2, 0.06]).astype(np.int32)
    probs = labels * [0.4, 0.3, 0.5] + rng.random((n, 3))
    probs[:, 1] = np.round(probs[:, 1], 1)
    mask = (rng.random((n, 3)) > 0.1).astype(np.int32)
    attributes = {
        "sex": np.where(patients % 2 == 0, "M", "F"),
        "age": rng.integers(-1, 100, n),
        "view": np.asarray(["PA", "AP", "LL", ""])[rng.choice(4, n, p=[0.5, 0.35, 0.1, 0.05])],
    }
    attributes["sex"][patients % 11 == 0] = ""  # unknown for a few patients
    return labels, probs, mask, patients.astype(str), attributes


def resampled_auc(labels, probs, rows, multiplicity):
    """sklearn's AUC on ``rows`` repeated as often as their patient was drawn; NaN
    without both label values."""
    take = np.repeat(rows, multiplicity[rows].astype(int))
    y, p = labels[take], probs[take]
    return roc_auc_score(y, p) if len(set(y.tolist())) == 2 else np.nan


def test_subgroups_are_named_and_coded():
    assert age_band_names((40, 60, 80)) == ("<40", "40-59", "60-79", ">=80")
    assert age_band_names((50, 51)) == ("<50", "50", ">=51")
    attributes = {
        "sex": np.asarray(["F", "", "M", "X", "F"]),
        "age": np.asarray([39, 40, -1, 121, 80]),
        "view": np.asarray(["AP", "LL", "", "PA", "RL"]),
    }
    groups = define_subgroups(attributes, (40, 60, 80))
    assert groups["sex"][0] == ("M", "F")
    np.testing.assert_array_equal(groups["sex"][1], [1, -1, 0, -1, 1])
    # Only the bands some image falls in; unknown and impossible ages are in none.
    assert groups["age"][0] == ("<40", "40-59", ">=80")
    np.testing.assert_array_equal(groups["age"][1], [0, 1, -1, -1, 2])
    assert groups["view"][0] == ("PA", "AP", "LL", "RL")
    np.testing.assert_array_equal(groups["view"][1], [1, 2, -1, 0, 3])
    assert set(define_subgroups({"view": attributes["view"]})) == {"view"}
    assert "age" not in define_subgroups(attributes, ())


def test_subgroup_and_rest_aucs_per_draw_match_sklearn_on_resampled_patients():
    labels, probs, mask, patients, attributes = split()
    partitions = define_subgroups(attributes, AGE_BANDS)
    draws = patient_draw_weights(patients, 3, seed=5)
    weights = np.concatenate([np.ones((1, len(patients)), np.float32), draws])
    scored = partition_aucs(labels, probs, mask, partitions, weights)
    checked = 0
    for d, w in enumerate(weights):
        # Patients are drawn whole: every image of a patient counts as many times.
        for p in np.unique(patients):
            assert len(set(w[patients == p].tolist())) == 1
        for attribute, (names, codes) in partitions.items():
            for g in range(len(names)):
                for j in range(len(CLASSES)):
                    kept = mask[:, j] > 0
                    inside = np.flatnonzero(kept & (codes == g))
                    outside = np.flatnonzero(kept & (codes != g))
                    sub = resampled_auc(labels[:, j], probs[:, j], inside, w)
                    rest = resampled_auc(labels[:, j], probs[:, j], outside, w)
                    got = scored[attribute].subgroup[d, g, j], scored[attribute].rest[d, g, j]
                    np.testing.assert_allclose(got, (sub, rest), atol=1e-12)
                    if not np.isnan(sub - rest):
                        assert got[0] - got[1] == pytest.approx(sub - rest, abs=1e-12)
                        checked += 1
                    if d == 0:
                        counts = scored[attribute]
                        assert counts.positives[g, j] == labels[inside, j].sum()
                        assert counts.negatives[g, j] == (1 - labels[inside, j]).sum()
                        assert counts.rest_positives[g, j] == labels[outside, j].sum()
    assert checked > 100


def test_the_summary_reads_the_same_draws_and_pairs_them():
    labels, probs, mask, patients, attributes = split(seed=1)
    out = subgroup_auc(
        labels, probs, mask, CLASSES, patients, attributes, num_draws=200, seed=3, min_positives=3
    )
    partitions = define_subgroups(attributes, AGE_BANDS)
    weights = np.concatenate(
        [np.ones((1, len(patients)), np.float32), patient_draw_weights(patients, 200, seed=3)]
    )
    scored = partition_aucs(labels, probs, mask, partitions, weights)
    assert out["missing"] == [] and list(out["attributes"]) == ["sex", "age", "view"]
    names, codes = partitions["view"]
    ap = names.index("AP")
    entry = out["attributes"]["view"]["AP"]
    assert entry["images"] == int(np.sum(codes == ap))
    assert entry["patients"] == len(set(patients[codes == ap]))
    sub, rest = scored["view"].subgroup[:, ap], scored["view"].rest[:, ap]
    for j, c in enumerate(CLASSES):
        e = entry["classes"][c]
        assert e["reason"] is None
        assert e["auc"] == pytest.approx(sub[0, j]) and e["rest_auc"] == pytest.approx(rest[0, j])
        # Draws where the class has a single label value on a side are left out.
        assert e["ci"] == pytest.approx(np.nanquantile(sub[1:, j], [0.025, 0.975]))
        difference = sub[1:, j] - rest[1:, j]  # the same draw on both sides
        difference = difference[~np.isnan(difference)]
        assert e["difference"] == pytest.approx(sub[0, j] - rest[0, j])
        assert e["difference_ci"] == pytest.approx(np.quantile(difference, [0.025, 0.975]))
        assert e["p_not_better"] == pytest.approx(np.mean(difference <= 0))
    assert np.isnan(sub[1:, 2]).any()  # the rare class: some draws leave it undefined
    mean = entry["mean"]
    assert mean["classes"] == list(CLASSES)
    assert mean["auc"] == pytest.approx(np.mean(sub[0]))
    assert mean["difference"] == pytest.approx(np.mean(sub[0]) - np.mean(rest[0]))
    # A draw's mean: over the classes defined on both sides in that draw.
    per_draw = [
        np.mean(s[both]) - np.mean(r[both])
        for s, r in zip(sub[1:], rest[1:], strict=True)
        for both in [~np.isnan(s) & ~np.isnan(r)]
    ]
    assert mean["difference_ci"] == pytest.approx(np.quantile(per_draw, [0.025, 0.975]))
    # Without draws: the same points, no interval.
    points = subgroup_auc(
        labels, probs, mask, CLASSES, patients, attributes, num_draws=0, min_positives=3
    )
    e = points["attributes"]["view"]["AP"]["classes"]["common"]
    assert e["auc"] == entry["classes"]["common"]["auc"] and e["ci"] is None
    assert e["difference_ci"] is None and e["p_not_better"] is None


def test_a_class_with_too_few_positives_says_so():
    labels, probs, mask, patients, attributes = split(seed=2)
    attributes = {"view": attributes["view"]}
    ap, pa = attributes["view"] == "AP", attributes["view"] == "PA"
    # The rare class: 4 positives on AP films, many on PA films, none on the others.
    labels[:, 2] = pa & (np.arange(len(pa)) % 3 == 0)
    labels[np.flatnonzero(ap)[:4], 2] = 1
    mask[:, 2] = 1
    out = subgroup_auc(labels, probs, mask, CLASSES, patients, attributes, num_draws=20)
    assert out["min_positives"] == MIN_POSITIVES and out["missing"] == ["sex", "age"]
    entry = out["attributes"]["view"]["AP"]
    rare = entry["classes"]["rare"]
    assert rare["reason"] == f"fewer than {MIN_POSITIVES} positives in the subgroup (4)"
    assert rare["auc"] is None and rare["difference"] is None and rare["ci"] is None
    assert rare["positives"] == 4
    # The mean is over the classes scored in both the subgroup and its rest.
    assert entry["mean"]["classes"] == ["common", "tied"]
    scored = [entry["classes"][c]["auc"] for c in ("common", "tied")]
    assert entry["mean"]["auc"] == pytest.approx(np.mean(scored))
    # The rest short of positives: the PA films' rare class, whose rest has AP's 4.
    pa = out["attributes"]["view"]["PA"]["classes"]["rare"]
    assert pa["reason"] == f"fewer than {MIN_POSITIVES} positives in the rest of the split (4)"
    # A lower minimum scores it.
    out = subgroup_auc(
        labels, probs, mask, CLASSES, patients, attributes, num_draws=20, min_positives=4
    )
    assert out["attributes"]["view"]["AP"]["classes"]["rare"]["auc"] is not None
    # No class to score: the mean says why.
    out = subgroup_auc(
        labels, probs, mask, CLASSES, patients, attributes, num_draws=20, min_positives=1000
    )
    mean = out["attributes"]["view"]["AP"]["mean"]
    assert mean["auc"] is None and mean["classes"] == [] and "no class has 1000" in mean["reason"]
    with pytest.raises(ValueError, match="min_positives"):
        subgroup_auc(labels, probs, mask, CLASSES, patients, attributes, min_positives=0)
    with pytest.raises(ValueError, match="age_bands"):
        subgroup_auc(labels, probs, mask, CLASSES, patients, attributes, age_bands=(60, 40))
    with pytest.raises(ValueError, match="attribute 'view' has shape"):
        subgroup_auc(labels, probs, mask, CLASSES, patients, {"view": attributes["view"][:-1]})


def _record(attributes):
    labels, probs, mask, patients, _ = split(n=30)
    return Record(
        probs=probs,
        labels=labels,
        mask=mask,
        patient_ids=patients,
        example_ids=np.asarray([f"x{i}" for i in range(30)]),
        classes=CLASSES,
        evaluated_as=CLASSES,
        loss=0.5,
        bce=0.4,
        attributes=attributes,
    )


def test_the_record_keeps_the_attributes_and_reads_earlier_records(tmp_path):
    _, _, _, _, attributes = split(n=30)
    record = _record(attributes)
    record.save(tmp_path / "predictions.npz")
    loaded = Record.load(tmp_path / "predictions.npz")
    assert sorted(loaded.attributes) == ["age", "sex", "view"]
    for name, values in attributes.items():
        np.testing.assert_array_equal(loaded.attributes[name], values)
    # A record of an earlier release: the same arrays, no attribute.
    arrays = {
        f.name: getattr(record, f.name)
        for f in dataclasses.fields(Record)
        if f.name != "attributes"
    }
    np.savez(tmp_path / "old.npz", **arrays)
    old = Record.load(tmp_path / "old.npz")
    assert old.attributes == {} and old.loss == 0.5
    np.testing.assert_array_equal(old.probs, record.probs)
    # A record without attributes saves and loads as one.
    _record({}).save(tmp_path / "none.npz")
    assert Record.load(tmp_path / "none.npz").attributes == {}
    # The inference pass takes them from the source, checked against the split.
    source = SimpleNamespace(attributes=lambda: attributes)
    assert set(_attributes(source, 30)) == {"sex", "age", "view"}
    assert _attributes(SimpleNamespace(), 30) == {}
    with pytest.raises(ValueError, match="attribute 'age' has shape"):
        _attributes(SimpleNamespace(attributes=lambda: {"age": np.zeros(29)}), 30)


def _context(tmp_path, **eval_fields):
    config = SimpleNamespace(
        eval=SimpleNamespace(bootstrap_draws=40, bootstrap_seed=1, **eval_fields)
    )
    return SimpleNamespace(config=config, out_dir=str(tmp_path), classes=CLASSES, writes=True)


def test_the_evaluator_adds_the_subgroups(tmp_path):
    labels, probs, mask, patients, attributes = split(seed=4)
    record = SimpleNamespace(
        labels=labels,
        probs=probs,
        mask=mask,
        patient_ids=patients,
        classes=CLASSES,
        evaluated_as=CLASSES,
        attributes=attributes,
    )
    metrics = {"auc": {}}
    evaluator = Evaluator(_context(tmp_path, subgroup_age_bands=(50,), subgroup_min_positives=3))
    evaluator.finish(record, metrics)
    expected = subgroup_auc(
        labels,
        probs,
        mask,
        CLASSES,
        patients,
        attributes,
        age_bands=(50,),
        min_positives=3,
        num_draws=40,
        seed=1,
    )
    page = metrics["subgroups"].pop("page")  # report.html's view of the same numbers
    assert metrics["subgroups"] == expected
    assert [t["title"] for t in page["tables"]][:2] == [
        "By sex: mean AUC over classes",
        "By sex: AUC per class",
    ]
    assert list(metrics["subgroups"]["attributes"]["age"]) == ["<50", ">=50"]
    assert metrics["subgroups"]["num_draws"] == 40 and list(tmp_path.iterdir()) == []
    # A config without the options: their defaults. A record without attributes: none.
    metrics = {}
    Evaluator(_context(tmp_path)).finish(record, metrics)
    assert metrics["subgroups"]["age_bands"] == list(AGE_BANDS)
    assert metrics["subgroups"]["min_positives"] == MIN_POSITIVES
    old = SimpleNamespace(**{**vars(record), "attributes": {}})
    Evaluator(_context(tmp_path)).finish(old, metrics)
    assert metrics["subgroups"]["attributes"] == {}
    assert metrics["subgroups"]["missing"] == ["sex", "age", "view"]


def test_the_evaluator_checks_its_options_once_the_config_has_them():
    config = config_lib.get_base_config()

    def found(**fields):
        return evaluator_option_problems(Evaluator, config, **fields)

    if "subgroup_age_bands" not in config.eval:
        assert found() == []  # the options are optional until the config has them
    assert found(subgroup_age_bands=(40, 60, 80), subgroup_min_positives=10) == []
    assert found(subgroup_age_bands=()) == []
    (problem,) = found(subgroup_age_bands=(60, 40))
    assert problem.startswith("config.eval.subgroup_age_bands=(60, 40): the ages must increase")
    (problem,) = found(subgroup_age_bands=(40, 200))
    assert "from 1 to 120" in problem
    config.eval.subgroup_age_bands = (40,)
    (problem,) = found(subgroup_min_positives=0)
    assert problem.startswith("config.eval.subgroup_min_positives=0: must be at least 1")


def test_the_inference_pass_records_the_phantoms_attributes():
    """run_pass with a stand-in for the jitted step (no model, no compile): the record
    carries the source's attributes, row for row."""
    from chestattn_jax import sharding as shd
    from chestattn_jax.data.synthetic import PhantomChestXray, PhantomConfig
    from chestattn_jax.evaluation.inference_pass import run_pass

    source = PhantomChestXray(size=10, split="test", seed=3, config=PhantomConfig(image_size=16))

    def eval_fn(state, batch):
        return {"logits": np.zeros(batch["labels"].shape), "loss": 0.0, "bce": 0.0}

    record = run_pass(eval_fn, None, source, 4, shd.make_mesh(), classes=source.classes)
    expected = source.attributes()
    assert sorted(record.attributes) == ["age", "sex", "view"]
    for name, values in expected.items():
        np.testing.assert_array_equal(record.attributes[name], values)
