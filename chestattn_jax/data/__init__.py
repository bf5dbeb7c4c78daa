"""Data: class lists, sources and grain pipelines."""

from chestattn_jax.data.classes import CHEXPERT_CLASSES, NIH_CLASSES
from chestattn_jax.data.input_pipeline import create_source, eval_batches, train_dataset
from chestattn_jax.data.synthetic import SYNTHETIC_CLASSES, SyntheticChestXray

__all__ = [
    "CHEXPERT_CLASSES",
    "NIH_CLASSES",
    "SYNTHETIC_CLASSES",
    "SyntheticChestXray",
    "create_source",
    "eval_batches",
    "train_dataset",
]
