"""The train state, the optimizer and their sharded initialisation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adam", "adamw", "sgd")


class TrainState(struct.PyTreeNode):
    """Arrays of one training run; ``apply_fn`` and ``tx`` are static (not saved)."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    def apply_gradients(self, grads, batch_stats):
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        return self.replace(
            step=self.step + 1,
            params=optax.apply_updates(self.params, updates),
            batch_stats=batch_stats,
            opt_state=opt_state,
        )


def create_learning_rate(train_config) -> optax.Schedule:
    t = train_config
    if t.schedule not in SCHEDULES:
        raise ValueError(
            f"Unknown learning-rate schedule {t.schedule!r} (config.train.schedule); expected "
            f"one of {', '.join(SCHEDULES)}."
        )
    if t.schedule == "constant":
        if t.warmup_steps:
            return optax.linear_schedule(0.0, t.learning_rate, t.warmup_steps)
        return optax.constant_schedule(t.learning_rate)
    return optax.warmup_cosine_decay_schedule(
        0.0, t.learning_rate, t.warmup_steps, max(t.num_steps, t.warmup_steps + 1)
    )


def create_optimizer(train_config) -> optax.GradientTransformation:
    """Adam by default (our choice: the paper names none); ``adamw`` and ``sgd`` beside it."""
    name = train_config.optimizer
    if name not in OPTIMIZERS:
        raise ValueError(
            f"Unknown optimizer {name!r} (config.train.optimizer); expected one of "
            f"{', '.join(OPTIMIZERS)}."
        )
    lr = create_learning_rate(train_config)
    if name == "adam":
        return optax.adam(lr)
    if name == "adamw":
        return optax.adamw(lr, weight_decay=train_config.weight_decay)
    return optax.sgd(lr, momentum=train_config.momentum, nesterov=True)


def create_train_state(model, tx, rng, input_shape, sharding=None) -> TrainState:
    """Initialises parameters and optimizer state, placed with ``sharding`` (replicated).

    ``input_shape`` is one example's ``(H, W, C)``. Initialisation runs under
    ``jax.jit`` with ``out_shardings``, so the state is created where it lives.
    """

    def init(rng):
        variables = model.init(rng, jnp.zeros((1, *input_shape), jnp.float32), train=False)
        params = variables["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=tx.init(params),
            apply_fn=model.apply,
            tx=tx,
        )

    return jax.jit(init, out_shardings=sharding)(rng)


def abstract_train_state(init, sharding):
    """The shapes, dtypes and ``sharding`` of the state ``init()`` returns, without
    running (or compiling) it: what a checkpoint restores into."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), jax.eval_shape(init)
    )
