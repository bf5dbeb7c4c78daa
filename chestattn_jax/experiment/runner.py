"""Running the grid: one cell (an ordinary training run and its evaluation), or every
cell that is not done, after the finished ones are checked against the config."""

from __future__ import annotations

import os

from absl import logging

from chestattn_jax.experiment.finished_cells import changed_cells, refuse_changed
from chestattn_jax.experiment.grid import (
    Cell,
    cell_config,
    cell_workdir,
    cells,
    check,
    find_cell,
    status,
)


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
