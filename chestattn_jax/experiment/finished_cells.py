"""Finished cells and their settings: how a finished cell differs from what the config
asks of it, and the refusal that names those that differ (before any cell runs and
before the report reads one)."""

from __future__ import annotations

from absl import logging

from chestattn_jax import config_fields as fields
from chestattn_jax import workdir as workdir_lib
from chestattn_jax.config import get_base_config
from chestattn_jax.data import sources
from chestattn_jax.evaluation.pipeline import EVALUATION_VERSION
from chestattn_jax.experiment.grid import Cell, cell_config, cell_workdir, cells, status

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
# Evaluation settings: a change to them alone is evaluated again (--reevaluate).
EVAL_SECTION = "eval."
# The changes' keys beside config fields.
FINGERPRINT = "dataset fingerprint"
# An evaluation by a release that computed or wrote other things (EVALUATION_VERSION).
EVALUATION = "evaluation version"
NO_CONFIG = workdir_lib.CONFIG_FILE


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
    naming them, except for evaluation settings newer than the cell's training, compared as
    its evaluation recorded them (``None`` where it did not: evaluated before they
    existed)."""
    w = cell_workdir(root, cell)
    saved = workdir_lib.read_json(w / workdir_lib.CONFIG_FILE)
    if saved is None:
        return {NO_CONFIG: (None, None)}
    now = cell_config(config, cell)
    # What every config.json holds; the grid's own section reaches a cell only through the
    # fields cell_config sets, so a cell of an earlier version lacking one of it stands.
    missing = [
        f for f in fields.missing_fields(saved, get_base_config()) if not f.startswith(GRID_SECTION)
    ]
    # An evaluation setting that came after the cell's training: its evaluation's record of
    # it counts instead, and without one the cell is evaluated again (--reevaluate).
    later = [f for f in missing if f.startswith(EVAL_SECTION)]
    missing = [f for f in missing if f not in later]
    if missing:
        advice = "Move that cell's folder away to train it again."
        raise ValueError(fields.not_this_version(w / workdir_lib.CONFIG_FILE, missing, advice))
    counted = sorted(
        f
        for f in {*fields.leaves(saved), *fields.leaves(now)}
        if _counts(f, cell) and f not in later
    )
    changes = fields.differences(saved, now, counted)
    # What the evaluation recorded ({field: value}), where config.json agrees.
    evaluated = workdir_lib.read_json(w / workdir_lib.EVAL_DIR / "metrics.json") or {}
    recorded = evaluated.get("settings") or {}
    for name, was in recorded.items():
        if name in counted and name not in changes and was != fields.field(now, name):
            changes[name] = (was, fields.field(now, name))
    for name in later:
        if recorded.get(name) != fields.field(now, name):
            changes[name] = (recorded.get(name), fields.field(now, name))
    version = evaluated.get("version", 1)
    if version != EVALUATION_VERSION:
        changes[EVALUATION] = (version, EVALUATION_VERSION)
    was = (workdir_lib.read_json(w / workdir_lib.DATASET_FILE) or {}).get("fingerprint")
    # A phantom fingerprint is named by the fields it hashes where they differ.
    inputs = sources.get(config.data.name).fingerprint_fields(config)
    if fingerprint and was and was != fingerprint and not any(f in inputs for f in changes):
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


def describe(changes: dict) -> str:
    """A cell's :func:`cell_changes` as text: ``field: then -> now; ...``."""
    if NO_CONFIG in changes:
        return f"{NO_CONFIG}: missing, so the settings it trained with are unknown"
    return "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())


def _reevaluable(changes: dict) -> bool:
    """Whether only evaluation settings changed: training stands, an evaluation is redone."""
    return all(k.startswith(EVAL_SECTION) or k == EVALUATION for k in changes)


def refuse_changed(changed: dict[Cell, dict], root, reevaluate: bool = False) -> set[Cell]:
    """Raises a ``ValueError`` naming every cell of ``changed`` (:func:`changed_cells`),
    grouped by their differences, unless ``reevaluate`` and all of them differ only in
    evaluation settings; returns those (the cells to evaluate again)."""
    refused = {c: d for c, d in changed.items() if not (reevaluate and _reevaluable(d))}
    if not refused:
        return set(changed)
    groups: dict[str, list[str]] = {}
    for c, d in refused.items():
        groups.setdefault(describe(d), []).append(c.name)
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
            f" {', '.join(evaluation_only)} differ only in evaluation settings (eval.*) or "
            "were evaluated by an earlier release: --reevaluate evaluates them again."
        )
    raise ValueError(message)
