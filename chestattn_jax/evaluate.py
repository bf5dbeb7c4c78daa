"""Exact evaluation: per-class ROC AUC with intervals, loss, localisation and figures.

``--mode=evaluate`` restores a checkpoint from ``WORKDIR/checkpoints`` (the one
with the lowest validation loss by default) and writes ``WORKDIR/eval/``:

- ``metrics.json``: everything below, machine-readable;
- ``per_class.csv`` and ``per_class.md``: AUC with its 95 % bootstrap interval,
  positives and negatives per class, and the localisation scores where there is truth;
- ``predictions.npz``: probabilities, labels, masks and patient ids (for ``compare``);
- ``roc_curves.png``; for the attention models also ``overlays.png`` (Fig. 2 for this
  model), ``average_masks.png`` (Fig. 3) and ``attention_examples.npz`` (the maps
  that ``compare`` puts side by side).
"""

from __future__ import annotations

import csv
import io
import json
import os

import jax
import numpy as np
from absl import logging
from etils import epath
from sklearn.metrics import roc_auc_score

from chestattn_jax import figures
from chestattn_jax import sharding as shd
from chestattn_jax.checkpointing import Checkpointer
from chestattn_jax.data.input_pipeline import create_source, eval_batches, normalize_images
from chestattn_jax.localization import OVERLAP_THRESHOLDS, LocalizationScores
from chestattn_jax.losses import class_weights
from chestattn_jax.metrics import bootstrap_auc
from chestattn_jax.models import create_model
from chestattn_jax.steps import make_eval_step
from chestattn_jax.train_state import create_optimizer, create_train_state


def _source_indices(batch_index: int, batch_size: int) -> np.ndarray:
    """Source index of each row of this process's ``eval_batches`` batch ``batch_index``
    (``eval_batches`` gives process p the examples ``p, p + P, p + 2P, ...``)."""
    local = batch_index * batch_size + np.arange(batch_size)
    return jax.process_index() + jax.process_count() * local


def predict_split(eval_fn, state, source, batch_size: int, mesh):
    """Runs ``eval_fn`` over every example of ``source``.

    Returns ``(probabilities (N, k), labels (N, k), mask (N, k), mean loss, indices (N,))``
    with the padding of the last batch removed and rows in source order
    (``indices[i]`` is the source index of row i: ``arange(N)``).
    """
    local_bs = shd.local_batch_size(batch_size, "config.eval.batch_size")
    data_sharding = shd.batch_sharded(mesh)
    logits, labels, masks, valid, index, loss_sum = [], [], [], [], [], 0.0
    for b, batch in enumerate(eval_batches(source, local_bs)):
        out_logits, out_loss = eval_fn(
            state, shd.to_global({k: batch[k] for k in ("image", "labels", "mask")}, data_sharding)
        )
        # Outputs are replicated, so every process holds the global batch; gather the
        # host-side labels the same way so that rows line up.
        host = {k: batch[k] for k in ("labels", "mask", "valid")}
        gathered = _allgather({**host, "index": _source_indices(b, local_bs)})
        logits.append(np.asarray(out_logits))
        labels.append(gathered["labels"])
        masks.append(gathered["mask"])
        valid.append(gathered["valid"])
        index.append(gathered["index"])
        loss_sum += float(out_loss)
    valid = np.concatenate(valid)
    index = np.concatenate(index)[valid]
    order = np.argsort(index, kind="stable")  # source order on any number of processes
    probs = 1.0 / (1.0 + np.exp(-np.concatenate(logits)[valid].astype(np.float64)))
    n = int(valid.sum())
    return (
        probs[order],
        np.concatenate(labels)[valid][order],
        np.concatenate(masks)[valid][order],
        loss_sum / n,
        index[order],
    )


