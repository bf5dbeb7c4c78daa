"""Localisation of the gate-3 maps where the evaluated split has truth (phantom masks,
NIH's boxes): the pointing game and IoU / IoBB per class, and the same scores for two
baselines, always beside the model's:

- the class prior: each class's average truth mask over the training split, as a fixed
  map (:class:`chestattn_jax.localization.ClassPrior`). NIH's boxes lie in its test
  list only; the prior is then built from the evaluated split, and each image is scored
  with a prior that leaves its own masks out;
- a uniform map, which favours no cell (a cell drawn at random).

Adds ``localization`` to ``metrics`` (and ``pointing_game`` at the top level, where
scripts written for earlier releases read it). Keeps per finding three numbers, never
a map.
"""

from __future__ import annotations

import numpy as np

from chestattn_jax.evaluation import evaluators
from chestattn_jax.localization import ClassPrior, LocalizationScores

# Training images the class prior is built from, at most (evenly spaced over the split).
PRIOR_MAX_IMAGES = 2000
TRAINING_SPLIT = "training split"


def class_prior(train_source, source, truth_rows, num_classes: int):
    """The class-prior baseline (:class:`ClassPrior`) and a description of its origin.

    Built from the training split's truth when it has some for every class; otherwise
    from the evaluated split's own truth (scored leave-one-out)."""
    prior = ClassPrior(num_classes)
    rows = np.asarray(getattr(train_source, "truth_indices", lambda: [])(), np.int64)
    if len(rows) > PRIOR_MAX_IMAGES:
        rows = rows[np.linspace(0, len(rows) - 1, PRIOR_MAX_IMAGES).astype(np.int64)]
    for i in rows:
        truth = train_source.truth(int(i))
        prior.add(truth["masks"], truth["labels"])
    if len(rows) and prior.counts.all():
        return prior, {"built_from": TRAINING_SPLIT, "images": len(rows)}
    prior = ClassPrior(num_classes)
    for i in sorted(truth_rows):
        truth = source.truth(int(i))
        prior.add(truth["masks"], truth["labels"])
    return prior, {"built_from": "evaluated split, leave-one-out", "images": len(truth_rows)}


class Evaluator(evaluators.Evaluator):
    @staticmethod
    def check_config(p, mode: str) -> None:
        p.fraction("eval.map_threshold", "maps are divided by their maximum, then thresholded")

    def __init__(self, ctx):
        super().__init__(ctx)
        truth = getattr(ctx.source, "truth_indices", None)
        self.truth_rows = set(np.asarray(truth()).tolist()) if truth is not None else set()
        # Maps exist for the attention models only; without truth there is nothing to score.
        self.needs_maps = bool(self.truth_rows) and ctx.config.model.variant != "resnet"
        if not self.needs_maps:
            return
        threshold = ctx.config.eval.map_threshold
        self.scores = {
            name: LocalizationScores(ctx.classes, threshold)
            for name in ("model", "class_prior", "uniform")
        }
        self.prior, self.prior_info = class_prior(
            ctx.train_source, ctx.source, self.truth_rows, len(ctx.classes)
        )

    def add(self, maps, rows) -> None:
        for r in np.flatnonzero(rows["valid"]):
            i = int(rows["index"][r])
            if i in self.truth_rows:
                self._score(i, maps[r])

    def _score(self, i: int, m) -> None:
        truth = self.ctx.source.truth(i)
        masks, present = truth["masks"], truth["labels"]
        shape = m.shape[-2:]
        if self.prior_info["built_from"] == TRAINING_SPLIT:
            prior_maps = self.prior.maps(shape)
        else:  # leave this image out
            prior_maps = self.prior.maps(shape, leave_out=masks, leave_out_labels=present)
        self.scores["model"].add(m, masks, present)
        self.scores["class_prior"].add(prior_maps, masks, present)
        self.scores["uniform"].add_uniform(shape, masks, present)

    def finish(self, record, metrics) -> None:
        if not self.needs_maps:
            return
        scores = {
            name: {"pointing_game": s.pointing_game(), "overlap": s.overlap()}
            for name, s in self.scores.items()
        }
        model = scores.pop("model")
        scores["class_prior"] = {**self.prior_info, **scores["class_prior"]}
        metrics["localization"] = {**model, "baselines": scores}
        metrics["pointing_game"] = model["pointing_game"]
