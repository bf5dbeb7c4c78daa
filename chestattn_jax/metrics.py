"""ROC AUC with patient-level bootstrap confidence intervals, vectorised over draws.

A bootstrap draw resamples patients with replacement; an example then counts as
many times as its patient was drawn. The AUC of a draw is the weighted AUC

    AUC = Σ_g P_g (N_<g + N_g / 2) / (P N)

over the groups g of tied scores (P_g, N_g: drawn positive and negative weight
with that score; N_<g: negative weight below it), which is exactly what
``sklearn.metrics.roc_auc_score`` gives on the resampled examples (ties count
one half). Sorting happens once per class; each draw is then a prefix sum over
the negatives (summed between consecutive positive scores) and a weighted sum over
the positives, all draws at once.
"""

from __future__ import annotations

import numpy as np


def patient_draw_weights(patient_ids, num_draws: int, seed: int = 0) -> np.ndarray:
    """``(num_draws, N)`` float32 multiplicities of each example in each draw.

    ``patient_ids``: ``(N,)``. Each draw samples as many patients as there are,
    with replacement, and every example of a drawn patient counts once per draw.
    """
    _, patient = np.unique(np.asarray(patient_ids, dtype=str), return_inverse=True)
    num_patients = patient.max() + 1
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, num_patients, size=(num_draws, num_patients))
    flat = (picks + num_patients * np.arange(num_draws)[:, None]).ravel()
    counts = np.bincount(flat, minlength=num_draws * num_patients)
    return counts.reshape(num_draws, num_patients).astype(np.float32)[:, patient]


def fold_draw_weights(patient_ids_by_fold, num_draws: int, seed: int = 0) -> list[np.ndarray]:
    """Fold-stratified patient draws: one ``(num_draws, N_f)`` array per fold, as
    :func:`patient_draw_weights` gives, each fold resampling its own patients (as many as
    it has) with its own stream of ``seed``. Draw ``d`` of every fold belongs together:
    the report scores draw ``d`` of each fold with that fold's model and averages."""
    streams = np.random.SeedSequence(seed).spawn(len(patient_ids_by_fold))
    return [
        patient_draw_weights(ids, num_draws, np.random.default_rng(s).integers(2**32))
        for ids, s in zip(patient_ids_by_fold, streams, strict=True)
    ]


