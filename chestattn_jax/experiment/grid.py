"""The experiment's grid: its cells (fold, variant, λ, seed), each cell's config and
workdir, its status, and the rules an experiment's config must follow
(:func:`check`)."""

from __future__ import annotations

import dataclasses

from etils import epath

from chestattn_jax import validation
from chestattn_jax import workdir as workdir_lib
from chestattn_jax.config import VARIANTS
from chestattn_jax.config_checks import SEED_LIMIT
from chestattn_jax.data import sources
from chestattn_jax.reporting.text_tables import exact_number
from chestattn_jax.train import EARLY_STOPPING_METRICS

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
    """``config`` with the fold, variant, λ and seed of ``cell``, stopping on
    ``config.experiment.early_stopping_metric``."""
    c = config.copy_and_resolve_references()
    with c.unlocked():
        c.model.variant = cell.variant
        c.seed = cell.seed
        c.train.early_stopping_metric = config.experiment.early_stopping_metric
        if cell.entropy_weight is not None:
            c.loss.entropy_weight = float(cell.entropy_weight)
        sources.get(c.data.name).select_fold(c.data, cell.fold, int(config.experiment.folds))
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


def check_config(p, mode: str) -> None:
    """The experiment's rules, added to ``p`` (a
    :class:`chestattn_jax.config_checks.Problems`): its grid (``config.experiment``), the
    folds its data can give (k-fold needs 2 or more), and the evaluation its report reads
    (the test split at the best checkpoint, in ``eval/``)."""
    folds = p.int("experiment.folds", 1, "at least 1")
    variants = p.value("experiment.variants")
    if (
        not isinstance(variants, list | tuple)
        or not variants
        or any(v not in VARIANTS for v in variants)
        or len(set(variants)) < len(variants)
    ):
        p.add(
            "experiment.variants",
            f"must be a tuple of distinct variants from {', '.join(VARIANTS)}, "
            "e.g. \"('image','class')\".",
        )
    weights = p.value("experiment.entropy_weights")
    if (
        not isinstance(weights, list | tuple)
        or not weights
        or not all(p.is_real(w) and w >= 0 for w in weights)
        or len(set(weights)) < len(weights)
    ):
        p.add("experiment.entropy_weights", "must be a tuple of distinct numbers, each at least 0.")
    seeds = p.value("experiment.seeds")
    if (
        not isinstance(seeds, list | tuple)
        or not seeds
        or not all(p.is_int(s) and 0 <= s < SEED_LIMIT for s in seeds)
        or len(set(seeds)) < len(seeds)
    ):
        p.add("experiment.seeds", "must be a tuple of distinct integers from 0 to 2**32 - 1.")
    p.choice("experiment.lambda_criterion", LAMBDA_CRITERIA)
    _check_stopping(p)
    name = p.value("data.name")
    if folds is not None and folds < 2 and name in sources.names() and sources.get(name).prepared:
        p.add(
            "experiment.folds",
            "a prepared data set is split into folds by patient (data.split=kfold); give at "
            "least 2.",
        )
    # The report reads each cell's test evaluation at its best checkpoint, from eval/, on the
    # data set it trained on (its folds partition that one's patients).
    for field, default in (
        ("split", "test"),
        ("checkpoint", "best"),
        ("output_name", ""),
        ("dataset", ""),
    ):
        if f"eval.{field}" not in p.reported and p.value(f"eval.{field}") != default:
            p.add(
                f"eval.{field}",
                "an experiment cell is tested on its own data set's test split at its best "
                f"checkpoint, in eval/ (leave it at {default!r}).",
            )


def _check_stopping(p) -> None:
    """The cells' stopping criterion: ``experiment.early_stopping_metric``, free of -λH
    (Eq. 5's entropy term, different in every λ cell) unless allowed."""
    metric = p.choice("experiment.early_stopping_metric", EARLY_STOPPING_METRICS)
    p.ignored(
        "train.early_stopping_metric",
        "an experiment's cells stop on config.experiment.early_stopping_metric (bce by "
        "default); set that instead",
    )
    allowed = p.value("experiment.allow_loss_stopping")
    if not isinstance(allowed, bool):
        p.add("experiment.allow_loss_stopping", "must be True or False.")
        return
    weights = p.value("experiment.entropy_weights")
    several = isinstance(weights, list | tuple) and len(weights) > 1
    if metric == "loss" and several and not allowed:
        p.add(
            "experiment.early_stopping_metric",
            "Eq. 5's loss includes -λH, so each λ cell would stop, and pick its best "
            "checkpoint, on its own criterion. Use bce (the default) or mean_auc, or set "
            "config.experiment.allow_loss_stopping=True to stop on the loss anyway.",
        )


def check(config, num_devices: int | None = None) -> None:
    """Refuses an experiment whose config (:func:`check_config` and every rule of a
    training run) or any of whose cells' configs a run could not use, listing every
    problem at once."""
    validation.validate(config, "train", num_devices=num_devices, checks=(check_config,))
    for cell in cells(config):
        validation.validate(cell_config(config, cell), "train", num_devices=num_devices)
