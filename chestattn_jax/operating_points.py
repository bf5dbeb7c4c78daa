"""Operating points: thresholds chosen on validation, and what they give on test.

A threshold turns a class's probability into a decision: predicted positive when
``prob >= threshold``. It is chosen per class on the validation split by a rule, and then
scored on the test split, so that the test numbers are not tuned to the test set:

- ``youden``: the threshold maximising sensitivity + specificity - 1 (Youden's J);
- ``sensitivity>=S``: the highest threshold whose sensitivity is at least ``S`` (the best
  specificity that keeps the sensitivity target);
- ``specificity>=S``: the lowest threshold whose specificity is at least ``S`` (the best
  sensitivity that keeps the specificity target).

Candidate thresholds are the distinct validation probabilities, so a threshold is always a
probability the model produced. A class without validation positives or negatives, a
target no candidate meets, or (Youden) scores no better than chance at any candidate gets
no threshold (None) and the reason, never a default.

On test, :func:`operating_point_summary` gives sensitivity, specificity, PPV, NPV and F1
at each class's threshold, and :func:`roc_points` the threshold-free sensitivity at fixed
specificities (the best the test ROC curve offers, the ceiling a validation-chosen
threshold can approach), each with percentile intervals over a patient bootstrap
(:func:`chestattn_jax.metrics.patient_draw_weights`), all draws at once.
"""

from __future__ import annotations

import re

import numpy as np

from chestattn_jax.metrics import _interval, check_table, patient_draw_weights

RULES = ("youden", "sensitivity", "specificity")
METRICS = ("sensitivity", "specificity", "ppv", "npv", "f1")
_RULE = re.compile(r"^\s*(sensitivity|specificity)\s*>=\s*([0-9.eE+-]+)\s*$")


