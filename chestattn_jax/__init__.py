"""chestattn_jax: class-based attention for chest radiograph multi-label classification.

``chestattn_jax.load(workdir)`` restores a trained model for inference in Python
(:mod:`chestattn_jax.trained_model`).
"""

__version__ = "0.1.0"


def load(workdir: str, config=None, checkpoint: str = "best"):
    """The trained model of ``workdir`` (:func:`chestattn_jax.trained_model.load`):
    ``load(w).predict(["a.png", array])`` gives probabilities and attention maps."""
    from chestattn_jax.trained_model import load as _load

    return _load(workdir, config=config, checkpoint=checkpoint)
