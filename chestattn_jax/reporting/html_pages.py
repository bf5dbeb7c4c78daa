"""``report.html`` of ``compare`` (:func:`compare_page`) and of the experiment report
(:func:`experiment_page`): the numbers of ``comparison.json`` and ``report.json`` on one
page each, in the layout and with the building blocks of an evaluation's page
(:mod:`chestattn_jax.reporting.html_blocks`): every table sortable by any column, every
figure embedded, readable without JavaScript. Both are pure: the commands gather and write.
"""

from __future__ import annotations

import numpy as np

from chestattn_jax.reporting import html_report
from chestattn_jax.reporting.html_blocks import (
    escape,
    facts,
    figure,
    not_available,
    num,
    page,
    signed,
    table,
    text_cell,
)
from chestattn_jax.reporting.html_report import SECTIONS
from chestattn_jax.reporting.text_tables import exact_number, mean_sd_cell

# What compare's page says of each compared evaluation besides the sections: the
# operating points' thresholds (a file) and the evaluation's own page.
EVALUATION_FILES = {"thresholds.json": "thresholds.json", "report.html": "report.html"}


def absent_parts(metrics: dict | None, files) -> dict:
    """Why each part of an evaluation (its page's :data:`SECTIONS`, and
    :data:`EVALUATION_FILES`) is not available, from its ``metrics`` (``metrics.json``;
    ``None`` where it has none) and the names of the ``files`` in its folder:
    ``{part: why}``, parts that are there left out. An evaluation made before these
    evaluators existed says so (:data:`chestattn_jax.reporting.html_report.BEFORE_EVALUATORS`)."""
    if metrics is None:
        why = f"no metrics.json: the evaluation did not finish; {RERUN}."
        return dict.fromkeys([*SECTIONS, *EVALUATION_FILES], why)
    before = f"{html_report.BEFORE_EVALUATORS}."
    old = {key for key in SECTIONS if html_report.predates(metrics, key)}
    out = {
        key: before if key in old else html_report.section_absent(metrics, key) for key in SECTIONS
    }
    files = set(files)
    missing = "the file is missing from the folder."
    if "thresholds.json" not in files:
        out["thresholds.json"] = out["operating_points"] or missing
    ran = metrics.get("evaluators") or []
    if "report.html" not in files:
        if "report_html" in ran:
            out["report.html"] = missing
        elif old:
            out["report.html"] = before
        else:
            out["report.html"] = (
                f"the report_html evaluator did not run (evaluators: {', '.join(ran)})."
            )
    return {k: v for k, v in out.items() if v is not None}


RERUN = "re-run --mode=evaluate"


# These pages' tables have a column per model and per pair: a little more room.
_WIDE = "main,header .inner,footer{max-width:1320px}"


def _auc(summary: dict, c: str | None) -> tuple[str, str]:
    """A bootstrap summary's AUC of class ``c`` (``None``: the mean) with its interval."""
    if c is None:
        return num(summary["mean_auc"], 3, summary.get("mean_ci"))
    entry = summary["classes"][c]
    return num(entry["auc"], 3, entry.get("ci"))


def _difference(summary: dict, c: str | None) -> tuple[str, str]:
    """A paired difference's summary of class ``c`` (``None``: the mean) with its interval."""
    entry = summary["mean"] if c is None else summary["classes"][c]
    return signed(entry["difference"], 3, entry.get("ci"))


def _key(names_values, label: str) -> str:
    """The header's headline numbers: ``label: name <strong>cell</strong>`` joined by dots."""
    out = [f"{escape(n)} <strong>{v}</strong>" for n, v in names_values]
    joined = " <span class=sep>·</span> ".join(out)
    return f'<p class="key">{escape(label)}: {joined}</p>' if out else ""


# ------------------------------------------------------------------------------ compare


