"""Failure review: per class, the ``config.eval.num_failure_images`` most confident false
positives and false negatives at the first rule of ``config.eval.operating_points``, its
thresholds chosen on the validation split
(:func:`chestattn_jax.operating_points.choose_thresholds`), each with its image, the
class's map over it (attention models) and its probabilities.

A false positive is a scored (unmasked) example with label 0 and ``prob >= threshold``,
the most confident the highest probabilities; a false negative one with label 1 and
``prob < threshold``, the most confident the lowest. Ties: the lower source index first.
A class without a threshold (no validation positives, the target out of reach) has no
failures and says why: nothing falls back to 0.5.

The pass streams batches (``needs_rows``; with the maps for attention models): per class
it keeps the N highest-probability negatives and the N lowest-probability positives seen
so far, with their images and maps, so memory is bounded by classes x 2N images. The
threshold only cuts these lists: every false positive scores above every negative that is
not one, so the N most confident false positives are those of the N highest negatives at
or above the threshold (the same for false negatives). The threshold is therefore applied
in ``finish``, and the pass does not depend on when the validation split is scored (it is
the evaluated split itself when ``config.eval.split`` is ``validation``).

Adds ``failures`` to ``metrics``: ``rule``, ``chosen_on``, ``num_per_class``, ``maps``
(``"class"``, ``"image"`` or None: which map the figure draws), ``classes`` (per class
``threshold``, ``rule``, ``reason`` (None, or why there is no threshold),
``false_positives`` and ``false_negatives`` (each ``[{"example_id", "patient_id",
"index", "prob", "probs": {class: p}, "findings": [class, ...]}]``, most confident first)
and ``counts`` (``{"false_positives", "false_negatives"}`` over the whole split, None
without a threshold)) and ``page`` (the report section). Writes ``failures.png``: one row
per class, its false positives then its false negatives.
"""

from __future__ import annotations

import os

import numpy as np

from chestattn_jax.evaluation import evaluators
from chestattn_jax.operating_points import choose_thresholds
from chestattn_jax.reporting import section_pages

FIGURE = "failures.png"
DEFAULT_NUM = 4
# Each kind of failure: the label it has, and the sign that makes its most confident
# examples the highest scores (false negatives: the lowest probabilities).
KINDS = {"false_positives": (0, 1.0), "false_negatives": (1, -1.0)}


def num_failure_images(config_eval) -> int:
    """``config.eval.num_failure_images``, or :data:`DEFAULT_NUM` in a config without it."""
    return int(getattr(config_eval, "num_failure_images", DEFAULT_NUM))


class Extremes:
    """The ``n`` rows with the highest score offered so far (ties: the lowest index first),
    and what each keeps; what a row keeps is made only when it enters."""

    def __init__(self, n: int):
        self.n = n
        self.score = np.zeros(0, np.float64)
        self.index = np.zeros(0, np.int64)
        self.kept: list = []

    def offer(self, score, index, keep) -> None:
        """Rows with ``score`` and ``index`` (``(m,)``); ``keep(r)`` gives what row ``r``
        of these keeps."""
        score = np.concatenate([self.score, np.asarray(score, np.float64)])
        index = np.concatenate([self.index, np.asarray(index, np.int64)])
        order = np.lexsort((index, -score))[: self.n]
        old = len(self.kept)
        self.kept = [self.kept[k] if k < old else keep(k - old) for k in order]
        self.score, self.index = score[order], index[order]


