"""Exact evaluation: per-class ROC AUC with intervals, loss, localisation and figures.

``--mode=evaluate`` restores a checkpoint from ``WORKDIR/checkpoints`` (the one
with the lowest validation loss by default) and writes ``WORKDIR/eval/``:

- ``metrics.json``: everything below, machine-readable;
- ``per_class.csv`` and ``per_class.md``: AUC with its 95 % bootstrap interval,
  positives and negatives per class, and the localisation scores where there is truth;
- ``predictions.npz``: probabilities, labels, masks, patient and example ids (the one
  record of the pass, which ``compare`` reads);
- ``roc_curves.png``; for the attention models also ``overlays.png`` (Fig. 2 for this
  model), ``average_masks.png`` (Fig. 3) and ``attention_examples.npz`` (the maps
  that ``compare`` puts side by side).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time

import jax
import numpy as np
from absl import logging
from etils import epath

from chestattn_jax import figures, tables
from chestattn_jax import sharding as shd
from chestattn_jax import workdir as workdir_lib
from chestattn_jax.data.input_pipeline import (
    create_source,
    dataset_fingerprint,
    eval_batches,
)
from chestattn_jax.inference import (
    MODEL_FIELDS,
    _describe_changes,
    _differences,
    _field,
    check_model_fields,
    restore_for_inference,
)
from chestattn_jax.localization import OVERLAP_THRESHOLDS, ClassPrior, LocalizationScores
from chestattn_jax.losses import class_weights
from chestattn_jax.metrics import bootstrap_auc, point_auc
from chestattn_jax.steps import make_eval_step


def _source_indices(batch_index: int, batch_size: int) -> np.ndarray:
    """Source index of each row of this process's ``eval_batches`` batch ``batch_index``
    (``eval_batches`` gives process p the examples ``p, p + P, p + 2P, ...``)."""
    local = batch_index * batch_size + np.arange(batch_size)
    return jax.process_index() + jax.process_count() * local


def predict_split(eval_fn, state, source, batch_size: int, mesh, on_batch=None):
    """Runs ``eval_fn`` over every example of ``source``: one pass.

    Returns ``(probabilities (N, k), labels (N, k), mask (N, k), mean loss, indices (N,))``
    with the padding of the last batch removed and rows in source order
    (``indices[i]`` is the source index of row i: ``arange(N)``).

    ``on_batch``: with an ``eval_fn`` that also returns the gate-3 maps
    (``make_eval_step(..., with_maps=True)``), called after each batch as
    ``on_batch(maps, rows)``: the global batch's maps, and its host arrays ``image``,
    ``labels``, ``valid`` and ``index`` gathered from every process (padding rows
    included, ``valid`` False).
    """
    local_bs = shd.local_batch_size(batch_size, "config.eval.batch_size")
    data_sharding = shd.batch_sharded(mesh)
    logits, labels, masks, valid, index, loss_sum = [], [], [], [], [], 0.0
    for b, batch in enumerate(eval_batches(source, local_bs)):
        out = eval_fn(
            state, shd.to_global({k: batch[k] for k in ("image", "labels", "mask")}, data_sharding)
        )
        # Outputs are replicated, so every process holds the global batch; gather the
        # host-side labels the same way so that rows line up.
        host = {k: batch[k] for k in ("labels", "mask", "valid")}
        if on_batch is not None:
            host["image"] = batch["image"]
        gathered = _allgather({**host, "index": _source_indices(b, local_bs)})
        if on_batch is not None:
            on_batch(np.asarray(jax.device_get(out[2]), np.float32), gathered)
        logits.append(np.asarray(out[0]))
        labels.append(gathered["labels"])
        masks.append(gathered["mask"])
        valid.append(gathered["valid"])
        index.append(gathered["index"])
        loss_sum += float(out[1])
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
    workdir_lib.write_bytes(path, buffer.getvalue())


def _allgather(tree):
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def per_class_auc(labels, probs, mask, class_names) -> dict:
    """ROC AUC of each class over its unmasked examples, and their mean
    (:func:`chestattn_jax.metrics.point_auc`).

    A class whose unmasked labels are all 0 or all 1 has no AUC: it is reported
    as ``None`` and listed in ``undefined_classes``, and the mean is over the others.
    """
    aucs = point_auc(labels, probs, mask)
    per_class = {
        name: None if np.isnan(a) else float(a) for name, a in zip(class_names, aucs, strict=True)
    }
    undefined = [name for name, v in per_class.items() if v is None]
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
            os.path.join(out_dir, workdir_lib.PREDICTIONS_FILE),
            probs=probs,
            labels=labels,
            mask=mask,
            patient_ids=np.asarray(patients, dtype=str),
            # Each row's example: the raw data set's name for prepared data, else the
            # split's index (phantoms are generated from it).
            example_ids=np.asarray(
                getattr(source, "example_ids", None)
                if getattr(source, "example_ids", None) is not None
                else np.arange(len(labels)),
                dtype=str,
            ),
            classes=np.asarray(classes),
        )
        figures.roc_curves(
            labels, probs, mask, classes, os.path.join(out_dir, "roc_curves.png"), metrics["auc"]
        )


# Training images the class prior is built from, at most (evenly spaced over the split).
PRIOR_MAX_IMAGES = 2000


def class_prior(train_source, source, truth_rows, num_classes: int):
    """The class-prior baseline (:class:`ClassPrior`) and a description of its origin.

    Built from the training split's truth when it has some for every class; otherwise
    (NIH's boxes lie in the test list only) from the evaluated split's own truth, each
    image then scored with a prior that leaves its own masks out.
    """
    prior = ClassPrior(num_classes)
    rows = np.asarray(getattr(train_source, "truth_indices", lambda: [])(), np.int64)
    if len(rows) > PRIOR_MAX_IMAGES:
        rows = rows[np.linspace(0, len(rows) - 1, PRIOR_MAX_IMAGES).astype(np.int64)]
    for i in rows:
        truth = train_source.truth(int(i))
        prior.add(truth["masks"], truth["labels"])
    if len(rows) and prior.counts.all():
        return prior, {"built_from": "training split", "images": len(rows)}
    prior = ClassPrior(num_classes)
    for i in sorted(truth_rows):
        truth = source.truth(int(i))
        prior.add(truth["masks"], truth["labels"])
    return prior, {"built_from": "evaluated split, leave-one-out", "images": len(truth_rows)}


class AttentionAnalysis:
    """What evaluation learns from the gate-3 maps, fed batch by batch from the one
    inference pass over ``source`` (:func:`predict_split`'s ``on_batch``), so that no
    map is kept beyond what it needs:

    - localisation where the source has truth, for the model's maps and, beside them,
      two baselines: the class prior (:func:`class_prior`, from ``train_source``) and a
      uniform map;
    - each class's map averaged over images whose only finding is that class (Fig. 3);
    - the first ``config.eval.num_figure_images`` images with a finding (Fig. 2).

    :meth:`finish` writes the figures and returns the ``localization`` metrics.
    """

    def __init__(self, source, config, train_source=None):
        self.source, self.config = source, config
        self.classes = list(config.data.classes)
        k = len(self.classes)
        has_truth = hasattr(source, "truth_indices")
        self.truth_rows = set(np.asarray(source.truth_indices()).tolist()) if has_truth else set()
        threshold = config.eval.map_threshold
        self.scores = LocalizationScores(self.classes, threshold)
        self.prior_scores = LocalizationScores(self.classes, threshold)
        self.uniform_scores = LocalizationScores(self.classes, threshold)
        self.prior = self.prior_info = None
        if self.truth_rows:
            self.prior, self.prior_info = class_prior(train_source, source, self.truth_rows, k)
        self.sums, self.counts = None, np.zeros(k, np.int64)
        self.examples = []

    def add(self, maps, rows) -> None:
        """One global batch: ``maps`` and the gathered host ``rows`` (image, labels,
        valid, index)."""
        for r in np.flatnonzero(rows["valid"]):
            i, m, y = int(rows["index"][r]), maps[r], rows["labels"][r]
            if self.sums is None:
                self.sums = np.zeros((len(self.classes), *m.shape[-2:]), np.float64)
            if i in self.truth_rows:
                self._score(i, m)
            if y.sum() == 1:
                j = int(np.argmax(y))
                self.sums[j] += m[j] if m.ndim == 3 else m
                self.counts[j] += 1
            if y.any() and len(self.examples) < self.config.eval.num_figure_images:
                self.examples.append((i, rows["image"][r, ..., 0], m))

    def _score(self, i: int, m) -> None:
        truth = self.source.truth(i)
        masks, present = truth["masks"], truth["labels"]
        self.scores.add(m, masks, present)
        shape = m.shape[-2:]
        if self.prior_info["built_from"] != "training split":  # leave this image out
            prior_maps = self.prior.maps(shape, leave_out=masks, leave_out_labels=present)
        else:
            prior_maps = self.prior.maps(shape)
        self.prior_scores.add(prior_maps, masks, present)
        self.uniform_scores.add_uniform(shape, masks, present)

    def finish(self, labels, probs, out_dir) -> dict | None:
        """Writes the figures (process 0); returns the ``localization`` metrics, or
        ``None`` without truth. ``labels``/``probs``: the pass's rows in source order."""
        classes, sums, counts, examples = self.classes, self.sums, self.counts, self.examples
        k = len(classes)
        if jax.process_index() == 0 and examples:
            variant = self.config.model.variant
            idx = np.asarray([e[0] for e in examples])
            _savez(
                os.path.join(out_dir, workdir_lib.ATTENTION_EXAMPLES_FILE),
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
                    "title": f"test #{i}: "
                    + ", ".join(classes[j] for j in np.flatnonzero(labels[i])),
                }
                for i, img, m in examples
            ]
            figures.attention_rows(rows, classes, os.path.join(out_dir, "overlays.png"))
            averages = {
                c: (sums[j] / counts[j] if counts[j] else None) for j, c in enumerate(classes)
            }
            figures.average_masks(
                averages,
                dict(zip(classes, counts.tolist(), strict=True)),
                os.path.join(out_dir, "average_masks.png"),
                title=f"{variant}-based attention: average map over images with a single finding",
            )
        if not self.truth_rows:
            return None
        return {
            "pointing_game": self.scores.pointing_game(),
            "overlap": self.scores.overlap(),
            "baselines": {
                "class_prior": {
                    **self.prior_info,
                    "pointing_game": self.prior_scores.pointing_game(),
                    "overlap": self.prior_scores.overlap(),
                },
                "uniform": {
                    "pointing_game": self.uniform_scores.pointing_game(),
                    "overlap": self.uniform_scores.overlap(),
                },
            },
        }


# Fields that decide which images are scored and how they reach the model. Another value
# than training's is refused unless config.allow_setting_changes: another split can hold
# training patients, another image size or normalisation feeds the model other inputs.
DATA_FIELDS = (
    "data.name",
    "data.image_size",
    "data.mean",
    "data.std",
    "data.views",
    "data.split",
    "data.split_fractions",
    "data.num_folds",
    "data.fold",
    "data.val_fraction",
    "data.split_seed",
    "data.uncertainty",
    "data.uncertainty_per_class",
)
# The phantoms' fields (config.data.name == "synthetic"): all of them, split sizes included,
# decide the data set's fingerprint, so that a difference is named by its field.
SYNTHETIC_FIELDS = (
    "data.synthetic.seed",
    "data.synthetic.train_size",
    "data.synthetic.validation_size",
    "data.synthetic.test_size",
    "data.synthetic.lesion_contrast",
    "data.synthetic.lesion_size",
    "data.synthetic.noise",
    "data.synthetic.prevalence_scale",
)
# The key of the data set's fingerprint among the settings and changes.
FINGERPRINT = "dataset fingerprint"
# Evaluation settings that change the numbers written (recorded beside them).
EVAL_FIELDS = (
    "eval.split",
    "eval.checkpoint",
    "eval.bootstrap_draws",
    "eval.bootstrap_seed",
    "eval.map_threshold",
    "model.dtype",
)


def _data_fields(config) -> tuple[str, ...]:
    return DATA_FIELDS + (SYNTHETIC_FIELDS if config.data.name == "synthetic" else ())


def trained_setting_changes(
    workdir: str,
    config,
    fingerprint: dict | None = None,
    advice: str = "Evaluate with the config the workdir was trained with.",
) -> dict:
    """How ``config`` differs from the config ``workdir`` was trained with
    (``WORKDIR/config.json``, ``WORKDIR/dataset.json``) on the fields that decide what is
    evaluated (:data:`DATA_FIELDS`, for phantoms :data:`SYNTHETIC_FIELDS`, and the data
    set's ``fingerprint`` from ``fingerprint``; never its ``raw_dir``: the same data may be
    mounted elsewhere). Raises a ``ValueError`` if the model fields differ: that
    checkpoint cannot be evaluated so.

    A fingerprint that is ``"unknown"`` (a data set prepared before fingerprints were
    recorded) cannot be compared: a warning says so, and it is not counted as a change.
    For phantoms, whose fingerprint is a hash of config fields, a difference is named by
    those fields; the fingerprint is listed only when no field explains it."""
    root = workdir_lib.workdir_path(workdir)
    saved = workdir_lib.read_json(root / workdir_lib.CONFIG_FILE)
    if saved is None:
        return {}
    check_model_fields(workdir, config, advice, saved=saved)
    changes = _differences(saved, config, _data_fields(config))
    trained_on = workdir_lib.read_json(root / workdir_lib.DATASET_FILE) or {}
    was, now = trained_on.get("fingerprint"), (fingerprint or {}).get("fingerprint")
    if "unknown" in (was, now):
        unknown = trained_on if was == "unknown" else fingerprint
        logging.warning(
            "Cannot check that the data set is the one %s was trained on: the fingerprint "
            "of the data set %s is unknown (%s).",
            workdir,
            "it was trained on" if was == "unknown" else "of this config",
            unknown.get("note") or "it was prepared before fingerprints were recorded",
        )
    elif was and now and was != now:
        # A phantom fingerprint hashes these fields (and the classes): named above if
        # they differ. A prepared data set's hashes its raw inputs, which no field names.
        inputs = ("data.image_size", *SYNTHETIC_FIELDS)
        if config.data.name != "synthetic" or not _differences(saved, config, inputs):
            changes[FINGERPRINT] = (was, now)
    return changes


def check_setting_changes(changes: dict, config, what: str) -> None:
    """Refuses ``changes`` (from :func:`trained_setting_changes`) unless
    ``config.allow_setting_changes``; logs them when allowed."""
    if not changes:
        return
    text = _describe_changes(changes, "the workdir was trained with")
    if FINGERPRINT in changes and config.data.name != "synthetic":
        text += (
            " (the data set was prepared again, from other raw images or with other options, "
            f"since training: compare the workdir's {workdir_lib.DATASET_FILE} with the "
            "chestattn_prepare.json of the data set)"
        )
    if not config.allow_setting_changes:
        raise ValueError(
            f"{what} under other data settings than training used: {text}. Another split "
            "can hold training patients, and another image size or normalisation feeds the "
            "model inputs it never saw. Use the training settings, or pass "
            "--config.allow_setting_changes=true if this is what you want."
        )
    logging.warning("%s under other data settings than training (allowed): %s", what, text)


def eval_settings(config, fingerprint: dict | None) -> dict:
    """Every setting that changes the numbers of an evaluation, by config field."""
    fields = (*EVAL_FIELDS, *_data_fields(config), *MODEL_FIELDS)
    settings = {f: _field(config, f) for f in fields}
    settings[FINGERPRINT] = (fingerprint or {}).get("fingerprint")
    return settings


def eval_dir_name(config, changes: dict) -> str:
    """``eval`` for the test split at the best checkpoint under the training settings;
    ``eval_<split>_<checkpoint>`` for other splits or checkpoints, with a digest of the
    changed settings appended when they differ from training's; or
    ``config.eval.output_name``."""
    if config.eval.output_name:
        return config.eval.output_name
    split, which = config.eval.split, config.eval.checkpoint
    if (split, which) == ("test", "best") and not changes:
        return workdir_lib.EVAL_DIR
    name = f"eval_{split}_{which}"
    if changes:
        text = json.dumps({k: v[1] for k, v in changes.items()}, sort_keys=True, default=str)
        name += "_" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return name


def plan_evaluation(config, workdir: str, *, replace_other_settings: bool = False) -> dict:
    """Checks, before anything is computed or written, that ``config`` may be evaluated
    on ``workdir`` and where: ``{"out_dir", "settings", "changes", "fingerprint"}``.

    An output folder that holds an evaluation with other settings is never overwritten
    (a ``ValueError`` names the difference), unless ``replace_other_settings`` (the
    evaluation that ends a training run, whose settings are the new training settings).
    """
    fingerprint = dataset_fingerprint(config)
    changes = trained_setting_changes(workdir, config, fingerprint)
    check_setting_changes(changes, config, "Evaluating")
    settings = eval_settings(config, fingerprint)
    out_dir = workdir_lib.workdir_path(workdir) / eval_dir_name(config, changes)
    previous = workdir_lib.read_json(out_dir / "metrics.json")
    if previous is not None:
        before = previous.get("settings")
        if before is None:
            logging.warning(
                "%s holds an evaluation that does not record its settings (an older "
                "version wrote it); replacing it.",
                out_dir,
            )
        elif before != settings:
            differ = {k: (before.get(k), v) for k, v in settings.items() if before.get(k) != v}
            text = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in differ.items())
            if not replace_other_settings:
                raise ValueError(
                    f"{out_dir} holds an evaluation with other settings ({text}); "
                    "evaluations with other settings do not overwrite each other. Name "
                    "another folder with --config.eval.output_name=NAME, or move that one away."
                )
            logging.warning("Replacing %s, evaluated with other settings: %s", out_dir, text)
    return {
        "out_dir": os.fspath(out_dir),
        "settings": settings,
        "changes": changes,
        "fingerprint": fingerprint,
    }


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
            # The same game for the baselines: where a class usually lies, and no map.
            for name, key in (("class_prior", "prior_hit_rate"), ("uniform", "uniform_hit_rate")):
                base = (loc.get("baselines") or {}).get(name)
                if base:
                    bpg = base["pointing_game"]
                    row[key] = bpg["mean_hit_rate"] if mean else bpg["hit_rate"].get(c)
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


