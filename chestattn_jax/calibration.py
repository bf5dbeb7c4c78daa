"""Calibration of predicted probabilities, and recalibration fitted on validation.

How far a class's probabilities are from the frequencies they claim:

- Expected calibration error (ECE): the examples are put in bins by probability, and
  ``ECE = Σ_b (w_b / W) |mean_prob_b - frac_pos_b| = Σ_b |Σ_{i in b} w_i (p_i - y_i)| / W``
  with ``w_i`` the example weights (1, or a bootstrap draw's multiplicities), ``w_b`` a
  bin's weight and ``W`` the total. Bins hold equal numbers of examples by default
  (quantile edges of the probabilities: with skewed probabilities, equal-width bins leave
  most bins nearly empty and one bin holding most examples), or equal widths of [0, 1].
  The edges come from the unweighted probabilities once, and every bootstrap draw uses
  them, so that the draws differ by the data and not by the binning.
- Brier score: ``Σ_i w_i (p_i - y_i)^2 / W``.
- :func:`calibration_summary`: both per class and as the mean over classes, with
  percentile intervals over a patient bootstrap
  (:func:`chestattn_jax.metrics.patient_draw_weights`); every draw's bin sums for every
  class come from one matrix product.

Recalibration maps each class's logit ``z = log p - log(1 - p)`` to ``sigmoid(a z + b)``,
fitted per class on the validation split by maximum likelihood and applied to the test
split:

- ``temperature``: ``a = 1 / T``, ``b = 0`` (one parameter);
- ``platt`` (the default): ``a > 0`` and ``b`` free.

Both are increasing in ``p`` (``a`` is constrained to ``[1e-3, 1e3]``), so the ranking of
the examples, hence every AUC, is unchanged. (In floating point: distinct probabilities
stay distinct unless they are within rounding of each other, or the recalibrated logit
passes about 36.7, where ``sigmoid`` rounds to exactly 1.0.)

Why Platt is the default. The paper's loss weighs each positive of class ``i`` by
``c_i = n_min^2 / n_i``. The minimiser of ``-[c y log p + (1 - y) log(1 - p)]`` at a
true probability ``π`` has odds ``c π / (1 - π)``: a model trained this way predicts
``logit p = logit π + log c_i``, an additive offset of the logit, large for rare classes
(``log c_i = log n_min`` for the rarest class: about 5 for NIH's Hernia, with a couple
of hundred training positives). Temperature scaling only scales the logit about 0 and
cannot remove an offset: when the offset dominates, the best temperature flattens every
probability towards 0.5. Platt's ``b`` absorbs the offset and ``a`` any over- or
under-confidence. Simulated (``tests/test_calibration.py``): true logits ``N(-3, 1.5)``
(10 % positives), predicted ``logit + log 50``, 5,000 validation and 50,000 test
examples. The raw test ECE is 0.56; Platt recovers ``a = 1.02``, ``b = -3.92`` (truth 1
and -3.91) and brings it to 0.003; temperature scaling runs to its bound (``T = 1000``,
every probability about 0.5) and leaves 0.40. With an offset of ``log 5`` and logits
scaled by 0.7, Platt gives 0.004 and temperature 0.29 (raw: 0.30); with a pure scale
error (no offset) both reach 0.004-0.006. Temperature's strengths (one parameter, robust
on small validation splits) matter less than this bias: ``b`` is estimated with the
precision of the class's validation base rate, which for the rarest NIH classes (tens of
validation positives) is a fraction of the offset it corrects. Temperature stays
available for models trained without class weights, where no offset is expected.

A class is not fitted (identity kept, and the reason recorded) when its validation labels
have a single value or no examples, when its validation logits are all equal, or when they
separate the positives from the negatives (the likelihood then has no maximum: the scale
grows without bound).
"""

from __future__ import annotations

import numpy as np

from chestattn_jax.metrics import _class_mean, _interval, check_table, patient_draw_weights

