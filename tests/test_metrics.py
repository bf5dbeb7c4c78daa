"""Bootstrap AUC against sklearn, draw by draw."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from chestattn_jax.metrics import (
    bootstrap_auc,
    bootstrap_models,
    paired_auc_difference,
    patient_draw_weights,
    weighted_auc,
)


def data(n=300, k=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, k)) < 0.3).astype(int)
    # Rounded scores: many ties.
    probs = np.round(np.clip(0.3 * labels + rng.random((n, k)) * 0.8, 0, 1), 1)
    patients = rng.integers(0, n // 3, n).astype(str)
    return labels, probs, patients


def test_each_draw_equals_sklearn_on_the_resampled_examples():
    labels, probs, patients = data()
    weights = patient_draw_weights(patients, 20, seed=1)
    for j in range(labels.shape[1]):
        aucs = weighted_auc(probs[:, j], labels[:, j], weights)
        for d in range(20):
            idx = np.repeat(np.arange(len(labels)), weights[d].astype(int))
            expected = roc_auc_score(labels[idx, j], probs[idx, j])
            assert aucs[d] == pytest.approx(expected, abs=1e-12)
    full = weighted_auc(probs[:, 0], labels[:, 0], np.ones((1, len(labels))))[0]
    assert full == pytest.approx(roc_auc_score(labels[:, 0], probs[:, 0]), abs=1e-12)


def test_patients_are_resampled_whole():
    patients = np.array(["a", "a", "b", "c", "c", "c"])
    w = patient_draw_weights(patients, 50, seed=0)
    assert np.all(w[:, 0] == w[:, 1]) and np.all(w[:, 3] == w[:, 5])
    # Each draw picks 3 patients: the weight per patient sums to 3.
    np.testing.assert_array_equal(w[:, 0] + w[:, 2] + w[:, 3], 3)


def test_intervals_contain_the_estimate_and_shrink_with_more_data():
    small = bootstrap_auc(*data(n=150)[:2], np.ones((150, 3)), ["a", "b", "c"], num_draws=300)
    labels, probs, _ = data(n=3000)
    large = bootstrap_auc(labels, probs, np.ones_like(labels), ["a", "b", "c"], num_draws=300)
    for name in "abc":
        lo, hi = large["classes"][name]["ci"]
        assert lo <= large["classes"][name]["auc"] <= hi
        slo, shi = small["classes"][name]["ci"]
        assert hi - lo < 0.6 * (shi - slo)
    assert large["mean_ci"][0] <= large["mean_auc"] <= large["mean_ci"][1]


def test_single_valued_draws_are_counted_not_averaged():
    labels = np.zeros((40, 2), int)
    labels[0, 0] = 1  # one positive: many draws miss it
    labels[:20, 1] = 1
    probs = np.random.default_rng(0).random((40, 2))
    out = bootstrap_auc(labels, probs, np.ones_like(labels), ["rare", "common"], num_draws=200)
    assert 0 < out["classes"]["rare"]["undefined_draws"] < 200
    assert out["classes"]["common"]["undefined_draws"] == 0
    assert not np.isnan(out["mean_ci"]).any()
    masked = bootstrap_auc(labels, probs, np.zeros_like(labels), ["rare", "common"], num_draws=10)
    assert masked["classes"]["rare"]["auc"] is None and masked["mean_auc"] is None


def test_paired_difference_of_a_better_model():
    from chestattn_jax.metrics import paired_auc_difference

    labels, probs, patients = data(n=600)
    rng = np.random.default_rng(5)
    good = np.clip(labels * 0.6 + rng.random(labels.shape) * 0.5, 0, 1)
    out = paired_auc_difference(
        labels, good, probs, np.ones_like(labels), ["a", "b", "c"], patients, num_draws=300
    )
    for name in "abc":
        d = out["classes"][name]
        expected = roc_auc_score(
            labels[:, "abc".index(name)], good[:, "abc".index(name)]
        ) - roc_auc_score(labels[:, "abc".index(name)], probs[:, "abc".index(name)])
        assert d["difference"] == pytest.approx(expected, abs=1e-12)
        assert d["ci"][0] > 0 and d["p_not_better"] < 0.05
    same = paired_auc_difference(
        labels, probs, probs, np.ones_like(labels), ["a", "b", "c"], patients, num_draws=50
    )
    assert same["mean"]["difference"] == 0 and same["mean"]["ci"] == [0.0, 0.0]


def test_point_auc_is_sklearns_with_ties_and_masks():
    from chestattn_jax.metrics import point_auc

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, (300, 4))
    probs = np.round(rng.random((300, 4)), 2)  # many ties
    mask = rng.random((300, 4)) > 0.2
    labels[:, 3] = 1  # one class with a single label value: no AUC
    out = point_auc(labels, probs, mask)
    for j in range(3):
        keep = mask[:, j]
        assert out[j] == pytest.approx(roc_auc_score(labels[keep, j], probs[keep, j]), abs=1e-12)
    assert np.isnan(out[3])


def test_one_table_writer_for_markdown_and_csv():
    import csv
    import io

    from chestattn_jax.reporting.text_tables import csv_text, markdown

    header, rows = ["class", "AUC"], [["A", "0.9"], ["B, C", None]]
    assert markdown(header, rows) == "| class | AUC |\n|---|---|\n| A | 0.9 |\n| B, C |  |"
    assert list(csv.reader(io.StringIO(csv_text(header, rows)))) == [header, rows[0], ["B, C", ""]]


def test_bootstrap_models_equals_the_separate_calls():
    """One set of draws for every model and pair gives exactly what bootstrap_auc and
    paired_auc_difference give one at a time: a model's result does not depend on the
    other models scored with it."""
    rng = np.random.default_rng(3)
    n, k = 120, 3
    labels = (rng.random((n, k)) < 0.3).astype(np.int32)
    mask = (rng.random((n, k)) < 0.9).astype(np.int32)
    models = {m: rng.random((n, k)) + 0.5 * labels * m for m in range(3)}
    patients = rng.integers(0, 40, n)
    names = ["a", "b", "c"]
    args, draws = (names, patients), dict(num_draws=50, seed=7)
    aucs, diffs = bootstrap_models(labels, models, mask, *args, **draws, pairs=[(1, 0), (2, 1)])
    for m, probs in models.items():
        assert aucs[m] == bootstrap_auc(labels, probs, mask, *args, **draws)
    for a, b in [(1, 0), (2, 1)]:
        expected = paired_auc_difference(labels, models[a], models[b], mask, *args, **draws)
        assert diffs[(a, b)] == expected
