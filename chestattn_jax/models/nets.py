"""The three models compared in the paper: ``resnet``, ``image`` and ``class``.

Every model maps images ``(B, H, W, C)`` to ``(logits, aux)``: logits ``(B, k)``
float32 and ``aux`` a dict of intermediate tensors that the loss, evaluation and
plots read without running the model again:

- ``aux["attention"]``: ``{"gate1": (B, H1, W1), "gate2": (B, H2, W2),
  "gate3": (B, H3, W3)}`` for ``image``; for ``class`` ``gate3`` is ``(B, k, H3, W3)``.
  Empty for ``resnet``.
- ``aux["class_log_attention"]`` (``class`` only): ``(B, k, H3, W3)`` log-weights
  whose softmax over positions is class j's normalised map (Eq. 5's entropy).
- ``aux["global"]``: g, ``(B, C4)`` float32.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from chestattn_jax.models.attention import (
    COMPATIBILITIES,
    NORMALISATIONS,
    AttentionGate,
    ClassAttentionHeads,
    check_choice,
)
from chestattn_jax.models.resnet import ResNet

VARIANTS = ("resnet", "image", "class")


class ChestAttentionNet(nn.Module):
    """ResNet backbone with no, image-based or class-based attention.

    Attributes:
      num_classes: k.
      variant: ``resnet`` (Dense(k) on g), ``image`` (three shared gates, Dense(k)
        on ``concat(ĝ1, ĝ2, ĝ3)``) or ``class`` (gates 1-2 shared, gate 3 and the
        classifier replicated per class, Eq. 4).
      stage_sizes, num_filters: the backbone (``(3, 4, 6, 3)`` and 64 for ResNet-50).
      attention_dim: D of every gate (16 in the paper).
      compatibility: ``pc`` (paper), ``additive`` or ``dp``.
      normalisation: ``softmax`` (paper) or ``sigmoid``.
      dtype: compute dtype of the backbone; logits and attention are float32.
    """

    num_classes: int
    variant: str = "class"
    stage_sizes: tuple[int, ...] = (3, 4, 6, 3)
    num_filters: int = 64
    attention_dim: int = 16
    compatibility: str = "pc"
    normalisation: str = "softmax"
    dtype: Any = jnp.float32

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
        features = ResNet(self.stage_sizes, self.num_filters, dtype=self.dtype, name="backbone")(
            x, train=train
        )
        g = jnp.mean(features["l4"].astype(jnp.float32), axis=(1, 2))
        aux = {"global": g, "attention": {}}
        if self.variant == "resnet":
            return nn.Dense(self.num_classes, name="classifier")(g), aux

        num_shared = 3 if self.variant == "image" else 2
        pooled = []
        for s in range(1, num_shared + 1):
            global_proj = nn.Dense(self.attention_dim, name=f"gate{s}_P")(g)
            maps, pooled_s, _ = AttentionGate(**self._gate_kwargs(), name=f"gate{s}")(
                features[f"l{s}"], global_proj
            )
            aux["attention"][f"gate{s}"] = maps
            pooled.append(pooled_s)

        if self.variant == "image":
            logits = nn.Dense(self.num_classes, name="classifier")(jnp.concatenate(pooled, -1))
            return logits, aux

        # Class-based: P_3 is shared, everything else of gate 3 is per class.
        global_proj = nn.Dense(self.attention_dim, name="gate3_P")(g)
        logits, maps, log_w = ClassAttentionHeads(
            self.num_classes, **self._gate_kwargs(), name="class_heads"
        )(features["l3"], global_proj, jnp.concatenate(pooled, -1))
        aux["attention"]["gate3"] = maps
        aux["class_log_attention"] = log_w
        return logits, aux


def create_model(config) -> ChestAttentionNet:
    """Builds the model of ``config.model`` for ``num_classes`` classes, checking names."""
    m = config.model
    check_choice("model variant (config.model.variant)", m.variant, VARIANTS)
    check_choice("compatibility (config.model.compatibility)", m.compatibility, COMPATIBILITIES)
    check_choice(
        "attention normalisation (config.model.attention_norm)", m.attention_norm, NORMALISATIONS
    )
    dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
    check_choice("compute dtype (config.model.dtype)", m.dtype, tuple(dtypes))
    return ChestAttentionNet(
        num_classes=len(config.data.classes),
        variant=m.variant,
        stage_sizes=tuple(m.stage_sizes),
        num_filters=m.num_filters,
        attention_dim=m.attention_dim,
        compatibility=m.compatibility,
        normalisation=m.attention_norm,
        dtype=dtypes[m.dtype],
    )
