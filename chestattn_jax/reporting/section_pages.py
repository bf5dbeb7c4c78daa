"""The page view (:mod:`chestattn_jax.reporting.html_report`'s section contract:
``summary``, ``tables``, ``figures``, ``checklist``, ``thresholds``) of what the
calibration, operating-points and subgroups evaluators compute, which each keeps beside its
numbers under ``"page"``."""

from __future__ import annotations


def _vc(entry: dict | None) -> dict | None:
    """``{"value", "ci"}`` of an entry, or ``None`` where it has no value."""
    if not entry or entry.get("value") is None:
        return None
    return {"value": entry["value"], "ci": entry.get("ci")}


def _draws(num_draws: int) -> str:
    if not num_draws:
        return "no intervals (eval.bootstrap_draws = 0)"
    return f"95 % intervals from {num_draws} patient-bootstrap draws"


def _parameters(params: dict | None) -> str:
    if not params:
        return ""
    if not params.get("fitted"):
        return f"identity ({params.get('reason')})"
    if "temperature" in params:
        return f"T = {params['temperature']:.3g}"
    return f"a = {params['a']:.3g}, b = {params['b']:+.3g}"


def calibration_page(cal: dict, split: str) -> dict:
    """The calibration section: per class ECE and Brier before and after recalibration,
    the recalibration's parameters, the reliability diagrams."""
    before, after = cal["before"], cal["after"]
    method = cal["recalibration"]["method"]
    params = cal["recalibration"]["classes"]
    rows = []
    for c, b in before["classes"].items():
        a = after["classes"][c]
        rows.append(
            [
                c,
                _vc(b["ece"]),
                _vc(a["ece"]),
                _vc(b["brier"]),
                _vc(a["brier"]),
                _parameters(params.get(c)),
                b["positives"],
                b.get("reason") or "",
            ]
        )
    rows.append(
        [
            "mean",
            _vc(before["mean_ece"]),
            _vc(after["mean_ece"]),
            _vc(before["mean_brier"]),
            _vc(after["mean_brier"]),
            "",
            None,
            "",
        ]
    )
    summary = (
        f"Expected calibration error ({before['num_bins']} {before['binning'].replace('_', '-')} "
        f"bins) and Brier score on the {split} split, before and after a {method.capitalize()} "
        f"recalibration fitted per class on the {cal['fitted_on']}; "
        f"{_draws(before['num_draws'])}. A recalibration is monotone: it changes no AUC."
    )
    return {
        "summary": summary,
        "tables": [
            {
                "title": "Calibration per class",
                "headers": [
                    "class",
                    "ECE before",
                    "ECE after",
                    "Brier before",
                    "Brier after",
                    "recalibration",
                    "positives",
                    "note",
                ],
                "rows": rows,
            }
        ],
        "figures": [
            {
                "file": "reliability.png",
                "caption": "Reliability diagrams: fraction positive against mean probability "
                "per bin, before (red) and after (blue) recalibration.",
            }
        ],
        "checklist": {
            "12e-calibration": "ECE and Brier score with intervals, reliability diagrams.",
            "12f": f"{method.capitalize()} recalibration fitted on the validation split, before "
            "and after.",
        },
    }


def operating_points_page(ops: dict) -> dict:
    """The operating-points section: per rule, each class's validation-chosen threshold
    and the test split's sensitivity, specificity, PPV, NPV and F1 at it; the ROC points;
    the first rule's thresholds for the gallery."""
    tables = []
    for rule, r in ops["rules"].items():
        rows = []
        for c, chosen in r["validation"].items():
            test = r["test"]["classes"][c]
            rows.append(
                [
                    c,
                    chosen["threshold"],
                    *(_vc(test.get(m)) for m in ("sensitivity", "specificity", "ppv", "npv", "f1")),
                    chosen.get("reason") or test.get("reason") or "",
                ]
            )
        tables.append(
            {
                "title": f"At the thresholds chosen by {rule} on the {ops['chosen_on']}",
                "headers": [
                    "class",
                    "threshold",
                    "sensitivity",
                    "specificity",
                    "PPV",
                    "NPV",
                    "F1",
                    "note",
                ],
                "rows": rows,
            }
        )
    points = ops["roc_points"]["classes"]
    specificities = sorted({s for c in points.values() for s in c["sensitivity_at_specificity"]})
    tables.append(
        {
            "title": "Threshold-free: sensitivity at specificity on the test ROC",
            "headers": ["class", *(f"sensitivity at specificity {s}" for s in specificities)],
            "rows": [
                [c, *(_vc(p["sensitivity_at_specificity"].get(s)) for s in specificities)]
                for c, p in points.items()
            ],
        }
    )
    first = next(iter(ops["rules"]))
    chosen = ops["rules"][first]["validation"]
    return {
        "summary": "Per class, thresholds chosen on the validation split by each rule, and the "
        "evaluated split's sensitivity, specificity, PPV, NPV and F1 there with their "
        "intervals. A class without a threshold says why; none falls back to 0.5. "
        f"thresholds.json holds the {first} thresholds.",
        "tables": tables,
        "thresholds": {c: v["threshold"] for c, v in chosen.items()},
        "threshold_rule": f"{first}, chosen on the {ops['chosen_on']}",
        "checklist": {
            "15": "Thresholds chosen on the validation split by named rules.",
            "12e-utility": "Sensitivity, specificity, PPV and NPV at those thresholds.",
        },
    }


