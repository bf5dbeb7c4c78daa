"""Calibration error, Brier score and recalibration against brute force and sklearn."""

import json

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from chestattn_jax.calibration import (
    SCALE_BOUNDS,
    apply_recalibration,
    brier_score,
    calibration_draws,
    calibration_summary,
    expected_calibration_error,
    fit_platt,
    fit_recalibration,
    fit_temperature,
    logits_of,
    nll,
    reliability_curve,
)
from chestattn_jax.metrics import patient_draw_weights


def data(n=300, k=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, k)) < 0.3).astype(int)
    # Rounded scores: many ties, edges that coincide.
    probs = np.round(np.clip(0.3 * labels + rng.random((n, k)) * 0.7, 0, 1), 2)
    patients = rng.integers(0, n // 3, n).astype(str)
    return labels, probs, patients


def brute_ece(probs, labels, edges, weights=None):
    """ECE by an explicit loop over bins and examples: bin b holds
    edges[b] <= p < edges[b + 1], the last bin also its upper edge (a probability on an
    edge that several bins share falls in the last of them)."""
    weights = np.ones(len(probs)) if weights is None else weights
    total, ece = sum(weights), 0.0
    for b in range(len(edges) - 1):
        last = b == len(edges) - 2
        members = [
            i
            for i, p in enumerate(probs)
            if edges[b] <= p and (p < edges[b + 1] or (last and p <= edges[b + 1]))
        ]
        w = sum(weights[i] for i in members)
        if w == 0:
            continue
        mean_prob = sum(weights[i] * probs[i] for i in members) / w
        frac_pos = sum(weights[i] * labels[i] for i in members) / w
        ece += w / total * abs(mean_prob - frac_pos)
    return ece


def test_ece_by_hand():
    probs = np.array([0.1, 0.2, 0.7, 0.9])
    labels = np.array([0, 1, 1, 1])
    # Two bins {0.1, 0.2} and {0.7, 0.9} either way: |0.15 - 0.5| / 2 + |0.8 - 1| / 2.
    for binning in ("equal_width", "equal_mass"):
        ece = expected_calibration_error(probs, labels, num_bins=2, binning=binning)
        assert ece == pytest.approx(0.275, abs=1e-15)


@pytest.mark.parametrize("binning", ["equal_mass", "equal_width"])
def test_ece_equals_a_brute_force_loop(binning):
    labels, probs, _ = data(n=200)
    for j in range(3):
        p, y = probs[:, j], labels[:, j]
        edges = (
            np.quantile(p, np.linspace(0, 1, 11))
            if binning == "equal_mass"
            else np.linspace(0, 1, 11)
        )
        ece = expected_calibration_error(p, y, num_bins=10, binning=binning)
        assert ece == pytest.approx(brute_ece(p, y, edges), abs=1e-12)


def test_weighted_ece_equals_ece_on_repeated_examples():
    labels, probs, patients = data()
    weights = patient_draw_weights(patients, 5, seed=3)
    p, y = probs[:, 0], labels[:, 0]
    per_draw = expected_calibration_error(p, y, weights, num_bins=8, binning="equal_width")
    for d in range(5):
        idx = np.repeat(np.arange(len(p)), weights[d].astype(int))
        repeated = expected_calibration_error(p[idx], y[idx], num_bins=8, binning="equal_width")
        one_row = expected_calibration_error(p, y, weights[d], num_bins=8, binning="equal_width")
        assert per_draw[d] == pytest.approx(repeated, abs=1e-12)
        assert one_row == pytest.approx(repeated, abs=1e-12)
        # Equal-mass bins stay those of the unweighted probabilities in every draw.
        edges = np.quantile(p, np.linspace(0, 1, 9))
        weighted = expected_calibration_error(p, y, weights[d], num_bins=8)
        assert weighted == pytest.approx(brute_ece(p[idx], y[idx], edges), abs=1e-12)


def test_brier_equals_sklearn():
    labels, probs, patients = data()
    weights = patient_draw_weights(patients, 3, seed=1)
    for j in range(3):
        p, y = probs[:, j], labels[:, j]
        assert brier_score(p, y) == pytest.approx(brier_score_loss(y, p), abs=1e-15)
        per_draw = brier_score(p, y, weights)
        for d in range(3):
            expected = brier_score_loss(y, p, sample_weight=weights[d])
            assert per_draw[d] == pytest.approx(expected, abs=1e-12)


def test_reliability_curve_matches_its_bins_and_the_ece():
    labels, probs, _ = data(n=500)
    p, y = probs[:, 1], labels[:, 1]
    curve = reliability_curve(p, y, num_bins=10)
    edges = np.asarray(curve["bin_edges"])
    assert sum(curve["count"]) == len(p)
    ece = 0.0
    for b in range(10):
        inside = (p >= edges[b]) & ((p < edges[b + 1]) | (b == 9))
        assert curve["count"][b] == inside.sum()
        if inside.any():
            assert curve["mean_prob"][b] == pytest.approx(p[inside].mean(), abs=1e-12)
            assert curve["frac_pos"][b] == pytest.approx(y[inside].mean(), abs=1e-12)
            ece += inside.sum() / len(p) * abs(p[inside].mean() - y[inside].mean())
        else:
            assert curve["mean_prob"][b] is None and curve["frac_pos"][b] is None
    assert ece == pytest.approx(expected_calibration_error(p, y, num_bins=10), abs=1e-12)
    json.dumps(curve)


def test_summary_draws_equal_the_resampled_examples():
    labels, probs, patients = data()
    mask = np.ones_like(labels)
    mask[::7, 2] = 0
    weights = patient_draw_weights(patients, 4, seed=5)
    ece, brier = calibration_draws(labels, probs, mask > 0, weights, num_bins=6)
    for j in range(3):
        keep = mask[:, j] > 0
        p, y = probs[keep, j], labels[keep, j]
        edges = np.quantile(p, np.linspace(0, 1, 7))
        for d in range(4):
            idx = np.repeat(np.arange(len(p)), weights[d, keep].astype(int))
            assert ece[d, j] == pytest.approx(brute_ece(p[idx], y[idx], edges), abs=1e-12)
            assert brier[d, j] == pytest.approx(brier_score_loss(y[idx], p[idx]), abs=1e-12)


def test_summary_intervals_undefined_classes_and_the_mean():
    labels, probs, patients = data(n=600, k=4)
    labels[:, 2] = 0  # a single label value
    mask = np.ones_like(labels)
    mask[:, 3] = 0  # no examples
    names = ["a", "b", "c", "d"]
    out = calibration_summary(labels, probs, mask, names, patients, num_draws=200, num_bins=10)
    for name, j in (("a", 0), ("b", 1)):
        entry = out["classes"][name]
        assert entry["reason"] is None
        assert entry["ece"]["value"] == pytest.approx(
            expected_calibration_error(probs[:, j], labels[:, j], num_bins=10), abs=1e-12
        )
        assert entry["brier"]["value"] == pytest.approx(
            brier_score_loss(labels[:, j], probs[:, j]), abs=1e-12
        )
        for metric in ("ece", "brier"):
            lo, hi = entry[metric]["ci"]
            assert lo < entry[metric]["value"] < hi
            assert entry[metric]["undefined_draws"] == 0
    assert "single label value" in out["classes"]["c"]["reason"]
    assert out["classes"]["c"]["ece"]["value"] is None
    assert out["classes"]["d"]["reason"] == "no unmasked examples"
    assert out["classes"]["d"]["brier"] == {"value": None, "ci": None, "undefined_draws": 200}
    mean = (out["classes"]["a"]["ece"]["value"] + out["classes"]["b"]["ece"]["value"]) / 2
    assert out["mean_ece"]["value"] == pytest.approx(mean, abs=1e-12)
    assert out["mean_ece"]["ci"][0] < mean < out["mean_ece"]["ci"][1]
    json.dumps(out)


# ----------------------------------------------------------------- recalibration


def simulated(n, scale=1.0, offset=0.0, seed=0):
    """Labels drawn from true logits N(-3, 1.5), and probabilities whose logits are
    ``scale * true + offset``: the class weight c of the paper's loss gives log c."""
    rng = np.random.default_rng(seed)
    true = rng.normal(-3.0, 1.5, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-true))).astype(int)
    return 1 / (1 + np.exp(-(scale * true + offset))), labels