BINNINGS = ("equal_mass", "equal_width")
METHODS = ("temperature", "platt")
DEFAULT_METHOD = "platt"
# The range of the logit's scale a (Platt) and of 1 / T (temperature).
SCALE_BOUNDS = (1e-3, 1e3)
# Probabilities are clipped to the open interval (0, 1) before taking logits: 0 to the
# smallest positive double, 1 to the largest double below 1.
_P_LOW, _P_HIGH = np.nextafter(0.0, 1.0), np.nextafter(1.0, 0.0)
# Draws per matrix product in the bootstrap: bounds the float64 copy of the weights.
_CHUNK = 256


# ----------------------------------------------------------------- inputs


def _one_class(probs, labels, weights=None):
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 1 or labels.shape != probs.shape:
        raise ValueError(
            f"probs and labels must be 1-D of one length; got probs {probs.shape}, "
            f"labels {labels.shape}."
        )
    _check_probs(probs, "probs")
    _check_labels(labels, "labels")
    if weights is not None:
        weights = np.asarray(weights)
        if weights.shape[-1:] != probs.shape or weights.ndim > 2:
            raise ValueError(
                f"weights must be (N,) or (D, N) with N = {probs.size}; got {weights.shape}."
            )
        if np.any(weights < 0):
            raise ValueError("weights must be non-negative.")
    return probs, labels.astype(np.float64), weights


def _check_probs(probs, field: str) -> None:
    if not np.all(np.isfinite(probs)) or np.any(probs < 0) or np.any(probs > 1):
        raise ValueError(f"{field} must be finite probabilities in [0, 1].")


def _check_labels(labels, field: str) -> None:
    if not np.all(np.isin(labels, (0, 1))):
        raise ValueError(f"{field} must be 0 or 1.")


def _check_table(labels, probs, mask, class_names):
    """:func:`chestattn_jax.metrics.check_table`, probabilities in [0, 1], labels as
    float64."""
    labels, probs, mask = check_table(labels, probs, mask, class_names)
    _check_probs(probs, "probs")
    return labels.astype(np.float64), probs, mask


# ----------------------------------------------------------------- bins


def bin_edges(probs, num_bins: int = 15, binning: str = "equal_mass") -> np.ndarray:
    """``(num_bins + 1,)`` edges: quantiles of ``probs`` (``equal_mass``; tied
    probabilities can make edges coincide and bins empty) or ``num_bins`` equal widths of
    [0, 1] (``equal_width``). Bin ``b`` holds ``edges[b] <= p < edges[b + 1]``, the last
    bin also its upper edge."""
    if binning not in BINNINGS:
        raise ValueError(f"binning must be one of {', '.join(BINNINGS)}; got {binning!r}.")
    if int(num_bins) != num_bins or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer; got {num_bins!r}.")
    if binning == "equal_width":
        return np.linspace(0.0, 1.0, num_bins + 1)
    probs = np.asarray(probs, np.float64)
    if probs.size == 0:
        raise ValueError("equal_mass bins need at least one probability.")
    return np.quantile(probs, np.linspace(0.0, 1.0, num_bins + 1))


def _bin_index(probs, edges) -> np.ndarray:
    """The bin of each probability under ``edges`` (see :func:`bin_edges`)."""
    return np.searchsorted(edges[1:-1], probs, side="right")


# ----------------------------------------------------------------- one class


def expected_calibration_error(
    probs, labels, weights=None, num_bins: int = 15, binning: str = "equal_mass"
):
    """ECE of one class: ``Σ_b |Σ_{i in b} w_i (p_i - y_i)| / W``, which is
    ``Σ_b (w_b / W) |mean_prob_b - frac_pos_b|``.

    Args:
      probs, labels: ``(N,)`` probabilities and 0/1 labels.
      weights: None (every example once), ``(N,)`` multiplicities, or ``(D, N)``: one row
        per bootstrap draw, all on the same bins.
      num_bins, binning: the bins (:func:`bin_edges`), from the unweighted ``probs``.

    Returns a float, or ``(D,)`` for ``(D, N)`` weights; NaN where the weight is 0.
    """
    probs, labels, weights = _one_class(probs, labels, weights)
    onehot = _onehot(_bin_index(probs, bin_edges(probs, num_bins, binning)), num_bins)
    if weights is None:
        return float(np.abs((probs - labels) @ onehot).sum() / probs.size)
    w = np.atleast_2d(weights).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ece = np.abs((w * (probs - labels)) @ onehot).sum(1) / w.sum(1)
    return float(ece[0]) if weights.ndim == 1 else ece


