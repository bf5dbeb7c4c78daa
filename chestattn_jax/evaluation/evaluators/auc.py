"""Per-class ROC AUC with 95 % patient-bootstrap intervals, and the class counts.

Adds to ``metrics``: ``auc`` (class: AUC or None), ``mean_auc``, ``undefined_classes``,
``positives``, ``negatives`` and, with ``config.eval.bootstrap_draws``, ``bootstrap``
(:func:`chestattn_jax.metrics.bootstrap_auc`: patients are resampled whole). Every AUC
comes from :func:`chestattn_jax.metrics.point_auc`, the library's one AUC code path.
"""

from __future__ import annotations

import numpy as np

from chestattn_jax.evaluation import evaluators
from chestattn_jax.metrics import bootstrap_auc, point_auc


def per_class_auc(labels, probs, mask, class_names) -> dict:
    """ROC AUC of each class over its unmasked examples, and their mean.

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


class Evaluator(evaluators.Evaluator):
    @staticmethod
    def check_config(p, mode: str) -> None:
        p.int("eval.bootstrap_draws", 0, "at least 0 (0: no confidence intervals)")
        p.seed("eval.bootstrap_seed")

    def finish(self, record, metrics) -> None:
        classes, config = list(record.classes), self.ctx.config
        metrics.update(per_class_auc(record.labels, record.probs, record.mask, classes))
        keep = record.mask > 0
        for name, value in (("positives", 1), ("negatives", 0)):
            counts = ((record.labels == value) & keep).sum(0).tolist()
            metrics[name] = dict(zip(classes, counts, strict=True))
        if config.eval.bootstrap_draws:
            metrics["bootstrap"] = bootstrap_auc(
                record.labels,
                record.probs,
                record.mask,
                classes,
                record.patient_ids,
                num_draws=config.eval.bootstrap_draws,
                seed=config.eval.bootstrap_seed,
            )
