"""The transformers' shared primitives against torch: LayerNorm, exact GELU, softmax attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jaxood.models import layers  # noqa: E402


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("offset", [0.0, 300.0])  # a large common offset: two-pass variance
@pytest.mark.parametrize("d, eps", [(768, 1e-6), (96, 1e-5)])
def test_layernorm_matches_torch_and_float64(d, eps, offset):
    rng = np.random.default_rng(0)
    x = (offset + rng.standard_normal((2, 5, d)) * rng.uniform(0.1, 5, d)).astype(np.float32)
    scale, bias = (
        rng.standard_normal(d).astype(np.float32),
        rng.standard_normal(d).astype(np.float32),
    )
    ln = torch.nn.LayerNorm(d, eps=eps)
    with torch.no_grad():
        ln.weight.copy_(torch.from_numpy(scale))
        ln.bias.copy_(torch.from_numpy(bias))
        ref = ln(torch.from_numpy(x)).numpy()
    x64 = x.astype(np.float64)
    centred = x64 - x64.mean(-1, keepdims=True)
    exact = centred / np.sqrt((centred**2).mean(-1, keepdims=True) + eps) * scale + bias
    variables = {"params": {"scale": scale, "bias": bias}}
    ours = jax.jit(layers.LayerNorm(eps).apply)(variables, x)
    # float32 rounding of x itself bounds both: within 3x torch's own error to float64.
    assert _rel(ours, exact) <= max(3 * _rel(ref, exact), 2e-6)
    assert _rel(ours, ref) < (2e-6 if offset == 0 else 3e-5)
    # Same parameter tree as flax.linen.LayerNorm (converters and saved models unchanged).
    init = layers.LayerNorm(eps).init(jax.random.PRNGKey(0), x)
    assert jax.tree.map(np.shape, init) == {"params": {"scale": (d,), "bias": (d,)}}


def test_gelu_matches_torch_exact_gelu():
    x = np.concatenate([np.linspace(-12, 12, 4001), [-30.0, 0.0, 30.0]]).astype(np.float32)
    ref = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    # XLA's float32 erf saturates to -1 slightly earlier than torch's in the far negative
    # tail (x < -4), where GELU is below 1e-6 in magnitude: absolute tolerance 1e-6.
    np.testing.assert_allclose(np.asarray(jax.jit(layers.gelu)(x)), ref, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 1e3])  # large logits must not overflow
def test_softmax_attention_matches_torch(scale):
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((3, 4, 7, 9)) * scale).astype(np.float32)
    logits[0, 0, :, 3] -= 100.0  # Swin's shifted-window mask value
    v = rng.standard_normal((3, 4, 9, 5)).astype(np.float32)
    w_ref = torch.softmax(torch.from_numpy(logits), -1)
    out_ref = (w_ref @ torch.from_numpy(v)).numpy()
    out, e, sums = jax.jit(layers.softmax_attention)(logits, v)
    assert _rel(out, out_ref) < 2e-6
    assert _rel(e / sums[..., None], w_ref.numpy()) < 2e-6
    # With attention dropout the weights are normalised before it (torch's order).
    halve = lambda w: w * 0.5
    out_d, _, _ = layers.softmax_attention(
        jnp.asarray(logits), jnp.asarray(v), weights_dropout=halve
    )
    assert _rel(out_d, 0.5 * out_ref) < 2e-6


def test_softmax_attention_gradient_matches_torch():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((2, 6, 6)).astype(np.float32)
    v = rng.standard_normal((2, 6, 3)).astype(np.float32)
    t_logits = torch.from_numpy(logits).requires_grad_(True)
    (torch.softmax(t_logits, -1) @ torch.from_numpy(v)).sum().backward()
    grad = jax.grad(lambda lg: layers.softmax_attention(lg, v)[0].sum())(logits)
    assert _rel(grad, t_logits.grad.numpy()) < 1e-5
