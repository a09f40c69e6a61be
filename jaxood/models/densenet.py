"""DenseNet-BC (Huang et al.) exactly as OpenOOD's ``openood/networks/densenet.py`` (``DenseNet3``).

DenseNet-BC-100-12 (``densenet_bc_100``) is the "DenseNet-101" of AdaSCALE/NAP/DICE: a
3x3 stem to 2k channels, three dense blocks of 16 bottleneck layers (``BN-ReLU-conv1x1 to
4k -> BN-ReLU-conv3x3 to k``, concatenated), transitions ``BN-ReLU-conv1x1 (x0.5, floor)
-> avgpool 2``; channels 24 -> 216 -> 108 -> 300 -> 150 -> 342. A final ``BN -> ReLU``
gives the pre-pool ``feature_map`` (342x8x8 on 32x32), its global mean the 342-d
``feature``.

Init as the reference: convs He-normal fan-out, BN (1, 0), fc bias 0, fc weight PyTorch
default. Parameter names mirror the PyTorch state dict (``block1_layer_0/conv1`` for
``block1.layer.0.conv1``).
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax.numpy as jnp

from jaxood.models.layers import TORCH_DEFAULT, conv
from jaxood.models.layers import BatchNorm as _BatchNorm
from jaxood.types import Features


class DenseLayer(nn.Module):
    """One (bottleneck) dense layer; returns ``concat([x, new], -1)``."""

    growth_rate: int
    bottleneck: bool = True
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        norm = functools.partial(_BatchNorm, use_running_average=not train)
        drop = lambda y: (
            nn.Dropout(self.dropout_rate, deterministic=not train)(y)
            if self.dropout_rate > 0
            else y
        )
        y = x
        if self.bottleneck:
            y = drop(conv(4 * self.growth_rate, 1, name="conv1")(nn.relu(norm(name="bn1")(y))))
            y = drop(conv(self.growth_rate, 3, name="conv2")(nn.relu(norm(name="bn2")(y))))
        else:
            y = drop(conv(self.growth_rate, 3, name="conv1")(nn.relu(norm(name="bn1")(y))))
        return jnp.concatenate([x, y], axis=-1)


class Transition(nn.Module):
    """``BN -> ReLU -> conv1x1 -> (dropout) -> avgpool 2``."""

    out_planes: int
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = nn.relu(_BatchNorm(use_running_average=not train, name="bn1")(x))
        y = conv(self.out_planes, 1, name="conv1")(y)
        if self.dropout_rate > 0:
            y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        return nn.avg_pool(y, (2, 2), strides=(2, 2))


class DenseNetBC(nn.Module):
    """DenseNet(-BC) for CIFAR-style inputs (OpenOOD ``DenseNet3``).

    Attributes:
      num_classes: K.
      depth: total depth; each block has ``(depth - 4) / 3`` layers, halved with bottlenecks.
      growth_rate: k.
      reduction: transition compression (0.5 for -BC).
      bottleneck: use 1x1 bottlenecks (the "B" of BC).
      dropout_rate: 0 in OpenOOD/AdaSCALE.
    """

    num_classes: int = 10
    depth: int = 100
    growth_rate: int = 12
    reduction: float = 0.5
    bottleneck: bool = True
    dropout_rate: float = 0.0

    def setup(self):
        per_block = (self.depth - 4) / 3
        if per_block != int(per_block) or per_block < 1 or (self.bottleneck and per_block % 2):
            raise ValueError(
                f"DenseNet depth {self.depth} is invalid: (depth - 4) must be divisible by 3 "
                "(and by 6 with bottlenecks)"
            )
        self.fc = nn.Dense(
            self.num_classes, kernel_init=TORCH_DEFAULT, bias_init=nn.initializers.zeros, name="fc"
        )

    @nn.compact
    def __call__(self, x, train: bool = False) -> Features:
        """``x [B, H, W, C]`` normalised -> ``Features`` (342-d feature for BC-100-12)."""
        n = (self.depth - 4) // 3
        if self.bottleneck:
            n //= 2
        planes = 2 * self.growth_rate
        x = conv(planes, 3, name="conv1")(x)
        for b in range(3):
            for i in range(n):
                x = DenseLayer(
                    self.growth_rate,
                    self.bottleneck,
                    self.dropout_rate,
                    name=f"block{b + 1}_layer_{i}",
                )(x, train)
            planes += n * self.growth_rate
            if b < 2:
                planes = int(math.floor(planes * self.reduction))
                x = Transition(planes, self.dropout_rate, name=f"trans{b + 1}")(x, train)
        fmap = nn.relu(_BatchNorm(use_running_average=not train, name="bn1")(x))
        feature = jnp.mean(fmap, axis=(1, 2))
        return Features(logits=self.fc(feature), feature=feature, feature_map=fmap)

    def head(self, feature):
        """``[B, D] -> [B, K]``: the final ``fc`` layer."""
        return self.fc(feature)


def densenet_bc_100(num_classes: int = 10, dropout_rate: float = 0.0) -> DenseNetBC:
    """DenseNet-BC-100-12, the papers' "DenseNet-101" (0.77M parameters, 342-d feature)."""
    return DenseNetBC(num_classes=num_classes, dropout_rate=dropout_rate)
