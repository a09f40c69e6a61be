"""Layer conventions shared by the PyTorch-compatible Flax models.

PyTorch pads convolutions symmetrically (``kernel // 2`` on every side); Flax ``'SAME'`` pads
stride-2 convolutions asymmetrically, which shifts the sampling grid and breaks parity with
converted or reference weights. All our CNNs therefore build convs through :func:`conv`.

:class:`BatchNorm` is PyTorch's ``BatchNorm2d(eps=1e-5, momentum=0.1)`` with the variables
of ``flax.linen.BatchNorm`` (params ``scale``/``bias``, batch_stats ``mean``/``var``), so
saved models and converted weights are unchanged. Its training-mode statistics are computed
in a form XLA:CPU runs fast (see :func:`batch_norm_train`).

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
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxood.models.conv import conv2d


def _groups(m: int, target: int = 64) -> int:
    """The largest power of two <= ``target`` dividing ``m``."""
    g = 1
    while g < target and m % (2 * g) == 0:
        g *= 2
    return g


def _channel_sums(v: jax.Array, g: int, c: int) -> jax.Array:
    """``[M/g, g*C] -> [C]``: sum over all rows and the ``g`` interleaved groups."""
    return v.sum(0).reshape(g, c).sum(0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float):
    """Training-mode BatchNorm over all axes but the last: ``(y, mean, var)``.

    ``x [..., C]`` (any float dtype; statistics in float32), ``scale``/``bias [C]``;
    ``y = (x - mean) * scale / sqrt(var + eps) + bias`` in ``x.dtype``, ``mean``/``var
    [C]`` float32 with the biased (1/M) variance, computed in two passes (centred).

    Why not ``x.mean((0, 1, 2))``: XLA:CPU lowers a reduction of ``[N, H, W, C]`` over
    ``N, H, W`` to one strided window per channel and runs it ~50x slower than a memory
    pass (measured: 110 ms vs 1.6 ms for 128x32x32x64; PyTorch's fused kernel: 12 ms).
    Viewing ``x`` as ``[M/g, g*C]`` (a free reshape the compiler cannot fold back) turns
    every statistic into a fast contiguous column reduction, and the hand-written
    backward keeps its two sums in that form too (autodiff would transpose the
    per-channel broadcasts into the slow reductions again).
    """
    return _bn_fwd(x, scale, bias, epsilon)[0]


def _bn_view(x):
    c = x.shape[-1]
    m = x.size // c
    g = _groups(m)
    return x.reshape(m // g, g * c).astype(jnp.float32), m, g, c


def _bn_fwd(x, scale, bias, epsilon):
    v, m, g, c = _bn_view(x)
    mean = _channel_sums(v, g, c) / m
    centred = v - jnp.tile(mean, g)
    var = _channel_sums(centred * centred, g, c) / m
    rstd = jax.lax.rsqrt(var + epsilon)
    y = centred * jnp.tile(scale * rstd, g) + jnp.tile(bias, g)
    return (y.reshape(x.shape).astype(x.dtype), mean, var), (x, mean, rstd, scale)


def _bn_bwd(epsilon, res, cotangents):
    del epsilon
    x, mean, rstd, scale = res
    gy, gmean, gvar = cotangents
    v, m, g, c = _bn_view(x)
    gv = gy.reshape(v.shape).astype(jnp.float32)
    centred = v - jnp.tile(mean, g)
    sum_g = _channel_sums(gv, g, c)
    dscale = _channel_sums(gv * centred, g, c) * rstd
    a = scale * rstd
    # dx = a * (g - mean(g) - xhat * mean(g * xhat)), plus the (usually zero) cotangents of
    # the returned statistics: d mean / dx = 1/M, d var / dx = 2 (x - mean) / M.
    k1 = -a * rstd * dscale / m + 2.0 * gvar / m
    k0 = (gmean - a * sum_g) / m
    dx = gv * jnp.tile(a, g) + centred * jnp.tile(k1, g) + jnp.tile(k0, g)
    return dx.reshape(x.shape).astype(x.dtype), dscale.astype(scale.dtype), sum_g


batch_norm_train.defvjp(_bn_fwd, _bn_bwd)


class BatchNorm(nn.Module):
    """PyTorch ``BatchNorm2d`` (eps 1e-5, momentum 0.1 == Flax momentum 0.9), last axis.

    Inference uses the running statistics with ``flax.linen.BatchNorm``'s arithmetic;
    training uses :func:`batch_norm_train` and updates the running statistics with the
    biased batch variance (as Flax; PyTorch stores the unbiased one, a factor M/(M-1) on
    the 0.1 * var term). The output has the input's dtype (bf16 stays bf16).
    """

    use_running_average: bool | None = None
    momentum: float = 0.9
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x, use_running_average: bool | None = None):
        use_ra = nn.merge_param(
            "use_running_average", self.use_running_average, use_running_average
        )
        c = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        if use_ra:
            mul = jax.lax.rsqrt(ra_var.value + self.epsilon) * scale
            return ((x - ra_mean.value) * mul + bias).astype(x.dtype)
        y, mean, var = batch_norm_train(x, scale, bias, self.epsilon)
        if not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y


# kaiming_normal_(mode="fan_out", nonlinearity="relu"): OpenOOD WRN/DenseNet, torchvision ResNet.
HE_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# kaiming_normal_(mode="fan_in"): torchvision DenseNet.
HE_FAN_IN = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
# PyTorch nn.Linear / nn.Conv2d default weight init: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
TORCH_DEFAULT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class Conv(nn.Module):
    """Bias-free square conv with PyTorch's symmetric padding ``kernel // 2`` (NHWC, HWIO).

    The variables are ``flax.linen.Conv``'s (``kernel [K, K, Cin/groups, Cout]``), so saved
    and converted models are unchanged; the forward pass is the same XLA convolution, and the
    gradients come from :func:`jaxood.models.conv.conv2d` (fast on XLA:CPU). Inputs and
    kernel are promoted to a common dtype as ``nn.Conv`` does (bf16 training casts both).
    """

    features: int
    kernel: int
    stride: int = 1
    groups: int = 1
    kernel_init: Callable = HE_FAN_OUT

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (self.kernel, self.kernel, x.shape[-1] // self.groups, self.features)
        w = self.param("kernel", self.kernel_init, shape, jnp.float32)
        x, w = nn.dtypes.promote_dtype(x, w)
        return conv2d(x, w, self.stride, self.kernel // 2, self.groups)


def conv(
    features: int,
    kernel: int,
    stride: int = 1,
    groups: int = 1,
    *,
    name: str | None = None,
    init=HE_FAN_OUT,
) -> Conv:
    """:class:`Conv` with ``kernel // 2`` padding (PyTorch's ``Conv2d(..., bias=False)``)."""
    return Conv(features, kernel, stride, groups, kernel_init=init, name=name)


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
