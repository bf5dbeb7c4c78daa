"""ROC AUC within subgroups of the evaluated split (sex, age band, view), each against
the rest of the split, with paired patient-bootstrap intervals.

A subgroup is the images of the split whose attribute takes one value: sex ``M`` or
``F`` (unknown sex is in no sex subgroup), an age band (``age_bands`` ``(40, 60, 80)``:
``<40``, ``40-59``, ``60-79``, ``>=80``; an age below 0 or above ``MAX_AGE`` is unknown),
a view position (``PA``, ``AP``, then any other found, e.g. CheXpert's ``LL``). Only
values that some image has are listed. Its *rest* is every other image of the split:
those of the other values and those whose attribute is unknown.

Per subgroup and class (over the class's unmasked images) it reports the AUC with a
percentile interval, the positives and negatives, the rest's AUC, and the difference
AUC(subgroup) - AUC(rest) with a paired interval and ``p_not_better`` (the share of
draws with a difference <= 0); the same for the mean over classes, taken over the
classes defined in both the subgroup and its rest (listed with it), in every draw over
those of them defined in both in that draw.

Resampling: each draw resamples the patients of the whole split
(:func:`chestattn_jax.metrics.patient_draw_weights`: the ``auc`` evaluator's draws for the
same seed), and a subgroup and its rest take their own images' weights from that one
draw. A patient is resampled as a whole: one with images in two subgroups (a PA film and
a later AP film) counts as many times in both, and a subgroup and its rest are scored on
the same draw, so that their difference is paired draw by draw.

Too few to score: a class with fewer than ``min_positives`` positives, or as few
negatives, in the subgroup or in its rest has no AUC and no difference there (None,
with the reason, e.g. ``fewer than 10 positives in the subgroup (4)``), rather than a
number its handful of images would make look precise.

Computation: the images of a class are split by attribute value into G groups (the
subgroups and the unknowns). The weighted Mann-Whitney sum of every (positive group,
negative group) pair, per draw, gives every subgroup's AUC and every rest's (the pairs
outside that group) at once: one pass over the class's negatives per attribute, as
:func:`chestattn_jax.metrics.weighted_auc` makes one pass per AUC.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from chestattn_jax.metrics import _class_mean, _interval, patient_draw_weights

ATTRIBUTES = ("sex", "age", "view")
SEXES = ("M", "F")
VIEWS = ("PA", "AP")  # listed first; other view positions follow as found
MAX_AGE = 120  # older is a data error (NIH has a few ages over 400): unknown
AGE_BANDS = (40, 60, 80)
MIN_POSITIVES = 10


def age_bands_problem(edges) -> str | None:
    """Why ``edges`` are not usable age bands (a tuple of increasing whole years from 1 to
    ``MAX_AGE``; empty: no age subgroups), or None."""
    if not isinstance(edges, list | tuple) or not all(
        isinstance(e, int | np.integer) and not isinstance(e, bool) for e in edges
    ):
        return "must be a tuple of whole years, e.g. (40, 60, 80); () for no age subgroups."
    if any(not 1 <= e <= MAX_AGE for e in edges):
        return f"every age must be from 1 to {MAX_AGE}."
    if any(b <= a for a, b in itertools.pairwise(edges)):
        return "the ages must increase: (40, 60, 80) means <40, 40-59, 60-79 and >=80."
    return None


def age_band_names(edges) -> tuple[str, ...]:
    """``(40, 60, 80)`` -> ``("<40", "40-59", "60-79", ">=80")``; () for no edges."""
    edges = [int(e) for e in edges]
    if not edges:
        return ()
    inner = [f"{a}-{b - 1}" if b - 1 > a else f"{a}" for a, b in itertools.pairwise(edges)]
    return (f"<{edges[0]}", *inner, f">={edges[-1]}")


def _codes(values, names) -> np.ndarray:
    """``(N,)`` index into ``names`` of each value; -1 where it is not one of them."""
    lookup = {name: g for g, name in enumerate(names)}
    return np.asarray([lookup.get(v, -1) for v in values], np.int64)


def _sex(values):
    values = [str(v).strip().upper() for v in values]
    return SEXES, _codes(values, SEXES)


def _view(values):
    values = [str(v).strip() for v in values]
    others = sorted({v for v in values if v and v not in VIEWS})
    names = (*VIEWS, *others)
    return names, _codes(values, names)


def _age(values, edges):
    names = age_band_names(edges)
    if not names:
        return names, np.full(len(values), -1, np.int64)
    ages = np.asarray(values, np.float64)
    known = np.isfinite(ages) & (ages >= 0) & (ages <= MAX_AGE)
    bands = np.searchsorted(np.asarray(edges, np.float64), ages, side="right")
    return names, np.where(known, bands, -1).astype(np.int64)


def define_subgroups(attributes: dict, age_bands=AGE_BANDS) -> dict:
    """The subgroups of each attribute of ``attributes`` (``{"sex", "age", "view"}``,
    ``(N,)`` arrays; a missing one gives none).

    Returns ``{attribute: (names, codes)}``: the subgroup names that some image has, in
    order, and ``(N,)`` int64 codes indexing them (-1: the image is in none, its attribute
    unknown).
    """
    out = {}
    for attribute in ATTRIBUTES:
        if attribute not in attributes:
            continue
        values = np.asarray(attributes[attribute])
        if attribute == "age":
            names, codes = _age(values, age_bands)
        else:
            names, codes = (_sex if attribute == "sex" else _view)(values)
        found = np.flatnonzero(np.bincount(codes[codes >= 0], minlength=len(names)))
        renumber = np.full(len(names) + 1, -1, np.int64)  # the last entry maps -1 to -1
        renumber[found] = np.arange(found.size)
        if found.size:
            out[attribute] = (tuple(names[g] for g in found), renumber[codes])
    return out


@dataclasses.dataclass(frozen=True)
class PartitionAUCs:
    """The AUCs of the subgroups of one attribute and of their rests (:func:`partition_aucs`).

    ``subgroup`` / ``rest`` ``(D, G, k)``: the AUC of subgroup g's unmasked images of
    class j under draw d's weights / of every other unmasked image of the split; NaN where
    a side has no positive or no negative weight. ``positives``, ``negatives``,
    ``rest_positives``, ``rest_negatives`` ``(G, k)``: images, unweighted."""

    subgroup: np.ndarray
    rest: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    rest_positives: np.ndarray
    rest_negatives: np.ndarray


def partition_aucs(labels, probs, mask, partitions: dict, weights) -> dict[str, PartitionAUCs]:
    """:class:`PartitionAUCs` of every attribute of ``partitions`` (``{attribute: (names,
    codes)}``, as :func:`define_subgroups` gives) under each row of ``(D, N)`` weights.

    ``labels``, ``probs``, ``mask``: ``(N, k)``; mask 0 leaves the label out of its class.
    A weight row of ones gives the AUCs of the split as it is.
    """
    labels, probs, mask = np.asarray(labels), np.asarray(probs), np.asarray(mask)
    by_example = np.ascontiguousarray(np.atleast_2d(weights).T)  # (N, D): rows gather fast
    if not np.issubdtype(by_example.dtype, np.floating):
        by_example = by_example.astype(np.float64)
    num_draws, num_classes = by_example.shape[1], labels.shape[1]
    shapes = {a: (num_draws, len(names), num_classes) for a, (names, _) in partitions.items()}
    sub = {a: np.full(s, np.nan) for a, s in shapes.items()}
    rest = {a: np.full(s, np.nan) for a, s in shapes.items()}
    counts = {a: np.zeros((4, *s[1:]), np.int64) for a, s in shapes.items()}
    for j in range(num_classes):
        kept = np.flatnonzero(mask[:, j] > 0)
        positive = labels[kept, j] > 0
        pos, neg = kept[positive], kept[~positive]
        neg = neg[np.argsort(probs[neg, j], kind="stable")]
        w_pos = by_example[pos]  # (P, D), once for every attribute
        for attribute, (names, codes) in partitions.items():
            num_groups = len(names) + 1  # the unknowns are the last group
            groups = np.where(codes < 0, len(names), codes)
            cross, pos_weight, neg_weight = _pair_sums(
                (probs[pos, j], groups[pos], w_pos),
                (probs[neg, j], groups[neg], neg),
                by_example,
                num_groups,
            )
            sub[attribute][:, :, j], rest[attribute][:, :, j] = _group_aucs(
                cross, pos_weight, neg_weight
            )
            p_count = np.bincount(groups[pos], minlength=num_groups)
            n_count = np.bincount(groups[neg], minlength=num_groups)
            counts[attribute][:, :, j] = [
                p_count[:-1],
                n_count[:-1],
                p_count.sum() - p_count[:-1],
                n_count.sum() - n_count[:-1],
            ]
    return {a: PartitionAUCs(sub[a], rest[a], *counts[a]) for a in partitions}


def _prefix_sums(rows: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """``(C, D)``: the sum of the first ``cuts[i]`` rows of ``(R, D)`` ``rows`` (``cuts``
    ascending, from 0 to R). A loop over the stretches between cuts (or, where cuts are
    dense, over rows), each summed across all draws at once: several times faster than
    ``np.cumsum`` along axis 0, which walks each column down the rows."""
    out = np.empty((cuts.size, rows.shape[1]), rows.dtype)
    if 4 * cuts.size > len(rows):  # dense: every row's prefix, then the cuts'
        every = np.empty((len(rows) + 1, rows.shape[1]), rows.dtype)
        every[0] = 0
        for i, row in enumerate(rows):
            np.add(every[i], row, out=every[i + 1])
        return every[cuts]
    total = np.zeros(rows.shape[1], rows.dtype)
    start = 0
    for i, cut in enumerate(cuts):
        if cut > start:
            total += rows[start:cut].sum(0)
            start = cut
        out[i] = total
    return out


def _pair_sums(positives, negatives, by_example, num_groups: int):
    """One class's weighted Mann-Whitney sums between the G groups of one attribute, per
    draw.

    Args:
      positives: ``(scores, groups, weights)``: ``(P,)`` scores, ``(P,)`` groups (0 to
        G - 1, the last one the unknowns) and ``(P, D)`` weights.
      negatives: ``(scores, groups, rows)``: ``(M,)`` scores (ascending), groups and rows
        of ``by_example``.
      by_example: ``(N, D)`` weights.

    Returns ``cross`` ``(D, G, G)``: for positives of group g and negatives of group h, the
    sum of w_pos * w_neg over the pairs where the negative scores lower (a tie counting
    one half); and the positive and negative weight of each group ``(D, G)``. The
    negatives are laid out group after group, each in score order, and prefix-summed (all
    draws at once); a group's weight below a score is the difference of two sums.
    """
    pos_scores, pos_groups, w_pos = positives
    neg_scores, neg_groups, neg = negatives
    # Positives group after group (each group's sum is then of a slice), and negatives
    # group after group, each in score order.
    by_group = np.argsort(pos_groups, kind="stable")
    pos_scores, w_pos = pos_scores[by_group], w_pos[by_group]
    pos_starts = _starts(pos_groups, num_groups)
    order = np.argsort(neg_groups, kind="stable")
    starts = _starts(neg_groups, num_groups)
    sorted_scores = neg_scores[order]
    # Where each positive falls among each group's negatives: below it, below or tied.
    ranks = [
        starts[h] + np.searchsorted(sorted_scores[starts[h] : starts[h + 1]], pos_scores, side)
        for h in range(num_groups)
        for side in ("left", "right")
    ]
    cuts = np.unique(np.concatenate([starts, *ranks]))
    # cum[c]: the weight of the first cuts[c] negatives of this layout. Integer
    # multiplicities stay exact in float32 far beyond any data set's size, and so do the
    # products below.
    cum = _prefix_sums(by_example[neg[order]], cuts)
    at = [np.searchsorted(cuts, r) for r in ranks]
    bounds = np.searchsorted(cuts, starts)
    cross = np.zeros((by_example.shape[1], num_groups, num_groups))
    for h in range(num_groups):
        if starts[h] == starts[h + 1]:
            continue
        # Twice the weight below each positive, ties counting one half.
        credit = cum[at[2 * h]] + cum[at[2 * h + 1]]
        credit -= 2 * cum[bounds[h]]
        credit *= w_pos
        cross[:, :, h] = 0.5 * _group_sums(credit, pos_starts)
    neg_weight = (cum[bounds[1:]] - cum[bounds[:-1]]).astype(np.float64)
    return cross, _group_sums(w_pos, pos_starts), neg_weight.T


def _starts(groups, num_groups: int) -> np.ndarray:
    """``(G + 1,)`` where each group starts, and the end, once ``groups`` are sorted."""
    return np.concatenate([[0], np.cumsum(np.bincount(groups, minlength=num_groups))])


def _group_sums(rows, starts) -> np.ndarray:
    """``(D, G)`` float64 sums of the slices ``starts[g]:starts[g + 1]`` of ``(R, D)`` rows."""
    return np.stack([rows[a:b].sum(0, dtype=np.float64) for a, b in itertools.pairwise(starts)], 1)


def _group_aucs(cross, w_pos, w_neg):
    """``(D, G-1)`` AUCs of the groups but the last (the unknowns) and of their rests."""
    diagonal = np.diagonal(cross, axis1=1, axis2=2)
    total = cross.sum((1, 2))[:, None]
    rest_sum = total - cross.sum(2) - cross.sum(1) + diagonal
    rest_pos = w_pos.sum(1, keepdims=True) - w_pos
    rest_neg = w_neg.sum(1, keepdims=True) - w_neg
    with np.errstate(invalid="ignore", divide="ignore"):
        sub = diagonal / (w_pos * w_neg)
        rest = rest_sum / (rest_pos * rest_neg)
    sub[(w_pos == 0) | (w_neg == 0)] = np.nan
    rest[(rest_pos == 0) | (rest_neg == 0)] = np.nan
    return sub[:, :-1], rest[:, :-1]


_COUNTS = ("positives", "negatives", "rest_positives", "rest_negatives")


def _too_few(min_positives: int, counts) -> str | None:
    """The reason a subgroup's class is not scored, or None."""
    for count, what, where in zip(
        counts,
        ("positives", "negatives", "positives", "negatives"),
        ("the subgroup", "the subgroup", "the rest of the split", "the rest of the split"),
        strict=True,
    ):
        if count < min_positives:
            return f"fewer than {min_positives} {what} in {where} ({int(count)})"
    return None