def subgroups_page(sub: dict) -> dict:
    """The subgroups section: per attribute, each subgroup's mean AUC beside the rest of
    the split with the paired difference, then its per-class AUCs."""
    tables = []
    for attribute, groups in (sub.get("attributes") or {}).items():
        rows = []
        for name, g in groups.items():
            m = g["mean"]
            rows.append(
                [
                    name,
                    g.get("images"),
                    g.get("patients"),
                    {"value": m.get("auc"), "ci": m.get("ci")}
                    if m.get("auc") is not None
                    else None,
                    m.get("rest_auc"),
                    {"value": m.get("difference"), "ci": m.get("difference_ci")}
                    if m.get("difference") is not None
                    else None,
                    m.get("reason") or "",
                ]
            )
        tables.append(
            {
                "title": f"By {attribute}: mean AUC over classes",
                "headers": [
                    attribute,
                    "images",
                    "patients",
                    "mean AUC",
                    "rest of the split",
                    "difference",
                    "note",
                ],
                "rows": rows,
            }
        )
        classes = list(next(iter(groups.values()))["classes"]) if groups else []
        tables.append(
            {
                "title": f"By {attribute}: AUC per class",
                "headers": ["class", *groups],
                "rows": [
                    [
                        c,
                        *(
                            {"value": g["classes"][c]["auc"], "ci": g["classes"][c]["ci"]}
                            if g["classes"][c].get("auc") is not None
                            else g["classes"][c].get("reason")
                            for g in groups.values()
                        ),
                    ]
                    for c in classes
                ],
            }
        )
    missing = sub.get("missing") or []
    if not tables:
        return {
            "unavailable": "the evaluated split's images carry no sex, age or view"
            + (f" (missing: {', '.join(missing)})" if missing else "")
            + "."
        }
    return {
        "summary": f"AUC within each subgroup beside the rest of the split, "
        f"{_draws(sub.get('num_draws', 0))} (patients resampled whole); a class with fewer "
        f"than {sub.get('min_positives')} positives or negatives on either side is not "
        "scored.",
        "tables": tables,
        "checklist": {"23a": "AUC with intervals by sex, age band and view."},
    }


def failures_page(failures: dict, split: str) -> dict:
    """The failure-review section: per class the threshold and the split's false-positive
    and false-negative counts (or why the class has no threshold), the listed failures
    with their probabilities, and ``failures.png``."""
    n = failures["num_per_class"]
    if not n:
        return {"unavailable": "config.eval.num_failure_images = 0: no failure review."}
    classes = failures["classes"]
    counts = []
    listed = []
    for c, entry in classes.items():
        found = entry.get("counts") or {}
        counts.append(
            [
                c,
                entry["threshold"],
                found.get("false_positives"),
                found.get("false_negatives"),
                "" if entry["threshold"] is not None else f"no threshold: {entry['reason']}",
            ]
        )
        for kind, short in (("false_positives", "FP"), ("false_negatives", "FN")):
            for ex in entry[kind]:
                listed.append(
                    [
                        c,
                        short,
                        ex["example_id"],
                        ex["patient_id"],
                        ex["prob"],
                        ", ".join(ex["findings"]) or "none",
                    ]
                )
    maps = {
        "class": "the class's map over it",
        "image": "the image's one map over it",
    }.get(failures.get("maps"), "no map (the model has none)")
    return {
        "summary": f"Per class, the {n} most confident false positives (label 0, probability "
        "at or above the threshold, highest first) and false negatives (label 1, below it, "
        f"lowest first) on the {split} split, at the thresholds chosen by "
        f"{failures['rule']} on the {failures['chosen_on']}. A class without a threshold "
        "says why; none falls back to 0.5.",
        "tables": [
            {
                "title": "Failures per class at the threshold",
                "headers": ["class", "threshold", "false positives", "false negatives", "note"],
                "rows": counts,
            },
            {
                "title": "The most confident failures",
                "headers": ["class", "kind", "example", "patient", "probability", "findings"],
                "rows": listed,
                "note": "findings: the example's scored positive labels.",
            },
        ],
        "figures": [
            {
                "file": "failures.png",
                "caption": f"One row per class: its false positives, then its false "
                f"negatives, each the image with {maps}, titled with its example id and "
                "probability.",
            }
        ],
        "checklist": {
            "claim-failures": f"The {n} most confident false positives and false negatives "
            f"per class at the {failures['rule']} thresholds, with images and probabilities.",
        },
    }
