"""Vision Transformer (ViT) in Flax Linen, numerically compatible with torchvision.

Mirrors ``torchvision.models.VisionTransformer`` (Dosovitskiy et al., 2021): a patchify
convolution, a learned class token and position embedding, pre-norm encoder blocks
(LayerNorm eps 1e-6, ``nn.MultiheadAttention`` semantics, exact-GELU MLP), a final LayerNorm
and a linear head on the class token. :func:`convert_torchvision` maps a torchvision state
dict (``conv_proj``, ``class_token``, ``encoder.*``, ``heads.head``) onto this module.

Attention is computed explicitly (rather than with ``nn.MultiHeadDotProductAttention``) so
the last block's post-softmax attention weights are available: ``Features.attention`` is the
CLS-query row averaged over heads, ``[B, 1 + num_patches]``, the input of NAP's transformer
score (``max_i a_i``). LayerNorm, GELU and the softmax come from :mod:`jaxood.models.layers`
(CPU-friendly forms of the same functions).

The patch embedding ``[B, h, w, D]`` and each block's output ``[B, S, D]`` are sown into the
``"intermediates"`` collection as ``patch_embed`` and ``encoder_layer_{i}`` (torchvision's
``conv_proj`` and ``encoder.layers.encoder_layer_{i}``).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxood.models.layers import LayerNorm, gelu, softmax_attention
from jaxood.types import Features

# torchvision's ViT uses LayerNorm(eps=1e-6) everywhere.
LN_EPS = 1e-6


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``torch.nn.MultiheadAttention`` semantics.

    ``in_proj`` is one ``[D, 3D]`` Dense (torch ``in_proj_weight.T``, q|k|v stacked along the
    output axis), ``out_proj`` a ``[D, D]`` Dense.

    Attributes:
      num_heads: number of heads; ``D`` must be divisible by it.
      attention_dropout: dropout on the attention weights (training only).
    """

    num_heads: int
    attention_dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """``x [B, S, D] -> (out [B, S, D], cls_weights [B, S])``: the class token's
        post-softmax attention row, averaged over heads."""
        b, s, d = x.shape
        if d % self.num_heads:
            raise ValueError(f"hidden dim {d} is not divisible by num_heads={self.num_heads}")
        head_dim = d // self.num_heads
        qkv = nn.Dense(3 * d, name="in_proj")(x).reshape(b, s, 3, self.num_heads, head_dim)
        q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # one head-major copy: 3 x [B, heads, S, hd]
        # torch scales q before the product (same rounding order).
        logits = (q * (1.0 / math.sqrt(head_dim))) @ k.swapaxes(-1, -2)
        dropout = None
        if train and self.attention_dropout > 0:
            dropout = lambda w: nn.Dropout(self.attention_dropout)(w, deterministic=False)
        out, e, sums = softmax_attention(logits, v, weights_dropout=dropout)
        out = out.transpose(0, 2, 1, 3).reshape(b, s, d)
        cls_weights = (e[:, :, 0, :] / sums[:, :, 0, None]).mean(axis=1)
        return nn.Dense(d, name="out_proj")(out), cls_weights


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln_1(x))`` then ``+ mlp(ln_2(.))``.

    Returns the block output ``[B, S, D]`` and the CLS-query attention row averaged over
    heads, ``[B, S]``.
    """

    num_heads: int
    mlp_dim: int
    dropout: float = 0.0
    attention_dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        d = x.shape[-1]
        y = LayerNorm(LN_EPS, name="ln_1")(x)
        y, cls_weights = SelfAttention(
            self.num_heads, self.attention_dropout, name="self_attention"
        )(y, train)
        x = x + nn.Dropout(self.dropout)(y, deterministic=not train)
        y = LayerNorm(LN_EPS, name="ln_2")(x)
        init = nn.initializers.xavier_uniform()
        bias_init = nn.initializers.normal(1e-6)
        y = nn.Dense(self.mlp_dim, kernel_init=init, bias_init=bias_init, name="mlp_0")(y)
        y = nn.Dropout(self.dropout)(gelu(y), deterministic=not train)
        y = nn.Dense(d, kernel_init=init, bias_init=bias_init, name="mlp_3")(y)
        y = nn.Dropout(self.dropout)(y, deterministic=not train)
        return x + y, cls_weights


class VisionTransformer(nn.Module):
    """torchvision-compatible ViT classifier (class-token pooling, no representation layer).

    Attributes:
      num_classes: K.
      image_size: square input side; must be divisible by ``patch_size`` (fixes the length of
        the learned position embedding, as in torchvision).
      patch_size: patch side of the patchify convolution.
      num_layers, num_heads, hidden_dim, mlp_dim: encoder size.
      dropout, attention_dropout: training-time dropout rates (0 in torchvision's recipes).
    """

    num_classes: int = 1000
    image_size: int = 224
    patch_size: int = 16
    num_layers: int = 12
    num_heads: int = 12
    hidden_dim: int = 768
    mlp_dim: int = 3072
    dropout: float = 0.0
    attention_dropout: float = 0.0

    @property
    def seq_length(self) -> int:
        """1 (class token) + number of patches."""
        return (self.image_size // self.patch_size) ** 2 + 1

    def setup(self):
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size={self.image_size} is not divisible by patch_size={self.patch_size}"
            )
        fan_in = 3 * self.patch_size**2
        self.conv_proj = nn.Conv(
            self.hidden_dim,
            (self.patch_size, self.patch_size),
            strides=(self.patch_size, self.patch_size),
            padding="VALID",
            kernel_init=nn.initializers.truncated_normal(math.sqrt(1 / fan_in)),
        )
        self.class_token = self.param("class_token", nn.initializers.zeros, (1, 1, self.hidden_dim))
        self.pos_embedding = self.param(
            "pos_embedding", nn.initializers.normal(0.02), (1, self.seq_length, self.hidden_dim)
        )
        self.layers = [
            EncoderBlock(self.num_heads, self.mlp_dim, self.dropout, self.attention_dropout)
            for _ in range(self.num_layers)
        ]
        self.embed_dropout = nn.Dropout(self.dropout)
        self.ln = LayerNorm(LN_EPS)
        # torchvision zero-initialises the head.
        self.head_dense = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="head")

    def __call__(self, x: jax.Array, train: bool = False) -> Features:
        """``x [B, image_size, image_size, 3]`` (normalised NHWC) -> ``Features``.

        ``feature`` is the class token after the final LayerNorm ``[B, hidden_dim]``;
        ``feature_map`` is None; ``attention`` is the last block's CLS-query attention row,
        post-softmax and averaged over heads, ``[B, seq_length]`` (each row sums to 1).
        """
        if x.ndim != 4 or x.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(
                f"expected input [B, {self.image_size}, {self.image_size}, C], got {x.shape} "
                "(the position embedding fixes the image size; build with image_size=...)"
            )
        b = x.shape[0]
        x = self.conv_proj(x)
        # Sown values cost nothing unless "intermediates" is mutable (parity tests, probes).
        self.sow("intermediates", "patch_embed", x)
        x = x.reshape(b, -1, self.hidden_dim)  # row-major patches, as torch
        cls = jnp.broadcast_to(self.class_token, (b, 1, self.hidden_dim)).astype(x.dtype)
        x = jnp.concatenate([cls, x], axis=1) + self.pos_embedding
        x = self.embed_dropout(x, deterministic=not train)
        attention = None
        for i, layer in enumerate(self.layers):
            x, attention = layer(x, train)
            self.sow("intermediates", f"encoder_layer_{i}", x)
        feature = self.ln(x)[:, 0]
        return Features(
            logits=self.head(feature), feature=feature, feature_map=None, attention=attention
        )

    def head(self, feature: jax.Array) -> jax.Array:
        """``[B, hidden_dim] -> [B, K]`` logits."""
        return self.head_dense(feature)


def vit_b_16(num_classes: int = 1000, image_size: int = 224, **kwargs: Any) -> VisionTransformer:
    """ViT-B/16 (torchvision ``vit_b_16``): 12 layers, 12 heads, width 768, MLP 3072."""
    return VisionTransformer(
        num_classes=num_classes,
        image_size=image_size,
        patch_size=16,
        num_layers=12,
        num_heads=12,
        hidden_dim=768,
        mlp_dim=3072,
        **kwargs,
    )


# ------------------------------------------------------------------ torchvision conversion


def convert_torchvision(sd, module: VisionTransformer) -> dict[str, Any]:
    """Maps a torchvision ``VisionTransformer`` state dict onto ``module``'s variables.

    Every tensor's shape is checked against ``module`` (so another variant, image size or
    class count is a ValueError naming the key). Keys are consumed from ``sd`` (a
    :class:`jaxood.convert.common.StateDict`); the caller's ``sd.finish()`` reports leftovers.

    Args:
      sd: the torchvision state dict.
      module: the target module, e.g. ``jaxood.models.create("vit_b_16", 1000)``.

    Returns:
      ``{"params": ...}`` Flax variables for ``module``.
    """
    d, p, mlp = module.hidden_dim, module.patch_size, module.mlp_dim
    if "conv_proj.conv_last.weight" in sd or any(
        k.startswith("heads.pre_logits") for k in sd.keys()
    ):
        raise ValueError(
            f"{sd.source}: conv-stem / representation-layer ViT variants are not supported"
        )

    def linear(prefix: str, n_in: int, n_out: int) -> dict[str, np.ndarray]:
        return {
            "kernel": sd.take(f"{prefix}.weight", (n_out, n_in)).T,
            "bias": sd.take(f"{prefix}.bias", (n_out,)),
        }

    def layernorm(prefix: str) -> dict[str, np.ndarray]:
        return {
            "scale": sd.take(f"{prefix}.weight", (d,)),
            "bias": sd.take(f"{prefix}.bias", (d,)),
        }

    params: dict[str, Any] = {
        "conv_proj": {
            "kernel": sd.take("conv_proj.weight", (d, 3, p, p)).transpose(2, 3, 1, 0),
            "bias": sd.take("conv_proj.bias", (d,)),
        },
        "class_token": sd.take("class_token", (1, 1, d)),
        "pos_embedding": _take_pos_embedding(sd, module),
        "ln": layernorm("encoder.ln"),
        "head": linear("heads.head", d, module.num_classes),
    }
    for i in range(module.num_layers):
        t = f"encoder.layers.encoder_layer_{i}"
        params[f"layers_{i}"] = {
            "ln_1": layernorm(f"{t}.ln_1"),
            "self_attention": {
                # in_proj_weight [3D, D] stacks q, k, v; one [D, 3D] kernel keeps that order.
                "in_proj": {
                    "kernel": sd.take(f"{t}.self_attention.in_proj_weight", (3 * d, d)).T,
                    "bias": sd.take(f"{t}.self_attention.in_proj_bias", (3 * d,)),
                },
                "out_proj": linear(f"{t}.self_attention.out_proj", d, d),
            },
            "ln_2": layernorm(f"{t}.ln_2"),
            "mlp_0": linear(f"{t}.mlp.0", d, mlp),
            "mlp_3": linear(f"{t}.mlp.3", mlp, d),
        }
    extra = f"encoder.layers.encoder_layer_{module.num_layers}.ln_1.weight"
    if extra in sd:
        raise ValueError(
            f"{sd.source}: has more than {module.num_layers} encoder layers "
            "(checkpoint for a deeper ViT variant?)"
        )
    return {"params": params}


def _take_pos_embedding(sd, module: VisionTransformer) -> np.ndarray:
    value = sd.take("encoder.pos_embedding")
    expected = (1, module.seq_length, module.hidden_dim)
    if tuple(value.shape) != expected:
        raise ValueError(
            f"{sd.source}: 'encoder.pos_embedding' has shape {tuple(value.shape)} but the module "
            f"expects {expected} (image_size={module.image_size}, patch_size="
            f"{module.patch_size}, hidden_dim={module.hidden_dim}): the checkpoint is for "
            "another image size or ViT variant"
        )
    return value