def _float(x):
    return None if np.isnan(x) else float(x)


def _difference(point, draws, alpha) -> dict:
    """The difference, its interval and the share of draws with a difference <= 0."""
    defined = draws[~np.isnan(draws)]
    return {
        "difference": _float(point),
        "difference_ci": _interval(draws, alpha),
        "p_not_better": float(np.mean(defined <= 0)) if defined.size else None,
    }


def _unscored(reason: str) -> dict:
    return {
        "auc": None,
        "ci": None,
        "rest_auc": None,
        "difference": None,
        "difference_ci": None,
        "p_not_better": None,
        "reason": reason,
    }


def _class_entry(scored: PartitionAUCs, g: int, j: int, alpha, min_positives) -> dict:
    entry = {name: int(getattr(scored, name)[g, j]) for name in _COUNTS}
    reason = _too_few(min_positives, list(entry.values()))
    if reason is not None:
        return {**_unscored(reason), **entry}
    sub, rest = scored.subgroup[:, g, j], scored.rest[:, g, j]
    return {
        "auc": _float(sub[0]),
        "ci": _interval(sub[1:], alpha),
        "rest_auc": _float(rest[0]),
        **_difference(sub[0] - rest[0], sub[1:] - rest[1:], alpha),
        "reason": None,
        **entry,
    }


