"""OpenOOD's ``ResNet18_32x32`` (``openood/networks/resnet18_32x32.py``) in Flax.

A 3x3 stem to 64 channels (BN, ReLU, no max-pool), four stages of two basic blocks
(64/128/256/512, strides 1/2/2/2, 1x1-conv+BN projection shortcuts), the post-ReLU layer4
output as ``feature_map`` (512x4x4 on 32x32 inputs), its global mean the 512-d ``feature``.

Init: the reference keeps PyTorch's default initialisation (no init loop), so convs and
the fc weight are ``U(+-1/sqrt(fan_in))`` and the fc bias ``U(+-1/sqrt(fan_in))``.
Parameter names mirror the PyTorch state dict (``layer1_0/conv1``, ``layer2_0/shortcut_conv``).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxood.models.layers import TORCH_DEFAULT, conv
from jaxood.models.layers import BatchNorm as _BatchNorm
from jaxood.types import Features


def _torch_bias_init(fan_in: int):
    bound = 1.0 / fan_in**0.5
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
        key, shape, dtype, -bound, bound
    )


class CifarBasicBlock(nn.Module):
    """Post-activation basic block with a 1x1 projection shortcut when the shape changes."""

    planes: int
    stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        norm = functools.partial(_BatchNorm, use_running_average=not train)
        y = nn.relu(
            norm(name="bn1")(conv(self.planes, 3, self.stride, name="conv1", init=TORCH_DEFAULT)(x))
        )
        y = norm(name="bn2")(conv(self.planes, 3, name="conv2", init=TORCH_DEFAULT)(y))
        if self.stride != 1 or x.shape[-1] != self.planes:
            x = conv(self.planes, 1, self.stride, name="shortcut_conv", init=TORCH_DEFAULT)(x)
            x = norm(name="shortcut_bn")(x)
        return nn.relu(y + x)


class ResNet18_32x32(nn.Module):  # noqa: N801 - OpenOOD's name
    """OpenOOD ResNet-18 for 32x32 inputs (works on any size >= 8)."""

    num_classes: int = 10
    stage_sizes: tuple[int, ...] = (2, 2, 2, 2)

    def setup(self):
        self.fc = nn.Dense(
            self.num_classes,
            kernel_init=TORCH_DEFAULT,
            bias_init=_torch_bias_init(512),
            name="fc",
        )

    @nn.compact
    def __call__(self, x, train: bool = False) -> Features:
        """``x [B, H, W, C]`` normalised -> ``Features`` (feature ``[B, 512]``)."""
        x = conv(64, 3, name="conv1", init=TORCH_DEFAULT)(x)
        x = nn.relu(_BatchNorm(use_running_average=not train, name="bn1")(x))
        for i, n_blocks in enumerate(self.stage_sizes):
            for j in range(n_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                x = CifarBasicBlock(64 * 2**i, stride, name=f"layer{i + 1}_{j}")(x, train)
        feature = jnp.mean(x, axis=(1, 2))
        return Features(logits=self.fc(feature), feature=feature, feature_map=x)

    def head(self, feature):
        """``[B, D] -> [B, K]``: the final ``fc`` layer."""
        return self.fc(feature)


def resnet18_32x32(num_classes: int = 10) -> ResNet18_32x32:
    """OpenOOD ResNet-18_32x32 (11.2M parameters, 512-d feature)."""
    return ResNet18_32x32(num_classes=num_classes)


def convert_torchvision(sd, module: ResNet18_32x32) -> dict:
    """Maps an OpenOOD ``ResNet18_32x32`` state dict onto ``module``'s variables.

    Keys as in ``openood/networks/resnet18_32x32.py``: ``conv1``, ``bn1``,
    ``layer{i}.{j}.conv{1,2}`` / ``bn{1,2}``, ``layer{i}.{j}.shortcut.{0,1}`` (projection conv
    and BN) and ``fc``. ``sd`` is a ``jaxood.convert.common.StateDict``; the caller's
    ``sd.finish()`` reports unmapped keys. Returns ``{"params", "batch_stats"}``.
    """
    params, stats = {"conv1": sd.conv("conv1")}, {}
    params["bn1"], stats["bn1"] = sd.batchnorm("bn1")
    in_planes = 64
    for i, n_blocks in enumerate(module.stage_sizes):
        planes = 64 * 2**i
        for j in range(n_blocks):
            tv, name = f"layer{i + 1}.{j}", f"layer{i + 1}_{j}"
            p, s = {}, {}
            for c in (1, 2):
                p[f"conv{c}"] = sd.conv(f"{tv}.conv{c}")
                p[f"bn{c}"], s[f"bn{c}"] = sd.batchnorm(f"{tv}.bn{c}")
            stride = 2 if (i > 0 and j == 0) else 1
            if stride != 1 or in_planes != planes:  # as CifarBasicBlock / OpenOOD BasicBlock
                p["shortcut_conv"] = sd.conv(f"{tv}.shortcut.0")
                p["shortcut_bn"], s["shortcut_bn"] = sd.batchnorm(f"{tv}.shortcut.1")
            in_planes = planes
            params[name], stats[name] = p, s
    params["fc"] = sd.linear("fc")
    return {"params": params, "batch_stats": stats}
