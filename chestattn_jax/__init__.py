"""chestattn_jax: class-based attention for chest radiograph multi-label classification.

``chestattn_jax.load(workdir)`` restores a trained model for inference in Python
(:mod:`chestattn_jax.trained_model`).
"""

__version__ = "0.1.0"


def load(workdir: str, config=None, checkpoint: str = "best", thresholds=None):
    """The trained model of ``workdir`` (:func:`chestattn_jax.trained_model.load`):
    ``load(w).predict(["a.png", array])`` gives probabilities, attention maps and, where the
    workdir's evaluation chose thresholds (or ``thresholds`` names a thresholds.json), the
    per-class calls."""
    from chestattn_jax.trained_model import load as _load

    return _load(workdir, config=config, checkpoint=checkpoint, thresholds=thresholds)
