"""What the experiment report reads from the finished cells, per training seed and fold
(the λ chosen on validation, each variant's test record and localisation findings), and
the checks that those cells belong to one experiment (:func:`belonging_problems`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from chestattn_jax import workdir as workdir_lib
from chestattn_jax.data import sources
from chestattn_jax.evaluation.evaluators.localization import FINDINGS_FILE
from chestattn_jax.evaluation.inference_pass import Record, check_paired
from chestattn_jax.experiment.grid import Cell, cell_workdir, cells, lambda_text
from chestattn_jax.localization_metrics import load_findings
from chestattn_jax.metric_writers import read_jsonl


@dataclasses.dataclass
class FoldResult:
    """One fold of one training seed: the cell reported for each variant (the class
    model's is its chosen λ's), its test record and its localisation findings (``None``
    where the evaluation scored none: the ResNet has no maps, a split may have no truth)."""

    fold: int
    cells: dict[str, Cell]
    records: dict[str, Record]
    findings: dict[str, object]
    lam: dict | None  # {"lambda": chosen, "validation": {λ text: score}}; class model only
    # Per class, where the fold's class prior came from (its training split, or the
    # evaluated split left one out), as the evaluation recorded it; None without one.
    prior_built_from: dict | None = None


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


def _findings(eval_dir):
    """The evaluation's localisation findings, or ``None`` where it wrote none."""
    path = eval_dir / FINDINGS_FILE
    return load_findings(path) if path.exists() else None


def load(config, root, train_seed: int) -> list[FoldResult]:
    """Every fold's results for ``train_seed``, from finished cells."""
    e = config.experiment
    out = []
    for fold in range(e.folds):
        lam = None
        if "class" in e.variants:
            chosen, scores = choose_lambda(config, root, fold, train_seed)
            lam = {
                "lambda": chosen,
                "validation": {lambda_text(k): v for k, v in scores.items()},
            }
        result = FoldResult(fold, {}, {}, {}, lam)
        for v in e.variants:
            cell = next(
                c
                for c in cells(config)
                if (c.fold, c.seed, c.variant) == (fold, train_seed, v)
                and (v != "class" or c.entropy_weight == lam["lambda"])
            )
            eval_dir = cell_workdir(root, cell) / workdir_lib.EVAL_DIR
            result.cells[v] = cell
            result.records[v] = Record.load(eval_dir / workdir_lib.PREDICTIONS_FILE)
            result.findings[v] = _findings(eval_dir)
            evaluated = workdir_lib.read_json(eval_dir / "metrics.json") or {}
            prior = ((evaluated.get("localization") or {}).get("baselines") or {}).get(
                "class_prior"
            )
            if prior:
                result.prior_built_from = prior.get("built_from_class")
        out.append(result)
    return out


def _fingerprint(root, cell: Cell) -> str | None:
    saved = workdir_lib.read_json(cell_workdir(root, cell) / workdir_lib.DATASET_FILE) or {}
    return saved.get("fingerprint")


def belonging_problems(
    config, root, results: dict[int, list[FoldResult]], named=frozenset()
) -> list[str]:
    """Why the reported cells (``results``: :func:`load` per training seed) are not one
    experiment, each naming a cell, or ``[]``:

    - a data set other than its fold's (prepared data: other than every cell's), by the
      fingerprint of its ``dataset.json``;
    - test images other than the rest of its fold's, in another order, or with other labels
      (every variant and seed of a fold is scored on the same images: the differences are
      paired);
    - on prepared data, a test image in more than one fold (the folds partition the
      patients: each image is tested once).

    Settings that differ from the config are :func:`changed_cells`' to name; the cells of
    ``named`` (whose data set it named already) are not compared by fingerprint again."""
    problems = []
    prepared = sources.get(config.data.name).prepared
    first: dict = {}  # the first cell of each fingerprint group, with its fingerprint
    for cell in cells(config):
        fingerprint = _fingerprint(root, cell)
        group = "all" if prepared else cell.fold
        if fingerprint is None or cell in named:
            continue
        if group not in first:
            first[group] = (cell, fingerprint)
        elif fingerprint != first[group][1]:
            ref, was = first[group]
            problems.append(
                f"{cell.name}: dataset fingerprint {fingerprint!r} against {was!r} of "
                f"{ref.name} (another data set)"
            )
    folds = next(iter(results.values()))
    for f in range(len(folds)):
        names, records = [], []
        for seed_results in results.values():
            r = seed_results[f]
            names += [r.cells[v].name for v in r.records]
            records += list(r.records.values())
        try:
            check_paired(names, records)
        except ValueError as err:
            problems.append(str(err))
    if prepared:
        seen: dict[str, int] = {}
        for fold in folds:
            ids = next(iter(fold.records.values())).example_ids.astype(str)
            repeated = [i for i in ids if i in seen]
            if repeated:
                cell = next(iter(fold.cells.values()))
                problems.append(
                    f"{cell.name}: {len(repeated)} test images of fold {fold.fold} are also "
                    f"tested in fold {seen[repeated[0]]} (e.g. {repeated[0]!r}); the folds "
                    "must partition the patients (data.split=kfold with one data.split_seed)"
                )
            seen.update(dict.fromkeys(ids, fold.fold))
    return problems