def parse_rule(text) -> tuple[str, float | None]:
    """``(name, S)`` of a threshold rule: ``youden`` gives ``("youden", None)``,
    ``sensitivity>=S`` / ``specificity>=S`` (S in (0, 1)) ``("sensitivity", S)`` /
    ``("specificity", S)``. Raises ValueError naming the rule otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"threshold rule {text!r}: expected a string.")
    if text.strip() == "youden":
        return "youden", None
    match = _RULE.match(text)
    expected = "expected youden, sensitivity>=S or specificity>=S with S in (0, 1)"
    if match is None:
        raise ValueError(f"threshold rule {text!r}: {expected}.")
    try:
        target = float(match.group(2))
    except ValueError:
        raise ValueError(f"threshold rule {text!r}: {expected}.") from None
    if not 0.0 < target < 1.0:
        raise ValueError(f"threshold rule {text!r}: S = {target:g} is not in (0, 1).")
    return match.group(1), target


# ----------------------------------------------------------------- choosing on validation


def choose_threshold(probs, labels, rule) -> dict:
    """The threshold ``rule`` (text for :func:`parse_rule`) picks on one class's
    validation ``probs`` and 0/1 ``labels`` (``(N,)``, unmasked examples only).

    Returns ``rule``, ``threshold`` (a validation probability, or None), ``reason`` (None,
    or why there is no threshold), ``sensitivity`` and ``specificity`` on validation at the
    threshold (None without one), ``positives`` and ``negatives``. Ties: Youden takes the
    highest threshold among those with the largest J (compared exactly, as integers).
    """
    name, target = parse_rule(rule)
    probs, labels = _one_class(probs, labels)
    pos, neg = int(labels.sum()), int(labels.size - labels.sum())
    out = {
        "rule": rule,
        "threshold": None,
        "reason": None,
        "sensitivity": None,
        "specificity": None,
        "positives": pos,
        "negatives": neg,
    }
    if pos == 0 or neg == 0:
        return {**out, "reason": f"no validation {'positives' if pos == 0 else 'negatives'}"}
    values, tp, fp = _counts_at_scores(probs, labels)  # highest threshold first
    sensitivity, specificity = tp / pos, (neg - fp) / neg
    g, reason = _pick(name, target, tp, fp, sensitivity, specificity)
    if reason is not None:
        return {**out, "reason": reason}
    return {
        **out,
        "threshold": float(values[g]),
        "sensitivity": float(sensitivity[g]),
        "specificity": float(specificity[g]),
    }


def _pick(name, target, tp, fp, sensitivity, specificity) -> tuple[int | None, str | None]:
    """The index of the chosen candidate among the distinct scores (highest first), or
    None and why not."""
    if name == "youden":
        pos, neg = tp[-1], fp[-1]
        j_scaled = tp * neg - fp * pos  # J * pos * neg, exact in integers
        g = int(np.argmax(j_scaled))  # the first, highest, of the largest
        if j_scaled[g] <= 0:
            return None, "no threshold does better than chance on validation (largest J is 0)"
        return g, None
    if name == "sensitivity":
        return int(np.argmax(sensitivity >= target)), None  # the last candidate has 1
    meets = np.flatnonzero(specificity >= target)
    if meets.size == 0:
        return None, (
            f"specificity >= {target:g} is met by no validation probability (at the "
            f"highest, {specificity[0]:.4g})"
        )
    return int(meets[-1]), None


def choose_thresholds(labels, probs, mask, class_names, rule) -> dict:
    """:func:`choose_threshold` of every class over its unmasked validation examples:
    ``{class: dict}``; ``{c: d["threshold"] for c, d in ...}`` is what
    :func:`operating_point_summary` takes."""
    labels, probs, mask = _check_table(labels, probs, mask, class_names)
    parse_rule(rule)
    return {
        name: choose_threshold(probs[mask[:, j], j], labels[mask[:, j], j], rule)
        for j, name in enumerate(class_names)
    }


def _counts_at_scores(probs, labels):
    """Distinct scores, highest first, and the positives and negatives scored at least
    each (int64)."""
    order = np.argsort(-probs, kind="stable")
    sorted_probs, sorted_labels = probs[order], labels[order].astype(np.int64)
    last = np.flatnonzero(np.r_[sorted_probs[1:] != sorted_probs[:-1], True])
    tp = np.cumsum(sorted_labels)[last]
    return sorted_probs[last], tp, last + 1 - tp


# ----------------------------------------------------------------- scoring on test


def operating_point_metrics(labels, probs, mask, thresholds, weights) -> dict:
    """Confusion counts and metrics of every class at its threshold under each row of
    ``(D, N)`` weights.

    ``labels``, ``probs``, ``mask``: ``(N, k)`` (mask boolean); ``thresholds``: ``(k,)``,
    NaN for none (every metric NaN). Returns ``tp``, ``fp``, ``fn``, ``tn`` and
    :data:`METRICS`, each ``(D, k)`` float64, NaN where a denominator is 0. The counts
    come from one float32 matrix product: exact for integer multiplicities summing to
    below 2**24.
    """
    predicted = probs >= np.asarray(thresholds)[None, :]  # False for a NaN threshold
    columns = np.stack(
        [
            mask & predicted & (labels == 1),
            mask & predicted & (labels == 0),
            mask & (labels == 1),
            mask & (labels == 0),
        ],
        axis=-1,
    ).astype(np.float32)
    sums = np.asarray(weights, np.float32) @ columns.reshape(len(probs), -1)
    sums = sums.reshape(len(sums), len(columns[0]), 4).astype(np.float64)
    tp, fp, positives, negatives = np.moveaxis(sums, -1, 0)
    fn, tn = positives - tp, negatives - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "tn": tn,
            "sensitivity": tp / positives,
            "specificity": tn / negatives,
            "ppv": tp / (tp + fp),
            "npv": tn / (tn + fn),
            "f1": 2 * tp / (2 * tp + fp + fn),
        }
    undefined = np.isnan(np.asarray(thresholds, np.float64))
    for metric in METRICS:
        out[metric][:, undefined] = np.nan
    return out


def operating_point_summary(
    labels,
    probs,
    mask,
    class_names,
    thresholds: dict,
    patient_ids=None,
    *,
    num_draws: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Sensitivity, specificity, PPV, NPV and F1 of each class at its threshold on the
    test split, with percentile intervals over a patient bootstrap.

    Args:
      labels, probs, mask: ``(N, k)`` test labels, probabilities and mask (0: the label is
        left out of its class).
      class_names: ``k`` names.
      thresholds: ``{class: threshold or None}`` for every class (chosen on validation,
        e.g. by :func:`choose_thresholds`); predicted positive is ``prob >= threshold``.
      patient_ids: ``(N,)``; without them every example is its own patient.
      num_draws, seed, level: the bootstrap and the intervals' level.

    Returns ``classes``: per class ``threshold``, ``positives``, ``negatives``,
    ``predicted_positive`` (test examples at or above the threshold), ``reason`` (None, or
    why there are no values) and, per metric of :data:`METRICS`, ``{"value", "ci",
    "undefined_draws"}`` (value None where its denominator is 0; draws with a 0
    denominator are left out of the interval and counted); and ``num_draws``, ``level``.
    """
    labels, probs, mask = _check_table(labels, probs, mask, class_names)
    missing = [name for name in class_names if name not in thresholds]
    if missing:
        raise ValueError(f"thresholds: no entry for class(es) {', '.join(map(str, missing))}.")
    cuts = np.array(
        [np.nan if thresholds[c] is None else float(thresholds[c]) for c in class_names]
    )
    weights = _draw_weights(patient_ids, len(probs), num_draws, seed)
    point = operating_point_metrics(labels, probs, mask, cuts, np.ones((1, len(probs))))
    draws = operating_point_metrics(labels, probs, mask, cuts, weights)
    alpha = (1.0 - level) / 2.0
    classes = {}
    for j, name in enumerate(class_names):
        entry = {
            "threshold": None if np.isnan(cuts[j]) else float(cuts[j]),
            **_counts(labels[mask[:, j], j]),
            "predicted_positive": int(point["tp"][0, j] + point["fp"][0, j]),
            "reason": None,
        }
        if np.isnan(cuts[j]):
            entry["reason"] = "no threshold was chosen for this class"
        elif not mask[:, j].any():
            entry["reason"] = "no unmasked test examples"
        for metric in METRICS:
            entry[metric] = _value(point[metric][0, j], draws[metric][:, j], alpha)
        classes[name] = entry
    return {"classes": classes, "num_draws": num_draws, "level": level}


