"""Localisation of the gate-3 maps where the evaluated split has truth (phantom masks,
NIH's boxes, SIIM's pneumothorax masks): both pointing games (the pixel one,
cheXlocalize's, is the headline; the cell one is kept for earlier releases' readers),
IoU / IoBB per class, cheXlocalize's mIoU with the map thresholded by Otsu's method and
at a per-class threshold tuned on the validation split, and the same scores for two
baselines, always beside the model's:

- the class prior: each class's average truth mask as a fixed map, built per class
  (:func:`chestattn_jax.localization_metrics.build_class_prior`): from the training split
  for every class with truth there; for a class without (NIH's boxes all lie in its
  official test list), from the evaluated split, each image scored with a prior that
  leaves its own masks out. ``built_from_class`` records which, per class;
- a uniform map, which favours no cell and no pixel (one drawn at random).

The tuned thresholds are chosen per source (the model, each baseline) on its own scores of
the validation split's findings, seen in the evaluation's pass over that split
(``needs_validation_maps``: :mod:`chestattn_jax.evaluation.pipeline` hands its batches to
:meth:`Evaluator.add_validation`); evaluating the validation split itself, they are chosen
on it, as ``miou["tuned_on"]`` says. A class without a validation finding has no tuned
threshold and no ``miou_tuned``.

Adds ``localization`` to ``metrics``: ``pointing_game`` (cell), ``pointing_game_pixel``,
``overlap`` (with ``miou_otsu``, ``miou_tuned``, ``tuned_threshold``), ``miou`` (what the
thresholds were tuned on), ``headline`` (the key of the headline game), ``baselines`` and, with
``config.eval.bootstrap_draws``, ``bootstrap``: patient-bootstrap intervals of the hit
rates and IoU / IoBB accuracies (:func:`~chestattn_jax.localization_metrics.bootstrap_findings`)
and the model's paired differences against both baselines. ``pointing_game`` is also
kept at the top level, where scripts written for earlier releases read it. Writes the
scores per finding of the model and both baselines to ``localization.npz``
(:func:`~chestattn_jax.localization_metrics.load_findings` reads it back), never a map.
"""

from __future__ import annotations

import os

import numpy as np

from chestattn_jax.evaluation import evaluators
from chestattn_jax.localization_metrics import (
    MIOU_COLUMNS,
    MIOU_THRESHOLDS,
    RATE_COLUMNS,
    LocalizationScores,
    bootstrap_findings,
    build_class_prior,
    save_findings,
)

# Training images the class prior is built from, at most (evenly spaced over the split).
PRIOR_MAX_IMAGES = 2000
FINDINGS_FILE = "localization.npz"
HEADLINE = "pointing_game_pixel"
SOURCES = ("model", "class_prior", "uniform")
# The columns bootstrapped: the rates and the mIoU's per-finding IoUs.
COLUMNS = (*RATE_COLUMNS, *MIOU_COLUMNS)
TUNED_ON_VALIDATION = "validation split"
TUNED_ON_ITSELF = "evaluated split itself (the validation split)"
PAIRS = (("model", "class_prior"), ("model", "uniform"))


def class_prior(train_source, source, truth_rows, num_classes: int):
    """The class-prior baseline
    (:class:`~chestattn_jax.localization_metrics.SplitPrior`): from the training split's
    truth (at most ``PRIOR_MAX_IMAGES`` images) for every class with some, from the
    evaluated split's ``truth_rows`` (left one out) for the others."""
    rows = np.asarray(getattr(train_source, "truth_indices", lambda: [])(), np.int64)
    if len(rows) > PRIOR_MAX_IMAGES:
        rows = rows[np.linspace(0, len(rows) - 1, PRIOR_MAX_IMAGES).astype(np.int64)]
    training = (train_source.truth(int(i)) for i in rows)
    return build_class_prior(
        training, lambda: (source.truth(int(i)) for i in sorted(truth_rows)), num_classes
    )


