"""torchvision-compatible ImageNet DenseNet (DenseNet-201) in Flax Linen.

Mirrors ``torchvision.models.densenet``: 7x7/2 stem (pad 3) -> BN-ReLU -> 3x3/2 max-pool
(pad 1, ``-inf``) -> dense blocks (BN-ReLU-1x1 conv to ``bn_size * growth`` -> BN-ReLU-3x3
conv to ``growth``, concatenated) separated by transitions (BN-ReLU-1x1 conv halving the
channels -> 2x2/2 average pool) -> ``norm5`` -> ReLU -> global mean -> ``classifier``.

Parameter names follow torchvision (``conv0``, ``denseblock1/denselayer1/norm1``,
``transition1/conv``, ``norm5``, ``classifier``). The CIFAR DenseNet-BC of the AdaSCALE paper
is a different network (``jaxood.models.densenet``).

Outputs (``jaxood.Features``): ``feature_map`` = ReLU(norm5) ``[B, H/32, W/32, 1920]``,
``feature`` = its global mean ``[B, 1920]`` (>= 0), ``logits = classifier(feature)``.
Sown ``intermediates``: ``stem`` (after ReLU, before the max-pool), ``block{i}`` (dense block
outputs) and ``trans{i}`` (transition outputs).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxood.models import pool
from jaxood.models.layers import HE_FAN_IN, conv
from jaxood.models.layers import BatchNorm as _BatchNorm
from jaxood.types import Features

# torchvision DenseNet initialises convs with kaiming_normal_ on the fan-in.
_conv = functools.partial(conv, init=HE_FAN_IN)


class DenseLayer(nn.Module):
    """BN-ReLU-Conv1x1(bn_size*growth)-BN-ReLU-Conv3x3(growth); returns only the new maps."""

    growth_rate: int
    bn_size: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        norm = functools.partial(_BatchNorm, use_running_average=not train)
        y = _conv(self.bn_size * self.growth_rate, 1, name="conv1")(nn.relu(norm(name="norm1")(x)))
        return _conv(self.growth_rate, 3, name="conv2")(nn.relu(norm(name="norm2")(y)))


class DenseBlock(nn.Module):
    num_layers: int
    growth_rate: int
    bn_size: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i in range(self.num_layers):
            new = DenseLayer(self.growth_rate, self.bn_size, name=f"denselayer{i + 1}")(x, train)
            x = jnp.concatenate([x, new], axis=-1)
        return x


class Transition(nn.Module):
    out_features: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(_BatchNorm(use_running_average=not train, name="norm")(x))
        x = _conv(self.out_features, 1, name="conv")(x)
        return nn.avg_pool(x, (2, 2), strides=(2, 2))


class DenseNet(nn.Module):
    """torchvision ``DenseNet``.

    Attributes:
      growth_rate: channels each dense layer adds (32).
      block_config: layers per dense block, ``(6, 12, 48, 32)`` for DenseNet-201.
      num_init_features: stem channels (64).
      bn_size: bottleneck width multiplier (4).
      num_classes: K.
    """

    growth_rate: int = 32
    block_config: Sequence[int] = (6, 12, 48, 32)
    num_init_features: int = 64
    bn_size: int = 4
    num_classes: int = 1000

    def setup(self):
        # torchvision zero-initialises the classifier bias; kernel keeps the default init.
        self.classifier = nn.Dense(self.num_classes, name="classifier")

    @nn.compact
    def __call__(self, x, train: bool = False) -> Features:
        """``x [B, H, W, 3]`` normalised -> ``Features`` (feature ``[B, num_features]``)."""
        x = _conv(self.num_init_features, 7, 2, name="conv0")(x)
        x = nn.relu(_BatchNorm(use_running_average=not train, name="norm0")(x))
        self.sow("intermediates", "stem", x)
        x = pool.max_pool(x, 3, 2, 1)
        num_features = self.num_init_features
        for i, n in enumerate(self.block_config):
            x = DenseBlock(n, self.growth_rate, self.bn_size, name=f"denseblock{i + 1}")(x, train)
            self.sow("intermediates", f"block{i + 1}", x)
            num_features += n * self.growth_rate
            if i != len(self.block_config) - 1:
                num_features //= 2
                x = Transition(num_features, name=f"transition{i + 1}")(x, train)
                self.sow("intermediates", f"trans{i + 1}", x)
        x = nn.relu(_BatchNorm(use_running_average=not train, name="norm5")(x))
        feature = jnp.mean(x, axis=(1, 2))
        return Features(logits=self.classifier(feature), feature=feature, feature_map=x)

    def head(self, feature):
        """``[B, D] -> [B, K]``: the final ``classifier`` layer."""
        return self.classifier(feature)


def densenet201(num_classes: int = 1000) -> DenseNet:
    """DenseNet-201 (growth 32, blocks 6/12/48/32, 1920-d feature)."""
    return DenseNet(32, (6, 12, 48, 32), 64, 4, num_classes)


# torchvision's official DenseNet files predate a rename: "denselayer1.norm.1.weight" is now
# "denselayer1.norm1.weight" (torchvision.models.densenet._load_state_dict does the same).
_LEGACY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def torchvision_key_fixes(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Renames legacy ``norm.1``-style keys of the published DenseNet files."""
    out = {}
    for k, v in tensors.items():
        m = _LEGACY.match(k)
        out[m.group(1) + m.group(2) if m else k] = v
    return out


def convert_torchvision(sd, module: DenseNet) -> dict:
    """Maps a torchvision DenseNet state dict onto ``module``'s variables.

    Args:
      sd: a ``jaxood.convert.common.StateDict`` (the caller calls ``sd.finish()``).
      module: the ``DenseNet`` built by ``jaxood.models.create``.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` NumPy trees in Flax layout.
    """
    params, stats = {}, {}

    def bn(key, name, p, s):
        p[name], s[name] = sd.batchnorm(key)

    params["conv0"] = sd.conv("features.conv0")
    bn("features.norm0", "norm0", params, stats)
    for i, n in enumerate(module.block_config):
        bp, bs = {}, {}
        for j in range(n):
            tv = f"features.denseblock{i + 1}.denselayer{j + 1}"
            lp, ls = {}, {}
            bn(f"{tv}.norm1", "norm1", lp, ls)
            lp["conv1"] = sd.conv(f"{tv}.conv1")
            bn(f"{tv}.norm2", "norm2", lp, ls)
            lp["conv2"] = sd.conv(f"{tv}.conv2")
            bp[f"denselayer{j + 1}"], bs[f"denselayer{j + 1}"] = lp, ls
        params[f"denseblock{i + 1}"], stats[f"denseblock{i + 1}"] = bp, bs
        if i != len(module.block_config) - 1:
            tv = f"features.transition{i + 1}"
            tp, ts = {}, {}
            bn(f"{tv}.norm", "norm", tp, ts)
            tp["conv"] = sd.conv(f"{tv}.conv")
            params[f"transition{i + 1}"], stats[f"transition{i + 1}"] = tp, ts
    bn("features.norm5", "norm5", params, stats)
    params["classifier"] = sd.linear("classifier")
    return {"params": params, "batch_stats": stats}
