"""The three models compared in the paper: ``resnet``, ``image`` and ``class``.

Every model maps images ``(B, H, W, C)`` to ``(logits, aux)``: logits ``(B, k)``
float32 and ``aux`` a dict of intermediate tensors that the loss, evaluation and
plots read without running the model again:

- ``aux["attention"]``: ``{"gate1": (B, H1, W1), "gate2": (B, H2, W2),
  "gate3": (B, H3, W3)}`` for ``image``; for ``class`` ``gate3`` is ``(B, k, H3, W3)``.
  Empty for ``resnet``.
- ``aux["class_log_attention"]`` (``class`` only): ``(B, k, H3, W3)`` log-weights
  whose softmax over positions is class j's normalised map (Eq. 5's entropy).
- ``aux["global"]``: g, ``(B, C4)`` float32; absent when stage 4 is skipped (below).
- ``aux["pooled"]``: the attended features ĝ that the classifiers read, float32:
  ``{"gate1": (B, C1), "gate2": (B, C2), "gate3": (B, C3)}`` for ``image``; for ``class``
  ``gate3`` is ``(B, k, C3)``, class j's own. Empty for ``resnet`` (its classifier reads
  g). These and g are the embeddings of :meth:`chestattn_jax.trained_model.Model.embed`.

The three gates sit on ``gate_stages`` (default ``(1, 2, 3)``: gates on stages 1-3, as the
paper's Fig. 1 draws them; the text does not force it). ``(2, 3, 4)`` puts them one stage
later, gate 3 (the class-based one) on stage 4's output, and g is still stage 4 pooled.

Under ``pc`` compatibility with ``softmax`` maps, g reaches the attention variants only
through ``A_s . g_s'``, a per-image constant that the softmax over positions cancels
(softmax(c + a) = softmax(c) for a constant a); the logits come from the attended
``l1..l3`` features alone. With ``skip_unused_stage4`` those variants then do not compute
stage 4, g or ``P_s`` at all: logits, maps and gradients are exactly those of the full
forward pass. The skipped parameters are still created by ``init`` (checkpoints keep one
layout), receive zero gradient either way, and stage 4's BatchNorm running statistics are
not updated.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from chestattn_jax import config_fields as fields
from chestattn_jax import workdir as workdir_lib
from chestattn_jax.config import VARIANTS
from chestattn_jax.config_checks import ConfigError, Problems, show
from chestattn_jax.models.attention import (
    COMPATIBILITIES,
    NORMALISATIONS,
    AttentionGate,
    ClassAttentionHeads,
    check_choice,
)
from chestattn_jax.models.resnet import ResNet

# config.model.dtype: the compute dtype of the backbone and the gates.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

# What a run fine-tuned from a trained model (config.model.init_from) must share with it:
# the fields that shape the parameters it takes over, and the image size its backbone and
# gates learnt at.
INIT_FROM_FIELDS = (
    *(f for f in fields.MODEL_FIELDS if f != "data.classes"),  # heads are matched by class
    "data.image_size",
)
# The checkpoints config.model.init_from=W:WHICH may name besides a step number.
INIT_FROM_CHECKPOINTS = ("best", "latest")


class ChestAttentionNet(nn.Module):
    """ResNet backbone with no, image-based or class-based attention.

    Attributes:
      num_classes: k.
      variant: ``resnet`` (Dense(k) on g), ``image`` (three shared gates, Dense(k)
        on ``concat(ĝ1, ĝ2, ĝ3)``) or ``class`` (gates 1-2 shared, gate 3 and the
        classifier replicated per class, Eq. 4).
      stage_sizes, num_filters: the backbone (``(3, 4, 6, 3)`` and 64 for ResNet-50).
      attention_dim: D of every gate (16: our choice, the paper does not give D).
      compatibility: ``pc`` (paper), ``additive`` or ``dp``.
      normalisation: ``softmax`` (paper) or ``sigmoid``.
      dtype: compute dtype of the backbone convolutions, BatchNorm and the gates' 1x1
        ``B`` convolutions; parameters and BatchNorm statistics stay float32, and the
        small layers on pooled features (``P_s``, the classifiers) as well as scores,
        maps, attended features and logits are float32.
      skip_unused_stage4: skip stage 4 where it cannot change the outputs (``image`` and
        ``class`` under ``pc`` + ``softmax``, no gate on stage 4); see the module docstring.
      gate_stages: the backbone stage (1-4) under each of the three gates, increasing.
    """

    num_classes: int
    variant: str = "class"
    stage_sizes: tuple[int, ...] = (3, 4, 6, 3)
    num_filters: int = 64
    attention_dim: int = 16
    compatibility: str = "pc"
    normalisation: str = "softmax"
    dtype: Any = jnp.float32
    skip_unused_stage4: bool = False
    gate_stages: tuple[int, ...] = (1, 2, 3)

    @property
    def stage4_unused(self) -> bool:
        """True where stage 4 cannot change logits or maps: attention variants under pc +
        softmax (g only adds a per-image constant), no gate on stage 4."""
        return (
            self.variant in ("image", "class")
            and self.compatibility == "pc"
            and self.normalisation == "softmax"
            and len(self.stage_sizes) not in self.gate_stages
        )

    def _gate_kwargs(self):
        return dict(
            attention_dim=self.attention_dim,
            compatibility=self.compatibility,
            normalisation=self.normalisation,
            dtype=self.dtype,
        )

    @nn.compact
    def __call__(self, x, train: bool = False):
        check_choice("model variant", self.variant, VARIANTS)
        check_gate_stages(self.gate_stages, len(self.stage_sizes))
        # init always builds every parameter, so that both settings share one layout.
        skip = self.skip_unused_stage4 and self.stage4_unused and not self.is_initializing()
        features = ResNet(self.stage_sizes, self.num_filters, dtype=self.dtype, name="backbone")(
            x, train=train, num_stages=len(self.stage_sizes) - 1 if skip else None
        )
        aux = {"attention": {}, "pooled": {}}
        if not skip:
            g = jnp.mean(features["l4"].astype(jnp.float32), axis=(1, 2))
            aux["global"] = g
        if self.variant == "resnet":
            return nn.Dense(self.num_classes, name="classifier")(g), aux

        def project(s):
            """g_s' = P_s g, or None when stage 4 is skipped (pc + softmax ignores it)."""
            return None if skip else nn.Dense(self.attention_dim, name=f"gate{s}_P")(g)

        num_shared = 3 if self.variant == "image" else 2
        pooled = []
        for s in range(1, num_shared + 1):
            maps, pooled_s, _ = AttentionGate(**self._gate_kwargs(), name=f"gate{s}")(
                features[f"l{self.gate_stages[s - 1]}"], project(s)
            )
            aux["attention"][f"gate{s}"] = maps
            aux["pooled"][f"gate{s}"] = pooled_s.astype(jnp.float32)
            pooled.append(pooled_s)

        if self.variant == "image":
            logits = nn.Dense(self.num_classes, name="classifier")(jnp.concatenate(pooled, -1))
            return logits, aux

        # Class-based: P_3 is shared, everything else of gate 3 is per class.
        logits, maps, log_w, pooled3 = ClassAttentionHeads(
            self.num_classes, **self._gate_kwargs(), name="class_heads"
        )(features[f"l{self.gate_stages[2]}"], project(3), jnp.concatenate(pooled, -1))
        aux["attention"]["gate3"] = maps
        aux["pooled"]["gate3"] = pooled3.astype(jnp.float32)
        aux["class_log_attention"] = log_w
        return logits, aux


