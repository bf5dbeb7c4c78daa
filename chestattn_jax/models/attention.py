"""The "Learn to Pay Attention" gates (Jetley et al. 2018) as used by Sriker et al.

Notation follows the paper: ``l_s`` are the local features of stage ``s``
(``(B, H_s, W_s, C_s)``), ``g`` the global feature (``(B, 2048)``), ``g_s' = P_s g``
its projection to the attention dimension ``D``, ``c_s`` the compatibility scores
(Eq. 1), ``w_s`` the attention map (Eq. 2) and ``ĝ_s`` the attended feature (Eq. 3).

Scores, maps and attended features are computed in float32 whatever the compute
dtype of the backbone, so that a softmax over a few thousand positions stays exact.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

COMPATIBILITIES = ("pc", "additive", "dp")
NORMALISATIONS = ("softmax", "sigmoid")


def check_choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; expected one of {', '.join(choices)}.")


def attend(scores, local, normalisation: str):
    """Eq. 2-3: turn scores into a map and pool the local features with it.

    Args:
      scores: ``(B, H, W)`` float32 compatibility scores.
      local: ``(B, H, W, C)`` local features.
      normalisation: ``softmax`` (a distribution over positions, ``ĝ = Σ w_i l_i``)
        or ``sigmoid`` (independent gates, ``ĝ`` the spatial mean of ``w * l`` as in LTPA).

    Returns:
      ``(w, ĝ, log_w)``: the map ``(B, H, W)``, the attended feature ``(B, C)``
      float32, and ``(B, H, W)`` log-weights whose softmax over positions is the
      normalised map (the scores themselves under softmax, ``log σ(c)`` under
      sigmoid); the entropy of Eq. 5 is computed from them.
    """
    check_choice("attention normalisation", normalisation, NORMALISATIONS)
    b, h, w_, c = local.shape
    flat = scores.reshape(b, h * w_)
    if normalisation == "softmax":
        weights = jax.nn.softmax(flat, axis=-1)
        log_w = scores
    else:
        weights = jax.nn.sigmoid(flat) / (h * w_)
        log_w = jax.nn.log_sigmoid(scores)
    pooled = jnp.einsum(
        "bp,bpc->bc",
        weights.astype(local.dtype),
        local.reshape(b, h * w_, c),
        preferred_element_type=jnp.float32,
    )
    maps = weights.reshape(b, h, w_)
    if normalisation == "sigmoid":
        maps = maps * (h * w_)
    return maps, pooled, log_w


def _broadcast_global(global_proj):
    """``(B, D)`` -> ``(B, 1, 1, D)`` float32, to broadcast against local features."""
    if global_proj is None:
        raise ValueError("This compatibility function needs the projected global feature g'.")
    return global_proj[:, None, None, :].astype(jnp.float32)


class AttentionGate(nn.Module):
    """One gate, Eq. 1-3: ``(l_s, g_s') -> (w_s, ĝ_s, log-weights)``.

    - ``pc``: ``c_i = A . (B l_i + g')`` (the paper). ``A . g'`` is the same at every
      position, so under softmax the map does not depend on g; the term is then left
      out of the scores (exactly equal maps) and ``global_proj`` may be None.
    - ``additive``: ``c_i = A . relu(B l_i + g')`` (Schlemper et al.); g matters.
    - ``dp``: ``c_i = <B l_i, g'>``; no ``A``.

    ``B`` is a bias-free 1x1 conv ``C_s -> D`` and ``A`` a vector in ``R^D``. The
    projection ``g_s' = P_s g`` is made by the caller, because the class-based
    model shares ``P_3`` between its per-class gates.
    """

    attention_dim: int = 16
    compatibility: str = "pc"
    normalisation: str = "softmax"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, local, global_proj):
        check_choice("compatibility", self.compatibility, COMPATIBILITIES)
        u = nn.Conv(
            self.attention_dim,
            (1, 1),
            use_bias=False,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="B",
        )(local).astype(jnp.float32)
        if self.compatibility == "dp":
            scores = jnp.sum(u * _broadcast_global(global_proj), axis=-1)
        else:
            a = self.param("A", nn.initializers.lecun_normal(), (self.attention_dim, 1))
            if self.compatibility == "additive":
                scores = (nn.relu(u + _broadcast_global(global_proj)) @ a)[..., 0]
            elif self.normalisation == "softmax":
                # pc: c_i = A . B l_i + A . g'. The second term is the same at every position
                # and the softmax over positions cancels it exactly, so it is left out: the
                # map is Eq. 2 of Eq. 1 without the rounding that adding and subtracting a
                # constant costs, g' gets an exact zero gradient (no rounding noise for Adam
                # to amplify into a random walk of P and stage 4), and the model may skip
                # stage 4 altogether (global_proj may then be None).
                scores = (u @ a)[..., 0]
            else:
                # pc + sigmoid: A . g' shifts every gate, so it stays. A . B l + A . g' is
                # A . (B l + g') by linearity, without a large g' swamping B l in rounding.
                scores = (u @ a + _broadcast_global(global_proj) @ a)[..., 0]
        return attend(scores, local, self.normalisation)


class ClassBranch(nn.Module):
    """Class j's gate 3 and its binary classifier (Eq. 4).

    Lifted over the class axis with ``nn.vmap`` in :class:`ClassAttentionHeads`:
    each class gets its own ``A_3j``, ``B_3j`` and classifier; ``g_3' = P_3 g`` and
    the shared ``ĝ1, ĝ2`` come in broadcast.
    """

    attention_dim: int = 16
    compatibility: str = "pc"
    normalisation: str = "softmax"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, local, global_proj, shared_pooled):
        maps, pooled, log_w = AttentionGate(
            self.attention_dim, self.compatibility, self.normalisation, self.dtype, name="gate"
        )(local, global_proj)
        features = jnp.concatenate([shared_pooled, pooled], axis=-1)
        logit = nn.Dense(1, name="classifier")(features)[:, 0]
        return logit, maps, log_w, pooled


class ClassAttentionHeads(nn.Module):
    """``num_classes`` independent :class:`ClassBranch` es, vmapped, no Python loop.

    Returns logits ``(B, k)``, maps ``(B, k, H, W)``, log-weights ``(B, k, H, W)`` and
    each class's attended gate-3 feature ĝ3 ``(B, k, C)``.
    """

    num_classes: int  # k: one ClassBranch each
    # Passed to every ClassBranch's gate (AttentionGate's fields).
    attention_dim: int = 16  # D
    compatibility: str = "pc"  # pc (paper) | additive | dp
    normalisation: str = "softmax"  # softmax (paper) | sigmoid
    dtype: Any = jnp.float32  # compute dtype of B's convolution

    @nn.compact
    def __call__(self, local, global_proj, shared_pooled):
        branches = nn.vmap(
            ClassBranch,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(None, None, None),
            out_axes=1,
            axis_size=self.num_classes,
        )
        return branches(
            self.attention_dim, self.compatibility, self.normalisation, self.dtype, name="branch"
        )(local, global_proj, shared_pooled)