def _savez(path, **arrays) -> None:
    """``np.savez`` to a local or ``gs://`` path."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    epath.Path(path).write_bytes(buffer.getvalue())


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


def split_metrics(eval_fn, state, source, config, mesh) -> dict:
    """Per-class AUC and loss over every example of ``source``."""
    probs, labels, mask, loss, _ = predict_split(
        eval_fn, state, source, config.eval.batch_size, mesh
    )
    return _auc_and_loss(probs, labels, mask, loss, config)


def _auc_and_loss(probs, labels, mask, loss, config) -> dict:
    metrics = per_class_auc(labels, probs, mask, list(config.data.classes))
    metrics.update(loss=loss, num_examples=int(labels.shape[0]))
    return metrics


def add_test_outputs(probs, labels, mask, source, config, out_dir, metrics) -> None:
    """Adds class counts and bootstrap intervals to ``metrics``; writes
    ``predictions.npz`` (for ``chestattn_jax.compare``) and the ROC curves."""
    classes = list(config.data.classes)
    keep = mask > 0
    metrics["positives"] = dict(zip(classes, ((labels == 1) & keep).sum(0).tolist(), strict=True))
    metrics["negatives"] = dict(zip(classes, ((labels == 0) & keep).sum(0).tolist(), strict=True))
    # Patients are resampled whole; sources without patient ids (the phantoms) have
    # one image per patient.
    patients = getattr(source, "patient_ids", None)
    if patients is None:
        patients = np.arange(len(labels)).astype(str)
    if config.eval.bootstrap_draws:
        metrics["bootstrap"] = bootstrap_auc(
            labels,
            probs,
            mask,
            classes,
            patients,
            num_draws=config.eval.bootstrap_draws,
            seed=config.eval.bootstrap_seed,
        )
    if jax.process_index() == 0:
        epath.Path(out_dir).mkdir(parents=True, exist_ok=True)
        _savez(
            os.path.join(out_dir, "predictions.npz"),
            probs=probs,
            labels=labels,
            mask=mask,
            patient_ids=np.asarray(patients, dtype=str),
            classes=np.asarray(classes),
        )
        figures.roc_curves(
            labels, probs, mask, classes, os.path.join(out_dir, "roc_curves.png"), metrics["auc"]
        )


def inference_fn(config, mesh):
    """``jit``: ``(state, uint8 images) -> (logits (B, k) float32, gate-3 maps or None)``,
    outputs replicated. Gate-3 maps are ``(B, k, h, w)`` (class) or ``(B, h, w)`` (image)."""
    mean, std = config.data.mean, config.data.std

    def fn(state, images):
        logits, aux = state.apply_fn(
            {"params": state.params, "batch_stats": state.batch_stats},
            normalize_images(images, mean, std),
            train=False,
        )
        return logits.astype(np.float32), aux["attention"].get("gate3")

    return jax.jit(
        fn,
        in_shardings=(shd.replicated(mesh), shd.batch_sharded(mesh)),
        out_shardings=shd.replicated(mesh),
    )


def attention_analysis(state, source, config, mesh, labels, probs, out_dir) -> dict:
    """One pass of the gate-3 maps over ``source`` (rows of ``labels``/``probs`` in source
    order), scoring localisation where the source has truth, averaging each class's map
    over images whose only finding is that class (Fig. 3), and keeping the first
    ``config.eval.num_figure_images`` images with a finding for the overlays (Fig. 2).

    Returns the ``localization`` metrics (``None`` without truth) and writes the figures.
    """
    classes = list(config.data.classes)
    k = len(classes)
    has_truth = hasattr(source, "truth_indices")
    truth_rows = set(np.asarray(source.truth_indices()).tolist()) if has_truth else set()
    scores = LocalizationScores(classes, config.eval.map_threshold)
    sums, counts = None, np.zeros(k, np.int64)
    examples = []
    fn = inference_fn(config, mesh)
    local_bs = shd.local_batch_size(config.eval.batch_size, "config.eval.batch_size")
    sharding = shd.batch_sharded(mesh)
    for b, batch in enumerate(eval_batches(source, local_bs)):
        _, maps = fn(state, shd.to_global({"image": batch["image"]}, sharding)["image"])
        maps = np.asarray(jax.device_get(maps), np.float32)
        host = _allgather(
            {
                "image": batch["image"],
                "valid": batch["valid"],
                "index": _source_indices(b, local_bs),
            }
        )
        for r in np.flatnonzero(host["valid"]):
            i = int(host["index"][r])
            m, y = maps[r], labels[i]
            if sums is None:
                sums = np.zeros((k, *m.shape[-2:]), np.float64)
            if i in truth_rows:
                truth = source.truth(i)
                scores.add(m, truth["masks"], truth["labels"])
            if y.sum() == 1:
                j = int(np.argmax(y))
                sums[j] += m[j] if m.ndim == 3 else m
                counts[j] += 1
            if y.any() and len(examples) < config.eval.num_figure_images:
                examples.append((i, host["image"][r, ..., 0], m))
    averages = {c: (sums[j] / counts[j] if counts[j] else None) for j, c in enumerate(classes)}
    if jax.process_index() == 0 and examples:
        variant = config.model.variant
        idx = np.asarray([e[0] for e in examples])
        _savez(
            os.path.join(out_dir, "attention_examples.npz"),
            index=idx,
            images=np.stack([e[1] for e in examples]),
            maps=np.stack([e[2] for e in examples]),
            labels=labels[idx],
            probs=probs[idx],
            classes=np.asarray(classes),
            variant=variant,
            average_masks=np.stack([sums[j] / max(counts[j], 1) for j in range(k)]),
            average_counts=counts,
        )
        rows = [
            {
                "image": img,
                "labels": labels[i],
                "image_map": m if m.ndim == 2 else None,
                "class_maps": m if m.ndim == 3 else None,
                "title": f"test #{i}: " + ", ".join(classes[j] for j in np.flatnonzero(labels[i])),
            }
            for i, img, m in examples
        ]
        figures.attention_rows(rows, classes, os.path.join(out_dir, "overlays.png"))
        figures.average_masks(
            averages,
            dict(zip(classes, counts.tolist(), strict=True)),
            os.path.join(out_dir, "average_masks.png"),
            title=f"{variant}-based attention: average map over images with a single finding",
        )
    if not truth_rows:
        return None
    return {"pointing_game": scores.pointing_game(), "overlap": scores.overlap()}


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


# The config fields that decide a checkpoint's parameter shapes.
_MODEL_FIELDS = ("model.variant", "data.classes", "model.stage_sizes", "model.num_filters")
_MODEL_FIELDS += ("model.attention_dim", "data.channels")


def _field(tree, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return list(tree) if isinstance(tree, list | tuple) else tree


def _refuse(path: str, config, problems: list[str]) -> None:
    if problems:
        raise ValueError(
            f"Checkpoint {path} does not fit config.model / config.data "
            f"(variant {config.model.variant!r}, {len(config.data.classes)} classes): "
            + "; ".join(problems)
            + ". Evaluate with the config the workdir was trained with."
        )


def check_trained_config(workdir: str, path: str, config) -> None:
    """Compares ``config`` with ``WORKDIR/config.json`` (written by training), if there is
    one, on the fields that decide the parameters; raises a ``ValueError`` naming them."""
    saved_path = epath.Path(workdir) / "config.json"
    if not saved_path.exists():
        return
    saved = json.loads(saved_path.read_text())
    problems = []
    for name in _MODEL_FIELDS:
        try:
            was, now = _field(saved, name), _field(config, name)
        except (KeyError, TypeError):
            continue
        if was != now:
            problems.append(f"config.{name} is {now!r} but the checkpoint was trained with {was!r}")
    _refuse(path, config, problems)


def check_checkpoint_shapes(path: str, state, config) -> None:
    """Compares the parameter shapes stored at ``path`` with ``state``'s; raises a
    ``ValueError`` listing missing, extra and differently shaped parameters."""
    import orbax.checkpoint as ocp
    from etils import epath

    # The item's own handler: no array is read, and no step-level metadata is expected.
    stored = getattr(ocp.StandardCheckpointHandler().metadata(epath.Path(path)), "tree", None)
    if not stored or "params" not in stored:
        return
    flat_stored = {
        jax.tree_util.keystr(p): tuple(getattr(v, "shape", ()))
        for p, v in jax.tree_util.tree_leaves_with_path(stored["params"])
    }
    flat_wanted = {
        jax.tree_util.keystr(p): tuple(np.shape(v))
        for p, v in jax.tree_util.tree_leaves_with_path(state.params)
    }
    problems = []
    missing = sorted(set(flat_wanted) - set(flat_stored))
    extra = sorted(set(flat_stored) - set(flat_wanted))
    shapes = [
        f"{p} stored {flat_stored[p]}, config wants {flat_wanted[p]}"
        for p in sorted(set(flat_wanted) & set(flat_stored))
        if flat_stored[p] != flat_wanted[p]
    ]
    if missing:
        problems.append(
            f"parameters the config's model has but the checkpoint lacks: {missing[:4]}"
        )
    if extra:
        problems.append(f"parameters in the checkpoint the config's model lacks: {extra[:4]}")
    if shapes:
        problems.append("shapes differ: " + "; ".join(shapes[:4]))
    _refuse(path, config, problems)


def restore_for_inference(config, workdir: str, which: str = "best"):
    """The train state of checkpoint ``which`` (``best`` or ``latest``) of ``workdir``,
    checked against ``config``'s model. Returns ``(state, step, mesh)``."""
    checkpointer = Checkpointer(workdir, read_only=True)
    try:
        step = select_checkpoint(checkpointer, which)
        path = os.fspath(epath.Path(checkpointer.directory) / str(step) / "state")
        check_trained_config(workdir, path, config)
        mesh = shd.make_mesh()
        state = create_train_state(
            create_model(config),
            create_optimizer(config.train),
            jax.random.key(config.seed),
            (config.data.image_size, config.data.image_size, config.data.channels),
            shd.replicated(mesh),
        )
        check_checkpoint_shapes(path, state, config)
        state, _ = checkpointer.restore(step, state)
    finally:
        checkpointer.close()
    return state, step, mesh


