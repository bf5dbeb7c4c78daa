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
loss ``val/bce``, lowest wins; ties go to the smaller λ). Every cell stops, and picks its
best checkpoint, on ``config.experiment.early_stopping_metric``: ``bce`` by default, Eq. 5
without -λH, so that the cells of every λ stop on the same quantity; ``loss`` is refused with
several λ unless ``config.experiment.allow_loss_stopping``.
"""

# By job: grid.py (the cells, their configs, the experiment's rules), finished_cells.py (a
# finished cell against the config), runner.py (running the cells), cell_results.py (what
# the report reads from the cells, and whether they belong together), summary.py and
# localization_summary.py (the report), cli.py and __main__.py (the command). The
# docstring above is the command's --help.

from chestattn_jax.experiment.cell_results import choose_lambda
from chestattn_jax.experiment.finished_cells import (
    RUN_ONLY_FIELDS,
    cell_changes,
    changed_cells,
    refuse_changed,
)
from chestattn_jax.experiment.grid import (
    LAMBDA_CRITERIA,
    Cell,
    cell_config,
    cell_workdir,
    cells,
    check,
    find_cell,
    lambda_text,
    status,
)
from chestattn_jax.experiment.runner import run, run_cell
from chestattn_jax.experiment.summary import PAIRS, REPORT_DIR, report

__all__ = [
    "LAMBDA_CRITERIA",
    "PAIRS",
    "REPORT_DIR",
    "RUN_ONLY_FIELDS",
    "Cell",
    "cell_changes",
    "cell_config",
    "cell_workdir",
    "cells",
    "changed_cells",
    "check",
    "choose_lambda",
    "find_cell",
    "lambda_text",
    "refuse_changed",
    "report",
    "run",
    "run_cell",
    "status",
]
