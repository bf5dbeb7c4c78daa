"""The result tables: the paper's Tables 1-2 as ``compare`` writes them (models side by
side) and an evaluation's per-class table (the experiment report's:
:mod:`chestattn_jax.reporting.experiment_tables`). Each returns its text; the callers
write the files.
"""

from __future__ import annotations

from chestattn_jax.localization_metrics import LEAVE_ONE_OUT, OVERLAP_THRESHOLDS, TRAINING_SPLIT
from chestattn_jax.reporting.text_tables import (
    auc_cell,
    csv_text,
    difference_cell,
    markdown,
    number,
)

# The class prior's origin per class, as per_class.md shows it.
PRIOR_ORIGIN = {TRAINING_SPLIT: "training", LEAVE_ONE_OUT: "leave-one-out"}


def comparison_tables(names, classes, aucs, differences, num_draws: int) -> tuple[str, str]:
    """``compare``'s ``table.md`` and ``table.csv``: classes (and a mean row) by models,
    each model's AUC with its interval (``aucs``: one
    :func:`chestattn_jax.metrics.bootstrap_models` summary per name), then each later
    model's paired difference against the first (``differences``, one per later name)."""
    header = ["class", *names, *[f"{n} - {names[0]}" for n in names[1:]]]
    rows = [
        [
            c,
            *[auc_cell(a["classes"][c]["auc"], a["classes"][c]["ci"]) for a in aucs],
            *[difference_cell(d["classes"][c]) for d in differences],
        ]
        for c in classes
    ]
    rows.append(
        [
            "mean",
            *[auc_cell(a["mean_auc"], a["mean_ci"]) for a in aucs],
            *[difference_cell(d["mean"]) for d in differences],
        ]
    )
    md = [
        markdown(header, rows),
        "",
        f"Test AUC with 95 % intervals from {num_draws} patient-level bootstrap draws; "
        f"differences are paired (same draws) against {names[0]}.",
    ]
    return "\n".join(md) + "\n", csv_text(header, rows)


def per_class_rows(metrics: dict, classes, evaluated_as=None) -> list[dict]:
    """An evaluation's per-class rows (and a final ``mean`` row) from its ``metrics``: AUC,
    interval, counts, and where there is truth the localisation columns of
    :func:`_localization_cells`. With ``evaluated_as`` (a cross-dataset evaluation) a class
    the evaluated data set names otherwise is shown as ``model class = data set class``."""
    boot = metrics.get("bootstrap") or {}
    loc = metrics.get("localization") or {}
    names = zip(classes, evaluated_as or classes, strict=True)
    shown = {c: c if e == c else f"{c} = {e}" for c, e in names}
    rows = []
    for c in [*classes, "mean"]:
        mean = c == "mean"
        if mean:
            interval = boot.get("mean_ci") or [None, None]
            row = {"class": "mean", "auc": metrics.get("mean_auc")}
        else:
            interval = ((boot.get("classes") or {}).get(c) or {}).get("ci") or [None, None]
            row = {"class": shown[c], "auc": metrics["auc"].get(c)}
        row.update(auc_low=interval[0], auc_high=interval[1])
        if not mean:
            row.update(
                positives=(metrics.get("positives") or {}).get(c),
                negatives=(metrics.get("negatives") or {}).get(c),
            )
        if loc:
            row.update(_localization_cells(loc, c))
        rows.append(row)
    return rows


def _localization_cells(loc: dict, c: str) -> dict:
    """Class ``c``'s localisation columns (``"mean"``: the mean over classes): the headline
    pixel hit rate with its interval, the class prior's with its interval and (per class)
    where it was built from, the uniform map's, the cell hit rate, and the IoU / IoBB
    accuracies at each threshold."""
    mean = c == "mean"
    baselines = loc.get("baselines") or {}
    rates = (loc.get("bootstrap") or {}).get("rates") or {}

    def hit_rate(scores):
        game = scores["pointing_game_pixel"]
        return game["mean_hit_rate"] if mean else game["hit_rate"].get(c)

    def interval(source):
        pixel = (rates.get(source) or {}).get("pixel_hit")
        ci = pixel and (pixel["mean_ci"] if mean else pixel["classes"][c]["ci"])
        return ci or [None, None]

    out = {"hit_rate": hit_rate(loc)}
    out["hit_rate_low"], out["hit_rate_high"] = interval("model")
    prior = baselines["class_prior"]
    out["prior_hit_rate"] = hit_rate(prior)
    out["prior_hit_rate_low"], out["prior_hit_rate_high"] = interval("class_prior")
    out["prior_built_from"] = None if mean else prior["built_from_class"].get(c)
    out["uniform_hit_rate"] = hit_rate(baselines["uniform"])
    cell = loc["pointing_game"]
    out["cell_hit_rate"] = cell["mean_hit_rate"] if mean else cell["hit_rate"].get(c)
    overlap = loc["overlap"]
    for t in OVERLAP_THRESHOLDS:
        for name in ("iou", "iobb"):
            acc = overlap[f"mean_{name}_accuracy" if mean else f"{name}_accuracy"][str(t)]
            out[f"{name}@{t}"] = acc if mean else acc[c]
    # cheXlocalize's mIoU, the map thresholded by Otsu's method or at the tuned threshold
    # (absent from evaluations by earlier releases).
    for how in ("otsu", "tuned"):
        if f"miou_{how}" in overlap:
            miou = overlap[f"mean_miou_{how}"] if mean else overlap[f"miou_{how}"].get(c)
            out[f"miou@{how}"] = miou
            prior = baselines["class_prior"]["overlap"]
            out[f"prior miou@{how}"] = (
                prior[f"mean_miou_{how}"] if mean else prior[f"miou_{how}"].get(c)
            )
    return out


