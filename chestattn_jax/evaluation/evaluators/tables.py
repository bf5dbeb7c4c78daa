"""The per-class table, as ``per_class.csv`` and ``per_class.md``: AUC with its 95 %
interval, positives and negatives, and where there is truth the model's localisation
scores beside its baselines'. It tabulates what the evaluators before it in
``config.eval.evaluators`` added to ``metrics``
(:func:`chestattn_jax.reporting.result_tables.per_class_rows`).
"""

from __future__ import annotations

import os

from chestattn_jax import workdir as workdir_lib
from chestattn_jax.evaluation import evaluators
from chestattn_jax.reporting import result_tables


class Evaluator(evaluators.Evaluator):
    after = ("auc", "localization")
    requires = (("auc", "tables tabulates the AUCs"),)
    outputs = ("per_class.csv", "per_class.md")

    def finish(self, record, metrics) -> None:
        if not self.ctx.writes:
            return
        rows = result_tables.per_class_rows(
            metrics, list(record.classes), list(record.evaluated_as)
        )
        out = self.ctx.out_dir
        workdir_lib.write_text(
            os.path.join(out, "per_class.csv"), result_tables.per_class_csv(rows)
        )
        workdir_lib.write_text(
            os.path.join(out, "per_class.md"), result_tables.per_class_markdown(metrics, rows)
        )
