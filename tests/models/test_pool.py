"""jaxood.models.pool: the forward is flax's max pool bit for bit; the hand-written gradient
matches torch's ``max_pool2d`` gradient in float64, ties included (first maximum wins)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxood.models import pool

CASES = [(8, 8, 3, 2, 1), (7, 9, 3, 2, 1), (10, 10, 2, 2, 0), (9, 9, 3, 1, 1),
         (11, 11, 3, 3, 0), (6, 6, 3, 2, 1), (5, 5, 5, 1, 2)]


def tied_input(rng, h, w):
    """ReLU-like input: many exact zeros, and a block of equal positive values, so windows
    hold ties among zeros and among maxima."""
    x = np.maximum(rng.normal(size=(2, h, w, 3)), 0.0)
    x[0, :3, :3, 0] = 0.5
    x[1, 1:4, 2:5, 2] = 1.25
    return x


def torch_grad(x, dy, k, s, p):
    tx = torch.tensor(x).permute(0, 3, 1, 2).requires_grad_(True)
    y = torch.nn.functional.max_pool2d(tx, k, s, p)
    y.backward(torch.tensor(dy).permute(0, 3, 1, 2))
    return y.detach().permute(0, 2, 3, 1).numpy(), tx.grad.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("h,w,k,s,p", CASES)
def test_forward_and_gradient_match_torch_float64(h, w, k, s, p):
    rng = np.random.default_rng(h * 1000 + w * 100 + k * 10 + s)
    x = tied_input(rng, h, w)
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    dy = rng.normal(size=(2, ho, wo, 3))
    with jax.enable_x64(True):
        y, vjp = jax.vjp(lambda a: pool.max_pool(a, k, s, p), jnp.asarray(x))
        (dx,) = vjp(jnp.asarray(dy))
    ry, rdx = torch_grad(x, dy, k, s, p)
    np.testing.assert_array_equal(np.asarray(y), ry)
    # Overlapping windows add up to ceil(k/s)^2 contributions in another order than torch.
    np.testing.assert_allclose(np.asarray(dx), rdx, rtol=1e-12, atol=1e-12)


def test_forward_is_flax_max_pool_bit_for_bit():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 13, 12, 5))
    ref = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    np.testing.assert_array_equal(pool.max_pool(x, 3, 2, 1), ref)


def test_gradient_routes_to_the_first_maximum():
    # One window, every element equal: torch and XLA give the whole gradient to the first.
    x = jnp.ones((1, 3, 3, 1))
    dx = jax.grad(lambda a: pool.max_pool(a, 3, 1, 0).sum())(x)
    expected = np.zeros((1, 3, 3, 1))
    expected[0, 0, 0, 0] = 1.0
    np.testing.assert_array_equal(np.asarray(dx), expected)


def test_float32_gradient_equals_xla_autodiff():
    x = jax.nn.relu(jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 8)))
    ref = jax.grad(lambda a: (nn.max_pool(a, (3, 3), (2, 2), ((1, 1), (1, 1))) ** 2).sum())(x)
    got = jax.grad(lambda a: (pool.max_pool(a, 3, 2, 1) ** 2).sum())(x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-6, atol=1e-6)
