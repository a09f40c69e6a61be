"""torchvision-compatible ImageNet ResNets (v1.5) and ResNeXt in Flax Linen.

Numerically equivalent to ``torchvision.models.resnet`` so converted weights give the same
logits: the stride sits on the 3x3 conv of the bottleneck ("v1.5"), every conv uses explicit
symmetric padding (Flax ``'SAME'`` pads stride-2 convs asymmetrically, which shifts the
sampling grid), and the stem max-pool pads with ``-inf`` like PyTorch.

Parameter names follow torchvision (``conv1``, ``bn1``, ``layer1_0/conv2``,
``layer1_0/downsample_conv`` ...) so :func:`convert_torchvision` is a direct walk.

Outputs (``jaxood.Features``): ``feature_map`` = layer4 output ``[B, H/32, W/32, C]``
(post-ReLU), ``feature`` = its global mean ``[B, C]`` (>= 0), ``logits = fc(feature)``.
Intermediate stage outputs are sown into the ``intermediates`` collection as ``stem``,
``layer1`` ... ``layer4`` (only materialised when that collection is mutable).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxood.models import pool
from jaxood.models.layers import BatchNorm as _BatchNorm
from jaxood.models.layers import conv as _conv  # fan-out He init, as torchvision
from jaxood.types import Features


class BasicBlock(nn.Module):
    """torchvision ``BasicBlock``: two 3x3 convs (stride on the first)."""

    planes: int
    stride: int = 1
    downsample: bool = False
    groups: int = 1
    base_width: int = 64

    expansion = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        norm = functools.partial(_BatchNorm, use_running_average=not train)
        y = nn.relu(norm(name="bn1")(_conv(self.planes, 3, self.stride, name="conv1")(x)))
        y = norm(name="bn2")(_conv(self.planes, 3, name="conv2")(y))
        if self.downsample:
            x = norm(name="downsample_bn")(
                _conv(self.planes, 1, self.stride, name="downsample_conv")(x)
            )
        return nn.relu(y + x)


class Bottleneck(nn.Module):
    """torchvision ``Bottleneck`` (v1.5): 1x1 -> 3x3 (stride, groups) -> 1x1 (x4)."""

    planes: int
    stride: int = 1
    downsample: bool = False
    groups: int = 1
    base_width: int = 64

    expansion = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        norm = functools.partial(_BatchNorm, use_running_average=not train)
        width = int(self.planes * (self.base_width / 64.0)) * self.groups
        y = nn.relu(norm(name="bn1")(_conv(width, 1, name="conv1")(x)))
        y = nn.relu(norm(name="bn2")(_conv(width, 3, self.stride, self.groups, name="conv2")(y)))
        y = norm(name="bn3")(_conv(self.planes * 4, 1, name="conv3")(y))
        if self.downsample:
            x = norm(name="downsample_bn")(
                _conv(self.planes * 4, 1, self.stride, name="downsample_conv")(x)
            )
        return nn.relu(y + x)


class ResNet(nn.Module):
    """torchvision ``ResNet``: 7x7/2 stem, 3x3/2 max-pool, four stages, mean pool, ``fc``.

    Attributes:
      block: ``"basic"`` or ``"bottleneck"``.
      layers: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
      num_classes: K.
      groups, width_per_group: ResNeXt cardinality and base width (1, 64 for ResNets).
    """

    block: str
    layers: Sequence[int]
    num_classes: int = 1000
    groups: int = 1
    width_per_group: int = 64

    def setup(self):
        self.fc = nn.Dense(self.num_classes, name="fc")

    @property
    def block_cls(self):
        if self.block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {self.block!r}")
        return BasicBlock if self.block == "basic" else Bottleneck

    @nn.compact
    def __call__(self, x, train: bool = False) -> Features:
        """``x [B, H, W, 3]`` normalised -> ``Features`` (feature ``[B, 512*expansion]``)."""
        block_cls = self.block_cls
        x = _conv(64, 7, 2, name="conv1")(x)
        x = nn.relu(_BatchNorm(use_running_average=not train, name="bn1")(x))
        self.sow("intermediates", "stem", x)
        x = pool.max_pool(x, 3, 2, 1)
        in_planes = 64
        for i, n_blocks in enumerate(self.layers):
            planes = 64 * 2**i
            for j in range(n_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                downsample = j == 0 and (stride != 1 or in_planes != planes * block_cls.expansion)
                x = block_cls(
                    planes,
                    stride=stride,
                    downsample=downsample,
                    groups=self.groups,
                    base_width=self.width_per_group,
                    name=f"layer{i + 1}_{j}",
                )(x, train)
                in_planes = planes * block_cls.expansion
            self.sow("intermediates", f"layer{i + 1}", x)
        feature = jnp.mean(x, axis=(1, 2))
        return Features(logits=self.fc(feature), feature=feature, feature_map=x)

    def head(self, feature):
        """``[B, D] -> [B, K]``: the final ``fc`` layer."""
        return self.fc(feature)


def resnet18(num_classes: int = 1000) -> ResNet:
    return ResNet("basic", (2, 2, 2, 2), num_classes)


def resnet50(num_classes: int = 1000) -> ResNet:
    return ResNet("bottleneck", (3, 4, 6, 3), num_classes)


def resnet101(num_classes: int = 1000) -> ResNet:
    return ResNet("bottleneck", (3, 4, 23, 3), num_classes)


def resnext50_32x4d(num_classes: int = 1000) -> ResNet:
    return ResNet("bottleneck", (3, 4, 6, 3), num_classes, groups=32, width_per_group=4)


def convert_torchvision(sd, module: ResNet) -> dict:
    """Maps a torchvision ResNet/ResNeXt state dict onto ``module``'s variables.

    Args:
      sd: a ``jaxood.convert.common.StateDict``; every key is taken or ignored here, the
        caller calls ``sd.finish()``.
      module: the ``ResNet`` built by ``jaxood.models.create``.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` NumPy trees in Flax layout.
    """
    params, stats = {}, {}

    def conv_bn(conv_key, bn_key, conv_name, bn_name, into_p, into_s):
        into_p[conv_name] = sd.conv(conv_key)
        into_p[bn_name], into_s[bn_name] = sd.batchnorm(bn_key)

    conv_bn("conv1", "bn1", "conv1", "bn1", params, stats)
    block_cls = module.block_cls
    n_convs = 2 if block_cls is BasicBlock else 3
    for i, n_blocks in enumerate(module.layers):
        for j in range(n_blocks):
            tv, name = f"layer{i + 1}.{j}", f"layer{i + 1}_{j}"
            p, s = {}, {}
            for c in range(1, n_convs + 1):
                conv_bn(f"{tv}.conv{c}", f"{tv}.bn{c}", f"conv{c}", f"bn{c}", p, s)
            if j == 0 and _needs_downsample(module, i):
                conv_bn(
                    f"{tv}.downsample.0",
                    f"{tv}.downsample.1",
                    "downsample_conv",
                    "downsample_bn",
                    p,
                    s,
                )
            params[name], stats[name] = p, s
    params["fc"] = sd.linear("fc")
    return {"params": params, "batch_stats": stats}


def _needs_downsample(module: ResNet, stage: int) -> bool:
    """Whether the first block of ``stage`` has a projection shortcut (as torchvision)."""
    expansion = module.block_cls.expansion
    in_planes = 64 if stage == 0 else 64 * 2 ** (stage - 1) * expansion
    return stage > 0 or in_planes != 64 * expansion
