"""The result tables: the paper's Tables 1-2 as ``compare`` writes them (models side by
side) and as the experiment report writes them (pooled over folds), and an evaluation's
per-class table. Each returns its text; the callers write the files.
"""

from __future__ import annotations

from chestattn_jax.localization_metrics import OVERLAP_THRESHOLDS
from chestattn_jax.reporting.text_tables import (
    MISSING,
    auc_cell,
    csv_text,
    difference_cell,
    exact_number,
    markdown,
    mean_sd_cell,
    number,
)

# The localisation baselines beside a model's hit rate: (metrics key, column).
BASELINE_COLUMNS = (("class_prior", "prior_hit_rate"), ("uniform", "uniform_hit_rate"))


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


def experiment_tables(report: dict, variants, classes, folds) -> tuple[str, str]:
    """The experiment report's ``table.md`` and ``table.csv``: one table per training seed
    of ``report`` (what ``report.json`` holds): per class, each variant's pooled AUC and
    the mean ± sd of its folds', each pair's paired difference and in how many folds it
    is positive; the λ chosen per fold; the pointing game beside its baselines."""
    lines, csv_rows = [], []
    for train_seed, r in report["seeds"].items():
        diff_names = list(r["differences"])
        header = [
            "class",
            *[f"{v} pooled AUC [95% CI]" for v in variants],
            *[f"{v} folds mean ± sd" for v in variants],
            *[f"{n} [95% CI]" for n in diff_names],
            *[f"{n} > 0 in folds" for n in diff_names],
        ]
        rows = []
        for c in [*classes, "mean"]:
            mean = c == "mean"
            pooled = [r["pooled"][v] for v in variants]
            row = [c]
            row += [
                auc_cell(p["mean_auc"], p["mean_ci"])
                if mean
                else auc_cell(p["classes"][c]["auc"], p["classes"][c]["ci"])
                for p in pooled
            ]
            row += [
                mean_sd_cell([f["mean_auc"] if mean else f["auc"][c] for f in r["per_fold"][v]])
                for v in variants
            ]
            diffs = [r["differences"][n] for n in diff_names]
            row += [difference_cell(d["mean"] if mean else d["classes"][c]) for d in diffs]
            row += [
                ""
                if mean
                else f"{d['classes'][c]['folds_positive']}/{d['classes'][c]['folds_defined']}"
                for d in diffs
            ]
            rows.append(row)
        lams = ", ".join(
            f"fold {f}: λ = {exact_number(v['lambda'])}" for f, v in r["lambda"].items()
        )
        lines += [
            f"### Training seed {train_seed}: {len(folds)} folds, "
            f"{r['num_examples']} test images pooled",
            "",
            markdown(header, rows),
            "",
            (f"λ chosen on validation ({report['lambda_criterion']}): {lams}. " if lams else "")
            + f"Intervals: {report['num_draws']} patient-level bootstrap draws of the pooled "
            "test images; differences are paired (the same draws for both models).",
            "",
        ]
        loc = r.get("localization")
        if loc:
            names = list(loc)
            loc_rows = [
                [c, *(number(loc[n][c], 2, MISSING) for n in names)] for c in [*classes, "mean"]
            ]
            lines += [
                "Pointing-game hit rate of the gate-3 maps on the test images with truth, mean "
                "over folds, beside a fixed map per class (its average truth mask over the "
                "training split) and a uniform map (a cell drawn at random):",
                "",
                markdown(["class", *(n.replace("_", " ") for n in names)], loc_rows),
                "",
            ]
        csv_rows += [[train_seed, *row] for row in rows]
        csv_header = ["seed", *header]
    return "\n".join(lines), csv_text(csv_header, csv_rows)


def per_class_rows(metrics: dict, classes, evaluated_as=None) -> list[dict]:
    """An evaluation's per-class rows (and a final ``mean`` row) from its ``metrics``: AUC,
    interval, counts, localisation beside its baselines. With ``evaluated_as`` (a
    cross-dataset evaluation) a class the evaluated data set names otherwise is shown as
    ``model class = data set class``."""
    boot = metrics.get("bootstrap") or {}
    loc = metrics.get("localization") or {}
    pg = (loc.get("pointing_game") or {}).get("hit_rate", {})
    ov = loc.get("overlap") or {}
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
            row["hit_rate"] = loc["pointing_game"]["mean_hit_rate"] if mean else pg.get(c)
            # The same game for the baselines: where a class usually lies, and no map.
            for name, key in BASELINE_COLUMNS:
                base = (loc.get("baselines") or {}).get(name)
                if base:
                    bpg = base["pointing_game"]
                    row[key] = bpg["mean_hit_rate"] if mean else bpg["hit_rate"].get(c)
            for t in OVERLAP_THRESHOLDS:
                for name in ("iou", "iobb"):
                    acc = ov[f"mean_{name}_accuracy" if mean else f"{name}_accuracy"][str(t)]
                    row[f"{name}@{t}"] = acc if mean else acc[c]
        rows.append(row)
    return rows


def per_class_csv(rows: list[dict]) -> str:
    """``per_class.csv``: the rows of :func:`per_class_rows`, every number in full."""
    return csv_text(list(rows[0]), [list(r.values()) for r in rows])


def per_class_markdown(metrics: dict, rows: list[dict]) -> str:
    """``per_class.md``: what was evaluated, the rows of :func:`per_class_rows`, and
    notes on a cross-dataset class map and on the localisation baselines."""
    header = ["class", "AUC [95% CI]", "pos", "neg"]
    loc_cols = [k for k in rows[0] if k.endswith("hit_rate") or "@" in k]
    header += [k.replace("_", " ") for k in loc_cols]
    settings = metrics.get("settings") or {}
    cells_rows = [
        [
            r["class"],
            auc_cell(r["auc"], (r["auc_low"], r["auc_high"]), missing=""),
            "" if r.get("positives") is None else str(r["positives"]),
            "" if r.get("negatives") is None else str(r["negatives"]),
            *[number(r[k], 2) for k in loc_cols],
        ]
        for r in rows
    ]
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
    prior = ((metrics.get("localization") or {}).get("baselines") or {}).get("class_prior")
    if prior:
        lines += [
            "",
            "hit rate: the pointing game of the model's maps; prior hit rate: of each class's "
            f"average truth mask ({prior['built_from']}, {prior['images']} images) as a fixed "
            "map; uniform hit rate: of a map that favours no cell (a cell drawn at random).",
        ]
    return "\n".join(lines) + "\n"