def _mean_entry(scored: PartitionAUCs, g: int, class_names, scorable, alpha, min_positives):
    """The mean over the ``scorable`` classes (defined in the subgroup and its rest); in
    a draw, over those of them defined on both sides in that draw."""
    if not scorable:
        reason = (
            f"no class has {min_positives} positives and {min_positives} negatives in both "
            "the subgroup and the rest of the split"
        )
        return {**_unscored(reason), "classes": []}
    sub, rest = scored.subgroup[:, g, scorable], scored.rest[:, g, scorable]  # (D + 1, c)
    both = ~np.isnan(sub) & ~np.isnan(rest)
    sub, rest = np.where(both, sub, np.nan), np.where(both, rest, np.nan)
    sub_mean, rest_mean = _class_mean(sub), _class_mean(rest)
    return {
        "auc": _float(sub_mean[0]),
        "ci": _interval(sub_mean[1:], alpha),
        "rest_auc": _float(rest_mean[0]),
        **_difference(sub_mean[0] - rest_mean[0], sub_mean[1:] - rest_mean[1:], alpha),
        "reason": None,
        "classes": [class_names[j] for j in scorable],
    }


def subgroup_auc(
    labels,
    probs,
    mask,
    class_names,
    patient_ids,
    attributes: dict,
    *,
    age_bands=AGE_BANDS,
    min_positives: int = MIN_POSITIVES,
    num_draws: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """AUC per class and mean within each subgroup of the split, against the rest of it.

    Args:
      labels, probs, mask: ``(N, k)``; mask 0 leaves the label out of its class.
      class_names: ``k`` names.
      patient_ids: ``(N,)``: draws resample these patients over the whole split.
      attributes: ``{"sex", "age", "view"}``, ``(N,)`` each. An attribute the record
        lacks, unknown for every image (or ``age`` with no ``age_bands``) has no
        subgroup and is listed under ``missing``.
      age_bands: the band edges in years (:func:`age_band_names`).
      min_positives: the fewest positives, and negatives, a class needs in a subgroup
        and in its rest to be scored there (at least 1).
      num_draws, seed, level: the bootstrap's draws (0: no intervals), their seed and the
        intervals' level.

    Returns ``{"num_draws", "seed", "level", "min_positives", "age_bands", "resampling",
    "missing", "attributes": {attribute: {subgroup: {"images", "patients", "classes":
    {class: entry}, "mean": entry}}}}``. A class's entry: ``auc``, ``ci``, ``rest_auc``,
    ``difference`` (auc - rest_auc), ``difference_ci``, ``p_not_better``, ``reason``
    (None, or why the others are None), ``positives``, ``negatives``,
    ``rest_positives``, ``rest_negatives``; the mean's: the same but the counts, and
    ``classes`` (those it is the mean of).
    """
    if not isinstance(min_positives, int | np.integer) or min_positives < 1:
        raise ValueError(f"min_positives must be an integer of at least 1, got {min_positives!r}.")
    problem = age_bands_problem(tuple(age_bands))
    if problem:
        raise ValueError(f"age_bands={tuple(age_bands)!r}: {problem}")
    labels = np.asarray(labels)
    n = labels.shape[0]
    for name, values in attributes.items():
        if np.shape(values) != (n,):
            raise ValueError(f"attribute {name!r} has shape {np.shape(values)}, not ({n},).")
    partitions = define_subgroups(attributes, age_bands)
    weights = np.concatenate(
        [np.ones((1, n), np.float32), patient_draw_weights(patient_ids, num_draws, seed)]
    )
    scored = partition_aucs(labels, probs, mask, partitions, weights)
    alpha = (1.0 - level) / 2.0
    patients = np.asarray(patient_ids, dtype=str)
    out = {}
    for attribute, (names, codes) in partitions.items():
        groups = {}
        for g, name in enumerate(names):
            s = scored[attribute]
            classes = {
                c: _class_entry(s, g, j, alpha, min_positives) for j, c in enumerate(class_names)
            }
            scorable = [j for j, c in enumerate(class_names) if classes[c]["reason"] is None]
            groups[name] = {
                "images": int(np.sum(codes == g)),
                "patients": int(np.unique(patients[codes == g]).size),
                "classes": classes,
                "mean": _mean_entry(s, g, list(class_names), scorable, alpha, min_positives),
            }
        out[attribute] = groups
    return {
        "num_draws": int(num_draws),
        "seed": int(seed),
        "level": float(level),
        "min_positives": int(min_positives),
        "age_bands": [int(e) for e in age_bands],
        "resampling": (
            "patients of the whole split, each with all its images; a subgroup and its "
            "rest are scored on the same draws (paired differences)"
        ),
        "missing": [a for a in ATTRIBUTES if a not in partitions],
        "attributes": out,
    }
