"""Bootstrap AUC against sklearn, draw by draw."""

import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from chestattn_jax.metrics import (
    bootstrap_auc,
    bootstrap_models,
    fold_draw_weights,
    paired_auc_difference,
    patient_draw_weights,
    seed_draws,
    stratified_bootstrap,
    stratified_draw_aucs,
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


# Fold-stratified, two-level bootstrap (stratified_bootstrap): checked against sklearn on
# explicitly resampled folds and against brute-force means over folds and seeds.


def stratified_folds(num_folds=3, n=60, k=4, seed=0):
    """Folds with masked labels, several images per patient, class 3 all negative in fold 1
    (undefined there) and a single positive of class 2 in fold 2 (undefined in some draws)."""
    rng = np.random.default_rng(seed)
    folds = []
    for f in range(num_folds):
        labels = (rng.random((n, k)) < 0.35).astype(int)
        mask = (rng.random((n, k)) < 0.85).astype(int)
        patients = np.char.add(f"{f}-", rng.integers(0, n // 3, n).astype(str))
        folds.append({"labels": labels, "mask": mask, "patient_ids": patients})
    folds[1]["labels"][:, 3] = 0
    folds[2]["labels"][:, 2] = 0
    folds[2]["labels"][0, 2] = folds[2]["mask"][0, 2] = 1
    return folds


def stratified_probs(folds, strength, seed):
    """One training seed's predictions per fold, rounded to one decimal: many ties."""
    rng = np.random.default_rng(seed)
    return [np.round(strength * f["labels"] + rng.random(f["labels"].shape), 1) for f in folds]


def sklearn_fold_auc(fold, probs, weights=None):
    """``(k,)`` sklearn AUC per class on the fold with every example repeated as often as
    ``weights`` says; NaN where the (resampled, unmasked) labels are single-valued."""
    n, k = fold["labels"].shape
    idx = np.arange(n) if weights is None else np.repeat(np.arange(n), weights.astype(int))
    out = np.full(k, np.nan)
    for j in range(k):
        keep = idx[fold["mask"][idx, j] > 0]
        y = fold["labels"][keep, j]
        if 0 < y.sum() < y.size:
            out[j] = roc_auc_score(y, probs[keep, j])
    return out


def nanmean(values, axis):
    """np.nanmean, NaN without a warning where every value is NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def two_models(folds, num_seeds):
    return {
        "good": [stratified_probs(folds, 0.6, 10 + s) for s in range(num_seeds)],
        "weak": [stratified_probs(folds, 0.2, 20 + s) for s in range(num_seeds)],
    }


def test_stratified_draws_equal_sklearn_on_each_folds_resampled_patients():
    folds, num_draws, seed = stratified_folds(), 8, 5
    models = two_models(folds, num_seeds=2)
    weights = fold_draw_weights([f["patient_ids"] for f in folds], num_draws, seed)
    picks = seed_draws(2, num_draws, seed)
    assert (picks[:, 0] == picks[:, 1]).any()  # some draws pick one seed twice
    scored = stratified_draw_aucs(folds, models, num_draws=num_draws, seed=seed)
    one_seed = stratified_draw_aucs(
        folds, {m: p[:1] for m, p in models.items()}, num_draws=num_draws, seed=seed
    )
    for name, by_seed in models.items():
        # (D, S, F, k) sklearn AUC of each seed's model on each fold's resampled examples.
        expected = np.array(
            [
                [
                    [
                        sklearn_fold_auc(f, p, w[d])
                        for f, p, w in zip(folds, probs, weights, strict=True)
                    ]
                    for probs in by_seed
                ]
                for d in range(num_draws)
            ]
        )
        assert np.isnan(expected[:, :, 1, 3]).all()  # undefined in fold 1 throughout
        assert np.isnan(expected[:, :, 2, 2]).any() and not np.isnan(expected[:, :, 2, 2]).all()
        np.testing.assert_allclose(scored[name].fold_draws, expected, rtol=0, atol=1e-12)
        by_seed_mean = nanmean(expected, axis=2)  # (D, S, k): each seed's mean over folds
        picked = by_seed_mean[np.arange(num_draws)[:, None], picks]  # (D, S, k)
        np.testing.assert_allclose(scored[name].draws, picked.mean(1), rtol=0, atol=1e-12)
        np.testing.assert_allclose(one_seed[name].draws, by_seed_mean[:, 0], rtol=0, atol=1e-12)


def test_stratified_point_estimates_and_paired_differences_by_brute_force():
    folds, names = stratified_folds(seed=1), ["a", "b", "c", "d"]
    models = two_models(folds, num_seeds=2)
    draws = dict(num_draws=40, seed=3)
    aucs, diffs = stratified_bootstrap(folds, models, names, pairs=[("good", "weak")], **draws)
    scored = stratified_draw_aucs(folds, models, **draws)
    # (S, F, k) sklearn AUC of each seed's model on each fold as given.
    fold_auc = {
        m: np.array(
            [[sklearn_fold_auc(f, p) for f, p in zip(folds, ps, strict=True)] for ps in by_seed]
        )
        for m, by_seed in models.items()
    }
    for m, out in aucs.items():
        per_seed = nanmean(fold_auc[m], axis=1)  # (S, k)
        for j, c in enumerate(names):
            assert out["classes"][c]["auc"] == pytest.approx(per_seed[:, j].mean(), abs=1e-12)
            assert out["classes"][c]["per_seed"] == pytest.approx(per_seed[:, j], abs=1e-12)
            fold_means = fold_auc[m][:, :, j].mean(0)
            expected = [None if np.isnan(v) else pytest.approx(v, abs=1e-12) for v in fold_means]
            assert out["classes"][c]["per_fold"] == expected
        assert out["classes"]["d"]["per_fold"][1] is None
        assert out["mean_auc"] == pytest.approx(per_seed.mean(), abs=1e-12)
        assert out["per_seed_mean"] == pytest.approx(per_seed.mean(1), abs=1e-12)
        assert (out["num_folds"], out["num_seeds"], out["num_draws"]) == (3, 2, 40)
    d = diffs[("good", "weak")]
    paired = scored["good"].draws - scored["weak"].draws  # (D, k)
    fold_diff = (fold_auc["good"] - fold_auc["weak"]).mean(0)  # (F, k), averaged over seeds
    seed_diff = nanmean(fold_auc["good"], 1) - nanmean(fold_auc["weak"], 1)  # (S, k)
    for j, c in enumerate(names):
        got = d["classes"][c]
        assert got["difference"] == pytest.approx(
            aucs["good"]["classes"][c]["auc"] - aucs["weak"]["classes"][c]["auc"], abs=1e-12
        )
        defined = paired[:, j][~np.isnan(paired[:, j])]
        assert got["ci"] == pytest.approx(np.quantile(defined, [0.025, 0.975]), abs=1e-12)
        assert got["p_not_better"] == np.mean(defined <= 0)
        assert got["folds_positive"] == sum(v > 0 for v in fold_diff[:, j] if not np.isnan(v))
        assert got["folds_defined"] == sum(not np.isnan(v) for v in fold_diff[:, j])
        assert got["per_seed"] == pytest.approx(seed_diff[:, j], abs=1e-12)
    assert d["classes"]["d"]["folds_defined"] == 2
    mean_by_fold = nanmean(fold_diff, axis=1)
    assert d["mean"]["folds_positive"] == sum(mean_by_fold > 0)
    assert d["mean"]["folds_defined"] == 3
    mean_draws = nanmean(paired, axis=1)
    assert d["mean"]["ci"] == pytest.approx(np.quantile(mean_draws, [0.025, 0.975]), abs=1e-12)
    assert d["mean"]["per_seed"] == pytest.approx(nanmean(seed_diff, 1), abs=1e-12)
    assert "3 folds and 2 training seeds" in aucs["good"]["covers"]


def same_images_folds(num_folds=2, num_patients=3):
    """Every patient of a fold has the same four images (labels 0, 0, 1, 1): any draw of
    patients scales the fold's examples uniformly, so a fold's AUC is the same in every draw."""
    labels = np.tile([[0], [0], [1], [1]], (num_patients, 1))
    patients = np.repeat(np.arange(num_patients), 4).astype(str)
    return [
        {"labels": labels, "mask": np.ones_like(labels), "patient_ids": patients}
        for _ in range(num_folds)
    ]


# Scores of the four images and the AUC they give (ties count one half).
KNOWN_AUCS = {
    1.0: [0.1, 0.2, 0.3, 0.4],
    0.875: [0.1, 0.2, 0.2, 0.4],
    0.75: [0.1, 0.3, 0.2, 0.4],
    0.5: [0.1, 0.4, 0.2, 0.3],
}


def test_seed_level_interval_is_the_quantiles_of_seed_means_drawn_with_replacement():
    folds = same_images_folds()
    # Seed s's AUC on fold f; its mean over folds is 0.9375, 0.8125, 0.625.
    known = np.array([[1.0, 0.875], [0.875, 0.75], [0.75, 0.5]])
    probs = [[np.tile(KNOWN_AUCS[a], 3)[:, None] for a in row] for row in known]
    num_draws, seed = 200, 4
    aucs, diffs = stratified_bootstrap(
        folds,
        {"varied": probs, "fixed": [probs[0]] * 3},
        ["x"],
        pairs=[("varied", "fixed"), ("fixed", "varied"), ("fixed", "fixed")],
        num_draws=num_draws,
        seed=seed,
    )
    seed_means = known.mean(1)
    by_draw = seed_means[seed_draws(3, num_draws, seed)].mean(1)  # (D,)
    out = aucs["varied"]["classes"]["x"]
    assert out["auc"] == pytest.approx(seed_means.mean(), abs=1e-12)
    assert out["ci"] == pytest.approx(np.quantile(by_draw, [0.025, 0.975]), abs=1e-12)
    assert out["per_seed"] == pytest.approx(seed_means, abs=1e-12)
    assert out["per_fold"] == pytest.approx(known.mean(0), abs=1e-12)
    # Identical seeds: no patient noise and no seed variation, a zero-width interval.
    assert aucs["fixed"]["classes"]["x"]["ci"] == pytest.approx([0.9375, 0.9375], abs=1e-12)
    diff = diffs[("varied", "fixed")]["classes"]["x"]
    expected = by_draw - 0.9375
    assert diff["ci"] == pytest.approx(np.quantile(expected, [0.025, 0.975]), abs=1e-12)
    assert diff["p_not_better"] == np.mean(expected <= 0)
    assert diff["folds_positive"] == 0 and diff["folds_defined"] == 2
    # A fold counts as positive only where the difference is > 0, not where it is 0.
    assert diffs[("fixed", "varied")]["mean"]["folds_positive"] == 2
    same = diffs[("fixed", "fixed")]["mean"]
    assert (same["folds_positive"], same["folds_defined"], same["p_not_better"]) == (0, 2, 1.0)


def test_identical_seeds_give_the_single_seed_result_and_differing_seeds_widen_it():
    folds, names = stratified_folds(n=150, seed=2), ["a", "b", "c", "d"]
    one = {"m": [stratified_probs(folds, 0.5, 7)], "n": [stratified_probs(folds, 0.3, 8)]}
    three = {m: p * 3 for m, p in one.items()}
    draws = dict(pairs=[("m", "n")], num_draws=100, seed=1)
    aucs1, diffs1 = stratified_bootstrap(folds, one, names, **draws)
    aucs3, diffs3 = stratified_bootstrap(folds, three, names, **draws)
    for m in one:
        for c in names:
            for key in ("auc", "ci", "per_fold"):
                assert aucs3[m]["classes"][c][key] == pytest.approx(
                    aucs1[m]["classes"][c][key], abs=1e-12
                )
        assert aucs3[m]["mean_ci"] == pytest.approx(aucs1[m]["mean_ci"], abs=1e-12)
    for c in names:
        for key in ("difference", "ci", "p_not_better", "folds_positive"):
            assert diffs3[("m", "n")]["classes"][c][key] == pytest.approx(
                diffs1[("m", "n")]["classes"][c][key], abs=1e-12
            )
    assert "no seed variation" in aucs1["m"]["covers"]
    # Seeds of very different skill: the interval over seeds and patients is wider than
    # the patients-only interval of the same per-draw AUCs averaged over all seeds.
    varied = {"m": [stratified_probs(folds, s, 9 + i) for i, s in enumerate((0.1, 0.4, 1.0))]}
    aucs = stratified_bootstrap(folds, varied, names, num_draws=100, seed=1)[0]["m"]
    patients_only = nanmean(
        nanmean(stratified_draw_aucs(folds, varied, num_draws=100, seed=1)["m"].fold_draws, 2), 1
    )  # (D, k): mean over folds, then over every seed
    for j, c in enumerate(names):
        lo, hi = np.quantile(patients_only[:, j], [0.025, 0.975])
        assert np.diff(aucs["classes"][c]["ci"])[0] > 1.5 * (hi - lo)


def test_stratified_bootstrap_names_the_model_or_fold_that_does_not_fit():
    folds = stratified_folds(n=30)
    models = two_models(folds, num_seeds=2)
    names = ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="model 'weak' has 1 training seeds"):
        stratified_bootstrap(folds, {**models, "weak": models["weak"][:1]}, names, num_draws=5)
    bad = [list(models["good"][0]), models["good"][1]]
    bad[0][2] = bad[0][2][:-1]
    with pytest.raises(ValueError, match="model 'good', seed 0, fold 2: probs have shape"):
        stratified_bootstrap(folds, {"good": bad}, names, num_draws=5)
    with pytest.raises(ValueError, match="model 'good', seed 1: predictions for 3 folds, not 2"):
        stratified_bootstrap(folds[:2], {"good": [bad[1][:2], bad[1]]}, names, num_draws=5)
    with pytest.raises(ValueError, match="class_names: 3 names for 4 classes"):
        stratified_bootstrap(folds, models, names[:3], num_draws=5)
    folds[1]["mask"] = folds[1]["mask"][:, :3]
    with pytest.raises(ValueError, match="fold 1: mask has shape"):
        stratified_bootstrap(folds, models, names, num_draws=5)