def check_gate_stages(stages, num_stages: int = 4) -> None:
    """Raises a ``ValueError`` unless ``stages`` names three increasing stages of the
    backbone (1 to ``num_stages``)."""
    ok = (
        len(stages) == 3
        and all(isinstance(s, int) and 1 <= s <= num_stages for s in stages)
        and list(stages) == sorted(set(stages))
    )
    if not ok:
        raise ValueError(
            f"gate_stages={tuple(stages)!r} (config.model.gate_stages): three increasing "
            f"stages of the backbone, from 1 to {num_stages}, e.g. (1, 2, 3) or (2, 3, 4)."
        )


def create_model(config) -> ChestAttentionNet:
    """Builds the model of ``config.model`` for ``len(config.data.classes)`` classes.

    Raises:
      chestattn_jax.config_checks.ConfigError: a value :func:`check_architecture` refuses.
    """
    p = Problems(config, None)
    check_architecture(p)
    if p.found:
        raise ConfigError(p.found)
    m = config.model
    return ChestAttentionNet(
        num_classes=len(config.data.classes),
        variant=m.variant,
        stage_sizes=tuple(m.stage_sizes),
        num_filters=m.num_filters,
        attention_dim=m.attention_dim,
        compatibility=m.compatibility,
        normalisation=m.attention_norm,
        dtype=DTYPES[m.dtype],
        skip_unused_stage4=m.skip_unused_stage4,
        gate_stages=tuple(m.gate_stages),
    )


def check_config(p, mode: str) -> None:
    """The rules of ``config.model``, added to ``p`` (a
    :class:`chestattn_jax.config_checks.Problems`): the architecture
    (:func:`check_architecture`) and ``model.init_from`` (:func:`check_init_from`);
    ``model.pretrained`` is :func:`chestattn_jax.models.convert.check_config`'s."""
    check_architecture(p)
    check_init_from(p, mode)


