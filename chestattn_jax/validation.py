"""Every rule of a config, checked up front: :func:`validate` runs before a run writes or
compiles anything, and reports every problem at once.

Each rule is stated once, by the module that owns the setting, as its
``check_config(p, mode)``; this module only calls them, in this order:

- the structure (no field missing, none unknown) and the run's own fields (``seed``,
  ``allow_setting_changes``), here;
- ``config.data``: :func:`chestattn_jax.data.input_pipeline.check_config` (with the
  split, augmentation, phantom and uncertain-label rules of their modules);
- ``config.model``: :func:`chestattn_jax.models.nets.check_config` and
  :func:`chestattn_jax.models.convert.check_config` (``pretrained``);
- ``config.loss``: :func:`chestattn_jax.losses.check_config`;
- ``config.train``: :func:`chestattn_jax.train.check_config`;
- ``config.eval``: :func:`chestattn_jax.evaluation.settings.check_config` (with the
  evaluators' and a cross-dataset evaluation's rules);
- ``config.experiment``: the experiment grid's rules;
- the batch sizes over the devices in use: :func:`chestattn_jax.sharding.check_config`.
"""

from __future__ import annotations

from chestattn_jax import losses, sharding, train
from chestattn_jax.config import get_base_config
from chestattn_jax.config_checks import SEED_LIMIT, ConfigError, Problems
from chestattn_jax.data import input_pipeline
from chestattn_jax.evaluation import settings
from chestattn_jax.models import convert, nets

__all__ = ["MODES", "ConfigError", "problems", "validate"]

# What a run does (--mode).
MODES = ("train", "evaluate", "predict")


def _check_experiment(p: Problems, mode: str) -> None:

    p.int("experiment.folds", 1, "at least 1")
    variants = p.value("experiment.variants")
    if (
        not isinstance(variants, list | tuple)
        or not variants
        or any(v not in nets.VARIANTS for v in variants)
        or len(set(variants)) < len(variants)
    ):
        p.add(
            "experiment.variants",
            f"must be a tuple of distinct variants from {', '.join(nets.VARIANTS)}, "
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
    p.choice("experiment.lambda_criterion", ("mean_auc", "bce"))


# The owners' checks, in the order their problems are listed.
CHECKS = (
    input_pipeline.check_config,
    nets.check_config,
    convert.check_config,
    losses.check_config,
    train.check_config,
    settings.check_config,
    _check_experiment,
)


def validate(config, mode: str = "train", *, num_devices: int | None = None) -> None:
    """Raises :class:`ConfigError` listing every problem :func:`problems` finds."""
    found = problems(config, mode, num_devices=num_devices)
    if found:
        raise ConfigError(found)


def problems(config, mode: str = "train", *, num_devices: int | None = None) -> list[str]:
    """Every value of ``config`` that a ``mode`` run (train | evaluate | predict) cannot use
    or would silently ignore, each as ``config.FIELD=VALUE: what is allowed``.

    Checks types, ranges and choices of every field of
    :func:`chestattn_jax.config.get_base_config`, that no field is missing or unknown, the
    classes against the data set's, and that settings the chosen data set, split scheme,
    optimizer or augmentation switch ignore keep their defaults. ``num_devices`` (default:
    ``jax.device_count()``, read only for train and evaluate) is what batch sizes must be
    multiples of. Reads no data and writes nothing.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; expected one of {', '.join(MODES)}.")
    base = get_base_config()
    p = Problems(config, base, mode)
    p.structure(config, base, "")
    if p.missing:
        return p.found  # the other checks would read the missing fields
    p.seed("seed")
    p.bool("allow_setting_changes")
    for check in CHECKS:
        check(p, mode)
    if mode in ("train", "evaluate"):
        if num_devices is None:
            import jax

            num_devices = jax.device_count()
        sharding.check_config(p, mode, num_devices)
    return p.found
