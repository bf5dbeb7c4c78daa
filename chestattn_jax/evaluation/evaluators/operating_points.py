"""Operating points: per class, a threshold chosen on the validation split by each rule of
``config.eval.operating_points`` (``youden``, ``sensitivity>=S``, ``specificity>=S``:
:mod:`chestattn_jax.operating_points`), and the evaluated split's sensitivity,
specificity, PPV, NPV and F1 at it, each with a patient-bootstrap interval; beside them the
threshold-free sensitivity at specificity 0.9 and 0.95 of the evaluated split's ROC.

A class whose validation split cannot give a threshold (no positives, the target out of
reach) has none, with the reason: nothing falls back to 0.5. Adds ``operating_points`` to
``metrics``; writes ``thresholds.json``: the first rule's thresholds (those
``--mode=predict`` calls positives with), the recalibration the ``calibration`` evaluator
fitted (when it ran), and where both were chosen.
"""

from __future__ import annotations

import os

from chestattn_jax import workdir as workdir_lib
from chestattn_jax.evaluation import evaluators
from chestattn_jax.operating_points import (
    choose_thresholds,
    operating_point_summary,
    parse_rule,
    roc_points,
)
from chestattn_jax.reporting import section_pages

THRESHOLDS_FILE = workdir_lib.THRESHOLDS_FILE
SPECIFICITIES = (0.9, 0.95)


class Evaluator(evaluators.Evaluator):
    needs_validation = True
    after = ("calibration",)  # thresholds.json carries its recalibration
    outputs = (THRESHOLDS_FILE,)

    @staticmethod
    def check_config(p, mode: str) -> None:
        rules = p.value("eval.operating_points")
        if not isinstance(rules, list | tuple) or not rules:
            p.add(
                "eval.operating_points",
                "must be a non-empty tuple of rules: youden, sensitivity>=S, specificity>=S "
                "(S between 0 and 1), e.g. \"('youden','sensitivity>=0.9')\".",
            )
            return
        for rule in rules:
            try:
                parse_rule(rule)
            except ValueError as e:
                p.add("eval.operating_points", str(e))
                return
        if len(set(rules)) < len(rules):
            p.add("eval.operating_points", "names a rule more than once.")

    def finish(self, record, metrics) -> None:
        config, classes = self.ctx.config.eval, list(record.classes)
        val = self.ctx.validation
        draws = {"num_draws": config.bootstrap_draws, "seed": config.bootstrap_seed}
        rules = {}
        for rule in config.operating_points:
            chosen = choose_thresholds(val.labels, val.probs, val.mask, classes, rule)
            thresholds = {c: chosen[c]["threshold"] for c in classes}
            rules[rule] = {
                "validation": chosen,
                "test": operating_point_summary(
                    record.labels,
                    record.probs,
                    record.mask,
                    classes,
                    thresholds,
                    record.patient_ids,
                    **draws,
                ),
            }
        metrics["operating_points"] = {
            "rules": rules,
            "chosen_on": f"validation split, {len(val)} images",
            "roc_points": roc_points(
                record.labels,
                record.probs,
                record.mask,
                classes,
                SPECIFICITIES,
                record.patient_ids,
                **draws,
            ),
        }
        page = section_pages.operating_points_page(metrics["operating_points"])
        metrics["operating_points"]["page"] = page
        first = config.operating_points[0]
        chosen = rules[first]["validation"]
        saved = {
            "rule": first,
            "classes": classes,
            "thresholds": {c: chosen[c]["threshold"] for c in classes},
            "reasons": {c: chosen[c]["reason"] for c in classes if chosen[c]["reason"]},
            "chosen_on": metrics["operating_points"]["chosen_on"],
            "step": metrics.get("step"),
            "recalibration": (metrics.get("calibration") or {}).get("recalibration"),
        }
        if self.ctx.writes:
            workdir_lib.write_json(os.path.join(self.ctx.out_dir, THRESHOLDS_FILE), saved)