def brier_score(probs, labels, weights=None):
    """Brier score ``Σ_i w_i (p_i - y_i)^2 / W`` of one class; weights as
    :func:`expected_calibration_error`'s. A float, or ``(D,)`` for ``(D, N)`` weights."""
    probs, labels, weights = _one_class(probs, labels, weights)
    squared = (probs - labels) ** 2
    if weights is None:
        return float(squared.mean())
    w = np.atleast_2d(weights).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        brier = (w @ squared) / w.sum(1)
    return float(brier[0]) if weights.ndim == 1 else brier


def reliability_curve(probs, labels, num_bins: int = 15, binning: str = "equal_mass") -> dict:
    """A reliability diagram's points for one class, on :func:`bin_edges`' bins.

    Returns ``bin_edges`` (``num_bins + 1`` floats) and, per bin, ``mean_prob`` (mean
    predicted probability), ``frac_pos`` (fraction of positives), both None for an empty
    bin, and ``count`` (examples), as lists (JSON-serialisable).
    """
    probs, labels, _ = _one_class(probs, labels)
    edges = bin_edges(probs, num_bins, binning)
    index = _bin_index(probs, edges)
    count = np.bincount(index, minlength=num_bins)
    prob_sum = np.bincount(index, probs, minlength=num_bins)
    pos_sum = np.bincount(index, labels, minlength=num_bins)

    def per_bin(sums):
        return [float(s / c) if c else None for s, c in zip(sums, count, strict=True)]

    return {
        "bin_edges": edges.tolist(),
        "mean_prob": per_bin(prob_sum),
        "frac_pos": per_bin(pos_sum),
        "count": count.tolist(),
    }


def _onehot(index, num_bins: int) -> np.ndarray:
    return (index[:, None] == np.arange(num_bins)).astype(np.float64)


# ----------------------------------------------------------------- all classes, bootstrap


def _reason_undefined(labels) -> str | None:
    """Why a class's calibration is not reported, or None."""
    if labels.size == 0:
        return "no unmasked examples"
    if np.all(labels == labels[0]):
        return f"a single label value: all {labels.size} unmasked labels are {int(labels[0])}"
    return None