def sensitivity_at_specificity(scores, labels, weights, specificities) -> np.ndarray:
    """``(D, S)`` highest sensitivity of any threshold whose specificity is at least each
    of ``specificities`` on the ROC curve of one class's ``(N,)`` scores and 0/1 labels
    under each row of ``(D, N)`` weights (NaN where a draw has no positive or no
    negative weight).

    With the negatives grouped by distinct score, highest first, a draw keeps the longest
    run of groups whose cumulative weight FP leaves ``(Neg - FP) / Neg >= s``; the
    threshold then sits just above the next negative score, and the sensitivity is the
    positive weight scored above it over the positives' total. The groups are scanned in
    blocks from the top, and the scan stops once every draw has passed its last kept
    group: with specificities near 1, only the highest-scored negatives are read.
    """
    by_example = np.ascontiguousarray(np.atleast_2d(np.asarray(weights, np.float32)).T)
    scores = np.asarray(scores, np.float64)
    return _sensitivity_at_specificity(scores, labels, by_example, specificities)


def _sensitivity_at_specificity(scores, labels, by_example, specificities, rows=None):
    """:func:`sensitivity_at_specificity` with the weights as ``(N_all, D)`` rows, one per
    example (copying rows is several times faster than picking columns), of which
    ``rows`` (indices, or None: all) are this class's examples."""
    labels = np.asarray(labels).astype(bool)
    rows = np.arange(len(scores)) if rows is None else np.asarray(rows)
    targets = np.asarray(specificities, np.float64)
    neg_order = np.argsort(-scores[~labels], kind="stable")
    neg_rows, neg_sorted = rows[~labels][neg_order], scores[~labels][neg_order]
    starts = np.flatnonzero(np.r_[True, neg_sorted[1:] != neg_sorted[:-1]])
    # A product with an indicator reads the weights once, without copying the rows.
    indicator = np.zeros(len(by_example), by_example.dtype)
    indicator[neg_rows] = 1
    total_neg = (indicator @ by_example).astype(np.float64)
    kept = _kept_groups(by_example, neg_rows, starts, total_neg, targets)  # (S, D)
    # Positive weight scored above each negative group, and above none of them: all.
    pos_scores = scores[labels]
    pos_order = np.argsort(-pos_scores, kind="stable")
    pos_cum = np.zeros((pos_scores.size + 1, by_example.shape[1]), np.float32)
    np.cumsum(by_example[rows[labels][pos_order]], axis=0, out=pos_cum[1:])
    above_each = np.searchsorted(np.sort(pos_scores), neg_sorted[starts], side="right")
    above = np.r_[pos_scores.size - above_each, pos_scores.size]
    total_pos = pos_cum[-1].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = pos_cum[above[kept], np.arange(by_example.shape[1])].T / total_pos[:, None]
    out[(total_pos == 0) | (total_neg == 0)] = np.nan
    return out


