"""Wide ResNet (Zagoruyko & Komodakis) exactly as OpenOOD's ``openood/networks/wrn.py``.

Pre-activation basic blocks: ``BN -> ReLU -> conv3x3(stride) -> BN -> ReLU -> (dropout) ->
conv3x3``. When a block changes the width, the *pre-activated* input feeds both ``conv1``
and the 1x1 projection shortcut; otherwise the raw input is the identity shortcut. A final
``BN -> ReLU`` gives the pre-pool ``feature_map`` (640x8x8 for WRN-28-10 on 32x32; what NAP
and ASH read), its spatial mean is the ``feature`` (OpenOOD's ``avg_pool2d(8)`` on 32x32
inputs; a global mean so that smaller inputs such as 8x8 or 28x28 work too).

Initialisation as the reference: convs He-normal with fan-out, BN (1, 0), fc bias 0, fc
weight PyTorch's default ``U(+-1/sqrt(fan_in))``. Parameter names mirror the PyTorch
state-dict (``block1/layer_0/conv1`` for ``block1.layer.0.conv1``).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

from jaxood.models.layers import TORCH_DEFAULT, conv
from jaxood.models.layers import BatchNorm as _BatchNorm
from jaxood.types import Features


class WRNBlock(nn.Module):
    """OpenOOD/WRN pre-activation ``BasicBlock``."""

    out_planes: int
    stride: int = 1
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        norm = functools.partial(_BatchNorm, use_running_average=not train)
        equal_in_out = x.shape[-1] == self.out_planes
        pre = nn.relu(norm(name="bn1")(x))
        if not equal_in_out:
            x = pre  # the projection shortcut reads the pre-activated input (as the reference)
        out = conv(self.out_planes, 3, self.stride, name="conv1")(pre)
        out = nn.relu(norm(name="bn2")(out))
        if self.dropout_rate > 0:
            out = nn.Dropout(self.dropout_rate, deterministic=not train)(out)
        out = conv(self.out_planes, 3, name="conv2")(out)
        shortcut = (
            x if equal_in_out else conv(self.out_planes, 1, self.stride, name="convShortcut")(x)
        )
        return shortcut + out


class WideResNet(nn.Module):
    """WRN-depth-k for CIFAR-style inputs.

    Attributes:
      num_classes: K.
      depth: 6n + 4 (28 for the paper's WRN-28-10).
      widen_factor: k; group widths are 16k, 32k, 64k.
      dropout_rate: dropout inside blocks (0 in OpenOOD/AdaSCALE; 0.3 in the WRN paper).
    """

    num_classes: int = 10
    depth: int = 28
    widen_factor: int = 10
    dropout_rate: float = 0.0

    def setup(self):
        if (self.depth - 4) % 6 or self.depth < 10:
            raise ValueError(f"WideResNet depth must be 6n+4 with n >= 1, got {self.depth}")
        if self.widen_factor < 1:
            raise ValueError(f"widen_factor must be >= 1, got {self.widen_factor}")
        self.fc = nn.Dense(
            self.num_classes, kernel_init=TORCH_DEFAULT, bias_init=nn.initializers.zeros, name="fc"
        )

    @property
    def feature_dim(self) -> int:
        return 64 * self.widen_factor

    @nn.compact
    def __call__(self, x, train: bool = False) -> Features:
        """``x [B, H, W, C]`` normalised -> ``Features`` (feature ``[B, 64k]``, map ``[B, H/4, W/4, 64k]``)."""
        n = (self.depth - 4) // 6
        widths = (16 * self.widen_factor, 32 * self.widen_factor, 64 * self.widen_factor)
        x = conv(16, 3, name="conv1")(x)
        for g, (width, stride) in enumerate(zip(widths, (1, 2, 2))):
            for i in range(n):
                x = WRNBlock(
                    width,
                    stride if i == 0 else 1,
                    self.dropout_rate,
                    name=f"block{g + 1}_layer_{i}",
                )(x, train)
        fmap = nn.relu(_BatchNorm(use_running_average=not train, name="bn1")(x))
        feature = jnp.mean(fmap, axis=(1, 2))
        return Features(logits=self.fc(feature), feature=feature, feature_map=fmap)

    def head(self, feature):
        """``[B, D] -> [B, K]``: the final ``fc`` layer."""
        return self.fc(feature)


def wrn28_10(num_classes: int = 10, dropout_rate: float = 0.0) -> WideResNet:
    """WRN-28-10 (OpenOOD/AdaSCALE ``'wrn'``: 36.5M parameters, 640-d feature)."""
    return WideResNet(num_classes=num_classes, depth=28, widen_factor=10, dropout_rate=dropout_rate)


def wrn16_4(num_classes: int = 10, dropout_rate: float = 0.0) -> WideResNet:
    """WRN-16-4 (2.7M parameters, 256-d feature)."""
    return WideResNet(num_classes=num_classes, depth=16, widen_factor=4, dropout_rate=dropout_rate)
