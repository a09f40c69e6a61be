"""RegNet (X and Y) in Flax Linen, numerically compatible with ``torchvision.models.regnet``.

The architecture follows Radosavovic et al., "Designing Network Design Spaces" (2020), as
implemented by torchvision: a 3x3/2 conv-BN-ReLU stem, four stages of residual bottleneck
blocks (1x1 -> grouped 3x3 (stride on the 3x3) -> [SE] -> 1x1, projection shortcut when the
shape changes, ReLU after the sum), global average pooling and one Linear layer.

Per-stage widths/depths/group widths are derived from the quantised-linear parameters
``(depth, w_0, w_a, w_m, group_width)`` exactly as torchvision's
``BlockParams.from_init_params`` does (in float32, so rounding ties land the same way).

:func:`convert_torchvision` maps a torchvision RegNet state dict onto this module.
Stage outputs are sown into the ``"intermediates"`` collection as ``stem``, ``stage1`` ...
``stage4`` (torchvision ``stem``, ``trunk_output.block1`` ... ``block4``); pass
``mutable=["intermediates"]`` to ``apply`` to get them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxood.types import Features

# torchvision's RegNet uses BatchNorm2d(eps=1e-5, momentum=0.1) == Flax momentum 0.9.
_BN_EPS = 1e-5
_BN_MOMENTUM = 0.9


def make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
    """``torchvision.models._utils._make_divisible``: round ``v`` to a multiple of ``divisor``.

    Rounds to the nearest multiple (at least ``min_value``) but never more than 10% down.
    """
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


@dataclasses.dataclass(frozen=True)
class BlockParams:
    """Per-stage RegNet settings (one entry per stage).

    Attributes:
      depths: number of blocks per stage.
      widths: output channels per stage.
      group_widths: channels per group of the 3x3 conv per stage.
      bottleneck_multipliers: bottleneck width / output width per stage.
      strides: stride of the first block of each stage.
      se_ratio: squeeze-excitation ratio w.r.t. the *block input* width (RegNet-Y), or None
        for no SE (RegNet-X).
    """

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    group_widths: tuple[int, ...]
    bottleneck_multipliers: tuple[float, ...]
    strides: tuple[int, ...]
    se_ratio: float | None = None

    @classmethod
    def from_init_params(
        cls,
        depth: int,
        w_0: int,
        w_a: float,
        w_m: float,
        group_width: int,
        bottleneck_multiplier: float = 1.0,
        se_ratio: float | None = None,
    ) -> BlockParams:
        """The quantised-linear RegNet parametrisation, as torchvision computes it.

        Block ``j`` has continuous width ``u_j = w_0 + w_a * j``; it is snapped to
        ``w_0 * w_m**round(log(u_j / w_0) / log(w_m))`` and quantised to a multiple of 8.
        Consecutive blocks of equal width form a stage (each stage has stride 2).
        """
        if w_a < 0 or w_0 <= 0 or w_m <= 1 or w_0 % 8 != 0:
            raise ValueError(
                f"invalid RegNet settings w_0={w_0}, w_a={w_a}, w_m={w_m} "
                "(need w_a >= 0, w_0 > 0 divisible by 8, w_m > 1)"
            )
        quant = 8
        # torch computes these in float32 (arange * float -> default dtype); copy that so
        # round() ties resolve identically.
        widths_cont = np.arange(depth, dtype=np.float32) * np.float32(w_a) + np.float32(w_0)
        capacity = np.round(
            np.log(widths_cont / np.float32(w_0)) / np.float32(math.log(w_m))
        ).astype(np.float32)
        block_widths = (
            np.round(np.float32(w_0) * np.power(np.float32(w_m), capacity) / np.float32(quant))
            * quant
        ).astype(np.int64)
        block_widths = [int(w) for w in block_widths]

        # A new stage starts wherever the width changes.
        starts = [i for i in range(depth) if i == 0 or block_widths[i] != block_widths[i - 1]]
        stage_widths = [block_widths[i] for i in starts]
        stage_depths = [b - a for a, b in zip(starts, [*starts[1:], depth])]
        n = len(stage_widths)
        multipliers = [bottleneck_multiplier] * n

        # Make the bottleneck width divisible by the group width (torchvision's
        # _adjust_widths_groups_compatibilty).
        w_bots = [int(w * b) for w, b in zip(stage_widths, multipliers)]
        group_widths = [min(group_width, wb) for wb in w_bots]
        w_bots = [make_divisible(wb, g) for wb, g in zip(w_bots, group_widths)]
        stage_widths = [int(wb / b) for wb, b in zip(w_bots, multipliers)]
        return cls(
            depths=tuple(stage_depths),
            widths=tuple(stage_widths),
            group_widths=tuple(group_widths),
            bottleneck_multipliers=tuple(multipliers),
            strides=(2,) * n,
            se_ratio=se_ratio,
        )


# torchvision's init parameters of the RegNet-Y family (models/regnet.py).
REGNET_Y_PARAMS: dict[str, dict[str, Any]] = {
    "regnet_y_400mf": dict(depth=16, w_0=48, w_a=27.89, w_m=2.09, group_width=8),
    "regnet_y_800mf": dict(depth=14, w_0=56, w_a=38.84, w_m=2.4, group_width=16),
    "regnet_y_1_6gf": dict(depth=27, w_0=48, w_a=20.71, w_m=2.65, group_width=24),
    "regnet_y_3_2gf": dict(depth=21, w_0=80, w_a=42.63, w_m=2.66, group_width=24),
    "regnet_y_8gf": dict(depth=17, w_0=192, w_a=76.82, w_m=2.19, group_width=56),
    "regnet_y_16gf": dict(depth=18, w_0=200, w_a=106.23, w_m=2.48, group_width=112),
    "regnet_y_32gf": dict(depth=20, w_0=232, w_a=115.89, w_m=2.53, group_width=232),
}


class ConvBN(nn.Module):
    """Conv (no bias) -> BatchNorm -> optional activation, PyTorch-style symmetric padding."""

    features: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    act: Callable[[jnp.ndarray], jnp.ndarray] | None = nn.relu
    bn_eps: float = _BN_EPS

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        p = (self.kernel - 1) // 2  # torchvision's Conv2dNormActivation default padding
        x = nn.Conv(
            self.features,
            (self.kernel, self.kernel),
            strides=(self.stride, self.stride),
            padding=((p, p), (p, p)),
            feature_group_count=self.groups,
            use_bias=False,
            name="conv",
        )(x)
        x = nn.BatchNorm(
            use_running_average=not train, momentum=_BN_MOMENTUM, epsilon=self.bn_eps, name="bn"
        )(x)
        return x if self.act is None else self.act(x)


class SqueezeExcite(nn.Module):
    """``torchvision.ops.SqueezeExcitation``: x * sigmoid(fc2(act(fc1(avgpool(x)))))."""

    squeeze: int
    act: Callable[[jnp.ndarray], jnp.ndarray] = nn.relu

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        # 1x1 convs with bias, as in torchvision (so the kernels convert like any conv).
        s = self.act(nn.Conv(self.squeeze, (1, 1), name="fc1")(s))
        s = nn.Conv(x.shape[-1], (1, 1), name="fc2")(s)
        return x * nn.sigmoid(s)


class ResBottleneckBlock(nn.Module):
    """relu(shortcut(x) + c(se(b(a(x))))) with a grouped, strided 3x3 ``b``."""

    width_out: int
    stride: int
    group_width: int
    bottleneck_multiplier: float
    se_ratio: float | None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        width_in = x.shape[-1]
        w_b = int(round(self.width_out * self.bottleneck_multiplier))
        groups = w_b // self.group_width
        f = ConvBN(w_b, 1, name="a")(x, train)
        f = ConvBN(w_b, 3, self.stride, groups=groups, name="b")(f, train)
        if self.se_ratio:
            # The SE width is relative to the block *input* width (torchvision comment).
            f = SqueezeExcite(int(round(self.se_ratio * width_in)), name="se")(f)
        f = ConvBN(self.width_out, 1, act=None, name="c")(f, train)
        if width_in != self.width_out or self.stride != 1:
            x = ConvBN(self.width_out, 1, self.stride, act=None, name="proj")(x, train)
        return nn.relu(x + f)


class Stage(nn.Module):
    """A RegNet stage: ``depth`` blocks, the first one strided."""

    width_out: int
    stride: int
    depth: int
    group_width: int
    bottleneck_multiplier: float
    se_ratio: float | None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        for i in range(self.depth):
            x = ResBottleneckBlock(
                self.width_out,
                self.stride if i == 0 else 1,
                self.group_width,
                self.bottleneck_multiplier,
                self.se_ratio,
                name=f"block{i}",
            )(x, train)
        return x


class RegNet(nn.Module):
    """torchvision-compatible RegNet.

    Attributes:
      block_params: per-stage settings (:meth:`BlockParams.from_init_params`).
      num_classes: K.
      stem_width: channels of the 3x3/2 stem.
    """

    block_params: BlockParams
    num_classes: int = 1000
    stem_width: int = 32

    def setup(self):
        bp = self.block_params
        self.stem = ConvBN(self.stem_width, 3, 2, name="stem_conv")
        self.stages = [
            Stage(w, s, d, g, b, bp.se_ratio, name=f"trunk{i + 1}")
            for i, (w, s, d, g, b) in enumerate(
                zip(bp.widths, bp.strides, bp.depths, bp.group_widths, bp.bottleneck_multipliers)
            )
        ]
        self.fc = nn.Dense(self.num_classes, name="fc")

    def __call__(self, x: jnp.ndarray, train: bool = False) -> Features:
        """Runs the network.

        Args:
          x: ``[B, H, W, 3]`` normalised images (NHWC).
          train: BatchNorm uses batch statistics when True.

        Returns:
          ``Features(logits [B, K], feature [B, C] (post-ReLU, pooled),
          feature_map [B, H/32, W/32, C])`` with ``C = block_params.widths[-1]``.
        """
        x = self.stem(x, train)
        self.sow("intermediates", "stem", x)
        for i, stage in enumerate(self.stages):
            x = stage(x, train)
            self.sow("intermediates", f"stage{i + 1}", x)
        feature = jnp.mean(x, axis=(1, 2))
        return Features(logits=self.head(feature), feature=feature, feature_map=x)

    def head(self, feature: jnp.ndarray) -> jnp.ndarray:
        """``[B, C] -> [B, K]`` final Linear layer."""
        return self.fc(feature)


def regnet_y(name: str, num_classes: int = 1000) -> RegNet:
    """A RegNet-Y from :data:`REGNET_Y_PARAMS` (SE ratio 0.25, bottleneck multiplier 1)."""
    if name not in REGNET_Y_PARAMS:
        raise ValueError(f"unknown RegNet-Y {name!r}; valid: {sorted(REGNET_Y_PARAMS)}")
    bp = BlockParams.from_init_params(**REGNET_Y_PARAMS[name], se_ratio=0.25)
    return RegNet(block_params=bp, num_classes=num_classes)


def regnet_y_16gf(num_classes: int = 1000) -> RegNet:
    """RegNet-Y-16GF (torchvision ``regnet_y_16gf``; 3024-d feature, 83.6M params at K=1000)."""
    return regnet_y("regnet_y_16gf", num_classes)


# --------------------------------------------------------------------------- conversion


def convert_conv_bn(
    sd, prefix: str, cin: int, cout: int, k: int, groups: int = 1
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(params, batch_stats) of a torchvision ``Conv2dNormActivation`` at ``prefix``.

    ``prefix.0`` is the conv, ``prefix.1`` the BatchNorm; every shape is checked so a wrong
    variant fails on the first layer that differs.
    """
    kernel = sd.take(f"{prefix}.0.weight", (cout, cin // groups, k, k)).transpose(2, 3, 1, 0)
    bn = f"{prefix}.1"
    scale = sd.take(f"{bn}.weight", (cout,))
    bias = sd.take(f"{bn}.bias", (cout,))
    mean = sd.take(f"{bn}.running_mean", (cout,))
    var = sd.take(f"{bn}.running_var", (cout,))
    sd.ignore([f"{bn}.num_batches_tracked"])
    params = {"conv": {"kernel": kernel}, "bn": {"scale": scale, "bias": bias}}
    return params, {"bn": {"mean": mean, "var": var}}


def convert_se(sd, prefix: str, channels: int, squeeze: int) -> dict[str, Any]:
    """Params of a torchvision ``SqueezeExcitation`` (two biased 1x1 convs)."""
    fc1 = sd.take(f"{prefix}.fc1.weight", (squeeze, channels, 1, 1)).transpose(2, 3, 1, 0)
    fc2 = sd.take(f"{prefix}.fc2.weight", (channels, squeeze, 1, 1)).transpose(2, 3, 1, 0)
    return {
        "fc1": {"kernel": fc1, "bias": sd.take(f"{prefix}.fc1.bias", (squeeze,))},
        "fc2": {"kernel": fc2, "bias": sd.take(f"{prefix}.fc2.bias", (channels,))},
    }


def convert_torchvision(sd, module: RegNet) -> dict[str, Any]:
    """Maps a torchvision RegNet state dict onto ``module``'s variables.

    Args:
      sd: a :class:`jaxood.convert.common.StateDict` of ``torchvision.models.regnet_*``.
      module: the target :class:`RegNet` (its ``block_params``/``num_classes`` fix all shapes).

    Returns:
      ``{"params": ..., "batch_stats": ...}`` (NumPy leaves). Every key of ``sd`` this
      architecture owns is taken; the caller's ``sd.finish()`` reports leftovers.

    Raises:
      ValueError: a key is missing or has the wrong shape (other architecture/variant, or a
        different number of classes).
    """
    if not isinstance(module, RegNet):
        raise ValueError(f"expected a RegNet module, got {type(module).__name__}")
    bp = module.block_params
    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    params["stem_conv"], stats["stem_conv"] = convert_conv_bn(sd, "stem", 3, module.stem_width, 3)
    width_in = module.stem_width
    for s, (width, stride, depth, gw, bm) in enumerate(
        zip(bp.widths, bp.strides, bp.depths, bp.group_widths, bp.bottleneck_multipliers), 1
    ):
        sp, ss = {}, {}
        for i in range(depth):
            pre = f"trunk_output.block{s}.block{s}-{i}"
            w_b = int(round(width * bm))
            g = w_b // gw
            bp_, bs_ = {}, {}
            bp_["a"], bs_["a"] = convert_conv_bn(sd, f"{pre}.f.a", width_in, w_b, 1)
            bp_["b"], bs_["b"] = convert_conv_bn(sd, f"{pre}.f.b", w_b, w_b, 3, groups=g)
            if bp.se_ratio:
                bp_["se"] = convert_se(sd, f"{pre}.f.se", w_b, int(round(bp.se_ratio * width_in)))
            bp_["c"], bs_["c"] = convert_conv_bn(sd, f"{pre}.f.c", w_b, width, 1)
            if width_in != width or (stride if i == 0 else 1) != 1:
                bp_["proj"], bs_["proj"] = convert_conv_bn(sd, f"{pre}.proj", width_in, width, 1)
            sp[f"block{i}"], ss[f"block{i}"] = bp_, bs_
            width_in = width
        params[f"trunk{s}"], stats[f"trunk{s}"] = sp, ss
    params["fc"] = {
        "kernel": sd.take("fc.weight", (module.num_classes, width_in)).T,
        "bias": sd.take("fc.bias", (module.num_classes,)),
    }
    return {"params": params, "batch_stats": stats}
