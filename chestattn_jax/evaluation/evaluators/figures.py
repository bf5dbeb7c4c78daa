"""The figures: ROC curves of every class (``roc_curves.png``) and, for the attention
models, the paper's Fig. 2 for this model (``overlays.png``: the first
``config.eval.num_figure_images`` images with a finding, their maps over them) and
Fig. 3 (``average_masks.png``: each class's map averaged over the images whose only
finding is that class). ``attention_examples.npz`` keeps both for ``compare``, which
draws the models side by side.

Keeps one summed map per class and ``num_figure_images`` images with their maps.
"""

from __future__ import annotations

import os

import numpy as np

from chestattn_jax import figures, files
from chestattn_jax import workdir as workdir_lib
from chestattn_jax.evaluation import evaluators


class Evaluator(evaluators.Evaluator):
    after = ("auc",)

    @staticmethod
    def check_config(p, mode: str) -> None:
        p.int("eval.num_figure_images", 0, "at least 0")

    outputs = (
        "roc_curves.png",
        "overlays.png",
        "average_masks.png",
        workdir_lib.ATTENTION_EXAMPLES_FILE,
    )

    def __init__(self, ctx):
        super().__init__(ctx)
        self.needs_maps = ctx.config.model.variant != "resnet"
        self.sums, self.counts = None, np.zeros(len(ctx.classes), np.int64)
        self.examples = []  # (source index, image, maps)

    def add(self, maps, rows) -> None:
        for r in np.flatnonzero(rows["valid"]):
            m, y = maps[r], rows["labels"][r]
            if self.sums is None:
                self.sums = np.zeros((len(self.counts), *m.shape[-2:]), np.float64)
            if y.sum() == 1:
                j = int(np.argmax(y))
                self.sums[j] += m[j] if m.ndim == 3 else m
                self.counts[j] += 1
            if y.any() and len(self.examples) < self.ctx.config.eval.num_figure_images:
                self.examples.append((int(rows["index"][r]), rows["image"][r, ..., 0], m))

    def finish(self, record, metrics) -> None:
        if not self.ctx.writes:
            return
        out_dir, classes = self.ctx.out_dir, list(record.classes)
        figures.roc_curves(
            record.labels,
            record.probs,
            record.mask,
            classes,
            os.path.join(out_dir, "roc_curves.png"),
            metrics.get("auc"),
        )
        if self.examples:
            self._attention_figures(record, classes, out_dir)

    def _attention_figures(self, record, classes, out_dir) -> None:
        variant, sums, counts = self.ctx.config.model.variant, self.sums, self.counts
        index = np.asarray([e[0] for e in self.examples])
        labels, probs = record.labels[index], record.probs[index]
        files.write_npz(
            os.path.join(out_dir, workdir_lib.ATTENTION_EXAMPLES_FILE),
            index=index,
            images=np.stack([e[1] for e in self.examples]),
            maps=np.stack([e[2] for e in self.examples]),
            labels=labels,
            probs=probs,
            classes=np.asarray(classes),
            variant=variant,
            average_masks=sums / np.maximum(counts, 1)[:, None, None],
            average_counts=counts,
        )
        rows = [
            {
                "image": image,
                "labels": y,
                "image_map": m if m.ndim == 2 else None,
                "class_maps": m if m.ndim == 3 else None,
                "title": f"test #{i}: " + ", ".join(classes[j] for j in np.flatnonzero(y)),
            }
            for (i, image, m), y in zip(self.examples, labels, strict=True)
        ]
        figures.attention_rows(rows, classes, os.path.join(out_dir, "overlays.png"))
        figures.average_masks(
            {c: (sums[j] / counts[j] if counts[j] else None) for j, c in enumerate(classes)},
            dict(zip(classes, counts.tolist(), strict=True)),
            os.path.join(out_dir, "average_masks.png"),
            title=f"{variant}-based attention: average map over images with a single finding",
        )
