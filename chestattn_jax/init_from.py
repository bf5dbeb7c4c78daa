"""Fine-tuning from a trained model: ``config.model.init_from``.

  --config.model.init_from=workdirs/nih_class            # its best checkpoint
  --config.model.init_from=workdirs/nih_class:latest     # or :STEP
  --config.model.init_from=nih_class.bundle              # a bundle file

A new run starts with the trained model's backbone, gates (with their projections
``P_s``) and BatchNorm statistics, and with the class heads of the classes both models
have; the other classes' heads keep the fresh initialisation of the run's seed. Classes
are paired as a cross-dataset evaluation's exact class map pairs them
(:func:`chestattn_jax.evaluation.class_map.exact_pairs`): one to one, by the finding each
names in the label space of :mod:`chestattn_jax.data.label_space` (NIH's ``Effusion`` is
CheXpert's ``Pleural Effusion``), else by the same name. A class head is:

- ``class``: its row of every parameter under ``class_heads`` (its own gate 3 and binary
  classifier, vmapped over a leading class axis);
- ``resnet`` and ``image``: its column of the final ``Dense(k)`` (``classifier``).

The optimizer state is the fresh one (its moments start at zero). The two models must have
the same :data:`chestattn_jax.models.nets.INIT_FROM_FIELDS` (variant, backbone, gates,
image size), which :func:`chestattn_jax.models.nets.check_config` checks up front for a
workdir and :func:`load_source` again (and for a bundle) as it reads the model. A run that
resumes from its own checkpoint does not read ``init_from``.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from absl import logging
from flax import traverse_util

from chestattn_jax import trained_model
from chestattn_jax import workdir as workdir_lib
from chestattn_jax.config_checks import ConfigError, Problems
from chestattn_jax.evaluation.class_map import exact_pairs
from chestattn_jax.models.nets import bundle_suffix, check_init_source, parse_init_from

# The top-level parameter scope of the class heads, by variant, and the axis of the class.
HEADS = {"class": ("class_heads", 0), "image": ("classifier", -1), "resnet": ("classifier", -1)}


@dataclasses.dataclass
class Source:
    """A trained model read for fine-tuning.

    Attributes:
      text: the value of ``config.model.init_from``.
      config: the config it was trained with.
      variables: ``{"params": ..., "batch_stats": ...}`` as numpy arrays.
      step: the checkpoint's step (``None`` for a bundle).
    """

    text: str
    config: object
    variables: dict
    step: int | None


def matched_classes(
    source_classes, classes, source_dataset: str = "", dataset: str = ""
) -> list[int | None]:
    """Per class of ``classes`` (labels of the data set ``dataset``), the index of the
    class of ``source_classes`` (of ``source_dataset``) that means the same finding, as
    :func:`~chestattn_jax.evaluation.class_map.exact_pairs` pairs them, or ``None``."""
    source_classes = list(source_classes)
    pairs = exact_pairs(source_classes, list(classes), source_dataset, dataset)
    back = {target: source for source, target in pairs.items()}
    return [source_classes.index(back[c]) if c in back else None for c in classes]


def _host(x) -> np.ndarray:
    """A (replicated) array as numpy, also where other processes hold devices of it."""
    if isinstance(x, jax.Array):
        return np.asarray(x.addressable_data(0))
    return np.asarray(x)


def _read_workdir(text: str, path: str, which):
    config = trained_model.workdir_config(path)
    if not isinstance(which, int):
        state, step, _ = trained_model.restore_for_inference(config, path, which)
        return config, state, int(step)
    what = f"config.model.init_from={text!r}"
    state = trained_model.restore_checkpoint_step(config, path, which, what)
    return config, state, which


def _read_bundle(text: str, path: str):
    try:
        from chestattn_jax.bundle_file import trained_variables
    except ImportError as e:
        raise ImportError(
            f"config.model.init_from={text!r} is a file, which is read as a model bundle, but "
            f"chestattn_jax.bundle_file cannot be imported ({e}); give a workdir instead."
        ) from None
    return trained_variables(path)


def load_source(config) -> Source:
    """The trained model ``config.model.init_from`` names, checked to fit ``config``'s
    model (a ``ConfigError`` names each field that differs, with both values)."""
    text = config.model.init_from
    path, which = parse_init_from(text)
    if workdir_lib.workdir_path(path).is_file():
        problem = bundle_suffix(text, path)
        if problem:
            raise ConfigError([f"config.model.init_from={text!r}: {problem}"])
        source_config, variables = _read_bundle(text, path)
        step = None
    else:
        problem = trained_model.not_a_run(path, "config.model.init_from={run}")
        if problem:
            raise FileNotFoundError(f"config.model.init_from={text!r}: {problem}")
        source_config, state, step = _read_workdir(text, path, which)
        variables = {"params": state.params, "batch_stats": state.batch_stats}
    p = Problems(config, None)
    check_init_source(p, source_config, text)
    if p.found:
        raise ConfigError(p.found)
    variables = jax.tree.map(_host, dict(variables))
    return Source(text, source_config, variables, step)


def transfer(source: dict, target: dict, rows: list[int | None], variant: str) -> dict:
    """``target``'s variables (``{"params", "batch_stats"}``, numpy) with ``source``'s
    everywhere but the class heads, and there class ``j``'s head from ``source``'s class
    ``rows[j]`` (kept as in ``target`` where ``None``). Raises a ``ValueError`` naming a
    parameter that one side lacks or that has another shape."""
    scope, axis = HEADS[variant]
    dst = [j for j, i in enumerate(rows) if i is not None]
    src = [rows[j] for j in dst]
    out = {}
    for collection in ("params", "batch_stats"):
        have = traverse_util.flatten_dict(dict(source.get(collection, {})), sep="/")
        want = traverse_util.flatten_dict(dict(target.get(collection, {})), sep="/")
        differ = sorted(set(have) ^ set(want))
        if differ:
            raise ValueError(
                f"the model to fine-tune from has other {collection} than this one: "
                f"{', '.join(differ[:5])}{' ...' if len(differ) > 5 else ''}."
            )
        merged = {}
        for key, leaf in want.items():
            theirs, ours = np.asarray(have[key]), np.array(leaf)
            if key.split("/")[0] == scope:
                if np.delete(theirs.shape, axis).tolist() != np.delete(ours.shape, axis).tolist():
                    raise ValueError(
                        f"{collection}/{key} is {theirs.shape} in the model to fine-tune from, "
                        f"{ours.shape} here: they differ beyond the class axis."
                    )
                index = [slice(None)] * ours.ndim
                index[axis] = dst
                taken = [slice(None)] * theirs.ndim
                taken[axis] = src
                ours[tuple(index)] = theirs[tuple(taken)]
            elif theirs.shape != ours.shape:
                raise ValueError(
                    f"{collection}/{key} is {theirs.shape} in the model to fine-tune from, "
                    f"{ours.shape} here."
                )
            else:
                ours = theirs.astype(ours.dtype)
            merged[key] = ours
        out[collection] = traverse_util.unflatten_dict(merged, sep="/")
    return out


def _placed_like(new, old):
    """The numpy tree ``new`` as arrays of ``old``'s dtypes and shardings."""

    def put(x, like):
        x = np.asarray(x, like.dtype)
        return jax.make_array_from_callback(x.shape, like.sharding, lambda index: x[index])

    return jax.tree.map(put, new, old)


