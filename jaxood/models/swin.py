"""Swin Transformer (V1) in Flax Linen, numerically compatible with torchvision.

Mirrors ``torchvision.models.SwinTransformer`` (Liu et al., 2021) op for op:

* patch embedding: ``p x p`` stride-``p`` convolution, then LayerNorm;
* stages of blocks ``x + attn(norm1(x))``, ``x + mlp(norm2(x))`` where ``attn`` is window
  attention with a learned relative position bias; odd blocks shift the windows by
  ``window // 2`` (cyclic roll + the -100 attention mask between regions);
* the feature map is zero-padded to a multiple of the window **after** ``norm1`` and the
  padded tokens take part in attention unmasked, exactly as torchvision does; the shift is
  dropped along an axis whose padded size fits in one window;
* PatchMerging between stages (pad to even size, 2x2 space-to-depth in torchvision's
  ``x0, x1, x2, x3`` order, LayerNorm(4C), bias-free Linear 4C -> 2C);
* final LayerNorm -> ``feature_map`` ``[B, H, W, C]``, global average -> ``feature``, Linear
  head. All LayerNorms use eps 1e-5 and the MLP uses exact GELU (LayerNorm, GELU and the
  softmax are :mod:`jaxood.models.layers`' CPU-friendly forms).

:func:`convert_torchvision` maps a torchvision state dict (``features.*``, ``norm``,
``head``) onto this module. The patch embedding and the stage outputs (before each
PatchMerging) are sown into the ``"intermediates"`` collection as ``patch_embed``,
``stage1`` ... ``stage4`` (torchvision ``features.0``, ``features.1``, ``.3``, ``.5``, ``.7``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxood.models.layers import LayerNorm, gelu, softmax_attention
from jaxood.types import Features

LN_EPS = 1e-5
# torchvision initialises every Linear with trunc_normal(std=0.02) and zero bias.
_DENSE_INIT = nn.initializers.truncated_normal(0.02)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(a) for a in v)
    if len(v) != 2:
        raise ValueError(f"expected an int or a pair, got {v}")
    return v


def relative_position_index(window: tuple[int, int]) -> np.ndarray:
    """``[N*N]`` index into the ``[(2Wh-1)(2Ww-1), heads]`` bias table, ``N = Wh*Ww``.

    Same construction as torchvision's ``define_relative_position_index`` buffer.
    """
    coords = np.stack(np.meshgrid(np.arange(window[0]), np.arange(window[1]), indexing="ij"))
    flat = coords.reshape(2, -1)
    rel = (flat[:, :, None] - flat[:, None, :]).transpose(1, 2, 0)  # N, N, 2
    rel = rel + np.array([window[0] - 1, window[1] - 1])
    return (rel[..., 0] * (2 * window[1] - 1) + rel[..., 1]).reshape(-1)


def shifted_window_mask(
    padded_hw: tuple[int, int], window: tuple[int, int], shift: tuple[int, int]
) -> np.ndarray:
    """``[num_windows, N, N]`` additive mask: -100 between tokens of different shift regions.

    A direct NumPy transcription of torchvision's mask (including its Python slice
    semantics when one of the shifts is 0).
    """
    ph, pw = padded_hw
    region = np.zeros((ph, pw), np.float32)
    h_slices = ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None))
    w_slices = ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None))
    for count, (h, w) in enumerate(itertools.product(h_slices, w_slices)):
        region[h[0] : h[1], w[0] : w[1]] = count
    region = region.reshape(ph // window[0], window[0], pw // window[1], window[1])
    region = region.transpose(0, 2, 1, 3).reshape(-1, window[0] * window[1])
    diff = region[:, None, :] - region[:, :, None]
    return np.where(diff != 0, np.float32(-100.0), np.float32(0.0))


def _partition(x: jax.Array, window: tuple[int, int]) -> jax.Array:
    """``[B, H, W, C] -> [B * num_windows, Wh * Ww, C]`` (windows in row-major order)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window[0], window[0], w // window[1], window[1], c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window[0] * window[1], c)