class Evaluator(evaluators.Evaluator):
    outputs = (FINDINGS_FILE,)

    @staticmethod
    def check_config(p, mode: str) -> None:
        p.fraction("eval.map_threshold", "maps are divided by their maximum, then thresholded")

    def __init__(self, ctx):
        super().__init__(ctx)
        truth = getattr(ctx.source, "truth_indices", None)
        self.truth_rows = set(np.asarray(truth()).tolist()) if truth is not None else set()
        # Maps exist for the attention models only; without truth there is nothing to score.
        self.needs_maps = bool(self.truth_rows) and ctx.config.model.variant != "resnet"
        # The per-class mIoU thresholds are tuned on the validation split's maps, seen in a
        # pass of their own unless the validation split is the one evaluated.
        self.needs_validation_maps = self.needs_maps and ctx.config.eval.split != "validation"
        if not self.needs_maps:
            return
        threshold = ctx.config.eval.map_threshold
        self.scores = {name: LocalizationScores(ctx.classes, threshold) for name in SOURCES}
        self.validation_scores = {
            name: LocalizationScores(ctx.classes, threshold) for name in SOURCES
        }
        self._validation_rows = None
        self.prior = class_prior(ctx.train_source, ctx.source, self.truth_rows, len(ctx.classes))

    def add(self, maps, rows) -> None:
        for r in np.flatnonzero(rows["valid"]):
            i = int(rows["index"][r])
            if i in self.truth_rows:
                self._score(i, maps[r])

    def add_validation(self, maps, rows, source) -> None:
        """One batch of the validation split (``source``), as :meth:`add`: its findings
        are scored for tuning the mIoU thresholds only."""
        if self._validation_rows is None:
            truth = getattr(source, "truth_indices", None)
            self._validation_rows = set(np.asarray(truth()).tolist()) if truth else set()
        for r in np.flatnonzero(rows["valid"]):
            i = int(rows["index"][r])
            if i in self._validation_rows:
                self._score(i, maps[r], source, self.validation_scores, own_split=False)

    def _score(self, i: int, m, source=None, scores=None, own_split: bool = True) -> None:
        truth = (source or self.ctx.source).truth(i)
        scores = self.scores if scores is None else scores
        masks, present = truth["masks"], truth["labels"]
        shape = m.shape[-2:]
        scores["model"].add(m, masks, present, example=i)
        # Without this image's own masks where the prior holds the evaluated split's.
        prior = self.prior.maps(shape, masks, present if own_split else 0 * present)
        scores["class_prior"].add(prior, masks, present, example=i)
        scores["uniform"].add_uniform(shape, masks, present, example=i)

    def finish(self, record, metrics) -> None:
        if not self.needs_maps:
            return
        tuned_on = self.validation_scores if self.needs_validation_maps else self.scores
        for name, s in self.scores.items():
            s.tune(tuned_on[name])
        scores = {
            name: {
                "pointing_game": s.pointing_game(),
                "pointing_game_pixel": s.pointing_game(pixel=True),
                "overlap": s.overlap(),
            }
            for name, s in self.scores.items()
        }
        model = scores.pop("model")
        scores["class_prior"] = {**self.prior.info(self.ctx.classes), **scores["class_prior"]}
        tuning_findings = len(tuned_on["model"].findings()["class"])
        loc = {
            **model,
            "miou": {
                "thresholds": list(MIOU_THRESHOLDS),
                "tuned_on": TUNED_ON_VALIDATION if self.needs_validation_maps else TUNED_ON_ITSELF,
                "tuning_findings": tuning_findings,
            },
            "headline": HEADLINE,
            "baselines": scores,
        }
        # A Record's row i is the split's example i: its ids are the findings'.
        tables = {
            name: s.table(record.example_ids, record.patient_ids) for name, s in self.scores.items()
        }
        if self.ctx.config.eval.bootstrap_draws:
            loc["bootstrap"] = self._bootstrap(record, tables)
        metrics["localization"] = loc
        metrics["pointing_game"] = model["pointing_game"]
        if self.ctx.writes:
            save_findings(os.path.join(self.ctx.out_dir, FINDINGS_FILE), tables)

    def _bootstrap(self, record, tables) -> dict:
        """Intervals of one fold and one training seed: ``rates[source][column]`` and
        ``differences["model - <baseline>"][column]``."""
        config = self.ctx.config.eval
        rates, differences = bootstrap_findings(
            [record.patient_ids],
            {name: [[t]] for name, t in tables.items()},
            list(self.ctx.classes),
            columns=COLUMNS,
            pairs=PAIRS,
            num_draws=config.bootstrap_draws,
            seed=config.bootstrap_seed,
        )
        return {
            "num_draws": config.bootstrap_draws,
            "seed": config.bootstrap_seed,
            "columns": list(COLUMNS),
            "rates": rates,
            "differences": {f"{a} - {b}": d for (a, b), d in differences.items()},
        }
