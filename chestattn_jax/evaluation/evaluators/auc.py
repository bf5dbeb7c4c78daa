"""Per-class ROC AUC with 95 % patient-bootstrap intervals, and the class counts.

Adds to ``metrics``: ``auc`` (class: AUC or None), ``mean_auc``, ``undefined_classes``,
``positives``, ``negatives`` and, with ``config.eval.bootstrap_draws``, ``bootstrap``
(:func:`chestattn_jax.metrics.bootstrap_auc`: patients are resampled whole). Every AUC
comes from :func:`chestattn_jax.metrics.per_class_auc` (:func:`~chestattn_jax.metrics.point_auc`,
the library's one AUC code path). With ``config.eval.nih_expert_labels``, also
``expert_labels``: the classes the expert file covers, scored against it on the images it
lists (:mod:`chestattn_jax.evaluation.expert_labels`).
"""

from __future__ import annotations

from chestattn_jax.evaluation import evaluators, expert_labels
from chestattn_jax.metrics import bootstrap_auc, per_class_auc


class Evaluator(evaluators.Evaluator):
    @staticmethod
    def check_config(p, mode: str) -> None:
        p.int("eval.bootstrap_draws", 0, "at least 0 (0: no confidence intervals)")
        p.seed("eval.bootstrap_seed")
        expert_labels.check_config(p, mode)

    def __init__(self, ctx):
        super().__init__(ctx)
        # The expert file is read before the pass: a bad one is named before the model runs.
        # (A config without the field, of an earlier release or a stand-in, names none.)
        path = getattr(getattr(ctx.config, "eval", None), "nih_expert_labels", "")
        self.expert = expert_labels.read_expert_labels(path) if path else None

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
        if self.expert is not None:
            expert_labels.add_expert_metrics(config, self.expert, record, metrics)
