"""ResNet v1.5 backbone that returns every stage's output.

The layer arithmetic follows torchvision's ``resnet50`` exactly (explicit
padding of 3 on the 7x7 stem, 1 on the 3x3 convs and the max-pool, stride on the
3x3 conv of a bottleneck), so that torchvision weights convert one-to-one and
outputs match. Flax's ``'SAME'`` padding would pad stride-2 convs asymmetrically
and break that parity, hence the explicit pads.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

ModuleDef = Any

STAGE_NAMES = ("l1", "l2", "l3", "l4")


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 bottleneck with a projection shortcut when needed."""

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    act: Callable = nn.relu
    strides: int = 1

    @nn.compact
    def __call__(self, x):
        residual = x
        y = self.conv(self.filters, (1, 1), name="conv1")(x)
        y = self.act(self.norm(name="bn1")(y))
        y = self.conv(
            self.filters,
            (3, 3),
            (self.strides, self.strides),
            padding=((1, 1), (1, 1)),
            name="conv2",
        )(y)
        y = self.act(self.norm(name="bn2")(y))
        y = self.conv(self.filters * 4, (1, 1), name="conv3")(y)
        # Zero-init of the last BN scale makes each block start as the identity.
        y = self.norm(scale_init=nn.initializers.zeros_init(), name="bn3")(y)
        if residual.shape != y.shape:
            residual = self.conv(
                self.filters * 4, (1, 1), (self.strides, self.strides), name="downsample_conv"
            )(residual)
            residual = self.norm(name="downsample_bn")(residual)
        return self.act(residual + y)


class ResNet(nn.Module):
    """ResNet v1.5 feature extractor.

    Attributes:
      stage_sizes: blocks per stage, ``(3, 4, 6, 3)`` for ResNet-50.
      num_filters: bottleneck width of the first stage (64 for ResNet-50); stage
        ``s`` has ``num_filters * 2**s`` bottleneck channels and 4x that at its output.
      dtype: compute dtype; parameters and BatchNorm statistics stay float32.

    Returns a dict ``{"l1": (B, H/4, W/4, 4F), "l2": (B, H/8, W/8, 8F),
    "l3": (B, H/16, W/16, 16F), "l4": (B, H/32, W/32, 32F)}`` with F = num_filters.
    """

    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    num_filters: int = 64
    dtype: Any = jnp.float32
    act: Callable = nn.relu
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x, train: bool = False, num_stages: int | None = None):
        """``num_stages``: compute only the first stages (all by default); the
        parameters of the others are neither created nor read."""
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32)
        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=self.bn_momentum,
            epsilon=1e-5,
            dtype=self.dtype,
            param_dtype=jnp.float32,
        )
        x = jnp.asarray(x, self.dtype)
        x = conv(self.num_filters, (7, 7), (2, 2), padding=((3, 3), (3, 3)), name="stem_conv")(x)
        x = self.act(norm(name="stem_bn")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        features = {}
        for i, num_blocks in enumerate(self.stage_sizes[:num_stages]):
            for j in range(num_blocks):
                x = BottleneckBlock(
                    self.num_filters * 2**i,
                    conv=conv,
                    norm=norm,
                    act=self.act,
                    strides=2 if i > 0 and j == 0 else 1,
                    name=f"layer{i + 1}_{j}",
                )(x)
            features[STAGE_NAMES[i]] = x
        return features


ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3))
ResNet101 = functools.partial(ResNet, stage_sizes=(3, 4, 23, 3))
ResNet152 = functools.partial(ResNet, stage_sizes=(3, 8, 36, 3))
