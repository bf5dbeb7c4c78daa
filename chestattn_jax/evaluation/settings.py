"""What an evaluation is checked against before it starts, and where it writes.

:func:`plan_evaluation` runs before anything is computed or written. It refuses a config
whose data settings differ from training's (another split can hold training patients,
another image size feeds the model inputs it never saw) unless
``config.allow_setting_changes``, and it picks the output folder: ``eval`` for the
test split at the best checkpoint, a folder named after the split, checkpoint (and
evaluated data set) otherwise; an evaluation with other settings is never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os

from absl import logging

from chestattn_jax import config_fields as fields
from chestattn_jax import workdir as workdir_lib
from chestattn_jax.config_fields import (
    CROSS_DATASET_FIELDS,
    DATA_FIELDS,
    EVAL_FIELDS,
    INPUT_FIELDS,
    MODEL_FIELDS,
)
from chestattn_jax.data import sources
from chestattn_jax.data.input_pipeline import dataset_fingerprint
from chestattn_jax.data.splits import SPLIT_NAMES
from chestattn_jax.evaluation import class_map, evaluators
from chestattn_jax.trained_model import check_model_fields

# Which checkpoint an evaluation restores (config.eval.checkpoint).
EVAL_CHECKPOINTS = ("best", "latest")
# The key of the data set's fingerprint among the settings and changes.
FINGERPRINT = "dataset fingerprint"


def _data_fields(config) -> tuple[str, ...]:
    return DATA_FIELDS + sources.get(config.data.name).setting_fields(config)


def _trained_fields(config) -> tuple[str, ...]:
    """The data fields that must equal training's: those of how images reach the model
    on another data set, all of them on the trained one (even through eval.dataset)."""
    other = class_map.is_cross_dataset(config) and not class_map.is_training_dataset(config)
    return INPUT_FIELDS if other else _data_fields(config)


def trained_setting_changes(
    workdir: str,
    config,
    fingerprint: dict | None = None,
    advice: str = "Evaluate with the config the workdir was trained with.",
) -> dict:
    """How ``config`` differs from the config ``workdir`` was trained with
    (``WORKDIR/config.json``, ``WORKDIR/dataset.json``) on the fields that decide what is
    evaluated (:data:`DATA_FIELDS`, for phantoms ``data.synthetic.*``, and the data
    set's ``fingerprint`` from ``fingerprint``; never its ``raw_dir``: the same data may be
    mounted elsewhere; across data sets only :data:`INPUT_FIELDS`). Raises a
    ``ValueError`` if the model fields differ: that checkpoint cannot be evaluated so.

    For phantoms, whose fingerprint is a hash of config fields, a difference is named by
    those fields; the fingerprint is listed only when no field explains it."""
    root = workdir_lib.workdir_path(workdir)
    path = root / workdir_lib.CONFIG_FILE
    saved = workdir_lib.read_json(path)
    if saved is None:
        return {}
    check_model_fields(workdir, config, advice, saved=saved)
    changes = fields.differences(saved, config, _trained_fields(config), source=path)
    trained_on = workdir_lib.read_json(root / workdir_lib.DATASET_FILE) or {}
    was, now = trained_on.get("fingerprint"), (fingerprint or {}).get("fingerprint")
    if was and now and was != now:
        # A phantom fingerprint hashes these fields (and the classes): named above if
        # they differ. A prepared data set's hashes its raw inputs, which no field names.
        inputs = sources.get(config.data.name).fingerprint_fields(config)
        if not fields.differences(saved, config, inputs, source=path):
            changes[FINGERPRINT] = (was, now)
    return changes


def check_setting_changes(changes: dict, config, what: str) -> None:
    """Refuses ``changes`` (from :func:`trained_setting_changes`) unless
    ``config.allow_setting_changes``; logs them when allowed."""
    if not changes:
        return
    text = fields.describe_changes(changes, "the workdir was trained with")
    if FINGERPRINT in changes and sources.get(config.data.name).prepared:
        text += (
            " (the data set was prepared again, from other raw images or with other options, "
            f"since training: compare the workdir's {workdir_lib.DATASET_FILE} with the "
            "chestattn_prepare.json of the data set)"
        )
    if not config.allow_setting_changes:
        raise ValueError(
            f"{what} under other data settings than training used: {text}. Another split "
            "can hold training patients, and another image size or normalisation feeds the "
            "model inputs it never saw. Use the training settings, or pass "
            "--config.allow_setting_changes=true if this is what you want."
        )
    logging.warning("%s under other data settings than training (allowed): %s", what, text)


# The key of the evaluated data set's fingerprint in a cross-dataset evaluation.
EVALUATED_FINGERPRINT = "evaluated dataset fingerprint"


def eval_settings(config, fingerprint: dict | None, evaluated: dict | None = None) -> dict:
    """Every setting that changes the numbers of an evaluation, by config field; for a
    cross-dataset evaluation also the evaluated data set and its ``evaluated``
    fingerprint."""
    names = (*EVAL_FIELDS, *_data_fields(config), *MODEL_FIELDS)
    if class_map.is_cross_dataset(config):
        names += CROSS_DATASET_FIELDS
    settings = {f: fields.field(config, f) for f in names}
    settings[FINGERPRINT] = (fingerprint or {}).get("fingerprint")
    if class_map.is_cross_dataset(config):
        settings[EVALUATED_FINGERPRINT] = (evaluated or {}).get("fingerprint")
    return settings


def eval_dir_name(config, changes: dict) -> str:
    """``eval`` for the test split at the best checkpoint under the training settings;
    ``eval_<split>_<checkpoint>`` for other splits or checkpoints, and
    ``eval_<data set>_<split>_<checkpoint>`` on another data set, with a digest of the
    changed settings (and of a class map other than ``exact``) appended; or
    ``config.eval.output_name``."""
    if config.eval.output_name:
        return config.eval.output_name
    split, which = config.eval.split, config.eval.checkpoint
    cross = class_map.is_cross_dataset(config)
    if (split, which) == ("test", "best") and not changes and not cross:
        return workdir_lib.EVAL_DIR
    name = f"eval_{config.eval.dataset}_{split}_{which}" if cross else f"eval_{split}_{which}"
    digest = {k: v[1] for k, v in changes.items()}
    if cross and config.eval.class_map != class_map.EXACT:
        digest["eval.class_map"] = config.eval.class_map
    if digest:
        text = json.dumps(digest, sort_keys=True, default=str)
        name += "_" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return name


def plan_evaluation(config, workdir: str, *, replace_other_settings: bool = False) -> dict:
    """Checks, before anything is computed or written, that ``config`` may be evaluated
    on ``workdir`` and where: ``{"out_dir", "settings", "changes", "fingerprint",
    "data_config"}`` (``data_config``: the config whose ``data`` is the evaluated data set;
    ``config`` itself unless ``config.eval.dataset`` names another).

    An output folder that holds an evaluation with other settings is never overwritten
    (a ``ValueError`` names the difference), unless ``replace_other_settings`` (the
    evaluation that ends a training run, whose settings are the new training settings).
    """
    fingerprint = dataset_fingerprint(config)
    cross = class_map.is_cross_dataset(config)
    data_config, evaluated = config, None
    if cross:
        data_config = class_map.data_config(config)
        with data_config.unlocked():  # one evaluated data set, not training's mixture
            data_config.data.mixture = ""
            data_config.data.mixture_weights, data_config.data.mixture_splits = (), ()
        try:
            evaluated = dataset_fingerprint(data_config)
        except (ValueError, OSError) as e:  # named by the fields the user set
            text = str(e).replace("config.data.data_dir", "config.eval.data_dir")
            raise type(e)(
                f"The evaluated data set (config.eval.dataset={config.eval.dataset!r}): {text}"
            ) from None
    # Across data sets the training data's own fingerprint has nothing to match; the
    # trained data set named through eval.dataset must be the one trained on.
    if class_map.is_training_dataset(config):
        compared = evaluated
    else:
        compared = None if cross else fingerprint
    changes = trained_setting_changes(workdir, config, compared)
    check_setting_changes(changes, config, "Evaluating")
    settings = eval_settings(config, fingerprint, evaluated)
    out_dir = workdir_lib.workdir_path(workdir) / eval_dir_name(config, changes)
    previous = workdir_lib.read_json(out_dir / "metrics.json")
    if previous is not None:
        before = previous.get("settings")
        if not isinstance(before, dict):
            advice = (
                "Name another folder with --config.eval.output_name=NAME, or move that one away."
            )
            raise ValueError(
                fields.not_this_version(out_dir / "metrics.json", ["settings"], advice)
            )
        if before != settings:
            differ = {k: (before.get(k), v) for k, v in settings.items() if before.get(k) != v}
            text = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in differ.items())
            if not replace_other_settings:
                raise ValueError(
                    f"{out_dir} holds an evaluation with other settings ({text}); "
                    "evaluations with other settings do not overwrite each other. Name "
                    "another folder with --config.eval.output_name=NAME, or move that one away."
                )
            logging.warning("Replacing %s, evaluated with other settings: %s", out_dir, text)
    return {
        "out_dir": os.fspath(out_dir),
        "settings": settings,
        "changes": changes,
        "fingerprint": fingerprint,
        "data_config": data_config,
    }


def check_config(p, mode: str) -> None:
    """The rules of ``config.eval``, added to ``p`` (a
    :class:`chestattn_jax.config_checks.Problems`): the evaluation's own settings here, the
    evaluators' (:func:`chestattn_jax.evaluation.evaluators.check_config`) and a
    cross-dataset evaluation's (:func:`chestattn_jax.evaluation.class_map.check_config`)."""
    p.int("eval.batch_size", 1, "at least 1")
    p.choice("eval.checkpoint", EVAL_CHECKPOINTS)
    p.choice("eval.split", SPLIT_NAMES)
    name = p.value("eval.output_name")
    if not isinstance(name, str):
        p.add("eval.output_name", 'must be a folder name, or "" for the default.')
    elif name and (
        name in (".", "..")
        or "/" in name
        or os.sep in name
        or (os.altsep and os.altsep in name)
        or name in workdir_lib.WORKDIR_NAMES
    ):
        p.add(
            "eval.output_name",
            "must be one folder name inside the workdir (no '/'), other than "
            f"{', '.join(workdir_lib.WORKDIR_NAMES)}.",
        )
    evaluators.check_config(p, mode)
    class_map.check_config(p, mode)