def _fmt(v, digits=3):
    return "" if v is None else f"{v:.{digits}f}"


def per_class_rows(metrics: dict, classes) -> list[dict]:
    """One row per class (and a final ``mean`` row): AUC, interval, counts, localisation."""
    boot = metrics.get("bootstrap") or {}
    loc = metrics.get("localization") or {}
    pg = (loc.get("pointing_game") or {}).get("hit_rate", {})
    ov = loc.get("overlap") or {}
    rows = []
    for c in [*classes, "mean"]:
        if c == "mean":
            interval = boot.get("mean_ci") or [None, None]
            row = {"class": "mean", "auc": metrics.get("mean_auc")}
        else:
            interval = ((boot.get("classes") or {}).get(c) or {}).get("ci") or [None, None]
            row = {"class": c, "auc": metrics["auc"].get(c)}
        row.update(auc_low=interval[0], auc_high=interval[1])
        if c != "mean":
            row.update(
                positives=(metrics.get("positives") or {}).get(c),
                negatives=(metrics.get("negatives") or {}).get(c),
            )
        if loc:
            mean = c == "mean"
            row["hit_rate"] = loc["pointing_game"]["mean_hit_rate"] if mean else pg.get(c)
            for t in OVERLAP_THRESHOLDS:
                for name in ("iou", "iobb"):
                    acc = (
                        ov[f"mean_{name}_accuracy"][str(t)]
                        if mean
                        else ov[f"{name}_accuracy"][str(t)][c]
                    )
                    row[f"{name}@{t}"] = acc
        rows.append(row)
    return rows


