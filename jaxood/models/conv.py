"""2-D convolution with gradients written for XLA:CPU.

The forward pass is ``lax.conv_general_dilated`` unchanged, so saved and converted models
give bit-identical outputs. The backward pass is hand-written (:func:`conv2d`'s custom VJP)
because three of XLA:CPU's choices dominated the training step (per-op profile of WRN-16-4,
batch 128, on a quiet 2-core AVX-512 Xeon, ``experiments/profile_train_step.py``):

* the weight-gradient convolution needs its operands transposed to ``[Cin, H, W, N]`` and
  ``[Ho, Wo, N, Cout]``, and XLA fuses the BatchNorm + ReLU (+ residual) producer of the
  input into that transpose, re-reading five tensors in transposed order (0.42 s of a 1.85 s
  step). :func:`materialized` makes the transposes read the stored tensors (0.16 s);
* a 1x1 convolution's weight gradient runs as a convolution at a few GFLOP/s; here it is one
  matrix product ``x^T @ dy`` (:func:`weight_grad`);
* a strided convolution's input gradient is a convolution over a zero-dilated ``dy``
  (``stride^2`` times the arithmetic); here each output phase is a stride-1 convolution
  with the kernel taps that reach it (:func:`input_grad`, 1.6-2.6x faster).

Grouped and non-square convolutions keep XLA's gradient.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_DIMS = ("NHWC", "HWIO", "NHWC")

def lax_conv(x: jax.Array, w: jax.Array, stride: int, pad: int, groups: int = 1) -> jax.Array:
    """``x [N, H, W, Cin]``, ``w [K, K, Cin/groups, Cout]`` -> ``[N, Ho, Wo, Cout]``."""
    return jax.lax.conv_general_dilated(
        x, w, (stride, stride), ((pad, pad), (pad, pad)),
        dimension_numbers=_DIMS, feature_group_count=groups,
    )


def conv2d(x: jax.Array, w: jax.Array, stride: int, pad: int, groups: int = 1) -> jax.Array:
    """PyTorch's ``conv2d`` (symmetric ``pad``, no bias) in NHWC / HWIO, fast gradients.

    Args:
      x: ``[N, H, W, Cin]`` input; ``w``: ``[K, K, Cin/groups, Cout]`` kernel (same dtype).
      stride, pad, groups: as ``torch.nn.functional.conv2d``.

    Returns ``[N, Ho, Wo, Cout]``, bit-identical to :func:`lax_conv` (the gradients agree
    with XLA's to float32 rounding; ``tests/models/test_conv.py`` checks both against torch).
    """
    if groups != 1 or w.shape[0] != w.shape[1]:
        return lax_conv(x, w, stride, pad, groups)
    return _conv(x, w, stride, pad)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, stride, pad):
    return lax_conv(x, w, stride, pad)


def _conv_fwd(x, w, stride, pad):
    return lax_conv(x, w, stride, pad), (x, w)


def _conv_bwd(stride, pad, res, dy):
    x, w = res
    x, dy = materialized(x), materialized(dy)
    return input_grad(dy, w, x.shape, stride, pad), weight_grad(x, dy, w.shape, stride, pad)


_conv.defvjp(_conv_fwd, _conv_bwd)


def _acc(dtype):
    """Accumulation dtype of the hand-written products: at least float32 (bf16 inputs)."""
    return jnp.promote_types(dtype, jnp.float32)


def materialized(v: jax.Array) -> jax.Array:
    """``v`` unchanged, read from memory by its consumers instead of recomputed.

    XLA:CPU fuses the elementwise producer of a conv input (BatchNorm + ReLU + residual add)
    into the transposes its weight-gradient convolution needs, and that fused loop reads
    five tensors in transposed order: ~0.4 s of a 1.85 s WRN-16-4 step (batch 128, profiled
    with ``experiments/profile_train_step.py``). A conditional is a fusion barrier that
    survives XLA's pipeline (``lax.optimization_barrier`` is removed before fusion on CPU);
    both branches return ``v`` (times 1.0 when its first element is not finite, so neither
    branch is constant).
    """
    pred = jnp.isfinite(v.reshape(-1)[0])
    return jax.lax.cond(pred, lambda u: u, lambda u: u * 1, v)


def weight_grad(x: jax.Array, dy: jax.Array, w_shape, stride: int, pad: int) -> jax.Array:
    """``dL/dw [K, K, Cin, Cout]`` from ``x [N, H, W, Cin]`` and ``dy [N, Ho, Wo, Cout]``.

    A 1x1 kernel is one product ``x^T [Cin, M] @ dy [M, Cout]`` (``M = N*Ho*Wo``), which
    XLA:CPU runs several times faster than its convolution form; larger kernels use XLA's
    own weight-gradient convolution.
    """
    if w_shape[0] == 1 and pad == 0:
        n, ho, wo, cout = dy.shape
        xs = x[:, : stride * (ho - 1) + 1 : stride, : stride * (wo - 1) + 1 : stride]
        g = jax.lax.dot_general(
            xs.reshape(-1, x.shape[-1]), dy.reshape(-1, cout), (((0,), (0,)), ((), ())),
            preferred_element_type=_acc(dy.dtype),
        )
        return g.reshape(w_shape).astype(dy.dtype)
    _, vjp = jax.vjp(lambda w: lax_conv(x, w, stride, pad), jnp.zeros(w_shape, dy.dtype))
    return vjp(dy)[0]


def input_grad(dy: jax.Array, w: jax.Array, x_shape, stride: int, pad: int) -> jax.Array:
    """``dL/dx [N, H, W, Cin]`` from ``dy [N, Ho, Wo, Cout]`` and ``w [K, K, Cin, Cout]``.

    Stride 1 is XLA's transposed convolution (a 1x1 kernel the product ``dy @ W^T``). XLA
    computes a strided convolution's input gradient as a convolution over ``dy`` dilated
    with zeros, ``stride^2`` times the arithmetic needed; here each of the ``stride^2``
    output phases ``dx[:, a::s, b::s]`` is a stride-1 convolution of ``dy`` with the kernel
    taps that reach it (:func:`_phase_grad`), and the phases are interleaved.
    """
    if stride == 1 or x_shape[-1] < 16:  # few input channels (an image): XLA's is faster
        if w.shape[0] == 1 and stride == 1 and pad == 0:
            return jnp.dot(dy, w[0, 0].T, preferred_element_type=_acc(dy.dtype)).astype(dy.dtype)
        conv_x = jax.linear_transpose(
            lambda x: lax_conv(x, w, stride, pad), jax.ShapeDtypeStruct(x_shape, dy.dtype)
        )
        return conv_x(dy)[0]
    n, h, wd, cin = x_shape
    m_h, m_w = -(-h // stride), -(-wd // stride)  # rows / columns per phase (padded)
    phases = [
        [_phase_grad(dy, w, stride, pad, a, b, (m_h, m_w)) for b in range(stride)]
        for a in range(stride)
    ]
    dx = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)  # [N, Mh, s, Mw, s, C]
    return dx.reshape(n, m_h * stride, m_w * stride, cin)[:, :h, :wd]


def _phase_taps(k: int, stride: int, pad: int, phase: int) -> tuple[int, int, int]:
    """``(first tap r, tap count J, low padding)`` of one output phase along one axis.

    Input row ``s*m + phase`` receives ``dy[m + q - j] @ w[r + s*j]`` for ``j < J``, with
    ``r = (phase + pad) mod s`` and ``q = (phase + pad - r) / s``: a stride-1 correlation of
    ``dy`` padded by ``J - 1 - q`` rows with the reversed taps.
    """
    r = (phase + pad) % stride
    taps = len(range(r, k, stride))
    return r, taps, taps - 1 - (phase + pad - r) // stride


def _phase_grad(dy, w, stride, pad, a, b, out_hw):
    """``dx[:, a::s, b::s]`` padded to ``out_hw``: ``[N, Mh, Mw, Cin]``."""
    k = w.shape[0]
    (ra, ja, lo_a), (rb, jb, lo_b) = _phase_taps(k, stride, pad, a), _phase_taps(k, stride, pad, b)
    n, ho, wo, _ = dy.shape
    if ja == 0 or jb == 0:
        return jnp.zeros((n, *out_hw, w.shape[2]), dy.dtype)
    taps = w[ra::stride, rb::stride][::-1, ::-1].transpose(0, 1, 3, 2)  # [Ja, Jb, Cout, Cin]
    hi_a = out_hw[0] + ja - 1 - ho - lo_a
    hi_b = out_hw[1] + jb - 1 - wo - lo_b
    return jax.lax.conv_general_dilated(
        dy, taps, (1, 1), ((lo_a, hi_a), (lo_b, hi_b)), dimension_numbers=_DIMS
    )
