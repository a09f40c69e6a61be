"""Layer conventions shared by the PyTorch-compatible Flax models.

PyTorch pads convolutions symmetrically (``kernel // 2`` on every side); Flax ``'SAME'`` pads
stride-2 convolutions asymmetrically, which shifts the sampling grid and breaks parity with
converted or reference weights. All our CNNs therefore build convs through :func:`conv`.

The transformers (ViT, Swin) share :class:`LayerNorm`, :func:`gelu` and
:func:`softmax_attention`, written for XLA:CPU as jaxood configures it (YNNPACK fusions off,
see ``jaxood/__init__.py``): there a ``reduce`` over a long axis becomes an unfused,
single-threaded tree of ``reduce-window`` passes, while a matrix-vector product runs in the
dot library at memory speed. The row sums of LayerNorm and softmax are therefore written as
products with a ones vector (same values up to float32 summation order; the parity tests
keep them within 1e-4 of torchvision), and softmax is normalised after the ``weights @ v``
product, on the smaller tensor (experiments/bench_imagenet_forward.py measures the effect).
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

# PyTorch BatchNorm2d(eps=1e-5, momentum=0.1) == Flax momentum 0.9.
BatchNorm = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)
# kaiming_normal_(mode="fan_out", nonlinearity="relu"): OpenOOD WRN/DenseNet, torchvision ResNet.
HE_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# kaiming_normal_(mode="fan_in"): torchvision DenseNet.
HE_FAN_IN = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
# PyTorch nn.Linear / nn.Conv2d default weight init: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
TORCH_DEFAULT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def conv(
    features: int,
    kernel: int,
    stride: int = 1,
    groups: int = 1,
    *,
    name: str | None = None,
    init=HE_FAN_OUT,
) -> nn.Conv:
    """Bias-free square conv with PyTorch's symmetric padding ``kernel // 2``."""
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        feature_group_count=groups,
        use_bias=False,
        kernel_init=init,
        name=name,
    )


def row_sum(x: jax.Array) -> jax.Array:
    """``x.sum(-1)`` as a matrix-vector product (see the module docstring): ``[..., D] -> [...]``."""
    return x @ jnp.ones((x.shape[-1],), x.dtype)


class LayerNorm(nn.Module):
    """``torch.nn.LayerNorm`` over the last axis (two-pass variance, like torch).

    Parameters ``scale``/``bias`` as ``flax.linen.LayerNorm``, so converters and saved
    models are unchanged.
    """

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (d,))
        bias = self.param("bias", nn.initializers.zeros, (d,))
        centred = x - (row_sum(x) / d)[..., None]
        var = row_sum(centred * centred) / d
        return centred * jax.lax.rsqrt(var + self.epsilon)[..., None] * scale + bias


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU in torch's form ``x * 0.5 * (1 + erf(x / sqrt(2)))``.

    Cheaper on CPU than ``jax.nn.gelu(approximate=False)``, which evaluates ``erfc``.
    """
    return x * 0.5 * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))


def softmax_attention(
    logits: jax.Array, v: jax.Array, *, weights_dropout=None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``softmax(logits) @ v`` with the normalisation applied to the (smaller) product.

    Args:
      logits: ``[..., Q, K]`` attention logits (scale, bias and masks already added).
      v: ``[..., K, E]`` values (same leading dims).
      weights_dropout: optional ``weights -> weights`` (training-time attention dropout);
        when given, the weights are normalised first, as torch does.

    Returns:
      ``(out [..., Q, E], unnormalised weights exp(logits - max) [..., Q, K], row sums
      [..., Q])``: ``weights / sums[..., None]`` are the post-softmax attention weights.
    """
    e = jnp.exp(logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True)))
    sums = row_sum(e)
    if weights_dropout is not None:
        return weights_dropout(e / sums[..., None]) @ v, e, sums
    return (e @ v) / sums[..., None], e, sums
