"""The experiment report's ``table.md`` and ``table.csv`` (:func:`tables`), from what
``report.json`` holds (:func:`chestattn_jax.experiment.report`): the headline table first
(the mean of the per-fold AUCs, training seeds combined where there are several), then
each training seed's tables (the same figure, the pooled out-of-fold AUC, the λ chosen),
and the localisation tables, every figure with its interval."""

from __future__ import annotations

from chestattn_jax.reporting.text_tables import (
    MISSING,
    auc_cell,
    csv_text,
    difference_cell,
    exact_number,
    markdown,
    mean_sd_cell,
)

CSV_HEADER = (
    "scope",
    "figure",
    "class",
    "column",
    "value",
    "ci_low",
    "ci_high",
    "folds_positive",
    "folds_defined",
)


def _auc_rows(figure: dict, variants, classes, per_fold=None) -> tuple[list, list]:
    """A figure's Markdown rows and header: per class (and the mean), each variant's AUC
    with its interval, each pair's paired difference and in how many folds it is
    positive; with ``per_fold`` (each variant's folds' AUCs), their mean ± sd."""
    aucs, diffs = figure["aucs"], figure["differences"]
    names = list(diffs)
    header = ["class", *variants, *names]
    if per_fold is not None:
        header += [f"{v} folds mean ± sd" for v in variants]
    by_fold = any("folds_positive" in d["mean"] for d in diffs.values())
    if by_fold:
        header.append(f"folds > 0 ({', '.join(names)})")
    rows = []
    for c in [*classes, "mean"]:
        mean = c == "mean"
        row = [c if not mean else "**mean**"]
        row += [
            auc_cell(a["mean_auc"], a["mean_ci"])
            if mean
            else auc_cell(a["classes"][c]["auc"], a["classes"][c]["ci"])
            for a in (aucs[v] for v in variants)
        ]
        row += [difference_cell(d["mean"] if mean else d["classes"][c]) for d in diffs.values()]
        if per_fold is not None:
            row += [
                mean_sd_cell([f["mean_auc"] if mean else f["auc"][c] for f in per_fold[v]])
                for v in variants
            ]
        if by_fold:
            row.append(
                ", ".join(
                    _folds_positive(d["mean"] if mean else d["classes"][c]) for d in diffs.values()
                )
            )
        rows.append(row)
    return header, rows


def _folds_positive(summary: dict) -> str:
    if summary.get("folds_positive") is None:
        return MISSING
    return f"{summary['folds_positive']}/{summary['folds_defined']}"


def _csv_rows(scope: str, name: str, figure: dict, variants, classes) -> list:
    rows = []
    for c in [*classes, "mean"]:
        for v in variants:
            a = figure["aucs"][v]
            value, ci = (
                (a["mean_auc"], a["mean_ci"])
                if c == "mean"
                else (a["classes"][c]["auc"], a["classes"][c]["ci"])
            )
            rows.append([scope, name, c, v, value, *(ci or (None, None)), None, None])
        for pair, d in figure["differences"].items():
            s = d["mean"] if c == "mean" else d["classes"][c]
            rows.append(
                [
                    scope,
                    name,
                    c,
                    pair,
                    s["difference"],
                    *(s["ci"] or (None, None)),
                    s.get("folds_positive"),
                    s.get("folds_defined"),
                ]
            )
    return rows


def _lambda_line(seed_report: dict, criterion: str, seed: str = "") -> str:
    lams = ", ".join(
        f"fold {f}: λ = {exact_number(v['lambda'])}" for f, v in seed_report["lambda"].items()
    )
    return f"λ chosen on validation ({criterion}){seed}: {lams}." if lams else ""


# The localisation columns the tables show per class: both pointing games, the headline
# (cheXlocalize's pixel pointing game) first; the IoU / IoBB accuracies get their means.
POINTING_GAMES = (
    (
        "pixel_hit",
        "the pointing game as cheXlocalize defines it (the argmax pixel of the map upsampled "
        "to the image lies in the truth)",
    ),
    (
        "cell_hit",
        "the cell-level pointing game (the argmax map cell touches the truth: lenient)",
    ),
)


