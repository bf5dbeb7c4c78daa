"""AUC per class and mean within subgroups of the evaluated split (sex, age band, view),
each against the rest of the split, with patient-bootstrap intervals
(:func:`chestattn_jax.subgroups.subgroup_auc`).

Adds ``subgroups`` to ``metrics``. The subgroups come from the record's attributes (the
source's ``attributes()``: NIH's and CheXpert's prepared index, the phantoms' own); a
record without them (a source without, or an earlier release's predictions) lists them
under ``missing``. Options: ``config.eval.subgroup_age_bands`` (band edges in years,
default :data:`~chestattn_jax.subgroups.AGE_BANDS`), ``config.eval.subgroup_min_positives``
(default :data:`~chestattn_jax.subgroups.MIN_POSITIVES`), and the ``auc`` evaluator's
``bootstrap_draws`` and ``bootstrap_seed``, so that the draws are that evaluator's.
"""

from __future__ import annotations

from chestattn_jax.evaluation import evaluators
from chestattn_jax.reporting import section_pages
from chestattn_jax.subgroups import AGE_BANDS, MIN_POSITIVES, age_bands_problem, subgroup_auc


def _option(config_eval, name: str, default):
    """``config.eval.<name>``, or ``default`` in a config without the field."""
    return getattr(config_eval, name, default)


class Evaluator(evaluators.Evaluator):
    @staticmethod
    def check_config(p, mode: str) -> None:
        fields = p.value("eval")
        if "subgroup_age_bands" in fields:
            problem = age_bands_problem(p.value("eval.subgroup_age_bands"))
            if problem:
                p.add("eval.subgroup_age_bands", problem)
        if "subgroup_min_positives" in fields:
            p.int(
                "eval.subgroup_min_positives",
                1,
                "at least 1: the fewest positives (and negatives) a class needs in a subgroup "
                "and in the rest of the split to be scored there",
            )

    def finish(self, record, metrics) -> None:
        config = self.ctx.config.eval
        metrics["subgroups"] = subgroup_auc(
            record.labels,
            record.probs,
            record.mask,
            list(record.classes),
            record.patient_ids,
            getattr(record, "attributes", None) or {},
            age_bands=tuple(_option(config, "subgroup_age_bands", AGE_BANDS)),
            min_positives=_option(config, "subgroup_min_positives", MIN_POSITIVES),
            num_draws=config.bootstrap_draws,
            seed=config.bootstrap_seed,
        )
        metrics["subgroups"]["page"] = section_pages.subgroups_page(metrics["subgroups"])
