"""The experiment's report, ``ROOT/report/``: the λ chosen per fold on validation, the
folds' test records pooled, Tables 1-2 with patient-bootstrap intervals and paired
differences (:func:`report`)."""

from __future__ import annotations

import os

import numpy as np

from chestattn_jax import workdir as workdir_lib
from chestattn_jax.experiment.finished_cells import changed_cells, refuse_changed
from chestattn_jax.experiment.grid import Cell, cell_workdir, cells, lambda_text, status
from chestattn_jax.metric_writers import read_jsonl
from chestattn_jax.metrics import bootstrap_models, per_class_auc
from chestattn_jax.reporting import result_tables

REPORT_DIR = "report"
# The paired differences of the report: (model, baseline) by variant. The paper's claim is
# class > image > resnet; class - resnet answers the first half directly.
PAIRS = (("class", "image"), ("image", "resnet"), ("class", "resnet"))


def _validation_score(root, cell: Cell, criterion: str) -> float:
    """``cell``'s validation ``criterion`` at the step its evaluation restored (NaN where
    it was undefined: the metric writer logs a non-finite value as null)."""
    w = cell_workdir(root, cell)
    step = workdir_lib.read_json(w / workdir_lib.EVAL_DIR / "metrics.json")["step"]
    rows = read_jsonl(w / workdir_lib.METRICS_FILE)
    key = f"val/{criterion}"
    values = [r[key] for r in rows if r.get("step") == step and key in r]
    if not values:
        raise ValueError(f"{w}: no {key} logged at step {step}, the step it evaluated.")
    return float("nan") if values[-1] is None else float(values[-1])


def choose_lambda(config, root, fold: int, seed: int) -> tuple[float, dict]:
    """The λ of ``fold`` and ``seed`` by ``config.experiment.lambda_criterion``, and every
    λ's validation score."""
    criterion = config.experiment.lambda_criterion
    scores = {}
    for c in cells(config):
        if (c.fold, c.seed, c.variant) == (fold, seed, "class"):
            scores[c.entropy_weight] = _validation_score(root, c, criterion)
    sign = -1.0 if criterion == "mean_auc" else 1.0  # lower is better after the sign
    # An undefined score (NaN: no class with both labels) is never chosen over a defined one.
    best = min(sorted(scores), key=lambda lam: (np.isnan(scores[lam]), sign * scores[lam]))
    return best, scores


def _pooled(records, fold_ids):
    """The folds' records as one: rows concatenated, patients named by fold."""
    from chestattn_jax.evaluation.inference_pass import Record

    first = records[0]
    return Record(
        probs=np.concatenate([r.probs for r in records]),
        labels=np.concatenate([r.labels for r in records]),
        mask=np.concatenate([r.mask for r in records]),
        patient_ids=np.concatenate(
            [
                np.char.add(f"fold{f}:", r.patient_ids.astype(str))
                for r, f in zip(records, fold_ids, strict=True)
            ]
        ),
        example_ids=np.concatenate(
            [
                np.char.add(f"fold{f}:", r.example_ids.astype(str))
                for r, f in zip(records, fold_ids, strict=True)
            ]
        ),
        classes=first.classes,
        evaluated_as=first.evaluated_as,
    )


