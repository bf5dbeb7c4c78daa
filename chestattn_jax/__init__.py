"""chestattn_jax: class-based attention for chest radiograph multi-label classification."""

__version__ = "0.1.0"
