"""Training-mode BatchNorm (``jaxood.models.layers``) against PyTorch in float64.

The layer computes its statistics in a reshaped view with a hand-written backward (for
XLA:CPU speed), so value *and* every gradient are checked against torch autograd of the
textbook formula, including the cotangents of the returned mean/variance.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxood.models.layers import BatchNorm, batch_norm_train

torch = pytest.importorskip("torch")


def _torch_reference(x, scale, bias, gy, gm, gv, eps=1e-5):
    tx, ts, tb = (
        torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, scale, bias)
    )
    mean = tx.mean(dim=(0, 1, 2))
    var = tx.var(dim=(0, 1, 2), unbiased=False)
    y = (tx - mean) / torch.sqrt(var + eps) * ts + tb
    obj = (
        (y * torch.tensor(gy)).sum()
        + (mean * torch.tensor(gm)).sum()
        + (var * torch.tensor(gv)).sum()
    )
    obj.backward()
    return [a.detach().numpy() for a in (y, mean, var, tx.grad, ts.grad, tb.grad)]


@pytest.mark.parametrize("shape", [(16, 8, 8, 24), (3, 5, 7, 4), (2, 1, 1, 6)])
def test_values_and_gradients_match_torch_float64(shape):
    """Includes an odd M (no grouping possible) and M = 2; data far from zero mean."""
    rng = np.random.default_rng(sum(shape))
    c = shape[-1]
    x = rng.normal(3.0, 2.0, shape).astype(np.float32)
    scale, bias = rng.uniform(0.5, 1.5, c).astype(np.float32), rng.normal(size=c).astype(np.float32)
    gy, gm, gv = rng.normal(size=shape), rng.normal(size=c), rng.normal(size=c)
    y, mean, var, dx, ds, db = _torch_reference(x, scale, bias, gy, gm, gv)

    def obj(x, s, b):
        y, m, v = batch_norm_train(x, s, b, 1e-5)
        return jnp.sum(y * gy) + jnp.sum(m * gm) + jnp.sum(v * gv)

    out = batch_norm_train(jnp.asarray(x), scale, bias, 1e-5)
    grads = jax.grad(obj, argnums=(0, 1, 2))(jnp.asarray(x), scale, bias)
    for got, ref, name in zip((*out, *grads), (y, mean, var, dx, ds, db), "y m v dx ds db".split()):
        np.testing.assert_allclose(
            np.asarray(got), ref, rtol=2e-5, atol=2e-5 * np.abs(ref).max(), err_msg=name
        )


def test_module_matches_flax_batchnorm_in_both_modes():
    """Same variables, same training output and running statistics, same inference output."""
    x = np.random.default_rng(0).normal(1.0, 2.0, size=(6, 5, 5, 3)).astype(np.float32)
    ours, ref = BatchNorm(), nn.BatchNorm(momentum=0.9, epsilon=1e-5)
    v = ours.init(jax.random.PRNGKey(0), x, use_running_average=False)
    v_ref = ref.init(jax.random.PRNGKey(0), x, use_running_average=False)
    assert jax.tree.map(np.shape, v) == jax.tree.map(np.shape, v_ref)
    v = {"params": {"scale": jnp.linspace(0.5, 2, 3), "bias": jnp.array([0.1, -0.2, 0.3])},
         "batch_stats": v["batch_stats"]}  # fmt: skip
    y, st = ours.apply(v, x, use_running_average=False, mutable=["batch_stats"])
    y_ref, st_ref = ref.apply(v, x, use_running_average=False, mutable=["batch_stats"])
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for k in ("mean", "var"):
        np.testing.assert_allclose(st["batch_stats"][k], st_ref["batch_stats"][k], rtol=1e-5)
    v2 = {**v, **st}
    np.testing.assert_array_equal(
        ours.apply(v2, x, use_running_average=True), ref.apply(v2, x, use_running_average=True)
    )


def test_bfloat16_input_keeps_float32_statistics():
    x = np.random.default_rng(1).normal(2.0, 1.0, size=(8, 4, 4, 5)).astype(np.float32)
    y, mean, var = batch_norm_train(jnp.asarray(x, jnp.bfloat16), jnp.ones(5), jnp.zeros(5), 1e-5)
    assert y.dtype == jnp.bfloat16 and mean.dtype == var.dtype == jnp.float32
    xb = np.asarray(jnp.asarray(x, jnp.bfloat16), np.float64)  # the values the layer saw
    np.testing.assert_allclose(mean, xb.mean((0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(var, xb.var((0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(y, np.float32),
        (xb - xb.mean((0, 1, 2))) / np.sqrt(xb.var((0, 1, 2)) + 1e-5),
        atol=0.05,
    )