def check_architecture(p) -> None:
    """The rules of the architecture fields of ``config.model``, added to ``p``."""
    p.choice("model.variant", VARIANTS)
    stages = p.value("model.stage_sizes")
    if (
        not isinstance(stages, list | tuple)
        or len(stages) != 4
        or not all(p.is_int(s) and s >= 1 for s in stages)
    ):
        p.add(
            "model.stage_sizes",
            "must be four integers of at least 1, the bottleneck blocks of each ResNet stage "
            "(ResNet-50: (3, 4, 6, 3)).",
        )
    p.int("model.num_filters", 1, "at least 1")
    p.int("model.attention_dim", 1, "at least 1")
    p.choice("model.compatibility", COMPATIBILITIES)
    p.choice("model.attention_norm", NORMALISATIONS)
    p.choice("model.dtype", tuple(DTYPES))
    p.bool("model.skip_unused_stage4")
    stages = p.value("model.gate_stages")
    if not isinstance(stages, list | tuple) or not all(p.is_int(s) for s in stages):
        p.add("model.gate_stages", "must be a tuple of three stages, e.g. (1, 2, 3) or (2, 3, 4).")
    else:
        try:
            check_gate_stages(tuple(int(s) for s in stages))
        except ValueError:
            p.add(
                "model.gate_stages",
                "must be three increasing stages of the backbone, from 1 to 4, e.g. (1, 2, 3) "
                "or (2, 3, 4).",
            )


def parse_init_from(text: str) -> tuple[str, str | int]:
    """``config.model.init_from`` as ``(path, checkpoint)``: ``W`` is ``(W, "best")``,
    ``W:latest`` ``(W, "latest")``, ``W:best`` ``(W, "best")`` and ``W:STEP`` ``(W, STEP)``;
    any other colon belongs to the path (``gs://bucket/w``)."""
    head, sep, tail = text.rpartition(":")
    if sep and head and (tail in INIT_FROM_CHECKPOINTS or tail.isdigit()):
        return head, int(tail) if tail.isdigit() else tail
    return text, "best"


def bundle_suffix(text: str, path: str) -> str:
    """What is wrong with ``config.model.init_from=text`` naming the bundle file ``path``
    (as :func:`parse_init_from` reads it) with a checkpoint suffix (``:latest``,
    ``:STEP``), which only a workdir takes; ``""`` where it has none."""
    if text == path:
        return ""
    return (
        f"{path} is a bundle file, which holds one model: the checkpoint suffix "
        f"{text[len(path) :]!r} is for a workdir (give the file alone)."
    )


def check_init_source(p, source, text: str) -> None:
    """Adds to ``p`` a problem for each :data:`INIT_FROM_FIELDS` value of ``p.config`` that
    differs from ``source`` (the config, or its JSON, of the model that
    ``config.model.init_from=text`` names), naming the field and both values."""
    for name, (was, _) in fields.differences(source, p.config, INIT_FROM_FIELDS).items():
        if name in p.reported:
            continue
        p.add(
            name,
            f"the model config.model.init_from={text!r} starts from has {show(was)}; "
            "fine-tuning takes its parameters over, so this must be the same (or train "
            'from scratch: config.model.init_from="").',
        )


def check_init_from(p, mode: str) -> None:
    """The rules of ``config.model.init_from``: a string; in a training run, a workdir
    (``W``, ``W:best``, ``W:latest``, ``W:STEP``) with a training run's ``config.json``
    whose model fits (:func:`check_init_source`), or a file (a bundle, without a checkpoint
    suffix, whose model is checked as it is read); ``model.pretrained`` then unset. Other
    modes do not read it."""
    text = p.value("model.init_from")
    if not isinstance(text, str):
        p.add(
            "model.init_from",
            'must be a workdir (W, W:latest or W:STEP), a bundle file, or "" (off).',
        )
        return
    if not text or mode != "train":
        return
    p.ignored(
        "model.pretrained",
        "is not read when config.model.init_from is set (its model's backbone is taken)",
    )
    path, which = parse_init_from(text)
    root = workdir_lib.workdir_path(path)
    if root.is_file():  # a bundle
        problem = bundle_suffix(text, path)
        if problem:
            p.add("model.init_from", problem)
        return
    if not root.is_dir():
        p.add(
            "model.init_from",
            "no such workdir or bundle file (a run that resumes does not read it: resume with "
            'config.model.init_from="" if it has moved).',
        )
        return
    try:
        saved = workdir_lib.read_json(root / workdir_lib.CONFIG_FILE)
    except ValueError as e:
        p.add("model.init_from", f"its {workdir_lib.CONFIG_FILE} cannot be read ({e}).")
        return
    if saved is None:
        p.add(
            "model.init_from",
            f"{path} has no {workdir_lib.CONFIG_FILE}: not the workdir of a training run.",
        )
        return
    checkpoints = root / workdir_lib.CHECKPOINT_DIR
    if not checkpoints.is_dir():
        p.add("model.init_from", f"{path} has no {workdir_lib.CHECKPOINT_DIR}/: train it first.")
    elif isinstance(which, int) and not (checkpoints / str(which)).is_dir():
        steps = sorted(int(c.name) for c in checkpoints.iterdir() if c.name.isdigit())
        p.add(
            "model.init_from",
            f"{path} has no checkpoint of step {which}; it has steps "
            f"{', '.join(map(str, steps)) or 'none'}.",
        )
    check_init_source(p, saved, text)