def _merge(x: jax.Array, window: tuple[int, int], b: int, h: int, w: int) -> jax.Array:
    """Inverse of :func:`_partition`: ``[B * nW, Wh * Ww, C] -> [B, H, W, C]``."""
    c = x.shape[-1]
    x = x.reshape(b, h // window[0], w // window[1], window[0], window[1], c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


class ShiftedWindowAttention(nn.Module):
    """(Shifted) window multi-head self-attention with relative position bias (Swin V1).

    Attributes:
      num_heads: number of heads.
      window_size: ``(Wh, Ww)``.
      shift_size: ``(sh, sw)``; ``(0, 0)`` for regular windows.
      attention_dropout, dropout: training-time dropout rates.
    """

    num_heads: int
    window_size: tuple[int, int]
    shift_size: tuple[int, int]
    attention_dropout: float = 0.0
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """``x [B, H, W, C] -> [B, H, W, C]``."""
        b, h, w, c = x.shape
        wh, ww = self.window_size
        heads = self.num_heads
        if c % heads:
            raise ValueError(f"channels {c} are not divisible by num_heads={heads}")
        n = wh * ww
        table = self.param(
            "relative_position_bias_table",
            nn.initializers.truncated_normal(0.02),
            ((2 * wh - 1) * (2 * ww - 1), heads),
        )
        # Pad bottom/right to whole windows (zeros, after norm1: these tokens are attended to).
        pad_b, pad_r = (wh - h % wh) % wh, (ww - w % ww) % ww
        x = jnp.pad(x, ((0, 0), (0, pad_b), (0, pad_r), (0, 0)))
        ph, pw = h + pad_b, w + pad_r
        # No shift along an axis that fits in a single window.
        shift = (0 if wh >= ph else self.shift_size[0], 0 if ww >= pw else self.shift_size[1])
        shifted = sum(shift) > 0
        if shifted:
            x = jnp.roll(x, (-shift[0], -shift[1]), axis=(1, 2))
        windows = _partition(x, self.window_size)  # [B*nW, N, C]
        qkv = nn.Dense(3 * c, kernel_init=_DENSE_INIT, name="qkv")(windows)
        q, k, v = qkv.reshape(-1, n, 3, heads, c // heads).transpose(2, 0, 3, 1, 4)
        logits = (q * (c // heads) ** -0.5) @ k.swapaxes(-1, -2)  # [B*nW, heads, N, N]
        bias = table[relative_position_index(self.window_size)].reshape(n, n, heads)
        logits = logits + bias.transpose(2, 0, 1)[None]
        if shifted:
            mask = jnp.asarray(shifted_window_mask((ph, pw), self.window_size, shift))
            nw = mask.shape[0]
            logits = logits.reshape(b, nw, heads, n, n) + mask[None, :, None]
            logits = logits.reshape(b * nw, heads, n, n)
        dropout = None
        if train and self.attention_dropout > 0:
            dropout = lambda w: nn.Dropout(self.attention_dropout)(w, deterministic=False)
        out, _, _ = softmax_attention(logits, v, weights_dropout=dropout)
        out = out.transpose(0, 2, 1, 3).reshape(-1, n, c)
        out = nn.Dense(c, kernel_init=_DENSE_INIT, name="proj")(out)
        out = nn.Dropout(self.dropout)(out, deterministic=not train)
        out = _merge(out, self.window_size, b, ph, pw)
        if shifted:
            out = jnp.roll(out, shift, axis=(1, 2))
        return out[:, :h, :w]


class StochasticDepth(nn.Module):
    """torchvision ``StochasticDepth(p, "row")``: drops whole residual branches per sample."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        return x * mask / keep if keep > 0 else x * mask


class SwinBlock(nn.Module):
    """Swin V1 block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))`` (exact GELU)."""

    num_heads: int
    window_size: tuple[int, int]
    shift_size: tuple[int, int]
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    attention_dropout: float = 0.0
    stochastic_depth_prob: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c = x.shape[-1]
        drop_path = StochasticDepth(self.stochastic_depth_prob)
        y = LayerNorm(LN_EPS, name="norm1")(x)
        y = ShiftedWindowAttention(
            self.num_heads,
            self.window_size,
            self.shift_size,
            self.attention_dropout,
            self.dropout,
            name="attn",
        )(y, train)
        x = x + drop_path(y, train)
        y = LayerNorm(LN_EPS, name="norm2")(x)
        init = nn.initializers.xavier_uniform()
        bias_init = nn.initializers.normal(1e-6)
        y = nn.Dense(int(c * self.mlp_ratio), kernel_init=init, bias_init=bias_init, name="mlp_0")(
            y
        )
        y = nn.Dropout(self.dropout)(gelu(y), deterministic=not train)
        y = nn.Dense(c, kernel_init=init, bias_init=bias_init, name="mlp_3")(y)
        y = nn.Dropout(self.dropout)(y, deterministic=not train)
        return x + drop_path(y, train)


class PatchMerging(nn.Module):
    """``[B, H, W, C] -> [B, ceil(H/2), ceil(W/2), 2C]``: 2x2 space-to-depth, LayerNorm, Linear."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h, w, c = x.shape[-3:]
        x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        # torchvision's channel order: (0,0), (1,0), (0,1), (1,1) offsets (row, col).
        x = jnp.concatenate(
            [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1
        )
        x = LayerNorm(LN_EPS, name="norm")(x)
        return nn.Dense(2 * c, use_bias=False, kernel_init=_DENSE_INIT, name="reduction")(x)


class SwinStage(nn.Module):
    """``depth`` Swin blocks; odd-indexed blocks use shifted windows."""

    depth: int
    num_heads: int
    window_size: tuple[int, int]
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    attention_dropout: float = 0.0
    stochastic_depth_probs: tuple[float, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        probs = self.stochastic_depth_probs or (0.0,) * self.depth
        half = (self.window_size[0] // 2, self.window_size[1] // 2)
        for j in range(self.depth):
            x = SwinBlock(
                self.num_heads,
                self.window_size,
                (0, 0) if j % 2 == 0 else half,
                self.mlp_ratio,
                self.dropout,
                self.attention_dropout,
                probs[j],
                name=f"blocks_{j}",
            )(x, train)
        return x


class SwinTransformer(nn.Module):
    """torchvision-compatible Swin Transformer V1 classifier.

    Attributes:
      num_classes: K.
      patch_size: ``(ph, pw)`` of the patch-embedding convolution.
      embed_dim: channels of the first stage (doubles every stage).
      depths: blocks per stage.
      num_heads: heads per stage.
      window_size: ``(Wh, Ww)`` attention window.
      mlp_ratio: MLP hidden width / channels.
      dropout, attention_dropout: training-time dropout rates.
      stochastic_depth_prob: maximum drop-path rate (linearly increasing over blocks);
        ``train=True`` then needs a ``"dropout"`` rng (``apply(..., rngs={"dropout": key})``).
    """

    num_classes: int = 1000
    patch_size: tuple[int, int] = (4, 4)
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: tuple[int, int] = (7, 7)
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    attention_dropout: float = 0.0
    stochastic_depth_prob: float = 0.2

    @property
    def num_features(self) -> int:
        """Feature dimension D = ``embed_dim * 2**(num_stages - 1)``."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    def setup(self):
        if len(self.depths) != len(self.num_heads):
            raise ValueError(
                f"depths {self.depths} and num_heads {self.num_heads} differ in length"
            )
        patch, window = _pair(self.patch_size), _pair(self.window_size)
        self.patch_conv = nn.Conv(self.embed_dim, patch, strides=patch, padding="VALID")
        self.patch_norm = LayerNorm(LN_EPS)
        total = sum(self.depths)
        probs = [self.stochastic_depth_prob * i / max(total - 1, 1) for i in range(total)]
        stages, merges, start = [], [], 0
        for i, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
            stages.append(
                SwinStage(
                    depth,
                    heads,
                    window,
                    self.mlp_ratio,
                    self.dropout,
                    self.attention_dropout,
                    tuple(probs[start : start + depth]),
                )
            )
            start += depth
            if i < len(self.depths) - 1:
                merges.append(PatchMerging())
        self.stages, self.merges = stages, merges
        self.norm = LayerNorm(LN_EPS)
        self.head_dense = nn.Dense(self.num_classes, kernel_init=_DENSE_INIT, name="head")

    def __call__(self, x: jax.Array, train: bool = False) -> Features:
        """``x [B, H, W, 3]`` (normalised NHWC) -> ``Features``.

        ``feature_map`` is the final-LayerNorm map ``[B, H/32, W/32, D]`` (for patch 4 and
        even sizes), ``feature`` its spatial mean ``[B, D]`` (can be negative), ``attention``
        is None.
        """
        if x.ndim != 4:
            raise ValueError(f"expected NHWC input [B, H, W, C], got shape {x.shape}")
        x = self.patch_norm(self.patch_conv(x))
        # Sown values cost nothing unless "intermediates" is mutable (parity tests, probes).
        self.sow("intermediates", "patch_embed", x)
        for i, stage in enumerate(self.stages):
            x = stage(x, train)
            self.sow("intermediates", f"stage{i + 1}", x)
            if i < len(self.merges):
                x = self.merges[i](x)
        feature_map = self.norm(x)
        feature = feature_map.mean(axis=(1, 2))
        return Features(
            logits=self.head(feature), feature=feature, feature_map=feature_map, attention=None
        )

    def head(self, feature: jax.Array) -> jax.Array:
        """``[B, D] -> [B, K]`` logits."""
        return self.head_dense(feature)


def swin_t(num_classes: int = 1000, **kwargs: Any) -> SwinTransformer:
    """Swin-T (torchvision ``swin_t``): embed 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24)."""
    kwargs = {"stochastic_depth_prob": 0.2, **kwargs}
    return SwinTransformer(
        num_classes=num_classes,
        embed_dim=96,
        depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24),
        **_tuples(kwargs),
    )


def swin_b(num_classes: int = 1000, **kwargs: Any) -> SwinTransformer:
    """Swin-B (torchvision ``swin_b``): embed 128, depths (2, 2, 18, 2), heads (4, 8, 16, 32)."""
    kwargs = {"stochastic_depth_prob": 0.5, **kwargs}
    return SwinTransformer(
        num_classes=num_classes,
        embed_dim=128,
        depths=(2, 2, 18, 2),
        num_heads=(4, 8, 16, 32),
        **_tuples(kwargs),
    )


def _tuples(kwargs: dict[str, Any]) -> dict[str, Any]:
    # JSON manifests turn tuples into lists; Flax module attributes should be hashable.
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


# ------------------------------------------------------------------ torchvision conversion


def convert_torchvision(sd, module: SwinTransformer) -> dict[str, Any]:
    """Maps a torchvision ``SwinTransformer`` (V1) state dict onto ``module``'s variables.

    torchvision layout: ``features.0`` = (conv, permute, norm); ``features.{2i+1}`` = stage
    ``i`` blocks; ``features.{2i+2}`` = PatchMerging after stage ``i``; then ``norm``,
    ``head``. Every shape is checked against ``module``; the ``relative_position_index``
    buffers are checked against the recomputed index and then dropped (the module computes
    it). Leftover keys (e.g. a deeper variant) are reported by the caller's ``sd.finish()``.

    Args:
      sd: a :class:`jaxood.convert.common.StateDict`.
      module: the target module, e.g. ``jaxood.models.create("swin_t", 1000)``.

    Returns:
      ``{"params": ...}`` Flax variables for ``module``.
    """
    if any("cpb_mlp" in k or "logit_scale" in k for k in sd.keys()):
        raise ValueError(f"{sd.source}: this is a Swin V2 checkpoint; only Swin V1 is supported")
    patch, window = _pair(module.patch_size), _pair(module.window_size)
    n = window[0] * window[1]
    expected_index = relative_position_index(window)

    def linear(prefix: str, n_in: int, n_out: int, bias: bool = True) -> dict[str, np.ndarray]:
        out = {"kernel": sd.take(f"{prefix}.weight", (n_out, n_in)).T}
        if bias:
            out["bias"] = sd.take(f"{prefix}.bias", (n_out,))
        return out

    def layernorm(prefix: str, dim: int) -> dict[str, np.ndarray]:
        return {
            "scale": sd.take(f"{prefix}.weight", (dim,)),
            "bias": sd.take(f"{prefix}.bias", (dim,)),
        }

    e = module.embed_dim
    params: dict[str, Any] = {
        "patch_conv": {
            "kernel": sd.take("features.0.0.weight", (e, 3, *patch)).transpose(2, 3, 1, 0),
            "bias": sd.take("features.0.0.bias", (e,)),
        },
        "patch_norm": layernorm("features.0.2", e),
    }
    for i, (depth, heads) in enumerate(zip(module.depths, module.num_heads)):
        c = e * 2**i
        hidden = int(c * module.mlp_ratio)
        stage = {}
        for j in range(depth):
            t = f"features.{2 * i + 1}.{j}"
            index = sd.take(f"{t}.attn.relative_position_index", (n * n,))
            if not np.array_equal(index, expected_index):
                raise ValueError(
                    f"{sd.source}: {t}.attn.relative_position_index is not the "
                    f"standard index for window {window}"
                )
            stage[f"blocks_{j}"] = {
                "norm1": layernorm(f"{t}.norm1", c),
                "attn": {
                    "relative_position_bias_table": sd.take(
                        f"{t}.attn.relative_position_bias_table",
                        ((2 * window[0] - 1) * (2 * window[1] - 1), heads),
                    ),
                    "qkv": linear(f"{t}.attn.qkv", c, 3 * c),
                    "proj": linear(f"{t}.attn.proj", c, c),
                },
                "norm2": layernorm(f"{t}.norm2", c),
                "mlp_0": linear(f"{t}.mlp.0", c, hidden),
                "mlp_3": linear(f"{t}.mlp.3", hidden, c),
            }
        if f"features.{2 * i + 1}.{depth}.norm1.weight" in sd:
            raise ValueError(
                f"{sd.source}: stage {i} has more than {depth} blocks (checkpoint for a deeper "
                "Swin variant, e.g. swin_b/swin_s vs swin_t?)"
            )
        params[f"stages_{i}"] = stage
        if i < len(module.depths) - 1:
            m = f"features.{2 * i + 2}"
            params[f"merges_{i}"] = {
                "norm": layernorm(f"{m}.norm", 4 * c),
                "reduction": linear(f"{m}.reduction", 4 * c, 2 * c, bias=False),
            }
    d = module.num_features
    params["norm"] = layernorm("norm", d)
    params["head"] = linear("head", d, module.num_classes)
    return {"params": params}
