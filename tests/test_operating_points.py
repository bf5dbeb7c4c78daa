"""Validation-chosen thresholds and test operating points against brute-force scans and
sklearn's confusion matrix on explicitly resampled patients."""

import json

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from chestattn_jax.metrics import patient_draw_weights
from chestattn_jax.operating_points import (
    choose_threshold,
    choose_thresholds,
    operating_point_metrics,
    operating_point_summary,
    parse_rule,
    roc_points,
    sensitivity_at_specificity,
)


def data(n=300, k=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, k)) < 0.3).astype(int)
    # Rounded scores: many ties.
    probs = np.round(np.clip(0.25 * labels + rng.random((n, k)) * 0.75, 0, 1), 2)
    patients = rng.integers(0, n // 3, n).astype(str)
    return labels, probs, patients


def counts(probs, labels, threshold):
    """``(tn, fp, fn, tp)`` at ``prob >= threshold``, counted example by example."""
    predicted, labels = probs >= threshold, labels == 1
    return (
        int(np.sum(~predicted & ~labels)),
        int(np.sum(predicted & ~labels)),
        int(np.sum(~predicted & labels)),
        int(np.sum(predicted & labels)),
    )


def rates(probs, labels, threshold):
    """Sensitivity and specificity at ``prob >= threshold``."""
    tn, fp, fn, tp = counts(probs, labels, threshold)
    return tp / (tp + fn), tn / (tn + fp)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("youden", ("youden", None)),
        ("sensitivity>=0.9", ("sensitivity", 0.9)),
        (" specificity >= 0.95 ", ("specificity", 0.95)),
        ("sensitivity>=1e-1", ("sensitivity", 0.1)),
    ],
)
def test_parse_rule(text, expected):
    assert parse_rule(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "Youden", "ppv>=0.9", "sensitivity>0.9", "sensitivity>=", "sensitivity>=0",
     "specificity>=1", "specificity>=1.5", "sensitivity>=-0.2", "sensitivity>=0.9.1"],
)  # fmt: skip
def test_parse_rule_names_a_bad_rule(text):
    with pytest.raises(ValueError, match=f"threshold rule {text!r}"):
        parse_rule(text)


def test_parse_rule_refuses_a_non_string():
    with pytest.raises(ValueError, match="threshold rule None"):
        parse_rule(None)


def test_youden_equals_a_scan_over_every_candidate():
    labels, probs, _ = data(n=400)
    for j in range(3):
        p, y = probs[:, j], labels[:, j]
        chosen = choose_threshold(p, y, "youden")
        scan = {t: sum(rates(p, y, t)) - 1 for t in np.unique(p)}
        best = max(scan.values())
        assert scan[chosen["threshold"]] == pytest.approx(best, abs=1e-12)
        # The highest of the thresholds that reach it.
        assert all(v < best - 1e-12 for t, v in scan.items() if t > chosen["threshold"])
        sens, spec = rates(p, y, chosen["threshold"])
        assert (chosen["sensitivity"], chosen["specificity"]) == pytest.approx((sens, spec))
    # J = 0.5 at 0.4 and at 0.2: the higher is taken.
    tied = choose_threshold(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 1, 0, 1]), "youden")
    assert tied["threshold"] == 0.4


@pytest.mark.parametrize("target", [0.9, 0.75, 0.5])
def test_sensitivity_target_takes_the_highest_threshold_that_meets_it(target):
    labels, probs, _ = data(n=400, seed=1)
    for j in range(3):
        p, y = probs[:, j], labels[:, j]
        chosen = choose_threshold(p, y, f"sensitivity>={target}")
        assert chosen["sensitivity"] >= target
        assert rates(p, y, chosen["threshold"])[0] >= target
        higher = [t for t in np.unique(p) if t > chosen["threshold"]]
        assert all(rates(p, y, t)[0] < target for t in higher)


