"""The jitted train and eval steps over a data mesh.

Both normalise uint8 images on the device and evaluate Eq. 5; the train step also
updates the parameters. State is replicated (and donated by the train step), the
batch is sharded along its first axis.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from chestattn_jax import sharding as shd
from chestattn_jax.data.input_pipeline import normalize_images
from chestattn_jax.losses import regularized_loss
from chestattn_jax.train_state import TrainState


def forward_loss(
    state: TrainState, params, batch: dict, *, train: bool, weights, entropy_weight, mean, std
):
    """Model outputs and Eq. 5 on a batch: ``(loss, (parts, logits, new_batch_stats, aux))``.

    ``batch``: ``image`` ``(B, H, W, C)`` uint8, ``labels`` and ``mask`` ``(B, k)``.
    """
    images = normalize_images(batch["image"], mean, std)
    variables = {"params": params, "batch_stats": state.batch_stats}
    if train:
        (logits, aux), updates = state.apply_fn(
            variables, images, train=True, mutable=["batch_stats"]
        )
        batch_stats = updates["batch_stats"]
    else:
        logits, aux = state.apply_fn(variables, images, train=False)
        batch_stats = state.batch_stats
    loss, parts = regularized_loss(
        logits,
        batch["labels"],
        batch["mask"],
        weights,
        aux.get("class_log_attention"),
        entropy_weight,
    )
    return loss, (parts, logits, batch_stats, aux)


def train_step(state: TrainState, batch: dict, **loss_kwargs):
    """One optimiser step on Eq. 5. Returns the new state and ``{loss, bce, entropy}``."""
    grad_fn = jax.value_and_grad(
        functools.partial(forward_loss, state, batch=batch, train=True, **loss_kwargs),
        has_aux=True,
    )
    (loss, (parts, _, batch_stats, _)), grads = grad_fn(state.params)
    return state.apply_gradients(grads, batch_stats), {"loss": loss, **parts}


def eval_step(state: TrainState, batch: dict, **loss_kwargs):
    """``{"logits": (B, k), "loss", "bce"}``: the logits, and the Eq. 5 loss and its
    classification part summed over the valid examples of a batch."""
    loss, (parts, logits, _, _) = forward_loss(
        state, state.params, batch, train=False, **loss_kwargs
    )
    # regularized_loss divides by the batch size; padded rows have mask 0 and add nothing.
    n = logits.shape[0]
    return {"logits": logits, "loss": loss * n, "bce": parts["bce"] * n}


def eval_step_with_maps(state: TrainState, batch: dict, **loss_kwargs):
    """:func:`eval_step` and, from the same forward pass, the gate-3 attention maps
    (``"maps"``): ``(B, k, h, w)`` (class-based) or ``(B, h, w)`` (image-based)."""
    loss, (parts, logits, _, aux) = forward_loss(
        state, state.params, batch, train=False, **loss_kwargs
    )
    n = logits.shape[0]
    maps = aux["attention"]["gate3"]
    return {"logits": logits, "loss": loss * n, "bce": parts["bce"] * n, "maps": maps}


def _jit_over_mesh(step, config, mesh, weights, **jit_kwargs):
    step = functools.partial(
        step,
        weights=np.asarray(weights, np.float32),
        entropy_weight=config.loss.entropy_weight,
        mean=config.data.mean,
        std=config.data.std,
    )
    return jax.jit(
        step,
        in_shardings=(shd.replicated(mesh), shd.batch_sharded(mesh)),
        out_shardings=shd.replicated(mesh),  # every output, however many
        **jit_kwargs,
    )


def make_train_step(config, mesh, weights):
    """``train_step`` jitted over ``mesh``, the state donated."""
    return _jit_over_mesh(train_step, config, mesh, weights, donate_argnums=(0,))


def make_eval_step(config, mesh, weights, *, with_maps: bool = False):
    """``eval_step`` (or, ``with_maps``, :func:`eval_step_with_maps`) jitted over ``mesh``;
    outputs replicated on every device."""
    return _jit_over_mesh(eval_step_with_maps if with_maps else eval_step, config, mesh, weights)