def compare_page(comparison: dict, images: dict | None = None) -> str:
    """``compare``'s page for ``comparison`` (what ``comparison.json`` holds:
    :func:`chestattn_jax.compare.compare`); ``images`` maps the figures it names to
    ``data:`` URIs."""
    images = images or {}
    names = comparison["names"]
    ref = names[0]
    sections = [
        ("compared", "What was compared", _compared(comparison)),
        ("models", "Mean AUC", _models(comparison)),
        ("per_class", "AUC per class", _per_class(comparison)),
        ("evaluations", "Sections of each evaluation", _evaluations(comparison)),
        ("figures", "Figures", _figures(comparison, images)),
    ]
    key = _key([(n, _auc(comparison["auc"][n], None)[0]) for n in names], "Mean AUC")
    data = comparison.get("dataset") or {}
    models = f"{len(names)} models against {ref}" if len(names) > 1 else ref
    subtitle = (
        f"{models}, "
        f"{comparison.get('split') or '?'} split of {data.get('name') or '?'} "
        f"({comparison['num_examples']} images)"
    )
    return page(
        "Model comparison",
        subtitle,
        sections,
        key=key,
        extra_css=_WIDE,
        footer="Written by python -m chestattn_jax.compare beside comparison.json, table.md "
        "and table.csv.",
    )


def _compared(comparison: dict) -> str:
    names, evaluations = comparison["names"], comparison["evaluations"]
    data = comparison.get("dataset") or {}
    out = facts(
        [
            ("Data set", data.get("name")),
            ("Data set fingerprint", data.get("fingerprint")),
            ("Split", comparison.get("split")),
            ("Images", comparison["num_examples"]),
            ("Reference model", names[0]),
            (
                "Bootstrap",
                f"{comparison['num_draws']} patient-level draws, seed "
                f"{comparison['seed']}, the same draws for every model",
            ),
        ]
    )
    if data.get("differs"):
        out += f'<p class="na">{escape(data["differs"])}</p>'
    # Each model's fingerprint where they differ (else it is the one above).
    prints = bool(data.get("differs"))
    rows = [
        [
            text_cell(n),
            text_cell(evaluations[n].get("variant") or ""),
            num(evaluations[n].get("step")),
            _report_link(evaluations[n]),
            text_cell(evaluations[n]["workdir"]),
            *([text_cell(evaluations[n].get("dataset_fingerprint") or "")] if prints else []),
        ]
        for n in names
    ]
    out += table(
        [
            "model",
            "variant",
            "step",
            "evaluation page",
            "workdir",
            *(["data set fingerprint"] if prints else []),
        ],
        rows,
        numeric=[False, False, True, False, False, *([False] if prints else [])],
        caption="Models (the first is the reference of every difference)",
    )
    settings = {n: evaluations[n].get("settings") or {} for n in names}
    keys = list(dict.fromkeys(k for s in settings.values() for k in s))
    differ = [k for k in keys if len({repr(settings[n].get(k)) for n in names}) > 1]
    if differ:
        rows = [
            [text_cell(k), *(text_cell(_value(settings[n].get(k))) for n in names)] for k in differ
        ]
        out += "<h3>Evaluation settings that differ between the models</h3>" + table(
            ["setting", *names], rows, numeric=[False] * (len(names) + 1)
        )
    elif keys:
        out += '<p class="note">Every model was evaluated with the same settings.</p>'
    if keys:
        rows = [
            [text_cell(k), *(text_cell(_value(settings[n].get(k))) for n in names)] for k in keys
        ]
        out += (
            f"<details><summary>All evaluation settings ({len(keys)})</summary>"
            f"{table(['setting', *names], rows, numeric=[False] * (len(names) + 1))}</details>"
        )
    return out


def _value(v) -> str:
    if v is None:
        return "(not recorded)"
    return v if isinstance(v, str) else str(v)


def _report_link(evaluation: dict) -> tuple[str, None]:
    href, path = evaluation.get("report"), evaluation.get("report_file")
    if href:
        return f'<a href="{escape(href)}">report.html</a>', None
    if path:  # in a bucket: the browser cannot open it from here
        return escape(path), None
    why = evaluation["absent"].get("report.html", "")
    return f'<span class="muted">no report.html: {escape(why)}</span>', None