@pytest.mark.parametrize("target", [0.9, 0.95])
def test_specificity_target_takes_the_lowest_threshold_that_meets_it(target):
    labels, probs, _ = data(n=400, seed=2)
    for j in range(3):
        p, y = probs[:, j], labels[:, j]
        chosen = choose_threshold(p, y, f"specificity>={target}")
        sens, spec = rates(p, y, chosen["threshold"])
        assert chosen["specificity"] == pytest.approx(spec) and spec >= target
        assert chosen["sensitivity"] == pytest.approx(sens)
        lower = [t for t in np.unique(p) if t < chosen["threshold"]]
        assert all(rates(p, y, t)[1] < target for t in lower)


def test_no_threshold_without_both_labels_or_a_reachable_target():
    p = np.array([0.2, 0.4, 0.6, 0.8])
    for rule in ("youden", "sensitivity>=0.9", "specificity>=0.9"):
        none = choose_threshold(p, np.zeros(4, int), rule)
        assert none["threshold"] is None and none["reason"] == "no validation positives"
        none = choose_threshold(p, np.ones(4, int), rule)
        assert none["threshold"] is None and none["reason"] == "no validation negatives"
    # The top score is a negative: no probability keeps specificity >= 0.9 of 3 negatives.
    out = choose_threshold(p, np.array([1, 0, 0, 0]), "specificity>=0.9")
    assert out["threshold"] is None and "specificity >= 0.9" in out["reason"]
    # Constant scores rank nothing: Youden's J is 0 everywhere.
    out = choose_threshold(np.full(4, 0.3), np.array([0, 1, 0, 1]), "youden")
    assert out["threshold"] is None and "chance" in out["reason"]


def test_choose_thresholds_leaves_out_masked_labels():
    labels, probs, _ = data(n=200)
    mask = np.ones_like(labels)
    mask[:50, 1] = 0
    labels[:50, 1] = -1  # unknown labels, masked out
    out = choose_thresholds(labels, probs, mask, ["a", "b", "c"], "youden")
    expected = choose_threshold(probs[50:, 1], labels[50:, 1], "youden")
    assert out["b"] == expected
    json.dumps(out)
    with pytest.raises(ValueError, match="threshold rule"):
        choose_thresholds(labels, probs, mask, ["a", "b", "c"], "f1")


def test_each_draw_equals_sklearn_on_the_resampled_patients():
    labels, probs, patients = data()
    mask = np.ones_like(labels)
    mask[::5, 2] = 0
    thresholds = np.array([0.5, 0.62, 0.3])
    weights = patient_draw_weights(patients, 6, seed=4)
    out = operating_point_metrics(labels, probs, mask > 0, thresholds, weights)
    for j in range(3):
        keep = mask[:, j] > 0
        for d in range(6):
            idx = np.repeat(np.flatnonzero(keep), weights[d, keep].astype(int))
            tn, fp, fn, tp = confusion_matrix(
                labels[idx, j], probs[idx, j] >= thresholds[j], labels=[0, 1]
            ).ravel()
            expected = {
                "tp": tp, "fp": fp, "fn": fn, "tn": tn,
                "sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp),
                "ppv": tp / (tp + fp), "npv": tn / (tn + fn),
                "f1": 2 * tp / (2 * tp + fp + fn),
            }  # fmt: skip
            for name, value in expected.items():
                assert out[name][d, j] == pytest.approx(value, abs=1e-12), (name, d, j)


def test_summary_intervals_and_classes_without_values():
    labels, probs, patients = data(n=600, k=4)
    probs[:, 2] = np.minimum(probs[:, 2], 0.9)
    mask = np.ones_like(labels)
    mask[:, 3] = 0
    thresholds = {"a": 0.5, "b": None, "c": 0.95, "d": 0.5}
    out = operating_point_summary(
        labels, probs, mask, list("abcd"), thresholds, patients, num_draws=200
    )
    a = out["classes"]["a"]
    assert a["reason"] is None and a["threshold"] == 0.5
    assert a["positives"] == labels[:, 0].sum() and a["negatives"] == (1 - labels[:, 0]).sum()
    assert a["predicted_positive"] == (probs[:, 0] >= 0.5).sum()
    sens, spec = rates(probs[:, 0], labels[:, 0], 0.5)
    assert a["sensitivity"]["value"] == pytest.approx(sens)
    assert a["specificity"]["value"] == pytest.approx(spec)
    for metric in ("sensitivity", "specificity", "ppv", "npv", "f1"):
        lo, hi = a[metric]["ci"]
        assert lo < a[metric]["value"] < hi and a[metric]["undefined_draws"] == 0
    b = out["classes"]["b"]
    assert b["threshold"] is None and "no threshold" in b["reason"]
    assert b["sensitivity"] == {"value": None, "ci": None, "undefined_draws": 200}
    # Nothing scores >= 0.95: PPV has no denominator, the rest are defined.
    c = out["classes"]["c"]
    assert c["predicted_positive"] == 0 and c["ppv"]["value"] is None
    assert c["sensitivity"]["value"] == 0.0 and c["specificity"]["value"] == 1.0
    assert out["classes"]["d"]["reason"] == "no unmasked test examples"
    json.dumps(out)
    with pytest.raises(ValueError, match="thresholds: no entry for class"):
        operating_point_summary(labels, probs, mask, list("abcd"), {"a": 0.5}, num_draws=2)


