"""EfficientNetV2 in Flax Linen, numerically compatible with ``torchvision.models.efficientnet``.

Tan & Le, "EfficientNetV2: Smaller Models and Faster Training" (2021), as implemented by
torchvision: a 3x3/2 conv-BN-SiLU stem, stages of FusedMBConv blocks (a full kxk expansion
conv, then a 1x1 projection) followed by MBConv blocks (1x1 expansion, depthwise kxk,
squeeze-excitation with SiLU, 1x1 projection), a 1x1 conv-BN-SiLU to 1280 channels, global
average pooling, dropout and one Linear layer. BatchNorm uses ``eps=1e-3`` (torchvision's V2
builders pass ``partial(nn.BatchNorm2d, eps=1e-03)``).

Training-only parts are implemented as in torchvision and are identity in inference mode:
stochastic depth ("row" mode, drop probability growing linearly with block index) on
residual branches, and dropout before the classifier. Both need a ``"dropout"`` RNG when
``train=True``.

:func:`convert_torchvision` maps a torchvision EfficientNetV2 state dict onto this module.
Stage outputs are sown into the ``"intermediates"`` collection as ``stem``, ``stage1``, ...
(torchvision ``features.0``, ``features.1``, ...); pass ``mutable=["intermediates"]`` to
``apply`` to get them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxood.models.regnet import ConvBN, SqueezeExcite, convert_conv_bn, convert_se, make_divisible
from jaxood.types import Features

_BN_EPS_V2 = 1e-3


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """One row of torchvision's ``inverted_residual_setting``.

    Attributes:
      fused: FusedMBConv (True) or MBConv (False).
      expand_ratio: expansion of the block input width.
      kernel: spatial kernel size of the expansion (fused) / depthwise (MBConv) conv.
      stride: stride of the first block of the stage.
      input_channels: input width of the first block.
      out_channels: output width of every block.
      num_layers: number of blocks.
    """

    fused: bool
    expand_ratio: float
    kernel: int
    stride: int
    input_channels: int
    out_channels: int
    num_layers: int


def _expanded(channels: int, ratio: float) -> int:
    """torchvision's ``_MBConvConfig.adjust_channels(channels, ratio)``."""
    return make_divisible(channels * ratio, 8)


# torchvision ``_efficientnet_conf`` (all V2 variants end in a 1280-channel 1x1 conv).
_F, _M = True, False
EFFICIENTNET_V2: dict[str, tuple[StageConfig, ...]] = {
    "efficientnet_v2_s": tuple(
        StageConfig(*row)
        for row in [
            (_F, 1, 3, 1, 24, 24, 2),
            (_F, 4, 3, 2, 24, 48, 4),
            (_F, 4, 3, 2, 48, 64, 4),
            (_M, 4, 3, 2, 64, 128, 6),
            (_M, 6, 3, 1, 128, 160, 9),
            (_M, 6, 3, 2, 160, 256, 15),
        ]
    ),
    "efficientnet_v2_m": tuple(
        StageConfig(*row)
        for row in [
            (_F, 1, 3, 1, 24, 24, 3),
            (_F, 4, 3, 2, 24, 48, 5),
            (_F, 4, 3, 2, 48, 80, 5),
            (_M, 4, 3, 2, 80, 160, 7),
            (_M, 6, 3, 1, 160, 176, 14),
            (_M, 6, 3, 2, 176, 304, 18),
            (_M, 6, 3, 1, 304, 512, 5),
        ]
    ),
    "efficientnet_v2_l": tuple(
        StageConfig(*row)
        for row in [
            (_F, 1, 3, 1, 32, 32, 4),
            (_F, 4, 3, 2, 32, 64, 7),
            (_F, 4, 3, 2, 64, 96, 7),
            (_M, 4, 3, 2, 96, 192, 10),
            (_M, 6, 3, 1, 192, 224, 19),
            (_M, 6, 3, 2, 224, 384, 25),
            (_M, 6, 3, 1, 384, 640, 7),
        ]
    ),
}
# torchvision's default classifier dropout per variant.
_DROPOUT = {"efficientnet_v2_s": 0.2, "efficientnet_v2_m": 0.3, "efficientnet_v2_l": 0.4}