def write_eval(workdir: str, metrics: dict, classes=None) -> str:
    """Writes ``WORKDIR/eval/metrics.json`` and, with ``classes``, ``per_class.csv`` and
    ``per_class.md`` (process 0 only); returns the JSON's path."""
    out = os.path.join(workdir, "eval")
    path = os.path.join(out, "metrics.json")
    if jax.process_index() != 0:
        return path
    epath.Path(out).mkdir(parents=True, exist_ok=True)
    epath.Path(path).write_text(json.dumps(metrics, indent=2, sort_keys=True))
    if classes is None:
        return path
    rows = per_class_rows(metrics, classes)
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows([{k: ("" if v is None else v) for k, v in r.items()} for r in rows])
    epath.Path(out, "per_class.csv").write_text(table.getvalue())
    header = ["class", "AUC [95% CI]", "pos", "neg"]
    loc_cols = [k for k in rows[0] if k == "hit_rate" or "@" in k]
    header += [k.replace("hit_rate", "hit rate") for k in loc_cols]
    lines = [
        f"{metrics.get('variant', '')} model, {metrics.get('split', '')} split, "
        f"step {metrics.get('step', '')}, {metrics.get('num_examples', '')} images",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in rows:
        auc = _fmt(r["auc"])
        if r["auc_low"] is not None:
            auc += f" [{_fmt(r['auc_low'])}, {_fmt(r['auc_high'])}]"
        cells = [
            r["class"],
            auc,
            "" if r.get("positives") is None else str(r["positives"]),
            "" if r.get("negatives") is None else str(r["negatives"]),
        ]
        cells += [_fmt(r[k], 2) for k in loc_cols]
        lines.append("| " + " | ".join(cells) + " |")
    epath.Path(out, "per_class.md").write_text("\n".join(lines) + "\n")
    return path


def evaluate_state(config, workdir: str, state, mesh, step: int, weights) -> dict:
    """Evaluates ``state`` on ``config.eval.split`` and writes ``WORKDIR/eval/``."""
    out_dir = os.path.join(workdir, "eval")
    test_source = create_source(config, config.eval.split)
    probs, labels, mask, loss, _ = predict_split(
        make_eval_step(config, mesh, weights), state, test_source, config.eval.batch_size, mesh
    )
    metrics = _auc_and_loss(probs, labels, mask, loss, config)
    add_test_outputs(probs, labels, mask, test_source, config, out_dir, metrics)
    if config.model.variant != "resnet":
        localization = attention_analysis(state, test_source, config, mesh, labels, probs, out_dir)
        if localization is not None:
            metrics["localization"] = localization
            # Kept at the top level too, where scripts written for earlier releases read it.
            metrics["pointing_game"] = localization["pointing_game"]
    metrics.update(step=int(step), split=config.eval.split, variant=config.model.variant)
    path = write_eval(workdir, metrics, list(config.data.classes))
    logging.info(
        "%s mean AUC %.4f at step %d -> %s",
        config.eval.split,
        metrics["mean_auc"] or float("nan"),
        step,
        path,
    )
    return metrics


def evaluate(config, workdir: str) -> dict:
    """Restores the configured checkpoint of ``workdir`` and evaluates ``config.eval.split``."""
    state, step, mesh = restore_for_inference(config, workdir, config.eval.checkpoint)
    train_source = create_source(config, "train")
    weights = class_weights(
        train_source.positive_counts(),
        len(train_source),
        config.loss.class_weights,
        list(config.data.classes),
    )
    return evaluate_state(config, workdir, state, mesh, step, weights)