def write_eval(out_dir: str, metrics: dict, classes=None) -> str:
    """Writes ``OUT_DIR/metrics.json`` and, with ``classes``, ``per_class.csv`` and
    ``per_class.md`` (process 0 only); returns the JSON's path. ``metrics.json`` is
    written last: it marks a complete evaluation."""
    out = epath.Path(out_dir)
    path = os.fspath(out / "metrics.json")
    if jax.process_index() != 0:
        return path
    out.mkdir(parents=True, exist_ok=True)
    if classes is not None:
        rows = per_class_rows(metrics, classes)
        table = tables.csv_text(list(rows[0]), [list(r.values()) for r in rows])
        workdir_lib.write_text(out / "per_class.csv", table)
        workdir_lib.write_text(out / "per_class.md", _markdown_table(metrics, rows))
    workdir_lib.write_json(path, metrics)
    return path


def _markdown_table(metrics: dict, rows: list[dict]) -> str:
    header = ["class", "AUC [95% CI]", "pos", "neg"]
    loc_cols = [k for k in rows[0] if k.endswith("hit_rate") or "@" in k]
    header += [k.replace("_", " ") for k in loc_cols]
    settings = metrics.get("settings") or {}
    cells_rows = []
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
        cells_rows.append(cells)
    lines = [
        f"{metrics.get('variant', '')} model, {metrics.get('split', '')} split, "
        f"step {metrics.get('step', '')}, {metrics.get('num_examples', '')} images"
        + (f", {settings['data.image_size']} px" if "data.image_size" in settings else ""),
        "",
        tables.markdown(header, cells_rows),
    ]
    prior = ((metrics.get("localization") or {}).get("baselines") or {}).get("class_prior")
    if prior:
        lines += [
            "",
            "hit rate: the pointing game of the model's maps; prior hit rate: of each class's "
            f"average truth mask ({prior['built_from']}, {prior['images']} images) as a fixed "
            "map; uniform hit rate: of a map that favours no cell (a cell drawn at random).",
        ]
    return "\n".join(lines) + "\n"


