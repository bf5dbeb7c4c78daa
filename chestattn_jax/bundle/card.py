"""The model card of a bundle (``MODEL_CARD.md``), written from its metadata alone."""

from __future__ import annotations


def _ci(entry) -> str:
    """``0.812 (0.790-0.833)`` of ``{"value", "ci"}``; ``n/a`` without a value."""
    value = (entry or {}).get("value")
    if value is None:
        return "n/a"
    ci = entry.get("ci")
    return f"{value:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")


def _table(headers, rows) -> list[str]:
    def cell(x) -> str:
        return "n/a" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))

    return [
        "| " + " | ".join(map(str, headers)) + " |",
        "|" + "---|" * len(headers),
        *("| " + " | ".join(cell(x) for x in row) + " |" for row in rows),
    ]


def model_card(m: dict) -> str:
    """Markdown: intended use, data, results with intervals, subgroups where evaluated,
    thresholds, limitations; from ``metadata.json``'s content ``m``."""
    model, data, inp = m["model"], m["data"], m["input"]
    classes = m["classes"]
    lines = [
        f"# Model card: {model['name']} ({len(classes)} classes, {inp['image_size']} px)",
        "",
        f"Bundle format {m['format_version']}, written {m['created']} by chestattn_jax "
        f"{m['versions'].get('chestattn_jax')} (jax {m['versions'].get('jax')}); checkpoint "
        f"{model['checkpoint']['which']} (step {model['checkpoint']['step']}).",
        "",
        "## Intended use",
        "",
        m["task"],
        "",
        "For research on attention-based chest radiograph classification. Not a medical "
        "device: not validated for clinical use, and not to be used to diagnose, triage or "
        "treat anyone.",
        "",
        "Classes, in output order: " + ", ".join(classes) + ".",
        "",
        "## Inputs",
        "",
        f"- One frontal chest radiograph per image: {inp['grayscale']}.",
        f"- Letterbox: {inp['letterbox']}.",
        f"- Normalisation: {inp['normalisation']['formula']} with mean "
        f"{inp['normalisation']['mean']} and std {inp['normalisation']['std']}.",
        "- DICOM: modality LUT "
        + inp["dicom"]["modality_lut"]
        + "; VOI LUT "
        + inp["dicom"]["voi_lut"]
        + "; MONOCHROME1 "
        + inp["dicom"]["monochrome1"]
        + ".",
        "",
        "## Data",
        "",
        f"Trained on `{data['name']}`"
        + (f" ({data['records']} records)" if data.get("records") else "")
        + (f", fingerprint `{data['fingerprint']}`." if data.get("fingerprint") else "."),
        "",
    ]
    if data.get("phantoms"):
        lines += [
            "**Trained on synthetic phantoms**, not radiographs: its scores on real "
            "radiographs mean nothing clinically. It exists to test the pipeline.",
            "",
        ]
    lines += ["## Results", ""]
    ev = m.get("evaluation")
    if ev is None:
        lines += [f"Not evaluated at this checkpoint: {m.get('evaluation_why')}", ""]
    else:
        level = ev.get("level")
        pct = f"{100 * level:.0f} %" if level else "the"
        lines += [
            f"On the {ev['split']} split ({ev['images']} images) at step {ev['step']}, "
            f"{pct} intervals from a {ev.get('resampling') or 'bootstrap'}.",
            "",
            f"Mean AUC: {_ci(ev['mean_auc'])}.",
            "",
            *_table(["class", "AUC (interval)"], [[c, _ci(ev["auc"].get(c))] for c in classes]),
            "",
        ]
        if ev.get("pointing_game") is not None:
            lines += [f"Pointing game (mean hit rate of the maps): {ev['pointing_game']:.3f}.", ""]
        if ev.get("subgroups"):
            lines += ["### Subgroups", ""]
            for t in ev["subgroups"]:
                lines += [f"**{t['title']}**", "", *_table(t["headers"], t["rows"]), ""]
        else:
            lines += ["Subgroups: not evaluated.", ""]
    t = m.get("thresholds")
    lines += ["## Operating thresholds", ""]
    if t is None:
        lines += [f"None: {m.get('thresholds_why')}", ""]
    else:
        lines += [
            f"Rule `{t['rule']}`, chosen on the {t['chosen_on']} at step {t['step']}"
            + (", with a recalibration fitted there" if t.get("recalibration") else "")
            + ". A class is called positive where its probability is at least:",
            "",
            *_table(
                ["class", "threshold", "note"],
                [[c, t["values"].get(c), t.get("reasons", {}).get(c, "")] for c in classes],
            ),
            "",
        ]
    lines += [
        "## Limitations",
        "",
        "- Trained on frontal views; a lateral image's scores are not to be trusted.",
        "- Probabilities are calibrated only as far as the results above say; the "
        "thresholds were chosen on one validation split.",
        "- The attention maps show where the model weighted features, not a segmentation.",
    ]
    if data.get("phantoms"):
        lines.append("- Trained and evaluated on synthetic phantoms only.")
    return "\n".join(lines) + "\n"
