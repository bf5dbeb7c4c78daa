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

import dataclasses

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


def check_table(labels, probs, mask, class_names):
    """``(N, k)`` labels, probs (float64) and mask (bool) as arrays, checked against each
    other and the ``k`` class names: probs finite, labels 0/1 where the mask keeps them (a
    ``ValueError`` names what is wrong). What the calibration and operating-point summaries
    take."""
    labels, probs, mask = np.asarray(labels), np.asarray(probs, np.float64), np.asarray(mask)
    if probs.ndim != 2:
        raise ValueError(f"probs must be (N, k); got shape {probs.shape}.")
    for field, array in (("labels", labels), ("mask", mask)):
        if array.shape != probs.shape:
            raise ValueError(f"{field} has shape {array.shape}, probs {probs.shape}.")
    if len(class_names) != probs.shape[1]:
        raise ValueError(f"class_names: {len(class_names)} names for {probs.shape[1]} classes.")
    if not np.all(np.isfinite(probs)):
        raise ValueError("probs must be finite.")
    mask = mask > 0
    if not np.all(np.isin(labels[mask], (0, 1))):
        raise ValueError("labels must be 0 or 1 where the mask keeps them.")
    return labels, probs, mask


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


@dataclasses.dataclass(frozen=True)
class DrawAUCs:
    """One model's AUCs in a fold-stratified, two-level bootstrap (:func:`stratified_draw_aucs`).

    ``fold_point`` ``(S, F, k)``: each training seed's AUC on each fold's test set as given;
    ``fold_draws`` ``(D, S, F, k)``: the same under each draw's patient weights. ``point``
    ``(k,)``: the mean over seeds of the mean over folds of ``fold_point``; ``draws``
    ``(D, k)``: per draw, the mean over that draw's picked seeds (with one seed, that seed)
    of the mean over folds of ``fold_draws``. A fold where a class has a single label
    value (as given, or in a draw) is left out of that class's mean over folds; NaN where
    no fold is left."""

    point: np.ndarray
    draws: np.ndarray
    fold_point: np.ndarray
    fold_draws: np.ndarray


def _fold_mean(values) -> np.ndarray:
    """``(..., F, k)`` -> ``(..., k)``: per class, the mean over the folds where it is defined."""
    return _class_mean(np.moveaxis(values, -2, -1))


def _check_folds(folds, num_classes: int) -> None:
    for f, fold in enumerate(folds):
        labels, mask = np.shape(fold["labels"]), np.shape(fold["mask"])
        if len(labels) != 2 or labels[1] != num_classes:
            raise ValueError(f"fold {f}: labels have shape {labels}, not (N, {num_classes}).")
        if mask != labels:
            raise ValueError(f"fold {f}: mask has shape {mask}, labels {labels}.")
        if np.shape(fold["patient_ids"]) != labels[:1]:
            raise ValueError(
                f"fold {f}: patient_ids have shape {np.shape(fold['patient_ids'])}, "
                f"not ({labels[0]},) as its labels."
            )


def _check_models(models: dict, folds) -> int:
    """The number of training seeds every model has; ValueError naming the model, seed and
    fold whose predictions do not fit."""
    if not models:
        raise ValueError("models is empty: nothing to score.")
    first = next(iter(models))
    num_seeds = len(models[first])
    for name, by_seed in models.items():
        if len(by_seed) != num_seeds or not by_seed:
            raise ValueError(
                f"model {name!r} has {len(by_seed)} training seeds, model {first!r} has "
                f"{num_seeds}: every model needs the same (at least one)."
            )
        for s, by_fold in enumerate(by_seed):
            if len(by_fold) != len(folds):
                raise ValueError(
                    f"model {name!r}, seed {s}: predictions for {len(by_fold)} folds, "
                    f"not {len(folds)}."
                )
            for f, (probs, fold) in enumerate(zip(by_fold, folds, strict=True)):
                if np.shape(probs) != np.shape(fold["labels"]):
                    raise ValueError(
                        f"model {name!r}, seed {s}, fold {f}: probs have shape "
                        f"{np.shape(probs)}, the fold's labels {np.shape(fold['labels'])}."
                    )
    return num_seeds