def per_class_csv(rows: list[dict]) -> str:
    """``per_class.csv``: the rows of :func:`per_class_rows`, every number in full (the
    mean row's cells under the same columns, empty where it has none: counts, origin)."""
    header = list(rows[0])
    return csv_text(header, [[r.get(k) for k in header] for r in rows])


def _rate_cell(row: dict, key: str) -> str:
    """A hit rate with its interval, two decimals: ``0.81 [0.74, 0.87]``."""
    value, low, high = row[key], row[f"{key}_low"], row[f"{key}_high"]
    if value is None or low is None:
        return number(value, 2)
    return f"{number(value, 2)} [{number(low, 2)}, {number(high, 2)}]"


def per_class_markdown(metrics: dict, rows: list[dict]) -> str:
    """``per_class.md``: what was evaluated, the rows of :func:`per_class_rows`, and
    notes on a cross-dataset class map and on the localisation columns."""
    header = ["class", "AUC [95% CI]", "pos", "neg"]
    localised = "hit_rate" in rows[0]
    overlap_cols = [k for k in rows[0] if "@" in k]
    if localised:
        header += [
            "hit rate [95% CI]",
            "prior hit rate [95% CI]",
            "prior from",
            "uniform hit rate",
            "cell hit rate",
            *overlap_cols,
        ]
    settings = metrics.get("settings") or {}
    cells_rows = []
    for r in rows:
        cells = [
            r["class"],
            auc_cell(r["auc"], (r["auc_low"], r["auc_high"]), missing=""),
            "" if r.get("positives") is None else str(r["positives"]),
            "" if r.get("negatives") is None else str(r["negatives"]),
        ]
        if localised:
            cells += [
                _rate_cell(r, "hit_rate"),
                _rate_cell(r, "prior_hit_rate"),
                PRIOR_ORIGIN.get(r["prior_built_from"], ""),
                number(r["uniform_hit_rate"], 2),
                number(r["cell_hit_rate"], 2),
                *[number(r[k], 2) for k in overlap_cols],
            ]
        cells_rows.append(cells)
    lines = [
        f"{metrics.get('variant', '')} model, {metrics.get('split', '')} split, "
        f"step {metrics.get('step', '')}, {metrics.get('num_examples', '')} images"
        + (f", {settings['data.image_size']} px" if "data.image_size" in settings else ""),
        "",
        markdown(header, cells_rows),
    ]
    cross = metrics.get("cross_dataset")
    if cross:
        pairs = ", ".join(a if a == b else f"{a} = {b}" for a, b in cross["class_map"].items())
        lines += [
            "",
            f"Scored on the {cross['dataset']} data set ({cross['data_dir']}), "
            f"{metrics.get('split', '')} split, through the class map "
            f"{cross['class_map_setting']!r}: {pairs} (model class = data set class). "
            "The model's other classes are not scored.",
        ]
    if localised:
        lines += ["", _localization_note(metrics["localization"])]
    return "\n".join(lines) + "\n"


def _localization_note(loc: dict) -> str:
    """What per_class.md's localisation columns mean."""
    prior = loc["baselines"]["class_prior"]
    origins = ", ".join(f"{n} images from the {o}" for o, n in prior["images_from"].items())
    boot = loc.get("bootstrap")
    intervals = (
        f"95 % intervals from {boot['num_draws']} patient-level bootstrap draws"
        if boot
        else "no intervals (eval.bootstrap_draws = 0)"
    )
    return (
        "hit rate: the pointing game as cheXlocalize plays it, the maximum pixel of the map "
        "resized bilinearly to the image inside the finding; "
        f"{intervals}; mean: over the classes with findings. prior hit rate: the same for each "
        "class's average truth mask as a fixed map, built from the training split where it "
        "has truth for the class, else from the evaluated split leaving the scored image out "
        f"(prior from; {origins}). uniform hit rate: of a map that favours no pixel (the "
        "finding's share of the image). cell hit rate: the lenient game, a hit when the "
        "maximum cell of the coarse map holds any truth pixel. iou@t / iobb@t: the share of "
        "findings whose thresholded map has IoU / IoBB of at least t."
        + (
            " miou@otsu / miou@tuned (prior miou@...: the class prior's): the mean IoU over "
            "the findings of the map rescaled to [0, 1] and thresholded by Otsu's method, or "
            "at the class's threshold tuned on the "
            f"{loc['miou']['tuned_on']} ({loc['miou']['tuning_findings']} findings), as "
            "cheXlocalize does."
            if "miou" in loc
            else ""
        )
    )