def report(config, root, num_draws: int = 1000, seed: int = 0) -> dict:
    """Tables 1-2 from the finished cells of ``root``, per training seed, into
    ``ROOT/report/``: ``table.md``, ``table.csv``, ``forest.png`` and ``report.json``.

    Per class and variant: the pooled out-of-fold test AUC (every fold's test images
    once) with a 95 % patient-bootstrap interval, and the mean ± sd of the folds' AUCs;
    per pair of variants (class - image, image - resnet, class - resnet): the pooled
    paired-bootstrap difference with its interval and in how many folds it is positive; the
    λ chosen in each fold. The class model of a fold is its chosen λ's cell.

    Raises a ``ValueError`` before reading any result if a cell is not finished, or was
    finished under other settings than ``config`` gives it (:func:`changed_cells`)."""
    from chestattn_jax.evaluation.inference_pass import Record, check_paired
    from chestattn_jax.reporting import plots

    e = config.experiment
    missing = [c.name for c in cells(config) if status(root, c) != "done"]
    if missing:
        raise ValueError(
            f"{len(missing)} cells of {root} are not finished: {', '.join(missing)}. Run them "
            "first (python -m chestattn_jax.experiment ... without --report)."
        )
    refuse_changed(changed_cells(config, root), root)
    folds = list(range(e.folds))
    out = {"num_draws": num_draws, "seeds": {}, "lambda_criterion": e.lambda_criterion}
    for train_seed in e.seeds:
        chosen, records = {}, {v: [] for v in e.variants}
        localization = {v: [] for v in e.variants}  # each fold's localization metrics
        for fold in folds:
            if "class" in e.variants:
                lam, scores = choose_lambda(config, root, fold, train_seed)
                chosen[fold] = {
                    "lambda": lam,
                    "validation": {lambda_text(k): v for k, v in scores.items()},
                }
            for v in e.variants:
                cell = next(
                    c
                    for c in cells(config)
                    if (c.fold, c.seed, c.variant) == (fold, train_seed, v)
                    and (v != "class" or c.entropy_weight == chosen[fold]["lambda"])
                )
                path = (
                    cell_workdir(root, cell) / workdir_lib.EVAL_DIR / workdir_lib.PREDICTIONS_FILE
                )
                records[v].append(Record.load(path))
                evaluated = workdir_lib.read_json(path.parent / "metrics.json")
                localization[v].append(evaluated.get("localization"))
            names = list(e.variants)
            check_paired(names, [records[v][-1] for v in names])
        classes = list(records[e.variants[0]][0].classes)
        pooled = {v: _pooled(records[v], folds) for v in e.variants}
        ref = pooled[e.variants[0]]
        pairs = [(a, b) for a, b in PAIRS if a in e.variants and b in e.variants]
        table, pair_tables = bootstrap_models(
            ref.labels,
            {v: pooled[v].probs for v in e.variants},
            ref.mask,
            classes,
            ref.patient_ids,
            num_draws,
            seed,
            pairs=pairs,
        )
        per_fold = {
            v: [per_class_auc(r.labels, r.probs, r.mask, classes) for r in records[v]]
            for v in e.variants
        }
        differences = {}
        for a, b in pairs:
            d = pair_tables[(a, b)]
            for c in classes:
                folds_up = [
                    fa["auc"][c] - fb["auc"][c] > 0
                    for fa, fb in zip(per_fold[a], per_fold[b], strict=True)
                    if fa["auc"][c] is not None and fb["auc"][c] is not None
                ]
                d["classes"][c]["folds_positive"] = int(sum(folds_up))
                d["classes"][c]["folds_defined"] = len(folds_up)
            differences[f"{a} - {b}"] = d
        out["seeds"][str(train_seed)] = {
            "lambda": chosen,
            "pooled": table,
            "per_fold": per_fold,
            "differences": differences,
            "num_examples": len(ref),
            "localization": _localization_summary(localization, classes),
        }
    out_dir = workdir_lib.workdir_path(root) / REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv = result_tables.experiment_tables(out, list(e.variants), classes, folds)
    workdir_lib.write_text(out_dir / "table.md", md)
    workdir_lib.write_text(out_dir / "table.csv", csv)
    workdir_lib.write_json(out_dir / "report.json", out)
    first = out["seeds"][str(e.seeds[0])]
    if first["differences"]:
        plots.forest_plot(
            first["differences"],
            classes,
            os.fspath(out_dir / "forest.png"),
            title=f"paired AUC differences, pooled over {len(folds)} folds (seed {e.seeds[0]})",
        )
    return out


def _localization_summary(localization: dict, classes) -> dict | None:
    """Pointing-game hit rates, mean over folds, per variant with maps and per class, and
    beside them the baselines of the same folds: the class prior and the uniform map."""
    with_maps = {v: folds for v, folds in localization.items() if folds and all(folds)}
    if not with_maps:
        return None

    def mean(values):
        values = [x for x in values if x is not None]
        return float(np.mean(values)) if values else None

    def rates(pg):
        return {"mean": pg["mean_hit_rate"], **pg["hit_rate"]}

    out = {}
    for v, folds in with_maps.items():
        out[v] = {
            c: mean([rates(f["pointing_game"])[c] for f in folds]) for c in [*classes, "mean"]
        }
    folds = next(iter(with_maps.values()))
    for name in ("class_prior", "uniform"):
        out[name] = {
            c: mean([rates(f["baselines"][name]["pointing_game"])[c] for f in folds])
            for c in [*classes, "mean"]
        }
    return out
