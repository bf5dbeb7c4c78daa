"""The per-class table, as ``per_class.csv`` and ``per_class.md``: AUC with its 95 %
interval, positives and negatives, and where there is truth the model's localisation
scores beside its baselines'. It tabulates what the evaluators before it in
``config.eval.evaluators`` added to ``metrics``.
"""

from __future__ import annotations

import os

from chestattn_jax import tables
from chestattn_jax import workdir as workdir_lib
from chestattn_jax.evaluation import evaluators
from chestattn_jax.localization import OVERLAP_THRESHOLDS

BASELINE_COLUMNS = (("class_prior", "prior_hit_rate"), ("uniform", "uniform_hit_rate"))


def _fmt(v, digits=3):
    return "" if v is None else f"{v:.{digits}f}"


def per_class_rows(metrics: dict, classes, evaluated_as=None) -> list[dict]:
    """One row per class (and a final ``mean`` row): AUC, interval, counts, localisation.
    With ``evaluated_as`` (a cross-dataset evaluation) a class the evaluated data set
    names otherwise is shown as ``model class = data set class``."""
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


def markdown(metrics: dict, rows: list[dict]) -> str:
    header = ["class", "AUC [95% CI]", "pos", "neg"]
    loc_cols = [k for k in rows[0] if k.endswith("hit_rate") or "@" in k]
    header += [k.replace("_", " ") for k in loc_cols]
    settings = metrics.get("settings") or {}
    cells_rows = []
    for r in rows:
        auc = _fmt(r["auc"])
        if r["auc_low"] is not None:
            auc += f" [{_fmt(r['auc_low'])}, {_fmt(r['auc_high'])}]"
        cells = [
            r["class"],
            auc,
            "" if r.get("positives") is None else str(r["positives"]),
            "" if r.get("negatives") is None else str(r["negatives"]),
        ]
        cells += [_fmt(r[k], 2) for k in loc_cols]
        cells_rows.append(cells)
    lines = [
        f"{metrics.get('variant', '')} model, {metrics.get('split', '')} split, "
        f"step {metrics.get('step', '')}, {metrics.get('num_examples', '')} images"
        + (f", {settings['data.image_size']} px" if "data.image_size" in settings else ""),
        "",
        tables.markdown(header, cells_rows),
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


class Evaluator(evaluators.Evaluator):
    after = ("auc", "localization")
    requires = (("auc", "tables tabulates the AUCs"),)
    outputs = ("per_class.csv", "per_class.md")

    def finish(self, record, metrics) -> None:
        if not self.ctx.writes:
            return
        rows = per_class_rows(metrics, list(record.classes), list(record.evaluated_as))
        out = self.ctx.out_dir
        table = tables.csv_text(list(rows[0]), [list(r.values()) for r in rows])
        workdir_lib.write_text(os.path.join(out, "per_class.csv"), table)
        workdir_lib.write_text(os.path.join(out, "per_class.md"), markdown(metrics, rows))
