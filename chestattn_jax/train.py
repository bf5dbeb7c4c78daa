"""The training loop with validation, checkpoints and resume."""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging

from chestattn_jax import evaluate as evaluation
from chestattn_jax import sharding as shd
from chestattn_jax.checkpointing import Checkpointer
from chestattn_jax.data.augment import Augment
from chestattn_jax.data.input_pipeline import create_source, train_dataset
from chestattn_jax.losses import class_weights
from chestattn_jax.metric_writers import MetricWriter, Progress
from chestattn_jax.models import create_model
from chestattn_jax.steps import make_eval_step, make_train_step
from chestattn_jax.train_state import create_optimizer, create_train_state


def prepare_workdir(workdir: str) -> str:
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise NotADirectoryError(f"--workdir {workdir!r} exists and is not a directory.")
    os.makedirs(workdir, exist_ok=True)
    return workdir


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints), then tests.

    Returns the test metrics, also written to ``WORKDIR/eval/metrics.json``.
    """
    workdir = prepare_workdir(workdir)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
    t = config.train
    local_bs = shd.local_batch_size(t.batch_size, "config.train.batch_size")
    shd.local_batch_size(config.eval.batch_size, "config.eval.batch_size")
    mesh = shd.make_mesh()
    model = create_model(config)
    tx = create_optimizer(t)

    train_source = create_source(config, "train")
    val_source = create_source(config, "validation")
    counts = train_source.positive_counts()
    weights = class_weights(
        counts, len(train_source), config.loss.class_weights, list(config.data.classes)
    )
    logging.info(
        "Training positives per class: %s",
        dict(zip(config.data.classes, counts.tolist(), strict=True)),
    )
    logging.info("Class weights (%s): %s", config.loss.class_weights, np.round(weights, 4))

    state = create_train_state(
        model,
        tx,
        jax.random.key(config.seed),
        (config.data.image_size, config.data.image_size, config.data.channels),
        shd.replicated(mesh),
    )
    logging.info("Parameters: %d", sum(x.size for x in jax.tree.leaves(state.params)))
    augment = Augment.from_config(config.data.augment) if config.data.augment.enabled else None
    data_iter = iter(
        train_dataset(
            train_source,
            batch_size=local_bs,
            seed=config.seed,
            num_workers=config.data.num_workers,
            augment=augment,
            read_threads=config.data.read_threads,
            prefetch_batches=config.data.prefetch_batches,
        )
    )
    checkpointer = Checkpointer(workdir, t.checkpoints_to_keep)
    meta = {"best_step": None, "best_val_loss": None, "bad_evals": 0, "stopped_early": False}
    latest = checkpointer.latest_step()
    if latest is not None:
        state, meta = checkpointer.restore(latest, state, data_iter)
        logging.info("Resumed from %s at step %d.", checkpointer.directory, latest)

    p_train_step = make_train_step(config, mesh, weights)
    p_eval_step = make_eval_step(config, mesh, weights)
    data_sharding = shd.batch_sharded(mesh)
    writer = MetricWriter(workdir)
    step = int(state.step)
    progress = Progress(t.num_steps, t.batch_size, step)
    pending = []  # device scalars since the last log: fetched together, no per-step sync
    while step < t.num_steps and not meta["stopped_early"]:
        state, metrics = p_train_step(state, shd.to_global(next(data_iter), data_sharding))
        step += 1
        pending.append(metrics)
        if step % t.log_every_steps == 0 or step == t.num_steps:
            summary = {
                k: float(np.mean([m[k] for m in jax.device_get(pending)])) for k in pending[0]
            }
            pending = []
            if not np.isfinite(summary["loss"]):
                raise FloatingPointError(
                    f"Training loss became {summary['loss']} by step {step}; the last good "
                    f"checkpoint is step {checkpointer.latest_step()} in {checkpointer.directory}."
                )
            summary.update(progress.report(step, summary))
            writer.write_scalars(step, {f"train/{k}": v for k, v in summary.items()})
        if step % t.eval_every_steps == 0 or step == t.num_steps:
            val = evaluation.split_metrics(p_eval_step, state, val_source, config, mesh)
            improved = meta["best_val_loss"] is None or val["loss"] < meta["best_val_loss"]
            if improved:
                meta.update(best_step=step, best_val_loss=val["loss"], bad_evals=0)
            else:
                meta["bad_evals"] += 1
            meta["stopped_early"] = bool(t.patience) and meta["bad_evals"] >= t.patience
            logging.info(
                "step %d | validation loss %.4f | mean AUC %.4f%s",
                step,
                val["loss"],
                val["mean_auc"] or float("nan"),
                " | early stop" if meta["stopped_early"] else "",
            )
            writer.write_scalars(
                step,
                {
                    "val/loss": val["loss"],
                    "val/mean_auc": val["mean_auc"] or float("nan"),
                    **{f"val/auc/{c}": v for c, v in val["auc"].items() if v is not None},
                },
            )
            checkpointer.save(step, state, data_iter, meta, val_loss=val["loss"])
    writer.close()
    checkpointer.close()
    if hasattr(data_iter, "close"):
        data_iter.close()
    return evaluation.evaluate(config, workdir)