def fit_one(probs, labels, method, apply_to=None):
    """One class's parameters fitted on ``probs``, and ``apply_to`` (default: ``probs``)
    recalibrated with them."""
    column = np.asarray(probs)[:, None]
    params = fit_recalibration(column, labels[:, None], np.ones_like(column), ["c"], method)
    target = column if apply_to is None else np.asarray(apply_to)[:, None]
    return params, apply_recalibration(target, params)[:, 0]


def test_a_known_temperature_is_recovered():
    probs, labels = simulated(20000, scale=2.0, seed=1)
    params, _ = fit_one(probs, labels, "temperature")
    assert params["classes"]["c"]["temperature"] == pytest.approx(2.0, rel=0.05)


def test_platt_recovers_the_class_weight_offset_and_temperature_cannot():
    offset = np.log(50.0)
    val_probs, val_labels = simulated(5000, offset=offset, seed=2)
    test_probs, test_labels = simulated(20000, offset=offset, seed=3)
    platt, platt_test = fit_one(val_probs, val_labels, "platt", test_probs)
    _, temperature_test = fit_one(val_probs, val_labels, "temperature", test_probs)
    assert platt["classes"]["c"]["a"] == pytest.approx(1.0, abs=0.1)
    assert platt["classes"]["c"]["b"] == pytest.approx(-offset, abs=0.3)
    assert expected_calibration_error(test_probs, test_labels) > 0.4
    assert expected_calibration_error(platt_test, test_labels) < 0.02
    assert expected_calibration_error(temperature_test, test_labels) > 0.1


