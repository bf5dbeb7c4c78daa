"""The paper's experiment as one command: folds x variants x λ x seeds, then Tables 1-2.

  python -m chestattn_jax.experiment --config=configs/nih.py --workdir=runs/nih --list
  python -m chestattn_jax.experiment --config=configs/nih.py --workdir=runs/nih
  python -m chestattn_jax.experiment --config=configs/nih.py --workdir=runs/nih --cell=4
  python -m chestattn_jax.experiment --config=configs/nih.py --workdir=runs/nih --report
  python -m chestattn_jax.experiment --config=configs/nih.py --workdir=runs/nih --reevaluate

``--workdir`` is the experiment's root. Each *cell* of the grid (``config.experiment``) is
an ordinary training run in ``ROOT/<cell name>``, e.g. ``ROOT/fold1-class-lam0.1-seed0``,
trained and evaluated as ``python -m chestattn_jax.main`` would. Without ``--cell`` every
cell runs in turn: finished cells (their ``eval/metrics.json`` exists) are skipped,
interrupted ones resume from their latest checkpoint. ``--cell`` runs one cell, by index
or name (``--list`` prints both; with ``--cell``, of that cell only), so that a SLURM
array, several GPU boxes or TPU VMs run cells in parallel (docs/reproduce.md).
``--report`` reads the finished cells and writes ``ROOT/report/``: Tables 1-2
(:func:`report`).

A finished cell is skipped, and reported, only as the cell the config asks for: before
any cell runs and before ``--report`` reads one, every finished cell of the grid is
compared with the config (:func:`changed_cells`: its ``config.json``, the settings its
``eval/metrics.json`` records, its data set's fingerprint), and any that differs in a
setting that changes a result is refused, named with its differences
(``train.num_steps: 4 -> 8``). Such cells are trained again in a new root, or here once
their folders are moved away; ``--reevaluate`` evaluates again instead those whose only
differences are evaluation settings (``eval.*``): their training stands. Interrupted
cells resume under the config given, as ``train.py`` allows.

Folds. On a prepared data set fold f is ``data.split=kfold`` with ``data.fold=f`` and
``data.num_folds=config.experiment.folds``: over the folds every patient is tested exactly
once. The phantoms have no patients to partition; fold f draws its own phantoms
(``data.synthetic.seed + f``), so its test set is other images than every other fold's.

λ (the class model's ``loss.entropy_weight``) is chosen per fold (and seed) on the
validation split: each λ cell's validation score at its best checkpoint
(``config.experiment.lambda_criterion``: the mean AUC, highest wins, or the classification
loss ``val/bce``, lowest wins; ties go to the smaller λ).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import numpy as np
from absl import flags, logging
from etils import epath

from chestattn_jax import workdir as workdir_lib
from chestattn_jax.metric_writers import read_jsonl

LAMBDA_CRITERIA = ("mean_auc", "bce")
REPORT_DIR = "report"
# The paired differences of the report: (model, baseline) by variant. The paper's claim is
# class > image > resnet; class - resnet answers the first half directly.
PAIRS = (("class", "image"), ("image", "resnet"), ("class", "resnet"))


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    index: int
    fold: int
    variant: str
    entropy_weight: float | None  # λ; the class model only
    seed: int

    @property
    def name(self) -> str:
        lam = "" if self.entropy_weight is None else f"-lam{lambda_text(self.entropy_weight)}"
        return f"fold{self.fold}-{self.variant}{lam}-seed{self.seed}"


def lambda_text(value: float) -> str:
    """λ as cell names and the report write it: ``:g`` where that is exact (0, 0.1, 1e-07:
    the names roots were made with), else the shortest text that reads back as ``value``
    (0.1000001, which ``:g`` rounds to another λ's 0.1). Distinct values, distinct texts."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def cells(config) -> list[Cell]:
    """The grid of ``config.experiment``, folds outermost: fold, seed, variant, λ."""
    e = config.experiment
    out = []
    for fold in range(e.folds):
        for seed in e.seeds:
            for variant in e.variants:
                lams = list(e.entropy_weights) if variant == "class" else [None]
                for lam in lams:
                    out.append(Cell(len(out), fold, variant, lam, int(seed)))
    return out


def find_cell(config, which: str) -> Cell:
    """The cell named ``which``, or with that index; a ``ValueError`` lists the others."""
    grid = cells(config)
    for c in grid:
        if which in (c.name, str(c.index)):
            return c
    raise ValueError(
        f"--cell={which!r} is not a cell of this experiment: give an index from 0 to "
        f"{len(grid) - 1} or a name (--list prints them)."
    )


def cell_config(config, cell: Cell):
    """``config`` with the fold, variant, λ and seed of ``cell``."""
    c = config.copy_and_resolve_references()
    with c.unlocked():
        c.model.variant = cell.variant
        c.seed = cell.seed
        if cell.entropy_weight is not None:
            c.loss.entropy_weight = float(cell.entropy_weight)
        if c.data.name == "synthetic":
            c.data.synthetic.seed = int(config.data.synthetic.seed) + cell.fold
        else:
            c.data.split = "kfold"
            c.data.num_folds = int(config.experiment.folds)
            c.data.fold = cell.fold
    return c


def cell_workdir(root, cell: Cell) -> epath.Path:
    return workdir_lib.workdir_path(root) / cell.name


def status(root, cell: Cell) -> str:
    """``done`` (evaluated), ``started`` (has checkpoints) or ``new``."""
    w = cell_workdir(root, cell)
    if (w / workdir_lib.EVAL_DIR / "metrics.json").exists():
        return "done"
    if (w / workdir_lib.CHECKPOINT_DIR).exists():
        return "started"
    return "new"


def check(config) -> None:
    """Refuses an experiment its data cannot give (k-fold needs 2 folds or more) or its
    report cannot read (an evaluation other than the test split at the best checkpoint)."""
    from chestattn_jax import validation as config_lib

    if config.data.name != "synthetic" and config.experiment.folds < 2:
        raise config_lib.ConfigError(
            [
                f"config.experiment.folds={config.experiment.folds}: a prepared data set is "
                "split into folds by patient (data.split=kfold); give at least 2."
            ]
        )
    # The report reads each cell's test evaluation at its best checkpoint, from eval/.
    moved = [
        f"config.eval.{field}={config.eval[field]!r}: an experiment cell is tested on the test "
        f"split at its best checkpoint, in eval/ (leave it at {default!r})."
        for field, default in (("split", "test"), ("checkpoint", "best"), ("output_name", ""))
        if config.eval[field] != default
    ]
    if moved:
        raise config_lib.ConfigError(moved)
    if config.train.early_stopping_metric == "loss" and len(config.experiment.entropy_weights) > 1:
        logging.warning(
            "config.train.early_stopping_metric='loss' stops each λ cell on its own Eq. 5, "
            "which includes -λH; 'bce' stops every cell on the same classification loss."
        )
    for cell in cells(config):
        config_lib.validate(cell_config(config, cell), "train")


# ------------------------------------------------------- finished cells and their settings

# Settings that change how a cell runs, never what it computes: a cell finished under other
# values of these is the cell the config asks for. Every other config field counts.
RUN_ONLY_FIELDS = (
    # Where the data set is mounted: the same data may be mounted elsewhere. What it holds is
    # compared instead, by its fingerprint (the cell's dataset.json).
    "data.data_dir",
    # How examples are read: grain's stream (order, augmentation) is fixed by the seed and
    # each example's index, whichever workers, threads and prefetching produce it.
    "data.num_workers",
    "data.read_threads",
    "data.prefetch_batches",
    # Evaluation batches are padded and the padding masked: the same numbers at any size
    # (validation during training included).
    "eval.batch_size",
    # How often training scalars are averaged and logged; validation, checkpoints and
    # early stopping follow train.eval_every_steps.
    "train.log_every_steps",
    # How many recent steps are kept: the best step is kept regardless (checkpointing.py),
    # and it is what a cell is evaluated at.
    "train.checkpoints_to_keep",
    # A permission (to run under other data settings than training's), not a setting; the
    # data settings themselves are compared.
    "allow_setting_changes",
)
# config.experiment describes the grid: it reaches a cell only through the fields
# cell_config sets from it (fold, variant, λ, seed), compared as such. More seeds or λ
# values add cells; the λ criterion is the report's, read when it runs.
GRID_SECTION = "experiment."
# The changes' keys beside config fields.
FINGERPRINT = "dataset fingerprint"
NO_CONFIG = workdir_lib.CONFIG_FILE


def _leaves(tree: dict, prefix: str = "") -> dict:
    """``{"a.b": value}`` for the nested JSON dict ``tree``."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _counts(field: str, cell: Cell) -> bool:
    """Whether ``field`` changes ``cell``'s result. λ is the class model's only: Eq. 5's
    entropy term needs class maps, so the other models ignore loss.entropy_weight."""
    if field in RUN_ONLY_FIELDS or field.startswith(GRID_SECTION):
        return False
    return not (field == "loss.entropy_weight" and cell.entropy_weight is None)


def cell_changes(config, root, cell: Cell, fingerprint: str | None = None) -> dict:
    """How the finished ``cell`` of ``root`` differs from what ``config`` asks of it
    (:func:`cell_config`): ``{field: (then, now)}`` over every field that changes a result
    (all but :data:`RUN_ONLY_FIELDS`, ``experiment.*`` and λ outside the class model), from
    the config it trained with (``config.json``) and the settings its evaluation records
    (``eval/metrics.json``); with ``fingerprint`` (the config's data set's) also the data
    set's, under :data:`FINGERPRINT`. No ``config.json`` at all:
    ``{"config.json": (None, None)}``; one without a field of the config: a ``ValueError``
    naming them."""
    w = cell_workdir(root, cell)
    saved = workdir_lib.read_json(w / workdir_lib.CONFIG_FILE)
    if saved is None:
        return {NO_CONFIG: (None, None)}
    now = _leaves(json.loads(cell_config(config, cell).to_json_best_effort()))
    from chestattn_jax.config import get_base_config

    fields = _leaves(get_base_config().to_dict())  # the fields every config.json holds
    missing = sorted(f for f in set(now) - set(_leaves(saved)) if f in fields)
    if missing:
        raise ValueError(
            f"{w / workdir_lib.CONFIG_FILE} has no field {', '.join(missing)}: it was not "
            "written by this version of chestattn_jax. Move that cell's folder away to "
            "train it again."
        )
    evaluated = workdir_lib.read_json(w / workdir_lib.EVAL_DIR / "metrics.json") or {}
    changes = {}
    for then in (_leaves(saved), evaluated.get("settings") or {}):
        for field, was in then.items():
            if field in now and field not in changes and _counts(field, cell) and was != now[field]:
                changes[field] = (was, now[field])
    was = (workdir_lib.read_json(w / workdir_lib.DATASET_FILE) or {}).get("fingerprint")
    # A phantom fingerprint hashes the data.synthetic fields, image size and classes: named
    # by those fields where they differ.
    explained = any(f.startswith("data.synthetic.") or f == "data.image_size" for f in changes)
    if fingerprint and was and was != fingerprint:
        if config.data.name != "synthetic" or not explained:
            changes[FINGERPRINT] = (was, fingerprint)
    return changes


def changed_cells(config, root, fingerprints: bool = True) -> dict[Cell, dict]:
    """Every finished cell of the grid that differs from what ``config`` asks of it, with
    its :func:`cell_changes`. With ``fingerprints``, the data sets are compared too where
    the config's data set can be read (a warning says so where it cannot: the report may
    run where the data is not)."""
    from chestattn_jax.data.input_pipeline import dataset_fingerprint

    out, prints, unread = {}, {}, None
    for cell in cells(config):
        if status(root, cell) != "done":
            continue
        fingerprint = None
        if fingerprints and unread is None:
            data = cell_config(config, cell).data
            key = (data.name, data.data_dir, data.image_size, data.synthetic.to_json())
            if key not in prints:
                try:
                    prints[key] = dataset_fingerprint(cell_config(config, cell))["fingerprint"]
                except OSError as e:
                    unread = e
            fingerprint = prints.get(key)
        changes = cell_changes(config, root, cell, fingerprint)
        if changes:
            out[cell] = changes
    if unread is not None:
        logging.warning(
            "The finished cells' data set is not compared with the config's, which cannot be "
            "read here: %s",
            unread,
        )
    return out


def _describe(changes: dict) -> str:
    if NO_CONFIG in changes:
        return f"{NO_CONFIG}: missing, so the settings it trained with are unknown"
    return "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())


def _reevaluable(changes: dict) -> bool:
    """Whether only evaluation settings changed: training stands, an evaluation is redone."""
    return all(k.startswith("eval.") for k in changes)


def refuse_changed(changed: dict[Cell, dict], root, reevaluate: bool = False) -> set[Cell]:
    """Raises a ``ValueError`` naming every cell of ``changed`` (:func:`changed_cells`),
    grouped by their differences, unless ``reevaluate`` and all of them differ only in
    evaluation settings; returns those (the cells to evaluate again)."""
    refused = {c: d for c, d in changed.items() if not (reevaluate and _reevaluable(d))}
    if not refused:
        return set(changed)
    groups: dict[str, list[str]] = {}
    for c, d in refused.items():
        groups.setdefault(_describe(d), []).append(c.name)
    text = "; ".join(f"{', '.join(names)} ({d})" for d, names in groups.items())
    message = (
        f"{len(refused)} finished cells of {root} were trained or evaluated under other "
        f"settings than this config gives them: {text}. Their results are not this config's: "
        "run the changed config in a new --workdir, or move those cells' folders away to "
        "train them again here."
    )
    evaluation_only = [c.name for c, d in refused.items() if _reevaluable(d)]
    if evaluation_only:
        message += (
            f" {', '.join(evaluation_only)} differ only in evaluation settings (eval.*): "
            "--reevaluate evaluates them again under the new ones."
        )
    raise ValueError(message)


def run_cell(config, root, cell: Cell) -> dict:
    """Trains and evaluates ``cell`` (resuming it), as ``chestattn_jax.main`` would."""
    from chestattn_jax import train

    logging.info("Experiment cell %d (%s): %s", cell.index, cell.name, status(root, cell))
    return train.train_and_evaluate(cell_config(config, cell), os.fspath(cell_workdir(root, cell)))


def run(config, root, which: str | None = None, reevaluate: bool = False) -> None:
    """Runs ``which`` cell, or every cell that is not done, in order.

    First, before anything runs or is written, the finished cells of the whole grid are
    compared with ``config`` (:func:`changed_cells`): any that differ are refused
    (:func:`refuse_changed`), unless ``reevaluate`` and only their evaluation settings
    differ; then those of them in ``which`` (or all, without it) are evaluated again.
    Training such a cell again is a no-op: it ended (at train.num_steps or early) under the
    training settings asked for."""
    check(config)
    todo = [find_cell(config, which)] if which is not None else cells(config)
    again = refuse_changed(changed_cells(config, root), root, reevaluate)
    for cell in todo:
        if cell in again:
            logging.info("Experiment cell %d (%s): evaluated again.", cell.index, cell.name)
        elif which is None and status(root, cell) == "done":
            logging.info("Experiment cell %d (%s): done, skipped.", cell.index, cell.name)
            continue
        run_cell(config, root, cell)


# ----------------------------------------------------------------------------- report


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
    from chestattn_jax.evaluation.record import Record

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
    from chestattn_jax import compare, figures
    from chestattn_jax.evaluation.evaluators.auc import per_class_auc
    from chestattn_jax.evaluation.record import Record
    from chestattn_jax.metrics import bootstrap_models

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
            compare.check_paired(names, [records[v][-1] for v in names])
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
    md, csv = _tables(out, list(e.variants), classes, folds)
    workdir_lib.write_text(out_dir / "table.md", md)
    workdir_lib.write_text(out_dir / "table.csv", csv)
    workdir_lib.write_json(out_dir / "report.json", out)
    first = out["seeds"][str(e.seeds[0])]
    if first["differences"]:
        figures.forest_plot(
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


def _fmt_auc(summary):
    auc, ci = summary.get("auc", summary.get("mean_auc")), summary.get("ci", summary.get("mean_ci"))
    return "n/a" if auc is None else f"{auc:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _fmt_diff(d):
    if d["difference"] is None:
        return "n/a"
    return f"{d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"


def _mean_sd(values):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.3f}"


def _tables(out: dict, variants, classes, folds) -> tuple[str, str]:
    """Markdown and CSV of the report: one table per training seed."""
    from chestattn_jax import tables

    lines, csv_rows = [], []
    for train_seed, r in out["seeds"].items():
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
            row = [c]
            row += [
                _fmt_auc(r["pooled"][v] if mean else r["pooled"][v]["classes"][c]) for v in variants
            ]
            row += [
                _mean_sd([f["mean_auc"] if mean else f["auc"][c] for f in r["per_fold"][v]])
                for v in variants
            ]
            diffs = [r["differences"][n] for n in diff_names]
            row += [_fmt_diff(d["mean"] if mean else d["classes"][c]) for d in diffs]
            row += [
                ""
                if mean
                else f"{r['differences'][n]['classes'][c]['folds_positive']}/"
                f"{r['differences'][n]['classes'][c]['folds_defined']}"
                for n in diff_names
            ]
            rows.append(row)
        lams = ", ".join(
            f"fold {f}: λ = {lambda_text(v['lambda'])}" for f, v in r["lambda"].items()
        )
        lines += [
            f"### Training seed {train_seed}: {len(folds)} folds, "
            f"{r['num_examples']} test images pooled",
            "",
            tables.markdown(header, rows),
            "",
            (f"λ chosen on validation ({out['lambda_criterion']}): {lams}. " if lams else "")
            + f"Intervals: {out['num_draws']} patient-level bootstrap draws of the pooled "
            "test images; differences are paired (the same draws for both models).",
            "",
        ]
        loc = r.get("localization")
        if loc:
            names = list(loc)
            loc_rows = [
                [c, *("n/a" if loc[n][c] is None else f"{loc[n][c]:.2f}" for n in names)]
                for c in [*classes, "mean"]
            ]
            lines += [
                "Pointing-game hit rate of the gate-3 maps on the test images with truth, mean "
                "over folds, beside a fixed map per class (its average truth mask over the "
                "training split) and a uniform map (a cell drawn at random):",
                "",
                tables.markdown(["class", *(n.replace("_", " ") for n in names)], loc_rows),
                "",
            ]
        csv_rows += [[train_seed, *row] for row in rows]
        csv_header = ["seed", *header]
    return "\n".join(lines), tables.csv_text(csv_header, csv_rows)


# ------------------------------------------------------------------------- command line


def ignored_flags(
    *,
    listing: bool = False,
    report: bool = False,
    cell: str | None = None,
    reevaluate: bool = False,
    num_draws: int | None = None,
) -> str | None:
    """What is wrong with a command line whose flags include one the command it gives
    (``--list``, ``--report``, or a run) would ignore; ``None`` if none would be."""
    ignored = [
        flag
        for flag, given in (
            ("--report", listing and report),
            ("--cell", report and not listing and cell is not None),
            ("--reevaluate", (listing or report) and reevaluate),
            ("--num_draws", not report and num_draws is not None),
        )
        if given
    ]
    if not ignored:
        return None
    command = "--list" if listing else "--report" if report else "a run"
    return (
        f"{', '.join(ignored)} cannot be given with {command}: --list prints the cells (or "
        "the one of --cell), --report writes the report from every cell (with --num_draws), "
        "and a run trains them (all, or the one of --cell; --reevaluate)."
    )


def main(argv):
    from chestattn_jax import distributed
    from chestattn_jax import validation as config_lib

    f = flags.FLAGS
    config, root = f.config, f.workdir
    if len(argv) > 1 or f.mode != "train":
        raise ValueError(
            "python -m chestattn_jax.experiment takes --config, --workdir (the experiment's "
            "root), --cell, --list, --report, --num_draws and --reevaluate; no --mode and no "
            "other arguments."
        )
    problem = ignored_flags(
        listing=f.list,
        report=f.report,
        cell=f.cell,
        reevaluate=f.reevaluate,
        num_draws=f.num_draws if f["num_draws"].present else None,
    )
    if problem:
        raise ValueError(problem)
    config_lib.validate(config, "train", num_devices=1)
    if f.list:
        shown = [find_cell(config, f.cell)] if f.cell is not None else cells(config)
        changed = changed_cells(config, root)
        for c in shown:
            state = "changed" if c in changed else status(root, c)
            print(f"{c.index:4d}  {c.name:32s}  {state:8s}  {cell_workdir(root, c)}")
        return None
    if f.report:
        result = report(config, root, f.num_draws)
        print((workdir_lib.workdir_path(root) / REPORT_DIR / "table.md").read_text())
        return result
    distributed.initialize(
        f.coordinator_address, f.num_processes, f.process_id, autodetect=f.distributed
    )
    run(config, root, f.cell, f.reevaluate)
    return None


def _run(argv):
    from chestattn_jax import main as cli

    try:
        main(argv)
    except cli.USER_ERRORS as e:
        logging.debug("The error below was raised here:", exc_info=True)
        sys.exit(f"FATAL: {e}")


if __name__ == "__main__":
    from absl import app

    from chestattn_jax import main as cli  # its flags: --config, --workdir, distributed ones

    flags.DEFINE_string("cell", None, "Run only this cell, by index or name (--list shows them).")
    flags.DEFINE_bool(
        "list",
        False,
        "Print the cells (or the one of --cell), their status (new, started, done, or "
        "changed: finished under other settings) and workdirs, and exit.",
    )
    flags.DEFINE_bool(
        "reevaluate",
        False,
        "Evaluate again the finished cells whose only differences from the config are "
        "evaluation settings (eval.*), instead of refusing them.",
    )
    flags.DEFINE_bool("report", False, "Write ROOT/report/ from the finished cells.")
    flags.DEFINE_integer("num_draws", 1000, "--report: bootstrap draws.")
    app.run(_run, flags_parser=cli.parse_flags)
