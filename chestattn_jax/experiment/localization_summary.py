"""The experiment report's localisation: hit rates of the gate-3 maps per class and mean,
weighted by findings (every fold's findings pooled), with fold-stratified patient-bootstrap
intervals (and training seeds resampled where there are several), beside the class prior
and the uniform map, with paired differences on the same draws: class - image and each
model - class prior (:func:`summarize`)."""

from __future__ import annotations

from chestattn_jax.localization_metrics import RATE_COLUMNS, bootstrap_findings

# The headline first: the pointing game as cheXlocalize defines it (the argmax pixel of the
# map upsampled to the image lies in the truth); the cell-level one is more lenient (a
# coarse cell that touches the truth counts).
HEADLINE = "pixel_hit"
BASELINES = ("class_prior", "uniform")


def summarize(results: dict, variants, classes, num_draws: int, seed: int) -> dict | None:
    """The localisation of ``results`` (``{training seed: [FoldResult per fold]}``), or
    ``None`` where no evaluation scored maps against truth (the ResNet has none; a data
    set may have no truth)."""
    with_maps = [
        v
        for v in variants
        if all(r.findings.get(v) is not None for folds in results.values() for r in folds)
    ]
    if not with_maps:
        return None
    first = next(iter(results.values()))
    folds = [next(iter(r.records.values())).patient_ids for r in first]
    sources = {
        v: [[r.findings[v]["model"] for r in folds_] for folds_ in results.values()]
        for v in with_maps
    }
    # The baselines depend on the fold's splits only: the same in every cell of a fold.
    ref = with_maps[-1]
    for name in BASELINES:
        sources[name] = [[r.findings[ref][name] for r in first]]
    pairs = []
    if {"class", "image"} <= set(with_maps):
        pairs.append(("class", "image"))
    pairs += [(v, "class_prior") for v in reversed(with_maps)]
    rates, differences = bootstrap_findings(
        folds,
        sources,
        classes,
        columns=RATE_COLUMNS,
        pairs=pairs,
        num_draws=num_draws,
        seed=seed,
    )
    num_seeds = len(results)
    covers = (
        f"95 % intervals from {num_draws} draws: patients resampled within each of "
        f"{len(folds)} folds"
        + (f" and {num_seeds} training seeds resampled with replacement" if num_seeds > 1 else "")
        + "; rates pooled over the folds' findings"
    )
    return {
        "headline": HEADLINE,
        "columns": list(RATE_COLUMNS),
        "rates": rates,
        "differences": {f"{a} - {b}": d for (a, b), d in differences.items()},
        "prior_built_from": [r.prior_built_from for r in first],
        "covers": covers,
    }