class Evaluator(evaluators.Evaluator):
    needs_validation = True
    after = ("operating_points",)  # reads the thresholds it chose
    outputs = (FIGURE,)

    @staticmethod
    def check_config(p, mode: str) -> None:
        if "num_failure_images" in p.value("eval"):
            p.int(
                "eval.num_failure_images",
                0,
                "at least 0: the false positives and false negatives shown per class "
                "(0: no failure review)",
            )

    def __init__(self, ctx):
        super().__init__(ctx)
        self.n = num_failure_images(ctx.config.eval)
        self.needs_rows = self.n > 0
        self.needs_maps = self.n > 0 and ctx.config.model.variant != "resnet"
        self.map_kind = None
        self.kept = [{kind: Extremes(self.n) for kind in KINDS} for _ in ctx.classes]

    def add(self, maps, rows) -> None:
        if maps is not None:
            self.map_kind = "class" if maps.ndim == 4 else "image"
        valid = np.asarray(rows["valid"], bool)
        labels, mask, probs = rows["labels"], rows["mask"], rows["probs"]
        index = np.asarray(rows["index"], np.int64)
        for j, kept in enumerate(self.kept):
            scored = valid & (mask[:, j] > 0)
            for kind, (label, sign) in KINDS.items():
                r = np.flatnonzero(scored & (labels[:, j] == label))
                if r.size:
                    kept[kind].offer(
                        sign * probs[r, j],
                        index[r],
                        lambda k, r=r, j=j: _example_arrays(maps, rows["image"], r[k], j),
                    )

    def finish(self, record, metrics) -> None:
        config, classes = self.ctx.config.eval, list(record.classes)
        val = self.ctx.validation
        rule = config.operating_points[0]
        # The operating points' own choice where that evaluator ran (the thresholds of
        # thresholds.json); the same function on the same split otherwise.
        ops = (metrics.get("operating_points") or {}).get("rules", {}).get(rule)
        chosen = ops["validation"] if ops else None
        if chosen is None:
            chosen = choose_thresholds(val.labels, val.probs, val.mask, classes, rule)
        failures = {
            "rule": rule,
            "chosen_on": f"validation split, {len(val)} images",
            "num_per_class": self.n,
            "maps": self.map_kind,
            "classes": {
                c: self._class(record, j, chosen[c]["threshold"], chosen[c]["reason"], rule)
                for j, c in enumerate(classes)
            },
        }
        failures["page"] = section_pages.failures_page(failures, metrics.get("split", ""))
        metrics["failures"] = failures
        if self.ctx.writes and self.n:
            from chestattn_jax.reporting import plots

            plots.failure_review(
                self._figure_rows(record, failures),
                self.n,
                os.path.join(self.ctx.out_dir, FIGURE),
            )

    def _class(self, record, j: int, threshold, reason, rule) -> dict:
        """One class's entry of ``metrics["failures"]["classes"]``."""
        entry = {"threshold": threshold, "rule": rule, "reason": reason}
        if threshold is None:
            return {**entry, "false_positives": [], "false_negatives": [], "counts": None}
        probs = record.probs[:, j]
        scored, labels = record.mask[:, j] > 0, record.labels[:, j]
        wrong = {
            "false_positives": scored & (labels == 0) & (probs >= threshold),
            "false_negatives": scored & (labels == 1) & (probs < threshold),
        }
        for kind, rows in wrong.items():
            entry[kind] = [_example(record, int(i), j) for i in self.kept[j][kind].index if rows[i]]
        entry["counts"] = {kind: int(rows.sum()) for kind, rows in wrong.items()}
        return entry

    def _figure_rows(self, record, failures) -> list[dict]:
        """The rows of :func:`chestattn_jax.reporting.plots.failure_review`."""
        out = []
        for j, (c, entry) in enumerate(failures["classes"].items()):
            row = {"name": c}
            if entry["threshold"] is None:
                row.update(note="no threshold", reason=entry["reason"])
            else:
                counts = entry["counts"]
                row["note"] = (
                    f"t = {entry['threshold']:.3f}; {counts['false_positives']} FP, "
                    f"{counts['false_negatives']} FN"
                )
            for kind, short in (("false_positives", "FP"), ("false_negatives", "FN")):
                kept = self.kept[j][kind]
                arrays = dict(zip(kept.index.tolist(), kept.kept, strict=True))
                row[kind] = [
                    {
                        "image": arrays[ex["index"]][0],
                        "map": arrays[ex["index"]][1],
                        "title": f"{short} p={ex['prob']:.3f}\n{ex['example_id']}",
                    }
                    for ex in entry[kind]
                ]
            out.append(row)
        return out


def _example_arrays(maps, images, r: int, j: int) -> tuple:
    """Row ``r``'s image ``(S, S)`` and class ``j``'s map (the image's one map for an
    image-based model; None without maps), copied out of the batch."""
    image = np.array(images[r, ..., 0])
    if maps is None:
        return image, None
    return image, np.array(maps[r, j] if maps.ndim == 4 else maps[r], np.float32)


def _example(record, i: int, j: int) -> dict:
    """Record row ``i`` as a failure of class ``j``."""
    classes = list(record.classes)
    scored = record.mask[i] > 0
    return {
        "example_id": str(record.example_ids[i]),
        "patient_id": str(record.patient_ids[i]),
        "index": i,
        "prob": float(record.probs[i, j]),
        "probs": {c: float(p) for c, p in zip(classes, record.probs[i], strict=True)},
        "findings": [c for k, c in enumerate(classes) if scored[k] and record.labels[i, k] == 1],
    }
