"""``--mode=evaluate``, top to bottom: check, restore, one pass, evaluators, write."""

from __future__ import annotations

import os
import time

from absl import logging
from etils import epath

from chestattn_jax import workdir as workdir_lib
from chestattn_jax.data.input_pipeline import create_source
from chestattn_jax.evaluation import class_map, evaluators
from chestattn_jax.evaluation.inference_pass import run_pass
from chestattn_jax.evaluation.settings import plan_evaluation
from chestattn_jax.losses import class_weights
from chestattn_jax.metrics import per_class_auc
from chestattn_jax.steps import make_eval_step
from chestattn_jax.trained_model import restore_for_inference


def evaluate(config, workdir: str, *, replace_other_settings: bool = False) -> dict:
    """Restores the configured checkpoint of ``workdir`` and evaluates ``config.eval.split``
    into the folder :func:`plan_evaluation` picks; returns the metrics written there."""
    plan = plan_evaluation(config, workdir, replace_other_settings=replace_other_settings)
    state, step, mesh = restore_for_inference(config, workdir, config.eval.checkpoint)
    return evaluate_state(config, state, mesh, step, training_class_weights(config), plan)


def training_class_weights(config):
    """The loss's class weights, from the training split as in training."""
    train_source = create_source(config, "train")
    return class_weights(
        train_source.positive_counts(),
        len(train_source),
        config.loss.class_weights,
        list(config.data.classes),
    )


def evaluate_state(config, state, mesh, step: int, weights, plan: dict) -> dict:
    """Evaluates ``state`` on ``config.eval.split`` of the evaluated data set and writes
    ``plan["out_dir"]`` (``plan`` from :func:`plan_evaluation`)."""
    out_dir, data_config = plan["out_dir"], plan["data_config"]
    classes = list(config.data.classes)
    columns = None  # the model's classes that are scored: all, unless across data sets
    if class_map.is_cross_dataset(config):
        columns = class_map.columns(config)
        classes = [classes[j] for j in columns]
    source = create_source(data_config, config.eval.split)
    ctx = evaluators.Context(
        config=config,
        out_dir=out_dir,
        source=source,
        open_train_source=lambda: create_source(data_config, "train"),
        classes=tuple(classes),
        evaluated_as=tuple(data_config.data.classes),
    )
    if ctx.writes:
        epath.Path(out_dir).mkdir(parents=True, exist_ok=True)
    chosen = evaluators.create(config.eval.evaluators, ctx)
    # Evaluators ask for maps only where the model has them (not the resnet variant).
    with_maps = any(e.needs_maps for e in chosen)
    # Those that read the batches' rows see them with or without maps (maps None).
    with_rows = with_maps or any(e.needs_rows for e in chosen)

    def on_batch(maps, rows):
        for e in chosen:
            if e.needs_maps or e.needs_rows:
                e.add(maps, rows)

    # The one pass over the split: probabilities, the loss and (for the evaluators that
    # ask) the gate-3 maps, streamed batch by batch.
    eval_fn = make_eval_step(config, mesh, weights, with_maps=with_maps)

    def one_pass(split, source, on_batch=None):
        start = time.perf_counter()
        record = run_pass(
            eval_fn,
            state,
            source,
            config.eval.batch_size,
            mesh,
            classes=ctx.classes,
            evaluated_as=ctx.evaluated_as,
            columns=columns,
            num_outputs=len(config.data.classes),
            on_batch=on_batch,
        )
        logging.info(
            "Evaluation: one pass over the %d images of the %s split in %.1f s.",
            len(record),
            split,
            time.perf_counter() - start,
        )
        return record

    # What is chosen on data (thresholds, recalibration) is chosen on the validation split,
    # scored first in a pass of its own (the same compiled step; maps are not kept).
    # Those that tune on the validation split's maps (localization's mIoU thresholds) see
    # its batches in that pass (``add_validation``), which then computes the maps.
    tuning = [e for e in chosen if getattr(e, "needs_validation_maps", False)]
    needs_validation = any(e.needs_validation for e in chosen) or bool(tuning)
    if needs_validation and config.eval.split != "validation":
        validation = create_source(data_config, "validation")

        def on_validation_batch(maps, rows):
            for e in tuning:
                e.add_validation(maps, rows, validation)

        ctx.validation = one_pass("validation", validation, on_validation_batch if tuning else None)
    record = one_pass(config.eval.split, source, on_batch if with_rows else None)
    if needs_validation and ctx.validation is None:
        ctx.validation = record  # evaluating the validation split itself
    metrics = {
        "loss": record.loss,
        "bce": record.bce,
        "num_examples": len(record),
        "step": int(step),
        "split": config.eval.split,
        "variant": config.model.variant,
        "settings": plan["settings"],
        "dataset": plan["fingerprint"],
        "evaluators": list(config.eval.evaluators),
        "version": EVALUATION_VERSION,
    }
    if ctx.validation is not None:
        metrics["validation_examples"] = len(ctx.validation)
    if columns is not None:
        metrics["cross_dataset"] = {
            "dataset": config.eval.dataset,
            "data_dir": config.eval.data_dir,
            "class_map_setting": config.eval.class_map,
            "class_map": dict(zip(ctx.classes, ctx.evaluated_as, strict=True)),
            "fingerprint": plan["settings"].get("evaluated dataset fingerprint"),
        }
    if plan["changes"]:
        metrics["changed_from_training"] = {
            k: {"trained": was, "evaluated": now} for k, (was, now) in plan["changes"].items()
        }
    before = _clear_evaluation(out_dir) if ctx.writes else set()
    for evaluator in chosen:
        evaluator.finish(record, metrics)
    # metrics.json last: it marks a complete evaluation.
    path = os.path.join(out_dir, METRICS_FILE)
    if ctx.writes:
        record.save(os.path.join(out_dir, workdir_lib.PREDICTIONS_FILE))
        # What this evaluation wrote: the next one into this folder removes exactly these
        # (and every evaluator's known outputs), plug-ins of other versions included.
        metrics["files"] = sorted(_listing(out_dir) - before | {METRICS_FILE})
        workdir_lib.write_json(path, metrics)
    logging.info(
        "%s mean AUC %s at step %d -> %s",
        config.eval.split,
        "n/a" if metrics.get("mean_auc") is None else f"{metrics['mean_auc']:.4f}",
        step,
        path,
    )
    return metrics


