"""Calibration of the probabilities, and a recalibration fitted on the validation split.

Adds ``calibration`` to ``metrics``: per class and mean, the expected calibration error
(``config.eval.calibration_bins`` bins, ``config.eval.calibration_binning``) and the Brier
score on the evaluated split, each with a patient-bootstrap interval
(:func:`chestattn_jax.calibration.calibration_summary`), ``before`` and ``after`` a
recalibration fitted per class on the validation split (``config.eval.recalibration``:
Platt scaling by default, see :mod:`chestattn_jax.calibration`), whose parameters it keeps
(``recalibration``; ``thresholds.json`` carries them beside the thresholds), and each
class's reliability curve before and after. A recalibration is monotone increasing: it
never changes an AUC. Writes ``reliability.png`` (a reliability diagram per class, before
and after).
"""

from __future__ import annotations

import os

from chestattn_jax.calibration import (
    BINNINGS,
    METHODS,
    apply_recalibration,
    calibration_summary,
    fit_recalibration,
    reliability_curve,
)
from chestattn_jax.evaluation import evaluators
from chestattn_jax.reporting import section_pages

FIGURE = "reliability.png"


class Evaluator(evaluators.Evaluator):
    needs_validation = True
    outputs = (FIGURE,)

    @staticmethod
    def check_config(p, mode: str) -> None:
        p.int("eval.calibration_bins", 2, "at least 2")
        p.choice("eval.calibration_binning", BINNINGS)
        p.choice("eval.recalibration", METHODS)

    def finish(self, record, metrics) -> None:
        config, classes = self.ctx.config.eval, list(record.classes)
        val = self.ctx.validation
        params = fit_recalibration(val.probs, val.labels, val.mask, classes, config.recalibration)
        recalibrated = apply_recalibration(record.probs, params)
        options = {"num_bins": config.calibration_bins, "binning": config.calibration_binning}
        draws = {
            "num_draws": config.bootstrap_draws,
            "seed": config.bootstrap_seed,
        }

        def summary(probs):
            return calibration_summary(
                record.labels, probs, record.mask, classes, record.patient_ids, **options, **draws
            )

        curves = {}
        for j, c in enumerate(classes):
            keep = record.mask[:, j] > 0
            if keep.any():
                curves[c] = {
                    when: reliability_curve(p[keep, j], record.labels[keep, j], **options)
                    for when, p in (("before", record.probs), ("after", recalibrated))
                }
        metrics["calibration"] = {
            "before": summary(record.probs),
            "after": summary(recalibrated),
            "recalibration": params,
            "fitted_on": f"validation split, {len(val)} images",
            "reliability": curves,
        }
        page = section_pages.calibration_page(metrics["calibration"], metrics.get("split", ""))
        metrics["calibration"]["page"] = page
        if self.ctx.writes and curves:
            from chestattn_jax.reporting import plots

            plots.reliability_diagrams(curves, os.path.join(self.ctx.out_dir, FIGURE))