def _rate_cell(summary: dict | None) -> str:
    if summary is None or summary.get("rate") is None:
        return MISSING
    ci = summary.get("ci")
    return f"{summary['rate']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _difference_cell_2(summary: dict) -> str:
    d, ci = summary["difference"], summary["ci"]
    if d is None:
        return MISSING
    return f"{d:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def _localization(loc: dict | None, classes) -> tuple[list[str], list]:
    """The localisation tables' Markdown lines and CSV rows (without their scope); nothing
    without localisation. Per pointing game: per class the findings, each source's hit
    rate with its interval, the paired differences, and where the class prior came from;
    then the mean IoU / IoBB accuracies."""
    if not loc:
        return [], []
    sources, diffs = list(loc["rates"]), list(loc["differences"])
    md, csv_rows = [], []
    built = loc["prior_built_from"]
    origins = {c: sorted({(b or {}).get(c, MISSING) for b in built}) for c in classes}
    for column, title in POINTING_GAMES:
        header = ["class", "findings", *(n.replace("_", " ") for n in sources), *diffs]
        header.append("class prior built from")
        rows = []
        for c in [*classes, "mean"]:
            mean = c == "mean"
            rates = [loc["rates"][n][column] for n in sources]
            count = rates[0]["count"] if mean else rates[0]["classes"][c]["count"]
            row = ["**mean**" if mean else c, count]
            for r in rates:
                summary = {"rate": r["mean_rate"], "ci": r["mean_ci"]} if mean else r["classes"][c]
                row.append(_rate_cell(summary))
            row += [
                _difference_cell_2(loc["differences"][d][column]["mean" if mean else "classes"])
                if mean
                else _difference_cell_2(loc["differences"][d][column]["classes"][c])
                for d in diffs
            ]
            row.append("" if mean else ", ".join(origins[c]))
            rows.append(row)
            for n, r in zip(sources, rates, strict=True):
                summary = {"rate": r["mean_rate"], "ci": r["mean_ci"]} if mean else r["classes"][c]
                csv_rows.append(
                    [
                        column,
                        c,
                        n,
                        summary.get("rate"),
                        *(summary.get("ci") or (None, None)),
                        None,
                        None,
                    ]
                )
            for d in diffs:
                x = loc["differences"][d][column]
                x = x["mean"] if mean else x["classes"][c]
                csv_rows.append(
                    [column, c, d, x["difference"], *(x["ci"] or (None, None)), None, None]
                )
        headline = "Headline localisation" if column == loc["headline"] else "Localisation"
        md += [
            f"{headline}: {title}, hit rate per finding:",
            "",
            markdown(header, rows),
            "",
        ]
    others = [c for c in loc["columns"] if c not in dict(POINTING_GAMES)]
    if others:
        header = ["mean over classes", *(n.replace("_", " ") for n in sources)]
        rows = [
            [
                c,
                *(
                    _rate_cell(
                        {
                            "rate": loc["rates"][n][c]["mean_rate"],
                            "ci": loc["rates"][n][c]["mean_ci"],
                        }
                    )
                    for n in sources
                ),
            ]
            for c in others
        ]
        md += [
            "IoU / IoBB accuracy (the share of findings whose thresholded map reaches IoU or "
            "IoBB t, written iou@t), mean over classes:",
            "",
            markdown(header, rows),
            "",
        ]
    md += [loc["covers"] + ".", ""]
    return md, csv_rows


def tables(report: dict) -> tuple[str, str]:
    """``table.md`` and ``table.csv`` of ``report`` (what ``report.json`` holds)."""
    variants, classes = report["variants"], report["classes"]
    seeds = list(report["seeds"])
    md, csv_rows = [], []
    if report["mismatches"]:
        md += [
            "**Reported with --allow_mismatch: these cells do not belong together, and the "
            "figures below mix them:**",
            "",
            *[f"- {m}" for m in report["mismatches"]],
            "",
        ]
    combined = report["combined"]
    headline = combined or report["seeds"][seeds[0]]
    scope = "seeds " + ", ".join(seeds) if combined else f"seed {seeds[0]}"
    fm = headline["fold_mean"]
    header, rows = _auc_rows(fm, variants, classes, None if combined else headline["per_fold"])
    some = next(iter(fm["aucs"].values()))
    md += [
        f"## Mean of the per-fold test AUCs, {report['folds']} folds, training {scope}",
        "",
        markdown(header, rows),
        "",
        f"{some['covers']}. Differences are paired (the same draws for both models); "
        "folds > 0 counts the folds whose difference"
        + (" (mean over seeds)" if combined else "")
        + " is positive.",
        "",
    ]
    csv_scope = "combined" if combined else f"seed {seeds[0]}"
    csv_rows += _csv_rows(csv_scope, "fold_mean", fm, variants, classes)
    if combined:
        md += [
            _lambda_line(report["seeds"][s], report["lambda_criterion"], f", seed {s}")
            for s in seeds
        ]
        md.append("")
        lines, loc_csv = _localization(combined["localization"], classes)
        md += lines
        csv_rows += [[csv_scope, *r] for r in loc_csv]
    for s in seeds:
        r = report["seeds"][s]
        if combined:
            header, rows = _auc_rows(r["fold_mean"], variants, classes, r["per_fold"])
            md += [
                f"## Training seed {s}",
                "",
                "Mean of the per-fold test AUCs:",
                "",
                markdown(header, rows),
                "",
            ]
            csv_rows += _csv_rows(f"seed {s}", "fold_mean", r["fold_mean"], variants, classes)
        header, rows = _auc_rows(r["pooled"], variants, classes)
        md += [
            f"Pooled out-of-fold test AUC, seed {s} (a second figure: the "
            f"{r['pooled']['num_examples']} test images of every fold in one ROC, which mixes "
            "the fold models' score scales):",
            "",
            markdown(header, rows),
            "",
            f"Intervals: {report['num_draws']} patient-level bootstrap draws of the pooled test "
            "images. " + _lambda_line(r, report["lambda_criterion"]),
            "",
        ]
        csv_rows += _csv_rows(f"seed {s}", "pooled", r["pooled"], variants, classes)
        lines, loc_csv = _localization(r["localization"], classes)
        md += lines
        csv_rows += [[f"seed {s}", *row] for row in loc_csv]
    return "\n".join(md), csv_text(CSV_HEADER, csv_rows)