def _models(comparison: dict) -> str:
    names = comparison["names"]
    diffs = comparison["difference"]
    classes = comparison["classes"]
    rows = []
    for n in names:
        d = diffs.get(n)
        better = worse = None
        if d is not None:
            cis = [d["classes"][c]["ci"] for c in classes if d["classes"][c]["ci"]]
            better = sum(1 for lo, _ in cis if lo > 0)
            worse = sum(1 for _, hi in cis if hi < 0)
        rows.append(
            [
                text_cell(n),
                text_cell(comparison["evaluations"][n].get("variant") or ""),
                _auc(comparison["auc"][n], None),
                _difference(d, None) if d else ("reference", ""),
                num(None if d is None else d["mean"].get("p_not_better")),
                num(better),
                num(worse),
            ]
        )
    return (
        table(
            [
                "model",
                "variant",
                "mean AUC [95% CI]",
                "difference [95% CI]",
                "draws ≤ 0",
                "classes better",
                "classes worse",
            ],
            rows,
            numeric=[False, False, True, True, True, True, True],
            caption=f"Mean AUC over classes, differences against {names[0]} (click a heading "
            "to sort)",
        )
        + f'<p class="note">Intervals: 95 %, from {comparison["num_draws"]} patient-level '
        "bootstrap draws; differences are paired (the same draws for both models). Draws ≤ 0: "
        "the share of draws whose difference is not above 0. Classes better / worse: those "
        "whose difference's interval lies above / below 0.</p>"
    )


def _per_class(comparison: dict) -> str:
    names, classes = comparison["names"], comparison["classes"]
    later = names[1:]

    def aucs(c):
        counts = [comparison[k][c] for k in ("positives", "negatives")] if c else [None, None]
        return [
            text_cell("mean" if c is None else c),
            *(num(n) if c is not None else ("", "") for n in counts),
            *(_auc(comparison["auc"][n], c) for n in names),
        ]

    def differences(c):
        return [
            text_cell("mean" if c is None else c),
            *(_difference(comparison["difference"][n], c) for n in later),
        ]

    headers = ["class", "positives", "negatives", *names]
    out = table(
        headers,
        [aucs(c) for c in classes],
        foot=aucs(None),
        numeric=[False] + [True] * (len(headers) - 1),
        caption="AUC per class [95% CI] (click a heading to sort)",
    )
    if later:
        out += table(
            ["class", *later],
            [differences(c) for c in classes],
            foot=differences(None),
            numeric=[False] + [True] * len(later),
            caption=f"Paired differences of the AUC against {names[0]} [95% CI]",
        )
    return out + (
        '<p class="note">n/a: the class has one label value in the split (no AUC). '
        f"Intervals: 95 %, from {comparison['num_draws']} patient-level bootstrap draws, the "
        "same draws for every model.</p>"
    )


def _evaluations(comparison: dict) -> str:
    names, evaluations = comparison["names"], comparison["evaluations"]
    columns = [*SECTIONS, *EVALUATION_FILES]
    titles = [*SECTIONS.values(), *EVALUATION_FILES.values()]
    reasons = list(dict.fromkeys(w for n in names for w in evaluations[n]["absent"].values()))

    def state(e, key):
        why = e["absent"].get(key)
        if why is None:
            return '<span class="ok">present</span>', None
        i = reasons.index(why) + 1
        return f'<span class="no">not available</span> <a href="#why-{i}">[{i}]</a>', None

    rows = [[text_cell(n), *(state(evaluations[n], k) for k in columns)] for n in names]
    notes = "".join(f'<li id="why-{i}">{escape(w)}</li>' for i, w in enumerate(reasons, 1))
    return (
        "<p>What each compared evaluation holds beyond its predictions (the sections of "
        "its own report.html); one that is not available says why.</p>"
        + table(
            ["model", *titles],
            rows,
            numeric=[False] * (len(columns) + 1),
            caption="What each evaluation holds",
        )
        + (f'<ol class="note">{notes}</ol>' if reasons else "")
    )


# The figures compare may write, with their captions and why each can be missing.
COMPARE_FIGURES = (
    (
        "fig3_average_masks.png",
        "Fig. 3: each class's map averaged over the test images whose only finding is that "
        "class, one row per attention model",
        "no compared workdir has eval/attention_examples.npz (the resnet variant has no maps; "
        "the figures evaluator writes them).",
    ),
    (
        "fig2_attention.png",
        "Fig. 2: each example image, the image-based map and the class-based map of each "
        "positive class",
        "needs one image-based and one class-based workdir with eval/attention_examples.npz "
        "of the same images.",
    ),
)