def brute_sensitivity_at(probs, labels, specificity):
    """Largest sensitivity over every threshold (each score, and above them all) whose
    specificity tn / (tn + fp) is at least ``specificity``."""
    best = 0.0
    for t in np.r_[np.unique(probs), np.inf]:
        tn, fp, fn, tp = counts(probs, labels, t)
        if tn / (tn + fp) >= specificity:
            best = max(best, tp / (tp + fn))
    return best


def test_sensitivity_at_specificity_equals_a_scan_of_each_resampled_roc():
    labels, probs, patients = data(n=200, seed=5)
    weights = patient_draw_weights(patients, 5, seed=6)
    specificities = (0.8, 0.9, 0.95)
    for j in range(3):
        p, y = probs[:, j], labels[:, j]
        out = sensitivity_at_specificity(p, y, weights, specificities)
        for d in range(5):
            idx = np.repeat(np.arange(len(p)), weights[d].astype(int))
            for i, s in enumerate(specificities):
                expected = brute_sensitivity_at(p[idx], y[idx], s)
                assert out[d, i] == pytest.approx(expected, abs=1e-12), (j, d, s)
    # Exact ties with the target: 20 negatives, specificity 0.95 allows one false positive
    # (the top negative, 0.9), which lets 0.88 in.
    p = np.r_[np.linspace(0.1, 0.9, 20), [0.5, 0.88, 0.97]]
    y = np.r_[np.zeros(20, int), [1, 1, 1]]
    ones = np.ones((1, len(p)))
    assert sensitivity_at_specificity(p, y, ones, [0.95])[0, 0] == pytest.approx(2 / 3)
    assert brute_sensitivity_at(p, y, 0.95) == pytest.approx(2 / 3)


def test_roc_points_summary():
    labels, probs, patients = data(n=600, k=3)
    labels[:, 2] = 0
    out = roc_points(labels, probs, np.ones_like(labels), list("abc"), (0.9,), patients,
                     num_draws=100)  # fmt: skip
    entry = out["classes"]["a"]["sensitivity_at_specificity"]["0.9"]
    assert entry["value"] == pytest.approx(brute_sensitivity_at(probs[:, 0], labels[:, 0], 0.9))
    assert entry["ci"][0] <= entry["value"] <= entry["ci"][1]
    assert "single label value" in out["classes"]["c"]["reason"]
    assert out["classes"]["c"]["sensitivity_at_specificity"]["0.9"]["value"] is None
    json.dumps(out)
    with pytest.raises(ValueError, match="specificities"):
        roc_points(labels, probs, np.ones_like(labels), list("abc"), (1.0,), num_draws=2)


def test_without_draws_the_values_come_without_intervals():
    rng = np.random.default_rng(0)
    labels = (rng.random((60, 2)) < 0.4).astype(int)
    probs = rng.random((60, 2))
    mask = np.ones_like(labels)
    out = operating_point_summary(
        labels, probs, mask, ["a", "b"], {"a": 0.5, "b": None}, num_draws=0
    )
    assert out["classes"]["a"]["sensitivity"]["ci"] is None
    called = probs[:, 0] >= 0.5
    expected = called[labels[:, 0] == 1].mean()
    assert out["classes"]["a"]["sensitivity"]["value"] == pytest.approx(expected)