METRICS_FILE = "metrics.json"
# What an evaluation computes and writes, by release: raised when an evaluator's numbers or
# files change, so that a finished experiment cell evaluated by an earlier release is
# evaluated again (--reevaluate) rather than reported beside newer ones. 1: without the
# field; 2: localisation per finding (localization_findings.npz), the pixel pointing game,
# intervals, and the class prior per class; 3: mIoU (Otsu's and tuned thresholds) per
# finding in localization.npz.
EVALUATION_VERSION = 3


def _listing(out_dir: str) -> set[str]:
    """The files in ``out_dir``; none if it does not exist (a bucket has no empty
    folders: one exists once an object is written under it)."""
    out = epath.Path(out_dir)
    if not out.exists():
        return set()
    return {p.name for p in out.iterdir() if p.is_file()}


def _clear_evaluation(out_dir: str) -> set[str]:
    """Removes what an earlier evaluation left in ``out_dir`` (its ``metrics.json`` first,
    so that an interrupted clear never leaves it beside other files; then the files it
    lists, every evaluator's known outputs and the predictions record), so that the
    folder holds this evaluation's files only: a figure of another evaluation beside
    this one's ``metrics.json`` would read as this one's. Returns the names left there
    (files no evaluation wrote)."""
    out = epath.Path(out_dir)
    try:
        earlier = workdir_lib.read_json(out / METRICS_FILE) or {}
    except ValueError:  # a damaged metrics.json: replaced all the same
        earlier = {}
    listed = earlier.get("files") if isinstance(earlier.get("files"), list) else []
    (out / METRICS_FILE).unlink(missing_ok=True)
    ours = {*evaluators.known_outputs(), workdir_lib.PREDICTIONS_FILE, *map(str, listed)}
    for name in sorted(ours & _listing(out_dir)):
        if os.path.basename(name) == name:  # a name in this folder, never a path elsewhere
            (out / name).unlink(missing_ok=True)
    return _listing(out_dir)


def split_metrics(eval_fn, state, source, config, mesh) -> dict:
    """Per-class AUC, loss and its classification part (``bce``) over every example of
    ``source`` (validation in training)."""
    classes = list(config.data.classes)
    record = run_pass(eval_fn, state, source, config.eval.batch_size, mesh, classes=classes)
    metrics = per_class_auc(record.labels, record.probs, record.mask, classes)
    metrics.update(loss=record.loss, bce=record.bce, num_examples=len(record))
    return metrics
