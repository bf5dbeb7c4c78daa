"""The experiment's report, ``ROOT/report/`` (:func:`report`).

The headline figure is the mean of the per-fold test AUCs: each fold is scored with its
own model (the class model's at the λ chosen on that fold's validation split), so the
fold models' score scales never meet in one ROC. Its intervals come from a
fold-stratified paired patient bootstrap (patients resampled within each fold, the same
draws for every model); with two or more training seeds a combined table's draws also
resample the seeds, so that its intervals cover training-seed variation too. Beside it,
per seed: the same table, and the pooled out-of-fold AUC (every fold's test images in one
ROC), a second figure. Localisation, where the evaluations scored maps against truth:
hit rates weighted by findings, with the same kind of intervals, beside the class prior
and the uniform map, with paired differences.
"""

from __future__ import annotations

import os

import numpy as np

from chestattn_jax import workdir as workdir_lib
from chestattn_jax.experiment import cell_results
from chestattn_jax.experiment.finished_cells import (
    FINGERPRINT,
    changed_cells,
    describe,
    refuse_changed,
)
from chestattn_jax.experiment.grid import cells, status
from chestattn_jax.metrics import bootstrap_models, per_class_auc, stratified_bootstrap

REPORT_DIR = "report"
# The paired differences of the report: (model, baseline) by variant. The paper's claim is
# class > image > resnet; class - resnet answers the first half directly.
PAIRS = (("class", "image"), ("image", "resnet"), ("class", "resnet"))


def _named(differences: dict) -> dict:
    """Pair-keyed differences as JSON keys: ``{"class - image": ...}``."""
    return {f"{a} - {b}": d for (a, b), d in differences.items()}


def _folds(fold_results) -> list[dict]:
    """The folds' test examples (the same for every variant and seed of a fold)."""
    out = []
    for r in fold_results:
        ref = next(iter(r.records.values()))
        out.append({"labels": ref.labels, "mask": ref.mask, "patient_ids": ref.patient_ids})
    return out


def _fold_mean(results: dict, variants, classes, pairs, num_draws: int, seed: int) -> dict:
    """The fold-stratified mean AUC over the training seeds of ``results`` ({seed: folds})."""
    folds = _folds(next(iter(results.values())))
    models = {
        v: [[r.records[v].probs for r in fold_results] for fold_results in results.values()]
        for v in variants
    }
    aucs, differences = stratified_bootstrap(
        folds, models, classes, pairs=pairs, num_draws=num_draws, seed=seed
    )
    return {"aucs": aucs, "differences": _named(differences)}


def _pooled(fold_results, variants, classes, pairs, num_draws: int, seed: int) -> dict:
    """The pooled out-of-fold AUC: the folds' test records as one ROC per class (patients
    named by fold), with a patient bootstrap and paired differences."""
    first = {
        "labels": np.concatenate([r.records[variants[0]].labels for r in fold_results]),
        "mask": np.concatenate([r.records[variants[0]].mask for r in fold_results]),
        "patient_ids": np.concatenate(
            [
                np.char.add(f"fold{r.fold}:", r.records[variants[0]].patient_ids.astype(str))
                for r in fold_results
            ]
        ),
    }
    probs = {v: np.concatenate([r.records[v].probs for r in fold_results]) for v in variants}
    aucs, differences = bootstrap_models(
        first["labels"],
        probs,
        first["mask"],
        classes,
        first["patient_ids"],
        num_draws,
        seed,
        pairs=pairs,
    )
    return {"aucs": aucs, "differences": _named(differences), "num_examples": len(first["labels"])}