def seed_draws(num_seeds: int, num_draws: int, seed: int = 0) -> np.ndarray:
    """``(num_draws, num_seeds)`` indices of training seeds drawn with replacement, as many
    as there are, per draw: the outer level of a two-level bootstrap (seeds, then patients),
    so that an interval also covers what changes with the training seed. Its stream is
    ``seed``'s, apart from the patients' (:func:`fold_draw_weights`)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    return rng.integers(0, num_seeds, size=(num_draws, num_seeds))


def weighted_auc(scores, labels, weights) -> np.ndarray:
    """AUC of ``(N,)`` scores and 0/1 labels under each row of ``(D, N)`` weights.

    Returns ``(D,)`` float64; NaN where a draw has no positive or no negative weight.
    Each positive reads the negative weight strictly below its score and below-or-tied
    with it: prefix sums, per draw, of the negatives' weight between consecutive positive
    scores.
    """
    weights = np.atleast_2d(np.asarray(weights))
    if not np.issubdtype(weights.dtype, np.floating):
        weights = weights.astype(np.float64)
    return _auc_of_columns(scores, labels, np.ascontiguousarray(weights.T))


def _auc_of_columns(scores, labels, by_example) -> np.ndarray:
    """:func:`weighted_auc` with the weights given as ``(N, D)`` float, one row per example:
    taking the negatives in score order then copies whole rows, several times faster than
    picking columns, and a caller scoring many score vectors transposes once."""
    scores = np.asarray(scores)
    labels = np.asarray(labels).astype(bool)
    neg_scores = scores[~labels]
    order = np.argsort(neg_scores, kind="stable")
    neg_sorted = neg_scores[order]
    pos_scores = scores[labels]
    below = np.searchsorted(neg_sorted, pos_scores, side="left")
    below_or_tied = np.searchsorted(neg_sorted, pos_scores, side="right")
    # The cumulative negative weight C[i] of the i lowest negatives is read only at these
    # cuts (and at all of them, for the total): sum the negatives between cuts, then
    # prefix-sum the segments, far fewer than the negatives for a rare class. Integer
    # multiplicities stay exact in float32 far beyond any data set's size.
    cuts = np.unique(np.concatenate([below, below_or_tied, [order.size]]))
    cuts = cuts[cuts > 0]  # C[0] = 0
    cum = np.zeros((by_example.shape[1], cuts.size + 1), by_example.dtype)  # (D, 1 + cuts)
    if cuts.size:
        starts = np.concatenate([[0], cuts[:-1]])
        segments = np.add.reduceat(by_example[np.flatnonzero(~labels)[order]], starts, axis=0)
        np.cumsum(segments.T, axis=1, out=cum[:, 1:])
    # Ties count one half: (C[below] + C[below_or_tied]) / 2 per positive.
    credit = cum[:, np.searchsorted(cuts, below, side="right")].astype(np.float64)
    credit += cum[:, np.searchsorted(cuts, below_or_tied, side="right")]
    w_pos = by_example[labels].T.astype(np.float64)
    total_pos, total_neg = w_pos.sum(1), cum[:, -1].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = 0.5 * np.einsum("dn,dn->d", w_pos, credit) / (total_pos * total_neg)
    auc[(total_pos == 0) | (total_neg == 0)] = np.nan
    return auc


def point_auc(labels, probs, mask) -> np.ndarray:
    """``(k,)`` ROC AUC of each class over its unmasked examples (equal to
    ``sklearn.metrics.roc_auc_score``); NaN where a class has a single label value.
    The library's one point-AUC code path: evaluation, validation and the bootstrap."""
    labels, probs, mask = np.asarray(labels), np.asarray(probs), np.asarray(mask)
    out = []
    for j in range(labels.shape[1]):
        keep = mask[:, j] > 0
        out.append(weighted_auc(probs[keep, j], labels[keep, j], np.ones((1, keep.sum())))[0])
    return np.asarray(out)


def per_class_auc(labels, probs, mask, class_names) -> dict:
    """ROC AUC of each class over its unmasked examples (:func:`point_auc`), and their
    mean: what evaluation, validation during training and the experiment report's folds
    record.

    A class whose unmasked labels are all 0 or all 1 has no AUC: it is reported
    as ``None`` and listed in ``undefined_classes``, and the mean is over the others.
    """
    aucs = point_auc(labels, probs, mask)
    per_class = {
        name: None if np.isnan(a) else float(a) for name, a in zip(class_names, aucs, strict=True)
    }
    undefined = [name for name, v in per_class.items() if v is None]
    defined = [v for v in per_class.values() if v is not None]
    return {
        "auc": per_class,
        "mean_auc": float(np.mean(defined)) if defined else None,
        "undefined_classes": undefined,
    }


def _aucs(labels, probs, mask, draws):
    """Per-class AUC on the data as given ``(k,)`` and on every draw ``(D, k)``; NaN where
    a class has a single label value."""
    per_draw = []
    for j in range(labels.shape[1]):
        keep = mask[:, j] > 0
        per_draw.append(weighted_auc(probs[keep, j], labels[keep, j], draws[:, keep]))
    return point_auc(labels, probs, mask), np.stack(per_draw, axis=1)


