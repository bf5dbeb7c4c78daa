"""Evaluation: one inference pass over a split, feeding evaluator plug-ins.

Read in this order:

1. :mod:`.settings`: before anything is computed or written, the config is checked
   against the workdir's training settings, and the output folder is chosen.
2. :mod:`.pipeline`: restores the checkpoint and runs the pass, then the evaluators,
   then writes ``predictions.npz`` and ``metrics.json`` (last: it marks a complete
   evaluation).
3. :mod:`.inference_pass`: the pass itself, and the record it leaves (``predictions.npz``,
   which ``compare`` reads).
4. :mod:`.evaluators`: the plug-ins named by ``config.eval.evaluators``: ``auc``,
   ``localization``, ``figures``, ``tables``; adding one is adding a module there.
5. :mod:`.class_map`: scoring a model on another data set through a class map.
"""

from chestattn_jax.evaluation.inference_pass import Record
from chestattn_jax.evaluation.pipeline import evaluate, evaluate_state, split_metrics
from chestattn_jax.evaluation.settings import (
    check_setting_changes,
    plan_evaluation,
    trained_setting_changes,
)

__all__ = [
    "Record",
    "check_setting_changes",
    "evaluate",
    "evaluate_state",
    "plan_evaluation",
    "split_metrics",
    "trained_setting_changes",
]