def report(
    config, root, num_draws: int = 1000, seed: int = 0, allow_mismatch: bool = False
) -> dict:
    """Tables 1-2 from the finished cells of ``root`` into ``ROOT/report/``: ``table.md``,
    ``table.csv``, ``forest.png``, ``report.json`` (see the module docstring) and
    ``report.html``, all of it on one page
    (:func:`chestattn_jax.reporting.html_pages.experiment_page`).

    Raises a ``ValueError`` before writing anything if a cell is not finished; if a
    finished cell differs from what ``config`` asks of it (:func:`changed_cells`) or the
    cells do not belong together (:func:`cell_results.belonging_problems`: another data
    set, other test images in a fold, a test image in two folds), naming the cell and the
    field, unless ``allow_mismatch``: then the report is written with those differences
    listed in it."""
    from chestattn_jax.experiment import localization_summary
    from chestattn_jax.reporting import experiment_tables, html_blocks, html_pages, plots

    e = config.experiment
    missing = [c.name for c in cells(config) if status(root, c) != "done"]
    if missing:
        raise ValueError(
            f"{len(missing)} cells of {root} are not finished: {', '.join(missing)}. Run them "
            "first (python -m chestattn_jax.experiment ... without --report)."
        )
    changed = changed_cells(config, root)
    refusals = []
    if changed and not allow_mismatch:
        try:
            refuse_changed(changed, root)
        except ValueError as err:
            refusals.append(str(err))
    try:
        results = {s: cell_results.load(config, root, s) for s in e.seeds}
    except ValueError:
        if refusals:  # a cell of other settings may not even be readable: that first
            raise ValueError(refusals[0]) from None
        raise
    named = {c for c, d in changed.items() if FINGERPRINT in d}
    problems = cell_results.belonging_problems(config, root, results, named)
    if problems and not allow_mismatch:
        refusals.append(
            f"The finished cells of {root} are not one experiment: {'; '.join(problems)}."
        )
    if refusals:
        raise ValueError(
            " ".join(refusals) + " --allow_mismatch writes the report anyway, listing these."
        )
    mismatches = [f"{c.name}: {describe(d)}" for c, d in changed.items()] + problems
    variants = list(e.variants)
    first = results[e.seeds[0]][0].records[variants[0]]
    classes = list(first.classes)
    pairs = [(a, b) for a, b in PAIRS if a in variants and b in variants]
    out = {
        "num_draws": num_draws,
        "lambda_criterion": e.lambda_criterion,
        "folds": int(e.folds),
        "variants": variants,
        "classes": classes,
        "mismatches": mismatches,
        "combined": None,
        "seeds": {},
    }
    for s, fold_results in results.items():
        out["seeds"][str(s)] = {
            "lambda": {str(r.fold): r.lam for r in fold_results if r.lam is not None},
            "fold_mean": _fold_mean({s: fold_results}, variants, classes, pairs, num_draws, seed),
            "pooled": _pooled(fold_results, variants, classes, pairs, num_draws, seed),
            "per_fold": {
                v: [
                    per_class_auc(
                        r.records[v].labels, r.records[v].probs, r.records[v].mask, classes
                    )
                    for r in fold_results
                ]
                for v in variants
            },
            "localization": localization_summary.summarize(
                {s: fold_results}, variants, classes, num_draws, seed
            ),
        }
    if len(results) > 1:
        out["combined"] = {
            "fold_mean": _fold_mean(results, variants, classes, pairs, num_draws, seed),
            "localization": localization_summary.summarize(
                results, variants, classes, num_draws, seed
            ),
        }
    out_dir = workdir_lib.workdir_path(root) / REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv = experiment_tables.tables(out)
    workdir_lib.write_text(out_dir / "table.md", md)
    workdir_lib.write_text(out_dir / "table.csv", csv)
    workdir_lib.write_json(out_dir / "report.json", out)
    headline = out["combined"] or out["seeds"][str(e.seeds[0])]
    if headline["fold_mean"]["differences"]:
        seeds = ", ".join(str(s) for s in results)
        plots.forest_plot(
            headline["fold_mean"]["differences"],
            classes,
            os.fspath(out_dir / "forest.png"),
            title=f"paired differences of the mean per-fold AUC, {e.folds} folds, "
            f"training seed{'s' if len(results) > 1 else ''} {seeds}"
            + (" (x: each seed's estimate)" if len(results) > 1 else ""),
        )
    forest = out_dir / "forest.png"
    images = {"forest.png": html_blocks.file_uri(forest)} if forest.exists() else {}
    workdir_lib.write_text(out_dir / "report.html", html_pages.experiment_page(out, images))
    return out