def _figures(comparison: dict, images: dict) -> str:
    written = set(comparison.get("figures") or [])
    return "".join(
        figure(images, name, caption, why if name not in written else f"{name} is missing.")
        for name, caption, why in COMPARE_FIGURES
    )


# --------------------------------------------------------------------------- experiment


def experiment_page(report: dict, images: dict | None = None) -> str:
    """The experiment report's page for ``report`` (what ``report.json`` holds:
    :func:`chestattn_jax.experiment.report`); ``images`` maps ``forest.png`` to a
    ``data:`` URI."""
    images = images or {}
    variants = report["variants"]
    seeds = list(report["seeds"])
    combined = report["combined"]
    headline = combined or report["seeds"][seeds[0]]
    scope = f"training seeds {', '.join(seeds)}" if combined else f"training seed {seeds[0]}"
    sections = []
    if report["mismatches"]:
        sections.append(("mismatches", "Cells that do not belong together", _mismatches(report)))
    sections += [
        ("headline", "Headline: mean of the per-fold test AUCs", _headline(report, headline)),
        ("forest", "Forest plot", _forest(images, headline)),
        ("seeds", "Per training seed", _seeds(report)),
        ("localization", "Localisation", _experiment_localization(report, headline)),
    ]
    aucs = headline["fold_mean"]["aucs"]
    key = _key([(v, _auc(aucs[v], None)[0]) for v in variants], "Mean AUC")
    if report["mismatches"]:
        n = len(report["mismatches"])
        key += (
            '<p class="na"><strong>Reported with --allow_mismatch:</strong> '
            f'<a href="#mismatches">{n} difference{"s" if n > 1 else ""} between its '
            "cells</a>; the figures mix them.</p>"
        )
    return page(
        "Experiment report",
        f"{', '.join(variants)}; {report['folds']} folds, {scope}; λ chosen by "
        f"{report['lambda_criterion']}",
        sections,
        key=key,
        extra_css=_WIDE,
        footer="Written by python -m chestattn_jax.experiment --report beside report.json, "
        "table.md and table.csv.",
    )


def _mismatches(report: dict) -> str:
    items = "".join(f"<li>{escape(m)}</li>" for m in report["mismatches"])
    return (
        '<p class="na">Reported with --allow_mismatch: the report would have been refused for '
        "these differences, and the figures below mix the cells they name.</p>"
        f"<ul>{items}</ul>"
    )


def _auc_table(figure_: dict, variants, classes, caption: str, per_fold=None) -> str:
    """A figure's two tables (the experiment's ``fold_mean`` or ``pooled``), per class and
    the mean: each variant's AUC with its interval (and with ``per_fold``, each variant's
    folds' AUCs, their mean ± sd); then each pair's paired difference with its interval
    and, where the figure counts them, the folds whose difference is positive."""
    aucs, diffs = figure_["aucs"], figure_["differences"]
    pairs = list(diffs)
    by_fold = [p for p in pairs if "folds_positive" in diffs[p]["mean"]]
    spread = list(variants) if per_fold else []

    def folds(p, c):
        s = diffs[p]["mean"] if c is None else diffs[p]["classes"][c]
        if s.get("folds_positive") is None:
            return num(None)
        return f"{s['folds_positive']}/{s['folds_defined']}", repr(float(s["folds_positive"]))

    def mean_sd(v, c):
        values = [f["mean_auc"] if c is None else f["auc"][c] for f in per_fold[v]]
        values = [x for x in values if x is not None]
        key = repr(float(np.mean(values))) if values else ""
        return mean_sd_cell(values), key

    def auc_cells(c):
        return [
            text_cell("mean" if c is None else c),
            *(_auc(aucs[v], c) for v in variants),
            *(mean_sd(v, c) for v in spread),
        ]

    def difference_cells(c):
        return [
            text_cell("mean" if c is None else c),
            *(_difference(diffs[p], c) for p in pairs),
            *(folds(p, c) for p in by_fold),
        ]

    headers = ["class", *(f"{v} AUC" for v in variants), *(f"{v} folds mean ± sd" for v in spread)]
    out = table(
        headers,
        [auc_cells(c) for c in classes],
        foot=auc_cells(None),
        numeric=[False] + [True] * (len(headers) - 1),
        caption=caption,
    )
    if not pairs:
        return out
    headers = ["class", *map(_source, pairs), *(f"{_source(p)} > 0" for p in by_fold)]
    return out + table(
        headers,
        [difference_cells(c) for c in classes],
        foot=difference_cells(None),
        numeric=[False] + [True] * (len(headers) - 1),
        caption=f"{caption.split(' [')[0]}: paired differences [95% CI]"
        + (" and in how many folds each is positive (> 0)" if by_fold else ""),
    )