def apply(config, state, source: Source | None = None):
    """The freshly initialised train ``state`` of ``config`` with the trained model of
    ``config.model.init_from`` (``source``, read here if not given) taken over (see the
    module docstring). Returns ``(state, report)``: ``report`` is ``{"source": text,
    "step": int | None, "copied": {class: its class in the source}, "initialised":
    [classes whose heads start fresh]}``, also logged."""
    source = source if source is not None else load_source(config)
    classes = list(config.data.classes)
    rows = matched_classes(
        source.config.data.classes, classes, source.config.data.name, config.data.name
    )
    ours = jax.tree.map(_host, {"params": state.params, "batch_stats": state.batch_stats})
    merged = transfer(source.variables, ours, rows, config.model.variant)
    state = state.replace(
        params=_placed_like(merged["params"], state.params),
        batch_stats=_placed_like(merged["batch_stats"], state.batch_stats),
    )
    named = list(source.config.data.classes)
    pairs = list(zip(classes, rows, strict=True))
    report = {
        "source": source.text,
        "step": source.step,
        "copied": {c: named[i] for c, i in pairs if i is not None},
        "initialised": [c for c, i in pairs if i is None],
    }
    logging.info(
        "Fine-tuning from %s%s: backbone and gates taken over; class heads copied for %s; "
        "initialised fresh for %s.",
        source.text,
        "" if source.step is None else f" (step {source.step})",
        ", ".join(f"{c} (from {s})" if c != s else c for c, s in report["copied"].items())
        or "no class",
        ", ".join(report["initialised"]) or "no class",
    )
    return state, report