def stratified_draw_aucs(
    folds, models: dict, *, num_draws: int = 1000, seed: int = 0
) -> dict[object, DrawAUCs]:
    """:class:`DrawAUCs` of every model (``{name: [seed: [fold: (N_f, k) probs]]}``) on
    ``folds`` (``[{"labels", "mask", "patient_ids"}]``, as :func:`stratified_bootstrap`).

    Draw ``d`` resamples the patients within each fold (:func:`fold_draw_weights` of
    ``seed``) and, with two or more training seeds, picks as many seeds with replacement
    (:func:`seed_draws` of ``seed``); every model gets the same draws, so differences are
    paired. Each (model, seed, fold, class) is scored on all draws once."""
    if not folds:
        raise ValueError("folds is empty: nothing to score.")
    num_classes = np.shape(folds[0]["labels"])[-1]
    _check_folds(folds, num_classes)
    num_seeds = _check_models(models, folds)
    weights = fold_draw_weights([f["patient_ids"] for f in folds], num_draws, seed)
    picks = seed_draws(num_seeds, num_draws, seed) if num_seeds > 1 else None
    # Every model's and seed's predictions of a fold stacked, (M * S, N_f, k): each (fold,
    # class) selects its examples and transposes its weights once for all of them.
    point, draws = [], []
    for f, fold in enumerate(folds):
        probs = np.stack([by_fold[f] for by_seed in models.values() for by_fold in by_seed])
        point.append(_stacked_point(fold, probs))
        draws.append(_stacked_draws(fold, probs, weights[f]))
    point, draws = np.stack(point, -2), np.stack(draws, -2)  # (M * S, F, k), (D, M * S, F, k)
    out = {}
    for m, name in enumerate(models):
        fold_point = point[m * num_seeds : (m + 1) * num_seeds]
        fold_draws = draws[:, m * num_seeds : (m + 1) * num_seeds]
        per_seed = _fold_mean(fold_draws)  # (D, S, k)
        if picks is not None:
            per_seed = np.take_along_axis(per_seed, picks[:, :, None], axis=1)
        out[name] = DrawAUCs(
            point=_class_mean(_fold_mean(fold_point).T),
            draws=_class_mean(np.moveaxis(per_seed, 1, -1)),
            fold_point=fold_point,
            fold_draws=fold_draws,
        )
    return out


def _stacked_point(fold, probs) -> np.ndarray:
    """``(P, k)`` point AUCs of ``(P, N_f, k)`` stacked predictions on ``fold``."""
    return np.stack([point_auc(fold["labels"], p, fold["mask"]) for p in probs])


def _stacked_draws(fold, probs, weights) -> np.ndarray:
    """``(D, P, k)`` AUCs of ``(P, N_f, k)`` stacked predictions on ``fold`` under each row
    of ``(D, N_f)`` weights."""
    labels, mask = np.asarray(fold["labels"]), np.asarray(fold["mask"])
    by_example = np.ascontiguousarray(weights.T)
    out = np.empty((weights.shape[0], len(probs), labels.shape[1]))
    for j in range(labels.shape[1]):
        keep = mask[:, j] > 0
        rows = by_example[keep]
        for i, p in enumerate(probs):
            out[:, i, j] = _auc_of_columns(p[keep, j], labels[keep, j], rows)
    return out