def _headline(report: dict, headline: dict) -> str:
    variants, classes = report["variants"], report["classes"]
    fm = headline["fold_mean"]
    some = next(iter(fm["aucs"].values()))
    per_fold = None if report["combined"] else headline["per_fold"]
    return (
        "<p>Each fold is scored with its own models (the class model's at the λ chosen on "
        "that fold's validation split) and the per-fold AUCs are averaged"
        + (" over folds and training seeds" if report["combined"] else "")
        + ".</p>"
        + _auc_table(fm, variants, classes, "Mean of the per-fold test AUCs [95% CI]", per_fold)
        + f'<p class="note">{escape(some["covers"])}. Differences are paired (the same draws '
        "for both models); folds > 0 counts the folds whose difference"
        + (" (mean over seeds)" if report["combined"] else "")
        + " is positive.</p>"
    )


def _forest(images: dict, headline: dict) -> str:
    if not headline["fold_mean"]["differences"]:
        return not_available("one variant only: no paired differences to plot.")
    return figure(
        images,
        "forest.png",
        "Paired differences of the mean per-fold AUC per class, with their 95 % intervals",
        "forest.png is missing.",
    )


def _lambdas(seed_report: dict, criterion: str) -> str:
    lams = ", ".join(
        f"fold {f}: λ = {exact_number(v['lambda'])}" for f, v in seed_report["lambda"].items()
    )
    return f"λ chosen on validation ({criterion}): {lams}." if lams else ""


def _seeds(report: dict) -> str:
    """Each training seed's λ and tables: with several seeds (the headline combines them),
    its mean of the per-fold AUCs and its localisation, folded away; always its pooled
    out-of-fold AUC, a second figure."""
    variants, classes = report["variants"], report["classes"]
    combined = report["combined"] is not None
    out = []
    for s, r in report["seeds"].items():
        body = []
        lams = _lambdas(r, report["lambda_criterion"])
        if lams:
            body.append(f"<p>{escape(lams)}</p>")
        if combined:
            body.append(
                _auc_table(
                    r["fold_mean"],
                    variants,
                    classes,
                    f"Seed {s}: mean of the per-fold test AUCs [95% CI]",
                    r["per_fold"],
                )
            )
        body.append(
            _auc_table(
                r["pooled"], variants, classes, f"Seed {s}: pooled out-of-fold test AUC [95% CI]"
            )
        )
        body.append(
            f'<p class="note">Pooled: the {r["pooled"]["num_examples"]} test images of every '
            "fold in one ROC, a second figure that mixes the fold models' score scales; "
            f"intervals from {report['num_draws']} patient-level bootstrap draws.</p>"
        )
        if combined and r.get("localization"):
            body.append(
                f"<h4>Seed {escape(s)}: localisation</h4>"
                f"{_localization_tables(r['localization'], classes, variants, f'Seed {s}: ')}"
            )
        if combined:
            mean = _auc(r["fold_mean"]["aucs"][variants[-1]], None)[0]
            out.append(
                f"<details><summary>Training seed {escape(s)} ({escape(variants[-1])} mean AUC "
                f"{mean})</summary>{''.join(body)}</details>"
            )
        else:
            out.append(f"<h3>Training seed {escape(s)}</h3>{''.join(body)}")
    note = (
        '<p class="note">Each seed\'s tables (click to open); the headline above combines them.</p>'
        if combined
        else ""
    )
    return note + "".join(out)