def _class_mean(values) -> np.ndarray:
    """Mean over the last axis of the defined (non-NaN) entries; NaN if none is."""
    values = np.atleast_1d(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nansum(values, axis=-1) / np.sum(~np.isnan(values), axis=-1)


def _interval(values, alpha: float):
    """Percentile interval of the non-NaN ``values``, or None."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    return [float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))]


def _setup(labels, mask, patient_ids, num_draws, seed):
    labels, mask = np.asarray(labels), np.asarray(mask)
    ids = np.arange(labels.shape[0]) if patient_ids is None else patient_ids
    return labels, mask, patient_draw_weights(ids, num_draws, seed)


def bootstrap_auc(labels, probs, mask, class_names, patient_ids=None, **bootstrap) -> dict:
    """Per-class and mean AUC with percentile bootstrap intervals over patients.

    Args:
      labels, probs, mask: ``(N, k)``; masked-out labels (0) are left out of that class.
      class_names: ``k`` names.
      patient_ids: ``(N,)``; without them every example is its own patient.
      **bootstrap: ``num_draws`` (1000), ``seed`` (0), ``level`` (0.95), as
        :func:`bootstrap_models` takes them.

    Returns a dict with, per class, ``auc`` (on the data as given), ``ci``
    ``[low, high]`` and ``undefined_draws`` (draws where the class had a single label
    value: they are left out of its interval, not averaged in as NaN), and the same
    for the mean over classes (``mean_auc``, ``mean_ci``; a draw's mean is over the
    classes defined in that draw).
    """
    aucs, _ = bootstrap_models(labels, {0: probs}, mask, class_names, patient_ids, **bootstrap)
    return aucs[0]


def _auc_summary(scored, class_names, num_draws: int, level: float) -> dict:
    """:func:`bootstrap_auc`'s dict from ``_aucs``' ``(point, per_draw)``."""
    point, per_draw = scored
    alpha = (1.0 - level) / 2.0
    per_class = {
        name: {
            "auc": None if np.isnan(point[j]) else float(point[j]),
            "ci": _interval(per_draw[:, j], alpha),
            "undefined_draws": int(np.isnan(per_draw[:, j]).sum()),
        }
        for j, name in enumerate(class_names)
    }
    mean = _class_mean(point)[()]
    return {
        "classes": per_class,
        "mean_auc": None if np.isnan(mean) else float(mean),
        "mean_ci": _interval(_class_mean(per_draw), alpha),
        "num_draws": num_draws,
        "level": level,
    }


def paired_auc_difference(
    labels, probs_a, probs_b, mask, class_names, patient_ids=None, **bootstrap
) -> dict:
    """AUC(a) - AUC(b) per class and for the mean, with a paired patient bootstrap.

    Both models are scored on the same draws of the same test split, so the
    interval reflects the difference between the models, not the test-set noise
    each carries alone. ``p_not_better`` is the fraction of draws with a
    difference <= 0 (a one-sided bootstrap p-value for "a beats b"). ``**bootstrap``:
    as :func:`bootstrap_auc`'s.
    """
    models = {"a": probs_a, "b": probs_b}
    pairs = [("a", "b")]
    _, differences = bootstrap_models(
        labels, models, mask, class_names, patient_ids, pairs=pairs, **bootstrap
    )
    return differences[("a", "b")]


def bootstrap_models(
    labels,
    models: dict,
    mask,
    class_names,
    patient_ids=None,
    num_draws: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    pairs=(),
) -> tuple[dict, dict]:
    """:func:`bootstrap_auc` of every model (``{name: probs}``) and
    :func:`paired_auc_difference` of every ``(a, b)`` in ``pairs``: the same results, from
    one set of patient draws and each model's per-draw AUCs computed once (the costly
    part: a pair no longer scores both its models again)."""
    labels, mask, draws = _setup(labels, mask, patient_ids, num_draws, seed)
    scored = {name: _aucs(labels, np.asarray(p), mask, draws) for name, p in models.items()}
    aucs = {name: _auc_summary(scored[name], class_names, num_draws, level) for name in models}
    differences = {
        (a, b): _pair_summary(scored[a], scored[b], class_names, num_draws, level) for a, b in pairs
    }
    return aucs, differences


def _pair_summary(scored_a, scored_b, class_names, num_draws: int, level: float) -> dict:
    """:func:`paired_auc_difference`'s dict from two models' ``(point, per_draw)``."""
    alpha = (1.0 - level) / 2.0
    point, per_draw = scored_a[0] - scored_b[0], scored_a[1] - scored_b[1]
    return {
        "classes": {
            name: _difference_summary(point[j], per_draw[:, j], alpha)
            for j, name in enumerate(class_names)
        },
        "mean": _difference_summary(_class_mean(point)[()], _class_mean(per_draw), alpha),
        "num_draws": num_draws,
        "level": level,
    }


def _difference_summary(point, draws, alpha) -> dict:
    ci = _interval(draws, alpha)
    if np.isnan(point) or ci is None:
        return {"difference": None, "ci": None, "p_not_better": None}
    defined = draws[~np.isnan(draws)]
    return {
        "difference": float(point),
        "ci": ci,
        "p_not_better": float(np.mean(defined <= 0)),
    }