def _stochastic_depth(x: jnp.ndarray, rate: float, rng: jax.Array) -> jnp.ndarray:
    """torchvision ``stochastic_depth(mode="row")``: drop whole samples, rescale survivors."""
    keep = 1.0 - rate
    mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, 0.0) if keep > 0 else jnp.zeros_like(x)


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand] -> depthwise kxk -> SE(SiLU) -> 1x1 project."""

    cin: int
    cout: int
    expand_ratio: float
    kernel: int
    stride: int
    sd_rate: float
    bn_eps: float = _BN_EPS_V2

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        exp = _expanded(self.cin, self.expand_ratio)
        conv = lambda *a, **k: ConvBN(*a, bn_eps=self.bn_eps, **k)  # noqa: E731
        h = x
        if exp != self.cin:
            h = conv(exp, 1, act=nn.silu, name="expand")(h, train)
        h = conv(exp, self.kernel, self.stride, groups=exp, act=nn.silu, name="dw")(h, train)
        # torchvision squeezes to a quarter of the block *input* width.
        h = SqueezeExcite(max(1, self.cin // 4), act=nn.silu, name="se")(h)
        h = conv(self.cout, 1, act=None, name="project")(h, train)
        return _residual(self, x, h, train)


class FusedMBConv(nn.Module):
    """Fused inverted residual: kxk expand (strided) -> 1x1 project, or a single kxk conv."""

    cin: int
    cout: int
    expand_ratio: float
    kernel: int
    stride: int
    sd_rate: float
    bn_eps: float = _BN_EPS_V2

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        exp = _expanded(self.cin, self.expand_ratio)
        conv = lambda *a, **k: ConvBN(*a, bn_eps=self.bn_eps, **k)  # noqa: E731
        if exp != self.cin:
            h = conv(exp, self.kernel, self.stride, act=nn.silu, name="expand")(x, train)
            h = conv(self.cout, 1, act=None, name="project")(h, train)
        else:
            h = conv(self.cout, self.kernel, self.stride, act=nn.silu, name="fused")(x, train)
        return _residual(self, x, h, train)


def _residual(block: MBConv | FusedMBConv, x: jnp.ndarray, h: jnp.ndarray, train: bool):
    """Adds the identity shortcut when shapes allow (stochastic depth on the branch)."""
    if block.stride != 1 or block.cin != block.cout:
        return h
    if train and block.sd_rate > 0:
        h = _stochastic_depth(h, block.sd_rate, block.make_rng("dropout"))
    return h + x


class EfficientNet(nn.Module):
    """torchvision-compatible EfficientNet (V2 block settings).

    Attributes:
      stages: the ``inverted_residual_setting`` (:data:`EFFICIENTNET_V2`).
      num_classes: K.
      last_channel: width of the final 1x1 conv (the feature dimension D).
      dropout_rate: dropout before the classifier (training only).
      stochastic_depth_prob: final block's drop probability (training only).
      bn_eps: BatchNorm epsilon (1e-3 for torchvision's V2 models).
    """

    stages: tuple[StageConfig, ...]
    num_classes: int = 1000
    last_channel: int = 1280
    dropout_rate: float = 0.4
    stochastic_depth_prob: float = 0.2
    bn_eps: float = _BN_EPS_V2

    def setup(self):
        self.stem = ConvBN(
            self.stages[0].input_channels, 3, 2, act=nn.silu, bn_eps=self.bn_eps, name="stem_conv"
        )
        total = sum(s.num_layers for s in self.stages)
        blocks, block_id = [], 0
        for s, cfg in enumerate(self.stages):
            for i in range(cfg.num_layers):
                cls = FusedMBConv if cfg.fused else MBConv
                blocks.append(
                    cls(
                        cin=cfg.input_channels if i == 0 else cfg.out_channels,
                        cout=cfg.out_channels,
                        expand_ratio=cfg.expand_ratio,
                        kernel=cfg.kernel,
                        stride=cfg.stride if i == 0 else 1,
                        sd_rate=self.stochastic_depth_prob * block_id / total,
                        bn_eps=self.bn_eps,
                        name=f"stage{s + 1}_block{i}",
                    )
                )
                block_id += 1
        self.blocks = blocks
        self.top = ConvBN(self.last_channel, 1, act=nn.silu, bn_eps=self.bn_eps, name="top")
        self.dropout = nn.Dropout(self.dropout_rate)
        self.fc = nn.Dense(self.num_classes, name="fc")

    def __call__(self, x: jnp.ndarray, train: bool = False) -> Features:
        """Runs the network.

        Args:
          x: ``[B, H, W, 3]`` normalised images (NHWC).
          train: batch-statistics BatchNorm, stochastic depth and dropout (needs a
            ``"dropout"`` RNG) when True.

        Returns:
          ``Features(logits [B, K], feature [B, last_channel] (pooled SiLU output, can be
          negative), feature_map [B, H/32, W/32, last_channel])``.
        """
        x = self.stem(x, train)
        self.sow("intermediates", "stem", x)
        blocks = iter(self.blocks)
        for s, cfg in enumerate(self.stages):
            for _ in range(cfg.num_layers):
                x = next(blocks)(x, train)
            self.sow("intermediates", f"stage{s + 1}", x)
        x = self.top(x, train)
        feature = jnp.mean(x, axis=(1, 2))
        logits = self.head(self.dropout(feature, deterministic=not train))
        return Features(logits=logits, feature=feature, feature_map=x)

    def head(self, feature: jnp.ndarray) -> jnp.ndarray:
        """``[B, last_channel] -> [B, K]`` final Linear layer (no dropout)."""
        return self.fc(feature)


def efficientnet_v2(name: str, num_classes: int = 1000, **kwargs: Any) -> EfficientNet:
    """An EfficientNetV2 variant from :data:`EFFICIENTNET_V2` with torchvision's defaults."""
    if name not in EFFICIENTNET_V2:
        raise ValueError(f"unknown EfficientNetV2 {name!r}; valid: {sorted(EFFICIENTNET_V2)}")
    kwargs.setdefault("dropout_rate", _DROPOUT[name])
    return EfficientNet(stages=EFFICIENTNET_V2[name], num_classes=num_classes, **kwargs)


def efficientnet_v2_s(num_classes: int = 1000, **kwargs: Any) -> EfficientNet:
    """EfficientNetV2-S (torchvision ``efficientnet_v2_s``)."""
    return efficientnet_v2("efficientnet_v2_s", num_classes, **kwargs)


def efficientnet_v2_m(num_classes: int = 1000, **kwargs: Any) -> EfficientNet:
    """EfficientNetV2-M (torchvision ``efficientnet_v2_m``)."""
    return efficientnet_v2("efficientnet_v2_m", num_classes, **kwargs)


def efficientnet_v2_l(num_classes: int = 1000, **kwargs: Any) -> EfficientNet:
    """EfficientNetV2-L (torchvision ``efficientnet_v2_l``; 1280-d feature, 118.5M params).

    torchvision's ImageNet weights expect 480x480 bicubic-resized inputs normalised with
    mean = std = 0.5.
    """
    return efficientnet_v2("efficientnet_v2_l", num_classes, **kwargs)


# --------------------------------------------------------------------------- conversion


def convert_torchvision(sd, module: EfficientNet) -> dict[str, Any]:
    """Maps a torchvision EfficientNetV2 state dict onto ``module``'s variables.

    torchvision layout: ``features.0`` stem, ``features.{s}.{i}.block.{j}`` for stage ``s``
    block ``i`` (layer ``j`` counts only the layers that exist), ``features.{S+1}`` the final
    1x1 conv, ``classifier.1`` the Linear layer.

    Args:
      sd: a :class:`jaxood.convert.common.StateDict` of ``torchvision.models.efficientnet_v2_*``.
      module: the target :class:`EfficientNet` (its config and ``num_classes`` fix all shapes).

    Returns:
      ``{"params": ..., "batch_stats": ...}`` (NumPy leaves); the caller's ``sd.finish()``
      reports keys left over.

    Raises:
      ValueError: a key is missing or has the wrong shape (other architecture/variant, or a
        different number of classes).
    """
    if not isinstance(module, EfficientNet):
        raise ValueError(f"expected an EfficientNet module, got {type(module).__name__}")
    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    stem_out = module.stages[0].input_channels
    params["stem_conv"], stats["stem_conv"] = convert_conv_bn(sd, "features.0", 3, stem_out, 3)
    for s, cfg in enumerate(module.stages, 1):
        for i in range(cfg.num_layers):
            cin = cfg.input_channels if i == 0 else cfg.out_channels
            cout, k = cfg.out_channels, cfg.kernel
            exp = _expanded(cin, cfg.expand_ratio)
            pre = f"features.{s}.{i}.block"
            # (flax name, out channels, kernel, groups) in torch order; j is the torch index.
            if cfg.fused:
                layers = (
                    [("expand", exp, k, 1), ("project", cout, 1, 1)]
                    if exp != cin
                    else [("fused", cout, k, 1)]
                )
            else:
                layers = [("expand", exp, 1, 1)] if exp != cin else []
                layers += [("dw", exp, k, exp), ("se", None, None, None), ("project", cout, 1, 1)]
            bp, bs, c = {}, {}, cin
            for j, (name, out, kk, g) in enumerate(layers):
                if name == "se":
                    bp["se"] = convert_se(sd, f"{pre}.{j}", c, max(1, cin // 4))
                    continue
                bp[name], bs[name] = convert_conv_bn(sd, f"{pre}.{j}", c, out, kk, groups=g)
                c = out
            params[f"stage{s}_block{i}"], stats[f"stage{s}_block{i}"] = bp, bs
    last_in = module.stages[-1].out_channels
    top = f"features.{len(module.stages) + 1}"
    params["top"], stats["top"] = convert_conv_bn(sd, top, last_in, module.last_channel, 1)
    params["fc"] = {
        "kernel": sd.take("classifier.1.weight", (module.num_classes, module.last_channel)).T,
        "bias": sd.take("classifier.1.bias", (module.num_classes,)),
    }
    return {"params": params, "batch_stats": stats}
