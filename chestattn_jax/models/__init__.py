"""Flax models: the ResNet v1.5 backbone, attention gates and the three variants."""

from chestattn_jax.models.attention import AttentionGate, ClassAttentionHeads, attend
from chestattn_jax.models.nets import VARIANTS, ChestAttentionNet, create_model
from chestattn_jax.models.resnet import ResNet, ResNet50

__all__ = [
    "VARIANTS",
    "AttentionGate",
    "ChestAttentionNet",
    "ClassAttentionHeads",
    "ResNet",
    "ResNet50",
    "attend",
    "create_model",
]