def calibration_draws(labels, probs, mask, weights, *, num_bins=15, binning="equal_mass"):
    """ECE and Brier score of every class under each row of ``(D, N)`` weights.

    ``labels``, ``probs``, ``mask``: ``(N, k)`` (checked by the caller); a class's bins
    come from its unmasked probabilities. Returns ``(ece, brier)``, each ``(D, k)``
    float64, NaN where a draw has no weight on a class's unmasked examples. One matrix
    product per chunk of draws: per class, a column per bin holding ``p - y`` of its
    examples, a column of ``(p - y)^2`` and one of the mask.
    """
    n, k = probs.shape
    if len(weights) == 0:  # no draws: no intervals
        return np.zeros((0, k)), np.zeros((0, k))
    columns = np.zeros((n, k, num_bins + 2))
    for j in range(k):
        keep = mask[:, j]
        if not keep.any():
            continue
        p, y = probs[keep, j], labels[keep, j]
        index = _bin_index(p, bin_edges(p, num_bins, binning))
        rows = np.flatnonzero(keep)
        columns[rows, j, index] = p - y
        columns[rows, j, num_bins] = (p - y) ** 2
        columns[rows, j, num_bins + 1] = 1.0
    columns = columns.reshape(n, -1)
    sums = np.concatenate(
        [
            np.asarray(weights[d : d + _CHUNK], np.float64) @ columns
            for d in range(0, len(weights), _CHUNK)
        ]
    ).reshape(len(weights), k, num_bins + 2)
    total = sums[..., num_bins + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        ece = np.abs(sums[..., :num_bins]).sum(-1) / total
        brier = sums[..., num_bins] / total
    ece[total == 0] = np.nan
    brier[total == 0] = np.nan
    return ece, brier


def calibration_summary(
    labels,
    probs,
    mask,
    class_names,
    patient_ids=None,
    *,
    num_bins: int = 15,
    binning: str = "equal_mass",
    num_draws: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """ECE and Brier score per class and their means over classes, with percentile
    intervals over a patient bootstrap.

    Args:
      labels, probs, mask: ``(N, k)``; a masked-out label (0) is left out of its class.
      class_names: ``k`` names.
      patient_ids: ``(N,)``; without them every example is its own patient.
      num_bins, binning: the ECE's bins (:func:`bin_edges`), per class from its unmasked
        probabilities, shared by every draw.
      num_draws, seed, level: the bootstrap (``seed`` as
        :func:`chestattn_jax.metrics.patient_draw_weights` takes it) and the intervals'
        level.

    Returns ``classes``: per class ``ece`` and ``brier``, each ``{"value", "ci",
    "undefined_draws"}`` (draws without weight on the class, left out of its interval),
    ``positives``, ``negatives`` and ``reason`` (None, or why the class has no values:
    no unmasked examples, or a single label value); ``mean_ece`` and ``mean_brier``
    (``{"value", "ci"}``, over the classes with values; a draw's mean over those defined
    in it); and ``num_bins``, ``binning``, ``num_draws``, ``level``.
    """
    labels, probs, mask = _check_table(labels, probs, mask, class_names)
    ids = np.arange(len(probs)) if patient_ids is None else patient_ids
    weights = patient_draw_weights(ids, num_draws, seed)
    bins = {"num_bins": num_bins, "binning": binning}
    point = calibration_draws(labels, probs, mask, np.ones((1, len(probs)), np.float32), **bins)
    draws = calibration_draws(labels, probs, mask, weights, **bins)
    alpha = (1.0 - level) / 2.0
    classes, defined = {}, np.zeros(len(class_names), bool)
    for j, name in enumerate(class_names):
        y = labels[mask[:, j], j]
        reason = _reason_undefined(y)
        defined[j] = reason is None
        entry = {"positives": int(y.sum()), "negatives": int(y.size - y.sum()), "reason": reason}
        for m, metric in enumerate(("ece", "brier")):
            entry[metric] = _value(point[m][0, j], draws[m][:, j], alpha, reason is None)
        classes[name] = entry
    out = {"classes": classes}
    for m, metric in enumerate(("ece", "brier")):
        out[f"mean_{metric}"] = _mean_value(point[m][0], draws[m], defined, alpha)
    return {**out, **bins, "num_draws": num_draws, "level": level}


def _value(point, draws, alpha, defined: bool) -> dict:
    if not defined:
        return {"value": None, "ci": None, "undefined_draws": int(draws.size)}
    return {
        "value": float(point),
        "ci": _interval(draws, alpha),
        "undefined_draws": int(np.isnan(draws).sum()),
    }


def _mean_value(point, draws, defined, alpha) -> dict:
    if not defined.any():
        return {"value": None, "ci": None}
    return {
        "value": float(_class_mean(point[defined])[()]),
        "ci": _interval(_class_mean(draws[:, defined]), alpha),
    }


# ----------------------------------------------------------------- recalibration


def logits_of(probs) -> np.ndarray:
    """``log p - log(1 - p)``, with ``p`` clipped to the doubles strictly inside (0, 1)."""
    p = np.clip(np.asarray(probs, np.float64), _P_LOW, _P_HIGH)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x) -> np.ndarray:
    """``1 / (1 + exp(-x))`` without overflow: ``exp(x) / (1 + exp(x))`` for ``x < 0``."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def nll(logits, labels, a: float = 1.0, b: float = 0.0) -> float:
    """Mean negative log-likelihood of 0/1 ``labels`` under ``sigmoid(a * logits + b)``."""
    x = a * np.asarray(logits, np.float64) + b
    return float(np.mean(np.logaddexp(0.0, x) - np.asarray(labels) * x))


def _cannot_fit(logits, labels, method: str) -> str | None:
    """Why the likelihood of ``method`` on these logits and labels has no maximum inside
    the constraints worth fitting, or None."""
    reason = _reason_undefined(labels)
    if reason is not None:
        return reason
    if np.all(logits == logits[0]):
        return "all validation logits are equal: nothing to scale"
    pos, neg = logits[labels == 1], logits[labels == 0]
    if method == "platt" and neg.max() <= pos.min():
        return (
            "validation logits separate the positives from the negatives: the likelihood "
            "grows without bound with the scale"
        )
    if method == "temperature" and np.all(pos >= 0) and np.all(neg <= 0):
        return (
            "every validation logit has its label's sign: the likelihood grows without "
            "bound as the temperature goes to 0"
        )
    return None


def _increasing_root(fn, lo: float, hi: float, x0: float) -> float:
    """The root in ``[lo, hi]`` of an increasing ``fn`` (returning ``(value, slope)``), or
    the bound it lies beyond: safeguarded Newton, bisecting when a step leaves the
    bracket."""
    if fn(lo)[0] >= 0:
        return lo
    if fn(hi)[0] <= 0:
        return hi
    x = min(max(x0, lo), hi)
    for _ in range(200):
        value, slope = fn(x)
        if value == 0:
            return x
        lo, hi = (x, hi) if value < 0 else (lo, x)
        step = value / slope if slope > 0 else np.inf
        new = x - step
        if not lo < new < hi:
            new = 0.5 * (lo + hi)
        tolerance = 1e-14 * max(abs(x), 1.0)
        if abs(new - x) <= tolerance or hi - lo <= tolerance:
            return new
        x = new
    return x


def fit_temperature(logits, labels) -> float:
    """The temperature ``T`` minimising the NLL of ``sigmoid(logits / T)`` on 0/1
    ``labels``, with ``1 / T`` in ``SCALE_BOUNDS``. Raises ValueError where the NLL has
    no minimum (see :func:`fit_recalibration`)."""
    z, y = _fit_inputs(logits, labels, "temperature")

    def slope(beta):  # d NLL / d beta, and its derivative
        p = _sigmoid(beta * z)
        return float(np.sum((p - y) * z)), float(np.sum(p * (1 - p) * z * z))

    return 1.0 / _increasing_root(slope, *SCALE_BOUNDS, 1.0)


def fit_platt(logits, labels) -> tuple[float, float]:
    """``(a, b)`` minimising the NLL of ``sigmoid(a * logits + b)`` on 0/1 ``labels``, with
    ``a`` in ``SCALE_BOUNDS`` (so never <= 0). Raises ValueError where the NLL has no
    minimum (see :func:`fit_recalibration`).

    The NLL is convex in ``(a, b)``; for each ``a`` its minimum over ``b`` solves
    ``Σ sigmoid(a z + b) = Σ y``, and the slope of that profile in ``a`` is increasing, so
    both are found as roots of increasing functions; a profile minimum beyond a bound of
    ``a`` gives that bound, the constrained minimum.
    """
    z, y = _fit_inputs(logits, labels, "platt")
    positives = y.sum()
    base = np.log(positives) - np.log(y.size - positives)
    b = [0.0]

    def offset(a):
        def slope(b_):
            p = _sigmoid(a * z + b_)
            return float(p.sum() - positives), float(np.sum(p * (1 - p)))

        # With b at these bounds, every prediction is at most (at least) the base rate.
        b[0] = _increasing_root(slope, base - a * z.max(), base - a * z.min(), b[0])
        return b[0]

    def profile_slope(a):
        p = _sigmoid(a * z + offset(a))
        w = p * (1 - p)
        curvature = np.sum(w * z * z) - np.sum(w * z) ** 2 / np.sum(w)
        return float(np.sum((p - y) * z)), float(curvature)

    a = _increasing_root(profile_slope, *SCALE_BOUNDS, 1.0)
    return float(a), float(offset(a))


def _fit_inputs(logits, labels, method):
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.float64)
    if z.ndim != 1 or y.shape != z.shape:
        raise ValueError(f"logits and labels must be 1-D of one length; got {z.shape}, {y.shape}.")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits must be finite.")
    _check_labels(y, "labels")
    reason = _cannot_fit(z, y, method)
    if reason is not None:
        raise ValueError(f"cannot fit {method}: {reason}.")
    return z, y


def fit_recalibration(
    val_probs, val_labels, val_mask, class_names, method: str = DEFAULT_METHOD
) -> dict:
    """Per-class recalibration fitted on the validation split, for
    :func:`apply_recalibration`.

    Args:
      val_probs, val_labels, val_mask: ``(N, k)`` validation predictions, labels and mask
        (a masked-out label is left out of its class's fit).
      class_names: ``k`` names.
      method: ``platt`` (``sigmoid(a z + b)``, the default: see the module docstring) or
        ``temperature`` (``sigmoid(z / T)``).

    Returns a JSON-serialisable dict: ``method``, ``class_names`` and, per class in
    ``classes``, the parameters (``temperature``; or ``a`` and ``b``), ``fitted``,
    ``reason`` (why the identity was kept: no unmasked examples, a single label value,
    all logits equal, logits that separate the labels; or, when fitted with a scale at a
    bound of ``SCALE_BOUNDS``, that bound), ``positives``, ``negatives`` and the
    validation NLL before and after (``nll_before``, ``nll_after``).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}.")
    labels, probs, mask = _check_table(val_labels, val_probs, val_mask, class_names)
    classes = {}
    for j, name in enumerate(class_names):
        z, y = logits_of(probs[mask[:, j], j]), labels[mask[:, j], j]
        classes[name] = _fit_class(z, y, method)
    return {"method": method, "class_names": list(class_names), "classes": classes}


def _fit_class(z, y, method: str) -> dict:
    counts = {"positives": int(y.sum()), "negatives": int(y.size - y.sum())}
    reason = _cannot_fit(z, y, method)
    if reason is not None:
        identity = {"temperature": 1.0} if method == "temperature" else {"a": 1.0, "b": 0.0}
        return {**identity, "fitted": False, "reason": f"identity kept: {reason}", **counts}
    if method == "temperature":
        params = {"temperature": fit_temperature(z, y)}
        scale = 1.0 / params["temperature"]
    else:
        a, b = fit_platt(z, y)
        params, scale = {"a": a, "b": b}, a
    a, b = _scale_offset(params)
    reason = None
    if scale in SCALE_BOUNDS:
        side = "floor" if scale == SCALE_BOUNDS[0] else "ceiling"
        reason = f"fitted with the scale at its {side} {scale:g}"
        if side == "floor" and method == "platt":
            reason += ": the logits rank the validation labels the wrong way or not at all"
        elif side == "floor":
            reason += (
                ": every probability is pushed towards 0.5 (an offset of the logits, which "
                "temperature cannot remove, or logits that do not rank the labels)"
            )
    return {
        **params,
        "fitted": True,
        "reason": reason,
        **counts,
        "nll_before": nll(z, y),
        "nll_after": nll(z, y, a, b),
    }


def _scale_offset(params: dict) -> tuple[float, float]:
    if "temperature" in params:
        return 1.0 / params["temperature"], 0.0
    return params["a"], params["b"]


def apply_recalibration(probs, params: dict) -> np.ndarray:
    """``(N, k)`` probabilities ``sigmoid(a z + b)`` of ``(N, k)`` ``probs`` (``z``: their
    logits, :func:`logits_of`), column by column with each class's parameters from
    :func:`fit_recalibration` (columns in ``params["class_names"]``'s order). Increasing
    in each column: the ranking within a class, hence its AUC, is unchanged."""
    probs = np.asarray(probs, np.float64)
    names = params.get("class_names")
    if probs.ndim != 2 or names is None or probs.shape[1] != len(names):
        raise ValueError(
            f"probs must be (N, k) with one column per params['class_names'] "
            f"({None if names is None else len(names)}); got shape {probs.shape}."
        )
    _check_probs(probs, "probs")
    out = np.empty_like(probs)
    for j, name in enumerate(names):
        a, b = _scale_offset(params["classes"][name])
        out[:, j] = _sigmoid(a * logits_of(probs[:, j]) + b)
    return out