_GAMES = {
    "pixel_hit": "Pixel pointing game",
    "cell_hit": "Cell pointing game",
}
_GAMES_NOTE = (
    "Pixel pointing game (cheXlocalize's, the headline): a hit when the argmax pixel of the "
    "map upsampled to the image lies in the truth. Cell pointing game (lenient): a hit when "
    "the argmax map cell touches the truth. iou@t / iobb@t: the share of findings whose "
    "thresholded map reaches IoU / IoBB t."
)


def _experiment_localization(report: dict, headline: dict) -> str:
    loc = headline.get("localization")
    if not loc:
        return not_available(
            "no evaluation of the experiment scored maps against truth (the resnet variant "
            "has no maps; the data set may have no localisation truth)."
        )
    return _localization_tables(loc, report["classes"], report["variants"]) + (
        f'<p class="note">{escape(loc["covers"])}. {escape(_GAMES_NOTE)} Class prior: '
        "each class's average truth mask as a fixed map; uniform: a map that favours no "
        "pixel.</p>"
    )


def _source(name: str) -> str:
    """A source or pair of the localisation tables as shown: ``class − class prior``."""
    return name.replace("_", " ").replace(" - ", " − ")


def _index(items, item) -> int:
    return list(items).index(item) if item in items else 0


def _localization_tables(loc: dict, classes, variants, prefix: str = "") -> str:
    """Per pointing game: per class the findings, each source's hit rate with its
    interval and where the class prior came from, then the paired differences; then the
    mean IoU / IoBB accuracies."""
    # The models in the report's order, then the baselines (report.json sorts its keys).
    sources = sorted(loc["rates"], key=lambda n: (n not in variants, _index(variants, n), n))
    diffs = list(loc["differences"])
    built = loc.get("prior_built_from") or []
    out = []
    for column, title in _GAMES.items():
        if column not in loc["columns"]:
            continue

        def rate_cells(c, column=column):
            rates = [loc["rates"][n][column] for n in sources]
            if c is None:
                return [
                    text_cell("mean"),
                    num(rates[0]["count"]),
                    *(num(r["mean_rate"], 2, r["mean_ci"]) for r in rates),
                    text_cell(""),
                ]
            origin = ", ".join(sorted({str((b or {}).get(c, "n/a")) for b in built}))
            return [
                text_cell(c),
                num(rates[0]["classes"][c]["count"]),
                *(num(r["classes"][c]["rate"], 2, r["classes"][c]["ci"]) for r in rates),
                text_cell(origin),
            ]

        def difference_cells(c, column=column):
            ds = [loc["differences"][d][column] for d in diffs]
            ds = [d["mean"] if c is None else d["classes"][c] for d in ds]
            return [
                text_cell("mean" if c is None else c),
                *(signed(d["difference"], 2, d.get("ci")) for d in ds),
            ]

        headline = " (the headline)" if column == loc["headline"] else ""
        out.append(
            table(
                ["class", "findings", *map(_source, sources), "class prior built from"],
                [rate_cells(c) for c in classes],
                foot=rate_cells(None),
                numeric=[False] + [True] * (1 + len(sources)) + [False],
                caption=f"{prefix}{title}{headline}: hit rate per finding [95% CI]",
            )
        )
        if diffs:
            out.append(
                table(
                    ["class", *map(_source, diffs)],
                    [difference_cells(c) for c in classes],
                    foot=difference_cells(None),
                    numeric=[False] + [True] * len(diffs),
                    caption=f"{prefix}{title}: paired differences of the hit rate [95% CI]",
                )
            )
    others = [c for c in loc["columns"] if c not in _GAMES]
    if others:
        rows = [
            [
                text_cell(c),
                *(
                    num(loc["rates"][n][c]["mean_rate"], 2, loc["rates"][n][c]["mean_ci"])
                    for n in sources
                ),
            ]
            for c in others
        ]
        out.append(
            table(
                ["score", *map(_source, sources)],
                rows,
                numeric=[False] + [True] * len(sources),
                caption=f"{prefix}IoU / IoBB accuracy, mean over classes [95% CI]",
            )
        )
    return "".join(out)
