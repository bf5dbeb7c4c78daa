"""Running the grid: one cell (an ordinary training run and its evaluation), or every
cell that is not done, after the finished ones are checked against the config."""

from __future__ import annotations

import os

from absl import logging

from chestattn_jax.experiment import grid
from chestattn_jax.experiment.finished_cells import changed_cells, refuse_changed


def run_cell(config, root, cell: grid.Cell) -> dict:
    """Trains and evaluates ``cell`` (resuming it), as ``chestattn_jax.main`` would."""
    from chestattn_jax import train

    logging.info("Experiment cell %d (%s): %s", cell.index, cell.name, grid.status(root, cell))
    return train.train_and_evaluate(
        grid.cell_config(config, cell), os.fspath(grid.cell_workdir(root, cell))
    )


def run(config, root, which: str | None = None, reevaluate: bool = False) -> None:
    """Runs ``which`` cell, or every cell that is not done, in order.

    First, before anything runs or is written, the finished cells of the whole grid are
    compared with ``config`` (:func:`changed_cells`): any that differ are refused
    (:func:`refuse_changed`), unless ``reevaluate`` and only their evaluation settings
    differ; then those of them in ``which`` (or all, without it) are evaluated again.
    Training such a cell again is a no-op: it ended (at train.num_steps or early) under the
    training settings asked for."""
    grid.check(config)
    todo = [grid.find_cell(config, which)] if which is not None else grid.cells(config)
    again = refuse_changed(changed_cells(config, root), root, reevaluate)
    for cell in todo:
        if cell in again:
            logging.info("Experiment cell %d (%s): evaluated again.", cell.index, cell.name)
        elif which is None and grid.status(root, cell) == "done":
            logging.info("Experiment cell %d (%s): done, skipped.", cell.index, cell.name)
            continue
        run_cell(config, root, cell)