def stratified_bootstrap(
    folds,
    models: dict,
    class_names,
    *,
    pairs=(),
    num_draws: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[dict, dict]:
    """The mean over folds of each fold model's test AUC, with a fold-stratified, paired
    patient bootstrap and, with two or more training seeds, the seeds resampled too.

    Args:
      folds: one ``{"labels", "mask", "patient_ids"}`` per fold: ``(N_f, k)`` 0/1 labels,
        ``(N_f, k)`` mask (0: the label is left out of that class), ``(N_f,)`` patients.
      models: ``{name: [seed: [fold: (N_f, k) probs]]}``; every model has the same S
        training seeds, each scored on the same test examples of each fold.
      class_names: ``k`` names.
      pairs: ``(a, b)`` model names whose difference AUC(a) - AUC(b) to summarise.
      num_draws, seed, level: the bootstrap's draws, their seed and the intervals' level.

    A class's AUC is the mean over seeds of the mean over folds of that seed's fold AUCs
    (a fold where the class has a single label value is left out of its mean); the mean
    AUC is the mean over the defined classes. Draw ``d`` (:func:`stratified_draw_aucs`)
    resamples the patients within each fold and picks S seeds with replacement (with
    S >= 2), the same for every model, and gives the same mean over its picked seeds.

    Returns ``(aucs, differences)``. ``aucs[name]``: :func:`bootstrap_auc`'s dict, with
    per class also ``per_fold`` (the fold's AUC averaged over seeds, or None) and
    ``per_seed`` (the seed's mean over folds, or None), and ``per_seed_mean`` (each seed's
    mean over classes), ``num_folds``, ``num_seeds`` and ``covers`` (what the intervals
    resample, in words). ``differences[(a, b)]``: :func:`paired_auc_difference`'s dict,
    with per class and for the mean also ``folds_positive`` (folds whose difference,
    averaged over seeds, is > 0; for the mean, a fold's mean over the classes defined in
    it), ``folds_defined`` and ``per_seed`` (each seed's difference), and ``covers``.
    """
    for a, b in pairs:
        if a not in models or b not in models:
            raise ValueError(f"pairs: ({a!r}, {b!r}) names a model not in models.")
    num_classes = np.shape(folds[0]["labels"])[-1] if folds else len(class_names)
    if len(class_names) != num_classes:
        raise ValueError(f"class_names: {len(class_names)} names for {num_classes} classes.")
    scored = stratified_draw_aucs(folds, models, num_draws=num_draws, seed=seed)
    num_seeds = len(next(iter(models.values())))
    covers = _covers(level, len(folds), num_seeds, num_draws)
    aucs = {
        name: {
            **_stratified_auc_summary(s, class_names, num_draws, level),
            "num_folds": len(folds),
            "num_seeds": num_seeds,
            "covers": covers,
        }
        for name, s in scored.items()
    }
    differences = {
        (a, b): {
            **_stratified_pair_summary(scored[a], scored[b], class_names, num_draws, level),
            "covers": f"{covers}, the same for both models",
        }
        for a, b in pairs
    }
    return aucs, differences


def _covers(level: float, num_folds: int, num_seeds: int, num_draws: int) -> str:
    folds = f"{num_folds} fold{'s' if num_folds != 1 else ''}"
    seeds = (
        f" and {num_seeds} training seeds resampled with replacement"
        if num_seeds > 1
        else " (one training seed: no seed variation)"
    )
    return (
        f"{100 * level:g} % intervals: test patients resampled within each of {folds}"
        f"{seeds}; {num_draws} draws"
    )


def _floats(values) -> list:
    return [None if np.isnan(v) else float(v) for v in values]


def _stratified_auc_summary(scored: DrawAUCs, class_names, num_draws: int, level: float):
    out = _auc_summary((scored.point, scored.draws), class_names, num_draws, level)
    per_fold = _class_mean(np.moveaxis(scored.fold_point, 0, -1))  # (F, k), over seeds
    per_seed = _fold_mean(scored.fold_point)  # (S, k)
    for j, name in enumerate(class_names):
        out["classes"][name]["per_fold"] = _floats(per_fold[:, j])
        out["classes"][name]["per_seed"] = _floats(per_seed[:, j])
    out["per_seed_mean"] = _floats(_class_mean(per_seed))
    return out


def _stratified_pair_summary(a: DrawAUCs, b: DrawAUCs, class_names, num_draws, level):
    out = _pair_summary((a.point, a.draws), (b.point, b.draws), class_names, num_draws, level)
    by_fold = _class_mean(np.moveaxis(a.fold_point - b.fold_point, 0, -1))  # (F, k)
    by_seed = _fold_mean(a.fold_point) - _fold_mean(b.fold_point)  # (S, k)
    for j, name in enumerate(class_names):
        out["classes"][name].update(_fold_signs(by_fold[:, j]), per_seed=_floats(by_seed[:, j]))
    out["mean"].update(_fold_signs(_class_mean(by_fold)), per_seed=_floats(_class_mean(by_seed)))
    return out


def _fold_signs(by_fold) -> dict:
    """How many folds' differences are positive, of how many defined."""
    defined = by_fold[~np.isnan(by_fold)]
    return {"folds_positive": int(np.sum(defined > 0)), "folds_defined": int(defined.size)}
