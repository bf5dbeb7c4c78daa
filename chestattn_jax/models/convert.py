"""torchvision ResNet weights for the Flax backbone (``chestattn_jax/models/resnet.py``).

A torchvision ``resnet50`` state dict (``.safetensors``, read with ``safetensors.numpy``;
or ``.pth``, read with ``torch.load(weights_only=True)`` when torch is installed) maps
one-to-one onto the backbone because resnet.py repeats torchvision's layer arithmetic:

- ``conv1`` / ``bn1`` -> ``stem_conv`` / ``stem_bn``;
  ``layerN.M.{conv,bn}K`` -> ``layerN_M/{conv,bn}K``;
  ``layerN.M.downsample.{0,1}`` -> ``layerN_M/downsample_{conv,bn}``.
- Conv weights OIHW -> kernels HWIO. BatchNorm ``weight``/``bias`` -> params
  ``scale``/``bias``; ``running_mean``/``running_var`` -> batch_stats ``mean``/``var``.
- With 1-channel input the stem's RGB filters are summed, which is exactly torchvision fed
  the grayscale image repeated on three channels (the ImageNet per-channel normalisation is
  not reproduced: our images are normalised with one mean and std).
- ``fc`` and ``num_batches_tracked`` are not used (the heads are new) and are reported.

Other bottleneck depths (resnet101, resnet152) convert when ``config.model.stage_sizes``
matches; basic-block ResNets (resnet18/34) and wide or grouped ones do not fit this backbone
and are rejected with the reason. Nothing is downloaded: the file must be on disk.

One-off conversion where torch is installed, so later runs need no torch::

    python -m chestattn_jax.models.convert --in=resnet50.pth --out=resnet50.safetensors
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util

BACKBONE_SCOPE = "backbone"
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")

_BLOCK = re.compile(r"layer(\d+)_(\d+)")
_KEY_BLOCK = re.compile(r"layer(\d+)\.(\d+)\.")
_BN_PARAMS = {"scale": "weight", "bias": "bias"}
_BN_STATS = {"mean": "running_mean", "var": "running_var"}
_BLOCK_MODULES = {
    "conv1": "conv1",
    "conv2": "conv2",
    "conv3": "conv3",
    "bn1": "bn1",
    "bn2": "bn2",
    "bn3": "bn3",
    "downsample_conv": "downsample.0",
    "downsample_bn": "downsample.1",
}


class ConversionError(ValueError):
    """A state dict that does not fit the backbone; the message names the file and key."""


@dataclasses.dataclass
class ConversionReport:
    """What a conversion used and left out.

    Attributes:
      source: the file (or the name given to an in-memory state dict).
      loaded: torchvision keys copied into the backbone.
      ignored: keys present but not used (``fc.*``, ``num_batches_tracked``, a stage
        the model does not build).
      stem: how the stem's input channels were taken (``"summed RGB -> 1"`` or ``"as is"``).
      stage_sizes: blocks per stage found in the state dict.
    """

    source: str
    loaded: list[str]
    ignored: list[str]
    stem: str
    stage_sizes: tuple[int, ...]

    def __str__(self) -> str:
        return (
            f"{self.source}: ResNet stages {self.stage_sizes}, {len(self.loaded)} tensors loaded, "
            f"stem {self.stem}; not used: {', '.join(self.ignored) or 'nothing'}"
        )


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a torchvision state dict as ``{key: numpy array}``.

    ``.safetensors`` is read with ``safetensors.numpy`` (no torch needed); ``.pth``,
    ``.pt``, ``.bin`` and ``.ckpt`` with ``torch.load(map_location="cpu",
    weights_only=True)``. A checkpoint that wraps the weights in ``"state_dict"`` or
    ``"model"``, and DataParallel's ``module.`` prefix, are unwrapped.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Pretrained weights file {path!r} does not exist.")
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            return dict(load_file(path))
        except (SafetensorError, OSError, TypeError, ValueError) as e:
            raise ConversionError(f"Cannot read {path!r} as safetensors: {e}") from e
    if not path.endswith(TORCH_SUFFIXES):
        raise ConversionError(
            f"Cannot tell the format of {path!r}: expected .safetensors or a torch file "
            f"({', '.join(TORCH_SUFFIXES)})."
        )
    try:
        import torch
    except ImportError as e:
        raise ConversionError(
            f"Reading {path!r} needs torch, which is not installed; convert it once where "
            "torch is installed (python -m chestattn_jax.models.convert --in=FILE.pth "
            "--out=FILE.safetensors) or install the 'parity' extra."
        ) from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for foreign or truncated files
        raise ConversionError(f"torch.load cannot read {path!r}: {e}") from e
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ConversionError(
            f"{path!r} does not hold a state dict (a mapping of names to tensors); "
            f"torch.load returned {type(obj).__name__}."
        )
    out = {}
    for key, value in obj.items():
        value = value.detach().cpu()
        if value.is_floating_point() and value.dtype != torch.float64:
            value = value.float()  # numpy has no bfloat16
        out[key.removeprefix("module.")] = value.numpy()
    return out


def stage_sizes_of(state_dict: Mapping[str, Any], source: str = "state dict") -> tuple[int, ...]:
    """Blocks per stage of a torchvision ResNet state dict, checking it is one we can load."""
    blocks: dict[int, set[int]] = {}
    for key in state_dict:
        m = _KEY_BLOCK.match(key)
        if m:
            blocks.setdefault(int(m[1]), set()).add(int(m[2]))
    if "conv1.weight" not in state_dict or not blocks:
        shown = ", ".join(list(state_dict)[:5]) or "none"
        raise ConversionError(
            f"{source} is not a torchvision ResNet state dict: expected conv1.weight and "
            f"layerN.M.* keys; its first keys are: {shown}."
        )
    stages = sorted(blocks)
    if stages != list(range(1, len(stages) + 1)):
        raise ConversionError(f"{source}: ResNet stages {stages} are not numbered 1..n.")
    for s in stages:
        if sorted(blocks[s]) != list(range(len(blocks[s]))):
            raise ConversionError(f"{source}: blocks of layer{s} are not numbered 0..n.")
    if not any(k.endswith(".conv3.weight") for k in state_dict):
        raise ConversionError(
            f"{source} holds a basic-block ResNet (resnet18/34: blocks have conv1 and conv2, "
            "no conv3). This backbone (chestattn_jax/models/resnet.py) is built from "
            "bottleneck blocks only; use a resnet50/101/152 state dict."
        )
    return tuple(len(blocks[s]) for s in stages)


def _torch_key(path: tuple[str, ...], collection: str) -> str:
    """torchvision key of one backbone leaf, e.g. ``("layer1_0", "bn2", "mean")``."""
    *modules, leaf = path
    if modules == ["stem_conv"]:
        prefix = "conv1"
    elif modules == ["stem_bn"]:
        prefix = "bn1"
    elif len(modules) == 2 and _BLOCK.fullmatch(modules[0]) and modules[1] in _BLOCK_MODULES:
        stage, block = _BLOCK.fullmatch(modules[0]).groups()
        prefix = f"layer{stage}.{block}.{_BLOCK_MODULES[modules[1]]}"
    else:
        raise ConversionError(
            f"The backbone's {collection} leaf {'/'.join(path)} has no torchvision counterpart."
        )
    if "conv" in modules[-1]:
        names = {"kernel": "weight"} if collection == "params" else {}
    else:
        names = _BN_PARAMS if collection == "params" else _BN_STATS
    if leaf not in names:
        raise ConversionError(
            f"The backbone's {collection} leaf {'/'.join(path)} has no torchvision counterpart."
        )
    return f"{prefix}.{names[leaf]}"


def _convert_leaf(key, value, target, source, path):
    """One torch tensor as the Flax leaf ``target`` (a shape/dtype holder), checked."""
    value = np.asarray(value)
    # jnp.issubdtype also knows ml_dtypes' bfloat16, which safetensors.numpy returns.
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise ConversionError(f"{source}: {key} has dtype {value.dtype}, expected floats.")
    value = value.astype(np.promote_types(value.dtype, np.float32))  # sum the stem in f32
    stem_note = None
    if value.ndim == 4:  # conv OIHW -> HWIO
        want_oihw = tuple(target.shape[i] for i in (3, 2, 0, 1)) if target.ndim == 4 else None
        if key == "conv1.weight" and want_oihw is not None and value.shape[1] != want_oihw[1]:
            if value.shape[1] == 3 and want_oihw[1] == 1:
                value = value.sum(axis=1, keepdims=True)
                stem_note = "summed RGB -> 1"
            else:
                raise ConversionError(
                    f"{source}: {key} takes {value.shape[1]} input channels; the model takes "
                    f"{want_oihw[1]} (1 sums the RGB filters, 3 takes them as they are)."
                )
        if value.shape != want_oihw:
            raise ConversionError(
                f"{source}: {key} has shape {value.shape} (OIHW); the model's "
                f"{'/'.join(path)} needs {want_oihw if want_oihw else target.shape} "
                f"(Flax HWIO {tuple(target.shape)})."
            )
        value = value.transpose(2, 3, 1, 0)
    elif value.shape != tuple(target.shape):
        raise ConversionError(
            f"{source}: {key} has shape {value.shape}; the model's {'/'.join(path)} needs "
            f"{tuple(target.shape)}."
        )
    value = np.ascontiguousarray(value, dtype=target.dtype)
    if isinstance(target, jax.Array):  # keep the target's placement (replicated on a mesh)
        value = jax.device_put(value, target.sharding)
    return value, stem_note


def replace_backbone(
    params: Mapping[str, Any],
    batch_stats: Mapping[str, Any],
    state_dict: Mapping[str, Any],
    *,
    scope: str | None = BACKBONE_SCOPE,
    source: str = "state dict",
) -> tuple[dict, dict, ConversionReport]:
    """``params`` and ``batch_stats`` with the backbone taken from a torchvision state dict.

    Args:
      params, batch_stats: the model's trees, e.g. ``model.init(...)``'s collections or
        ``jax.eval_shape`` of it; they fix every leaf's shape and dtype. Leaves that are
        ``jax.Array`` keep their sharding; others come back as numpy arrays.
      state_dict: ``{torchvision key: array}``, e.g. from :func:`read_state_dict`.
      scope: the backbone's name in the trees (``"backbone"`` in ``ChestAttentionNet``);
        ``None`` when the trees are a bare ``ResNet``'s.
      source: the file name for error messages.

    Returns:
      ``(params, batch_stats, report)``: new trees (leaves outside the backbone are the same
      objects as before) and a :class:`ConversionReport`.

    Raises:
      ConversionError: naming ``source`` and the key, for a missing key, a wrong shape, a
        basic-block ResNet, different stage sizes, or a file that is not a ResNet.
    """
    sd_stages = stage_sizes_of(state_dict, source)
    trees = {"params": params, "batch_stats": batch_stats}
    if scope is not None:
        for name, tree in trees.items():
            if scope not in tree:
                raise ConversionError(f"The model's {name} have no {scope!r} backbone.")
        trees = {name: tree[scope] for name, tree in trees.items()}

    model_blocks: dict[int, int] = {}
    for path in traverse_util.flatten_dict(trees["params"]):
        m = _BLOCK.fullmatch(path[0])
        if m:
            model_blocks[int(m[1])] = max(model_blocks.get(int(m[1]), 0), int(m[2]) + 1)
    model_stages = tuple(model_blocks[s] for s in sorted(model_blocks))
    # A tree without the last stage(s) (a ResNet applied with num_stages) takes the file's
    # first stages; the others are reported as not used rather than refused.
    if model_stages != sd_stages[: len(model_stages)]:
        raise ConversionError(
            f"{source} has ResNet stage sizes {sd_stages} but the model has {model_stages} "
            f"(set config.model.stage_sizes = {sd_stages} for this file)."
        )

    used: set[str] = set()
    stem = "as is"
    new = {}
    for collection, tree in trees.items():
        flat = {}
        for path, target in traverse_util.flatten_dict(tree).items():
            key = _torch_key(path, collection)
            if key not in state_dict:
                raise ConversionError(
                    f"{source}: missing key {key!r} (for the model's {collection} "
                    f"{'/'.join(path)})."
                )
            flat[path], note = _convert_leaf(key, state_dict[key], target, source, path)
            stem = note or stem
            used.add(key)
        new[collection] = traverse_util.unflatten_dict(flat)

    skipped_stages = tuple(range(len(model_stages) + 1, len(sd_stages) + 1))
    ignored = []
    for key in state_dict:
        if key in used:
            continue
        m = _KEY_BLOCK.match(key)
        if (
            key.startswith("fc.")
            or key.endswith(".num_batches_tracked")
            or (m and int(m[1]) in skipped_stages)
        ):
            ignored.append(key)
        else:
            raise ConversionError(f"{source}: key {key!r} has no place in the model's backbone.")
    # Report whole groups rather than 50 num_batches_tracked lines.
    summary = sorted(k for k in ignored if k.startswith("fc."))
    if any(k.endswith(".num_batches_tracked") for k in ignored):
        summary.append("*.num_batches_tracked")
    summary += [f"layer{s}.* (the model has no stage {s})" for s in skipped_stages]
    report = ConversionReport(source, sorted(used), summary, stem, sd_stages)

    out = {}
    for name, orig in (("params", params), ("batch_stats", batch_stats)):
        out[name] = {**orig, scope: new[name]} if scope is not None else new[name]
    return out["params"], out["batch_stats"], report


def load_pretrained(state, path: str | os.PathLike, *, scope: str = BACKBONE_SCOPE):
    """A fresh train state with the backbone's params and batch_stats from ``path``.

    The optimizer state is initialised again for the new params (Adam's moments zero, its
    count 0) and placed as the old one was, so the tree structure and sharding the jitted
    train step and the checkpointer expect are unchanged. Call it on the state that
    ``create_train_state`` returned, before restoring a checkpoint: a checkpoint, when one
    exists, replaces these weights anyway.

    Raises:
      ValueError: if ``state.step`` is not 0 (re-initialising a trained optimizer would
        restart Adam's bias correction and the learning-rate schedule's count).
      ConversionError, FileNotFoundError: see :func:`read_state_dict` and
        :func:`replace_backbone`.
    """
    path = os.fspath(path)
    if int(jax.device_get(state.step)) != 0:
        raise ValueError(
            f"Pretrained weights ({path}) load into a fresh train state (step 0), not one at "
            f"step {int(state.step)}; load them before restoring a checkpoint."
        )
    state_dict = read_state_dict(path)
    params, batch_stats, report = replace_backbone(
        state.params, state.batch_stats, state_dict, scope=scope, source=path
    )
    shardings = jax.tree.map(lambda x: x.sharding, state.opt_state)
    opt_state = jax.jit(state.tx.init, out_shardings=shardings)(params)
    logging.info("Pretrained backbone: %s", report)
    return state.replace(params=params, batch_stats=batch_stats, opt_state=opt_state)


def maybe_load_pretrained(state, path: str | os.PathLike | None):
    """:func:`load_pretrained` if ``path`` (``config.model.pretrained``) is set, else ``state``."""
    return load_pretrained(state, path) if path else state


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chestattn_jax.models.convert",
        description="Convert a torchvision ResNet state dict (.pth) to safetensors once, so "
        "that training reads it without torch. All keys are kept; the file is checked to be a "
        "bottleneck ResNet.",
    )
    parser.add_argument("--in", dest="src", required=True, help=".pth/.pt or .safetensors file")
    parser.add_argument("--out", required=True, help="the .safetensors file to write")
    args = parser.parse_args(argv)
    if not args.out.endswith(".safetensors"):
        parser.error(f"--out={args.out} must end in .safetensors")
    from safetensors.numpy import save_file

    state_dict = read_state_dict(args.src)
    stages = stage_sizes_of(state_dict, args.src)
    save_file({k: np.ascontiguousarray(v) for k, v in state_dict.items()}, args.out)
    print(f"{args.src} -> {args.out}: {len(state_dict)} tensors, ResNet stages {stages}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def check_config(p, mode: str) -> None:
    """The rules of ``config.model.pretrained``, added to ``p`` (a
    :class:`chestattn_jax.config_checks.Problems`)."""
    pretrained = p.value("model.pretrained")
    suffixes = (".safetensors", *TORCH_SUFFIXES)
    if not isinstance(pretrained, str):
        p.add("model.pretrained", 'must be a file name, or "" to train from scratch.')
    elif pretrained and not pretrained.endswith(suffixes):
        p.add("model.pretrained", f"must be a file ending in {', '.join(suffixes)}.")
    elif pretrained and not os.path.isfile(pretrained):
        p.add("model.pretrained", "no such file.")
