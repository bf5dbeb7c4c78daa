"""Exact evaluation: per-class ROC AUC and loss over a whole split.

``--mode=evaluate`` restores a checkpoint from ``WORKDIR/checkpoints`` (the one
with the lowest validation loss by default) and writes ``WORKDIR/eval/metrics.json``.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from absl import logging
from sklearn.metrics import roc_auc_score

from chestattn_jax import sharding as shd
from chestattn_jax.checkpointing import Checkpointer
from chestattn_jax.data.input_pipeline import create_source, eval_batches
from chestattn_jax.localization import localization_metrics
from chestattn_jax.losses import class_weights
from chestattn_jax.metrics import bootstrap_auc
from chestattn_jax.models import create_model
from chestattn_jax.steps import make_eval_step
from chestattn_jax.train_state import create_optimizer, create_train_state


def predict_split(eval_fn, state, source, batch_size: int, mesh):
    """Runs ``eval_fn`` over every example of ``source``.

    Returns ``(probabilities (N, k), labels (N, k), mask (N, k), mean loss)`` with
    the padding of the last batch removed (``N = len(source)`` on one process).
    """
    local_bs = shd.local_batch_size(batch_size, "config.eval.batch_size")
    data_sharding = shd.batch_sharded(mesh)
    logits, labels, masks, valid, loss_sum = [], [], [], [], 0.0
    for batch in eval_batches(source, local_bs):
        out_logits, out_loss = eval_fn(
            state, shd.to_global({k: batch[k] for k in ("image", "labels", "mask")}, data_sharding)
        )
        # Outputs are replicated, so every process holds the global batch; gather the
        # host-side labels the same way so that rows line up.
        gathered = _allgather({k: batch[k] for k in ("labels", "mask", "valid")})
        logits.append(np.asarray(out_logits))
        labels.append(gathered["labels"])
        masks.append(gathered["mask"])
        valid.append(gathered["valid"])
        loss_sum += float(out_loss)
    valid = np.concatenate(valid)
    probs = 1.0 / (1.0 + np.exp(-np.concatenate(logits)[valid].astype(np.float64)))
    n = int(valid.sum())
    return probs, np.concatenate(labels)[valid], np.concatenate(masks)[valid], loss_sum / n


def _allgather(tree):
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def per_class_auc(labels, probs, mask, class_names) -> dict:
    """ROC AUC of each class over its unmasked examples, and their mean.

    A class whose unmasked labels are all 0 or all 1 has no AUC: it is reported
    as ``None`` and listed in ``undefined_classes``, and the mean is over the others.
    """
    per_class, undefined = {}, []
    for j, name in enumerate(class_names):
        keep = mask[:, j] > 0
        y = labels[keep, j]
        if y.size == 0 or y.min() == y.max():
            per_class[name] = None
            undefined.append(name)
            continue
        per_class[name] = float(roc_auc_score(y, probs[keep, j]))
    defined = [v for v in per_class.values() if v is not None]
    return {
        "auc": per_class,
        "mean_auc": float(np.mean(defined)) if defined else None,
        "undefined_classes": undefined,
    }


def split_metrics(eval_fn, state, source, config, mesh, predictions_path=None) -> dict:
    """AUC and loss over ``source``; with ``predictions_path`` (the test split) also the
    bootstrap intervals and an ``.npz`` of the predictions for ``chestattn_jax.compare``."""
    probs, labels, mask, loss = predict_split(eval_fn, state, source, config.eval.batch_size, mesh)
    metrics = per_class_auc(labels, probs, mask, list(config.data.classes))
    metrics.update(loss=loss, num_examples=int(labels.shape[0]))
    if predictions_path is None:
        return metrics
    # Patients are resampled whole; sources without patient ids (the phantoms) have
    # one image per patient. With several processes the gathered order is not the
    # source's, so there every example counts as its own patient.
    patients = getattr(source, "patient_ids", None) if jax.process_count() == 1 else None
    if patients is None:
        patients = np.arange(len(labels)).astype(str)
    if config.eval.bootstrap_draws:
        metrics["bootstrap"] = bootstrap_auc(
            labels,
            probs,
            mask,
            list(config.data.classes),
            patients,
            num_draws=config.eval.bootstrap_draws,
            seed=config.eval.bootstrap_seed,
        )
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(predictions_path), exist_ok=True)
        np.savez(
            predictions_path,
            probs=probs,
            labels=labels,
            mask=mask,
            patient_ids=np.asarray(patients, dtype=str),
            classes=np.asarray(list(config.data.classes)),
        )
    return metrics


def select_checkpoint(checkpointer: Checkpointer, which: str) -> int:
    """The step to evaluate: ``best`` (lowest validation loss) or ``latest``."""
    if which not in ("best", "latest"):
        raise ValueError(f"Unknown config.eval.checkpoint {which!r}; expected best or latest.")
    latest = checkpointer.latest_step()
    if latest is None:
        raise FileNotFoundError(
            f"No checkpoint in {checkpointer.directory}; train first with --mode=train."
        )
    if which == "latest":
        return latest
    best = checkpointer.read_meta(latest).get("best_step")
    return latest if best is None else int(best)


def write_eval(workdir: str, metrics: dict) -> str:
    """Writes ``WORKDIR/eval/metrics.json`` (process 0 only); returns its path."""
    path = os.path.join(workdir, "eval", "metrics.json")
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(metrics, f, indent=2, sort_keys=True)
    return path


def evaluate(config, workdir: str) -> dict:
    """Restores the configured checkpoint of ``workdir`` and evaluates ``config.eval.split``."""
    checkpointer = Checkpointer(workdir, read_only=True)
    step = select_checkpoint(checkpointer, config.eval.checkpoint)
    mesh = shd.make_mesh()
    model = create_model(config)
    train_source = create_source(config, "train")
    weights = class_weights(
        train_source.positive_counts(),
        len(train_source),
        config.loss.class_weights,
        list(config.data.classes),
    )
    state = create_train_state(
        model,
        create_optimizer(config.train),
        jax.random.key(config.seed),
        (config.data.image_size, config.data.image_size, config.data.channels),
        shd.replicated(mesh),
    )
    state, _ = checkpointer.restore(step, state)
    checkpointer.close()
    test_source = create_source(config, config.eval.split)
    metrics = split_metrics(
        make_eval_step(config, mesh, weights),
        state,
        test_source,
        config,
        mesh,
        predictions_path=os.path.join(workdir, "eval", "predictions.npz"),
    )
    if hasattr(test_source, "truth") and config.model.variant != "resnet":
        # Phantoms know where each finding is: score where the attention looks.
        metrics["pointing_game"] = localization_metrics(state, test_source, config, mesh)
    metrics.update(step=int(step), split=config.eval.split, variant=config.model.variant)
    path = write_eval(workdir, metrics)
    logging.info(
        "%s mean AUC %.4f at step %d -> %s",
        config.eval.split,
        metrics["mean_auc"] or float("nan"),
        step,
        path,
    )
    return metrics
