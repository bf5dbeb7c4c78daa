"""The experiment's grid: its cells (fold, variant, λ, seed), each cell's config and
workdir, its status, and the rules an experiment's config must follow
(:func:`check`)."""

from __future__ import annotations

import dataclasses

from absl import logging
from etils import epath

from chestattn_jax import workdir as workdir_lib
from chestattn_jax.reporting.text_tables import exact_number

LAMBDA_CRITERIA = ("mean_auc", "bce")


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


# λ as cell names and the report write it: the names roots were made with.
lambda_text = exact_number


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
