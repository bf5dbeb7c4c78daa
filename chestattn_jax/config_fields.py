"""Config fields by what they decide, and the one way to store, read back and compare them.

Every place that records a config or checks one against a recorded one (resuming a run,
evaluating a checkpoint, restoring a model for inference, preparing a data set again) uses
the field groups and the three functions here:

- :func:`to_json` turns a config (or any part of one) into what ``config.json`` holds:
  ConfigDicts as dicts, tuples as lists;
- :func:`from_json` turns it back into the tuples the config files write;
- :func:`differences` compares two of them, field by field.
"""

from __future__ import annotations

from collections.abc import Mapping

# Fields that decide the model: a checkpoint is never restored under other values.
MODEL_FIELDS = (
    "model.variant",
    "model.stage_sizes",
    "model.num_filters",
    "model.attention_dim",
    "model.compatibility",
    "model.attention_norm",
    "model.gate_stages",
    "data.classes",
    "data.channels",
)
# Fields that decide how an image reaches the model: another value than training's feeds
# it inputs it never saw. Refused unless config.allow_setting_changes.
MODEL_INPUT_FIELDS = ("data.image_size", "data.mean", "data.std")
# What a cross-dataset evaluation checks against training (the other data fields then
# describe the evaluated data set, which cannot hold training patients).
INPUT_FIELDS = ("data.name", *MODEL_INPUT_FIELDS)
# Fields that decide which images are scored and how they reach the model. Another value
# than training's is refused unless config.allow_setting_changes: another split can hold
# training patients, another image size or normalisation feeds the model other inputs.
DATA_FIELDS = (
    *INPUT_FIELDS,
    "data.views",
    "data.split",
    "data.split_fractions",
    "data.num_folds",
    "data.fold",
    "data.val_fraction",
    "data.split_seed",
    "data.uncertainty",
    "data.uncertainty_per_class",
)
# Evaluation settings that change the numbers written (recorded beside them).
EVAL_FIELDS = (
    "eval.split",
    "eval.checkpoint",
    "eval.bootstrap_draws",
    "eval.bootstrap_seed",
    "eval.map_threshold",
    "eval.operating_points",
    "eval.calibration_bins",
    "eval.calibration_binning",
    "eval.recalibration",
    "eval.subgroup_age_bands",
    "eval.subgroup_min_positives",
    "eval.num_failure_images",
    "eval.nih_expert_labels",
    "model.dtype",
)
# What a cross-dataset evaluation adds to the recorded settings.
CROSS_DATASET_FIELDS = ("eval.dataset", "eval.class_map")
# Fields (under config.data) that only prepared data sets read, not the phantoms.
PREPARED_FIELDS = (
    "data_dir",
    "split",
    "split_fractions",
    "num_folds",
    "fold",
    "val_fraction",
    "split_seed",
    "views",
    "uncertainty",
    "uncertainty_per_class",
)
# Fields (under config.data) of the prepared data sets' split schemes, and the schemes
# that read them.
SPLIT_FIELDS = {
    "split_fractions": ("random",),
    "num_folds": ("kfold",),
    "fold": ("kfold",),
    "val_fraction": ("kfold", "official"),
}


def to_json(value):
    """A config value as ``config.json`` holds it: ConfigDicts as dicts, tuples as lists."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def from_json(value):
    """JSON lists back to the tuples the config files use (classes, stage sizes, ...)."""
    if isinstance(value, Mapping):
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(from_json(v) for v in value)
    return value


def not_this_version(
    where, missing, advice: str = "Train again in a new --workdir.", what: str = "field"
) -> str:
    """What a file that lacks ``missing`` (fields, or arrays) that this version always
    writes is told: named with the file, and what to do (``advice``)."""
    return (
        f"{where} has no {what} {', '.join(missing)}: it was not written by this version of "
        f"chestattn_jax (or was edited). {advice}"
    )


_MISSING = object()


def field(tree, dotted: str, missing=None):
    """The value of the field ``dotted`` (``"data.image_size"``) of a config or of its
    JSON, as JSON has it; ``missing`` where the field is missing."""
    for part in dotted.split("."):
        try:
            tree = tree[part]
        except (KeyError, TypeError, IndexError):
            return missing
    return to_json(tree)


def missing_fields(saved, config, prefix: str = "") -> list[str]:
    """Dotted names of the fields of ``config`` that ``saved`` (a config's JSON) lacks."""
    config = to_json(config)
    if not isinstance(saved, dict):
        return [prefix[:-1]]
    out = []
    for key, value in config.items():
        if key not in saved:
            out.append(prefix + key)
        elif isinstance(value, dict) and value:
            out += missing_fields(saved[key], value, f"{prefix}{key}.")
    return out


def leaves(tree, prefix: str = "") -> list[str]:
    """The dotted names of every field of a config or of its JSON."""
    tree = to_json(tree)
    out = []
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out += leaves(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def differences(before, after, fields=None, *, source=None) -> dict[str, tuple]:
    """``{field: (value before, value after)}`` for each of ``fields`` (default: every
    field of either) whose values differ between two configs or their JSON. A field
    missing from one side counts as ``None`` there; with ``source`` (the file ``before``
    was read from), one missing from ``before`` raises a ``ValueError`` naming it and the
    file: this version always writes it."""
    if fields is None:
        fields = sorted(set(leaves(before)) | set(leaves(after)))
    out = {}
    for name in fields:
        was, now = field(before, name, _MISSING), field(after, name)
        if was is _MISSING:
            if source is not None:
                raise ValueError(not_this_version(source, [name]))
            was = None
        if was != now:
            out[name] = (was, now)
    return out


def describe(changes: dict[str, tuple]) -> list[str]:
    """``["train.num_steps: 100 -> 200", ...]`` for :func:`differences`' result."""
    return [f"{k}: {was!r} -> {now!r}" for k, (was, now) in changes.items()]


def describe_changes(changes: dict[str, tuple], then: str) -> str:
    """``"config.data.image_size is 128 but THEN 96; ..."`` for :func:`differences`' result
    (``then``: e.g. ``"the workdir was trained with"``); a key without a dot (``"dataset
    fingerprint"``) reads ``"the dataset fingerprint is ..."``."""

    def name(k):
        return f"config.{k}" if "." in k else f"the {k}"

    return "; ".join(
        f"{name(k)} is {now!r} but {then} {was!r}" for k, (was, now) in changes.items()
    )
