"""jaxood.models.conv: the forward is XLA's convolution, the hand-written gradients match
torch's ``conv2d`` gradients in float64 for every kernel / stride / padding / size mix."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxood.models import conv as C
from jaxood.models.layers import Conv

CASES = [
    (k, s, p, h)
    for k, s, h in itertools.product([1, 3, 7], [1, 2], [7, 8])
    for p in sorted({0, k // 2})
    if h + 2 * p >= k
] + [(4, 3, 2, 16), (5, 3, 2, 10)]


def torch_grads(x, w, dy, stride, pad):
    """(dx, dw) of ``sum(conv2d(x, w) * dy)`` from torch in float64, NHWC / HWIO."""
    tx = torch.tensor(x).permute(0, 3, 1, 2).requires_grad_(True)
    tw = torch.tensor(w).permute(3, 2, 0, 1).requires_grad_(True)
    y = torch.nn.functional.conv2d(tx, tw, stride=stride, padding=pad)
    (y * torch.tensor(dy).permute(0, 3, 1, 2)).sum().backward()
    return tx.grad.permute(0, 2, 3, 1).numpy(), tw.grad.permute(2, 3, 1, 0).numpy()


@pytest.mark.parametrize("k,stride,pad,h", CASES)
def test_gradients_match_torch_float64(k, stride, pad, h):
    rng = np.random.default_rng(k * 100 + stride * 10 + h)
    cin = 16 if stride > 1 else 3  # >= 16 input channels takes the phase-split input gradient
    x, w = rng.normal(size=(2, h, h + 1, cin)), rng.normal(size=(k, k, cin, 5))
    ho, wo = (h + 2 * pad - k) // stride + 1, (h + 1 + 2 * pad - k) // stride + 1
    dy = rng.normal(size=(2, ho, wo, 5))
    with jax.enable_x64(True):
        y, vjp = jax.vjp(lambda a, b: C.conv2d(a, b, stride, pad), jnp.asarray(x), jnp.asarray(w))
        dx, dw = vjp(jnp.asarray(dy))
        assert y.shape == dy.shape
    rx, rw = torch_grads(x, w, dy, stride, pad)
    np.testing.assert_allclose(np.asarray(dx), rx, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(dw), rw, rtol=1e-10, atol=1e-10)


def test_forward_is_xla_convolution_bit_for_bit():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 9, 9, 8))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 8, 6))
    for stride in (1, 2):
        np.testing.assert_array_equal(C.conv2d(x, w, stride, 1), C.lax_conv(x, w, stride, 1))


def test_grouped_and_bf16_convs():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 8))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 2, 8))
    g = jax.grad(lambda a: C.conv2d(a, w, 1, 1, groups=4).sum())(x)
    np.testing.assert_allclose(g, jax.grad(lambda a: C.lax_conv(a, w, 1, 1, 4).sum())(x), rtol=1e-5)
    wb = jax.random.normal(jax.random.PRNGKey(2), (3, 3, 8, 16)).astype(jnp.bfloat16)
    gx, gw = jax.grad(lambda a, b: C.conv2d(a, b, 2, 1).astype(jnp.float32).sum(), (0, 1))(
        x.astype(jnp.bfloat16), wb
    )
    assert gx.dtype == gw.dtype == jnp.bfloat16
    rx, rw = jax.grad(lambda a, b: C.lax_conv(a, b, 2, 1).sum(), (0, 1))(x, wb.astype(jnp.float32))
    np.testing.assert_allclose(gx.astype(np.float32), rx, rtol=0.05, atol=0.1)
    np.testing.assert_allclose(gw.astype(np.float32), rw, rtol=0.05, atol=0.5)


def test_module_keeps_flax_conv_variables():
    """Saved models and converters see the same variable tree and init as ``nn.Conv``."""
    import flax.linen as nn

    x = jnp.ones((1, 8, 8, 4))
    ours = Conv(6, 3, 2).init(jax.random.PRNGKey(0), x)
    flax_conv = nn.Conv(6, (3, 3), strides=2, padding=((1, 1), (1, 1)), use_bias=False,
                        kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"))
    theirs = flax_conv.init(jax.random.PRNGKey(0), x)
    assert jax.tree.map(jnp.shape, ours) == jax.tree.map(jnp.shape, theirs)
    np.testing.assert_array_equal(ours["params"]["kernel"], theirs["params"]["kernel"])
    np.testing.assert_array_equal(Conv(6, 3, 2).apply(ours, x), flax_conv.apply(theirs, x))


def test_materialized_is_identity_and_keeps_nan():
    v = jnp.array([[jnp.nan, 1.0], [2.0, -jnp.inf]])
    np.testing.assert_array_equal(jax.jit(C.materialized)(v), v)
    np.testing.assert_array_equal(jax.jit(C.materialized)(v[::-1]), v[::-1])