def test_recalibration_keeps_every_auc_and_does_not_worsen_the_validation_nll():
    rng = np.random.default_rng(4)
    n = 800
    labels = (rng.random((n, 3)) < 0.2).astype(int)
    logits = rng.normal(0, 1.5, (n, 3)) + 1.5 * labels
    logits[:, 1] = 3 * logits[:, 1] + 2  # overconfident and shifted
    logits[:, 2] = -logits[:, 2]  # ranks the labels the wrong way: a held at its floor
    probs = 1 / (1 + np.exp(-logits))
    val, test = slice(0, n // 2), slice(n // 2, n)
    mask = np.ones_like(labels)
    for method in ("platt", "temperature"):
        params = fit_recalibration(probs[val], labels[val], mask[val], ["a", "b", "c"], method)
        params = json.loads(json.dumps(params))  # stored and read back
        for split in (val, test):
            after = apply_recalibration(probs[split], params)
            for j in range(3):
                before_auc = roc_auc_score(labels[split, j], probs[split, j])
                assert roc_auc_score(labels[split, j], after[:, j]) == pytest.approx(
                    before_auc, abs=1e-12
                )
        after = apply_recalibration(probs[val], params)
        for j, name in enumerate("abc"):
            entry = params["classes"][name]
            assert entry["fitted"]
            identity = log_loss(labels[val, j], probs[val, j])
            assert log_loss(labels[val, j], after[:, j]) <= identity * (1 + 1e-12)
            assert entry["nll_after"] <= entry["nll_before"] * (1 + 1e-12)
    platt = fit_recalibration(probs[val], labels[val], mask[val], ["a", "b", "c"])
    assert platt["method"] == "platt"
    assert platt["classes"]["c"]["a"] == SCALE_BOUNDS[0] > 0
    assert "floor" in platt["classes"]["c"]["reason"]


@pytest.mark.parametrize("method", ["platt", "temperature"])
def test_the_fit_is_a_minimum_of_the_nll(method):
    probs, labels = simulated(3000, scale=0.6, offset=1.0, seed=6)
    z = logits_of(probs)
    if method == "platt":
        a, b = fit_platt(z, labels)
    else:
        a, b = 1.0 / fit_temperature(z, labels), 0.0
    best = nll(z, labels, a, b)
    for da, db in ((1e-3, 0), (-1e-3, 0), (0, 1e-3), (0, -1e-3)):
        if method == "temperature" and db:
            continue
        assert nll(z, labels, a + da, b + db) > best


def test_classes_that_cannot_be_fitted_keep_the_identity_and_say_why():
    rng = np.random.default_rng(7)
    n = 60
    probs = rng.uniform(0.05, 0.95, (n, 4))
    labels = (rng.random((n, 4)) < 0.5).astype(int)
    labels[:, 0] = 0  # one label value
    probs[:, 1] = np.where(labels[:, 1] == 1, 0.9, 0.2)  # separated
    probs[:, 2] = 0.3  # all equal
    mask = np.ones_like(labels)
    mask[:, 3] = 0  # nothing unmasked
    for method in ("platt", "temperature"):
        params = fit_recalibration(probs, labels, mask, list("wxyz"), method)
        reasons = {c: params["classes"][c]["reason"] for c in "wxyz"}
        assert not any(params["classes"][c]["fitted"] for c in "wxyz")
        assert "single label value" in reasons["w"]
        assert "separate" in reasons["x"] or "sign" in reasons["x"]
        assert "equal" in reasons["y"]
        assert "no unmasked examples" in reasons["z"]
        np.testing.assert_allclose(apply_recalibration(probs, params), probs, rtol=1e-12)
    with pytest.raises(ValueError, match="single label value"):
        fit_platt(logits_of(probs[:, 0]), labels[:, 0])
    with pytest.raises(ValueError, match="method"):
        fit_recalibration(probs, labels, mask, list("wxyz"), "isotonic")


def test_bad_input_names_the_field():
    labels, probs, _ = data()
    with pytest.raises(ValueError, match="probs"):
        expected_calibration_error(probs[:, 0] + 1, labels[:, 0])
    with pytest.raises(ValueError, match="labels"):
        brier_score(probs[:, 0], labels[:, 0] + 2)
    with pytest.raises(ValueError, match="binning"):
        expected_calibration_error(probs[:, 0], labels[:, 0], binning="quantile")
    with pytest.raises(ValueError, match="class_names"):
        calibration_summary(labels, probs, np.ones_like(labels), ["a"], num_draws=2)
    with pytest.raises(ValueError, match="mask"):
        calibration_summary(labels, probs, np.ones(3), ["a", "b", "c"], num_draws=2)
    params = fit_recalibration(probs, labels, np.ones_like(labels), ["a", "b", "c"])
    with pytest.raises(ValueError, match="class_names"):
        apply_recalibration(probs[:, :2], params)


def test_without_draws_the_values_come_without_intervals():
    """eval.bootstrap_draws=0 asks for no intervals: the values are still computed."""
    rng = np.random.default_rng(0)
    labels = (rng.random((60, 2)) < 0.4).astype(int)
    probs = rng.random((60, 2))
    mask = np.ones_like(labels)
    out = calibration_summary(labels, probs, mask, ["a", "b"], num_draws=0)
    with_draws = calibration_summary(labels, probs, mask, ["a", "b"], num_draws=5)
    for c in ("a", "b"):
        assert out["classes"][c]["ece"]["ci"] is None
        assert out["classes"][c]["ece"]["value"] == with_draws["classes"][c]["ece"]["value"]
    assert out["mean_brier"]["ci"] is None and out["mean_brier"]["value"] is not None
