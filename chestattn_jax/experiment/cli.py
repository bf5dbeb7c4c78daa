"""The experiment's command line (``python -m chestattn_jax.experiment``): which job its
flags ask for (list, report or run), refused when they mix two."""

from __future__ import annotations

import sys

from absl import flags, logging

from chestattn_jax import workdir as workdir_lib
from chestattn_jax.experiment.finished_cells import changed_cells
from chestattn_jax.experiment.grid import cell_workdir, cells, check_config, find_cell, status
from chestattn_jax.experiment.runner import run
from chestattn_jax.experiment.summary import REPORT_DIR, report


def ignored_flags(
    *,
    listing: bool = False,
    report: bool = False,
    cell: str | None = None,
    reevaluate: bool = False,
    num_draws: int | None = None,
    allow_mismatch: bool = False,
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
            ("--allow_mismatch", not report and allow_mismatch),
        )
        if given
    ]
    if not ignored:
        return None
    command = "--list" if listing else "--report" if report else "a run"
    return (
        f"{', '.join(ignored)} cannot be given with {command}: --list prints the cells (or "
        "the one of --cell), --report writes the report from every cell (with --num_draws, "
        "--allow_mismatch), "
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
            "root), --cell, --list, --report, --num_draws, --allow_mismatch and --reevaluate; no "
            "--mode and no "
            "other arguments."
        )
    problem = ignored_flags(
        listing=f.list,
        report=f.report,
        cell=f.cell,
        reevaluate=f.reevaluate,
        num_draws=f.num_draws if f["num_draws"].present else None,
        allow_mismatch=f.allow_mismatch,
    )
    if problem:
        raise ValueError(problem)
    config_lib.validate(config, "train", num_devices=1, checks=(check_config,))
    if f.list:
        shown = [find_cell(config, f.cell)] if f.cell is not None else cells(config)
        changed = changed_cells(config, root)
        for c in shown:
            state = "changed" if c in changed else status(root, c)
            print(f"{c.index:4d}  {c.name:32s}  {state:8s}  {cell_workdir(root, c)}")
        return None
    if f.report:
        result = report(config, root, f.num_draws, allow_mismatch=f.allow_mismatch)
        out_dir = workdir_lib.workdir_path(root) / REPORT_DIR
        print((out_dir / "table.md").read_text())
        print(f"The report on one page: {out_dir / 'report.html'}")
        return result
    distributed.initialize(
        f.coordinator_address, f.num_processes, f.process_id, autodetect=f.distributed
    )
    run(config, root, f.cell, f.reevaluate)
    return None


def command(argv):
    """``main``, with a user's mistake (:data:`chestattn_jax.main.USER_ERRORS`) as one
    ``FATAL:`` line."""
    from chestattn_jax import main as cli

    try:
        main(argv)
    except cli.USER_ERRORS as e:
        logging.debug("The error below was raised here:", exc_info=True)
        sys.exit(f"FATAL: {e}")