def _kept_groups(by_example, neg_rows, starts, total_neg, targets, block: int = 512):
    """``(S, D)`` number of the highest negative groups each draw keeps at each target
    specificity: the groups whose cumulative weight FP has ``(Neg - FP) / Neg >= s``."""
    kept = np.zeros((targets.size, by_example.shape[1]), np.int64)
    running = np.zeros(by_example.shape[1], np.float64)
    bounds = np.r_[starts, neg_rows.size]
    for g in range(0, starts.size, block):
        g_end = min(g + block, starts.size)
        grouped = np.add.reduceat(
            by_example[neg_rows[bounds[g] : bounds[g_end]]], starts[g:g_end] - starts[g], axis=0
        )
        cum = np.cumsum(grouped, axis=0, dtype=np.float64) + running  # (block, D)
        with np.errstate(invalid="ignore", divide="ignore"):
            specificity = (total_neg - cum) / total_neg
        kept += np.sum(specificity[None] >= targets[:, None, None], axis=1)
        running = cum[-1]
        if not np.any(specificity[-1] >= targets.min()):
            break  # every draw has passed its last kept group
    return kept


def roc_points(
    labels,
    probs,
    mask,
    class_names,
    specificities=(0.9, 0.95),
    patient_ids=None,
    *,
    num_draws: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Threshold-free sensitivity at specificity >= each ``s`` on each class's test ROC
    curve (:func:`sensitivity_at_specificity`), with percentile intervals over a patient
    bootstrap (each draw its own curve).

    Returns ``classes``: per class ``positives``, ``negatives``, ``reason`` (None, or why
    there are no values: no unmasked examples or a single label value) and
    ``sensitivity_at_specificity``: ``{f"{s:g}": {"value", "ci", "undefined_draws"}}``;
    and ``specificities``, ``num_draws``, ``level``.
    """
    labels, probs, mask = _check_table(labels, probs, mask, class_names)
    specificities = [float(s) for s in specificities]
    bad = [s for s in specificities if not 0.0 < s < 1.0]
    if bad:
        raise ValueError(f"specificities must lie in (0, 1); got {bad}.")
    weights = _draw_weights(patient_ids, len(probs), num_draws, seed)
    by_example = np.ascontiguousarray(weights.T)
    alpha = (1.0 - level) / 2.0
    classes = {}
    for j, name in enumerate(class_names):
        keep = mask[:, j]
        y, p = labels[keep, j], probs[keep, j]
        counts = _counts(y)
        reason = None
        if y.size == 0:
            reason = "no unmasked test examples"
        elif counts["positives"] == 0 or counts["negatives"] == 0:
            reason = "a single label value on test"
        point = draws = np.full((1, len(specificities)), np.nan)
        if reason is None:
            point = sensitivity_at_specificity(p, y, np.ones((1, y.size)), specificities)
            rows = np.flatnonzero(keep)
            draws = _sensitivity_at_specificity(p, y, by_example, specificities, rows)
        at = {
            f"{s:g}": _value(point[0, i], draws[:, i], alpha) for i, s in enumerate(specificities)
        }
        classes[name] = {**counts, "reason": reason, "sensitivity_at_specificity": at}
    return {
        "classes": classes,
        "specificities": specificities,
        "num_draws": num_draws,
        "level": level,
    }


# ----------------------------------------------------------------- helpers


def _value(point, draws, alpha) -> dict:
    undefined = int(np.isnan(draws).sum())
    if np.isnan(point):
        return {"value": None, "ci": None, "undefined_draws": undefined}
    return {"value": float(point), "ci": _interval(draws, alpha), "undefined_draws": undefined}


def _counts(labels) -> dict:
    positives = int(np.sum(labels == 1))
    return {"positives": positives, "negatives": int(labels.size - positives)}


def _draw_weights(patient_ids, n: int, num_draws: int, seed: int) -> np.ndarray:
    return patient_draw_weights(
        np.arange(n) if patient_ids is None else patient_ids, num_draws, seed
    )


def _one_class(probs, labels):
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    if probs.ndim != 1 or labels.shape != probs.shape:
        raise ValueError(
            f"probs and labels must be 1-D of one length; got probs {probs.shape}, "
            f"labels {labels.shape}."
        )
    if not np.all(np.isfinite(probs)):
        raise ValueError("probs must be finite.")
    if not np.all(np.isin(labels, (0, 1))):
        raise ValueError("labels must be 0 or 1.")
    return probs, labels.astype(np.int64)


def _check_table(labels, probs, mask, class_names):
    """:func:`chestattn_jax.metrics.check_table`, with labels as int64 (0 where masked)."""
    labels, probs, mask = check_table(labels, probs, mask, class_names)
    return np.where(mask, labels, 0).astype(np.int64), probs, mask