def evaluate_state(config, state, mesh, step: int, weights, plan: dict) -> dict:
    """Evaluates ``state`` on ``config.eval.split`` and writes ``plan["out_dir"]``
    (``plan`` from :func:`plan_evaluation`)."""
    out_dir = plan["out_dir"]
    test_source = create_source(config, config.eval.split)
    # One pass over the split: the logits, the loss and (attention models) the maps,
    # which AttentionAnalysis consumes batch by batch.
    analysis = None
    if config.model.variant != "resnet":
        analysis = AttentionAnalysis(test_source, config, create_source(config, "train"))
    start = time.perf_counter()
    probs, labels, mask, loss, _ = predict_split(
        make_eval_step(config, mesh, weights, with_maps=analysis is not None),
        state,
        test_source,
        config.eval.batch_size,
        mesh,
        on_batch=analysis.add if analysis is not None else None,
    )
    logging.info(
        "Evaluation: one pass over the %d images of the %s split in %.1f s.",
        len(probs),
        config.eval.split,
        time.perf_counter() - start,
    )
    metrics = _auc_and_loss(probs, labels, mask, loss, config)
    add_test_outputs(probs, labels, mask, test_source, config, out_dir, metrics)
    if analysis is not None:
        localization = analysis.finish(labels, probs, out_dir)
        if localization is not None:
            metrics["localization"] = localization
            # Kept at the top level too, where scripts written for earlier releases read it.
            metrics["pointing_game"] = localization["pointing_game"]
    metrics.update(
        step=int(step),
        split=config.eval.split,
        variant=config.model.variant,
        settings=plan["settings"],
        dataset=plan["fingerprint"],
    )
    if plan["changes"]:
        metrics["changed_from_training"] = {
            k: {"trained": was, "evaluated": now} for k, (was, now) in plan["changes"].items()
        }
    path = write_eval(out_dir, metrics, list(config.data.classes))
    logging.info(
        "%s mean AUC %.4f at step %d -> %s",
        config.eval.split,
        metrics["mean_auc"] or float("nan"),
        step,
        path,
    )
    return metrics


def evaluate(config, workdir: str, *, replace_other_settings: bool = False) -> dict:
    """Restores the configured checkpoint of ``workdir`` and evaluates ``config.eval.split``
    into the folder :func:`plan_evaluation` picks; returns the metrics written there."""
    plan = plan_evaluation(config, workdir, replace_other_settings=replace_other_settings)
    state, step, mesh = restore_for_inference(config, workdir, config.eval.checkpoint)
    train_source = create_source(config, "train")
    weights = class_weights(
        train_source.positive_counts(),
        len(train_source),
        config.loss.class_weights,
        list(config.data.classes),
    )
    return evaluate_state(config, state, mesh, step, weights, plan)
