"""MSP, MLS, EBO, ODIN against NumPy / torch references (OpenOOD semantics)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jaxood import detectors
from jaxood.detectors import logits as L
from jaxood.types import Features, Inputs
from tests.detectors import tiny_net

torch = pytest.importorskip("torch")


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def inputs_of(logits):
    logits = jnp.asarray(logits, jnp.float32)
    return Inputs(features=Features(logits=logits, feature=jnp.zeros((logits.shape[0], 1))))


@pytest.fixture(scope="module")
def logits():
    return np.random.default_rng(0).normal(0, 3, (50, 7)).astype(np.float32)


def test_msp_mls_ebo_match_numpy(logits):
    inp = inputs_of(logits)
    msp = detectors.score(detectors.get("msp"), None, None, None, inp)
    mls = detectors.score(detectors.get("mls"), None, None, None, inp)
    np.testing.assert_allclose(np.asarray(msp), np_softmax(logits.astype(np.float64)).max(-1),
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(mls), logits.max(-1), rtol=1e-6)
    for t in (1.0, 2.5):
        ebo = detectors.score(detectors.get("ebo"), None, None, None, inp, temperature=t)
        z = logits.astype(np.float64) / t
        ref = t * (z.max(-1) + np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)))
        np.testing.assert_allclose(np.asarray(ebo), ref, rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(hnp.arrays(np.float32, (6, 5), elements=st.floats(-50, 50, width=32)))
def test_msp_in_unit_interval_and_finite(z):
    s = np.asarray(L.msp(jnp.asarray(z)))
    assert np.all(np.isfinite(s)) and np.all(s > 0) and np.all(s <= 1)
    assert np.all(np.isfinite(np.asarray(L.energy(jnp.asarray(z)))))


def ref_odin(net, x_nchw, temperature, noise, std):
    """OpenOOD odin_postprocessor.postprocess, in torch."""
    x = x_nchw.clone().requires_grad_(True)
    output, _ = net(x)
    labels = output.detach().argmax(axis=1)
    loss = torch.nn.functional.cross_entropy(output / temperature, labels)
    loss.backward()
    gradient = torch.ge(x.grad.detach(), 0)
    gradient = (gradient.double() - 0.5) * 2
    for c in range(3):
        gradient[:, c] = gradient[:, c] / std[c]
    temp_inputs = torch.add(x.detach(), gradient, alpha=-noise)
    out, _ = net(temp_inputs)
    out = (out / temperature).detach().numpy()
    return np_softmax(out).max(1)


@pytest.mark.parametrize("temperature, noise", [(1000.0, 0.0014), (1.0, 0.0028), (10.0, 0.0)])
def test_odin_matches_torch_reference(temperature, noise):
    weights = tiny_net.make_weights(seed=2)
    model = tiny_net.jax_model()
    net, _ = tiny_net.torch_net(weights)
    x = np.random.default_rng(1).normal(size=(12, 8, 8, 3)).astype(np.float32)
    std = (0.247, 0.2435, 0.2616)
    det = detectors.get("odin")
    inp = detectors.prepare_inputs(det, model, weights, jnp.asarray(x))
    got = detectors.score(det, model, weights, None, inp, temperature=temperature, noise=noise,
                          std=std)
    ref = ref_odin(net, torch.tensor(x.transpose(0, 3, 1, 2), dtype=torch.float64), temperature,
                   noise, std)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5)


def test_odin_batch_invariant_and_single_trace():
    weights = tiny_net.make_weights(seed=2)
    model = tiny_net.jax_model()
    x = jnp.asarray(np.random.default_rng(1).normal(size=(10, 8, 8, 3)), jnp.float32)
    traces = []

    def fn(x, t, eps):
        traces.append(1)
        return L.odin(model, weights, x, temperature=t, noise=eps)

    jitted = jax.jit(fn)
    full = np.asarray(jitted(x, 1000.0, 0.0014))
    for t in (1.0, 10.0):
        jitted(x, t, 0.0028)
    assert len(traces) == 1
    np.testing.assert_allclose(np.asarray(jitted(x[::-1], 1000.0, 0.0014)), full[::-1], rtol=1e-6)


def test_bad_inputs():
    det = detectors.get("odin")
    weights = tiny_net.make_weights()
    model = tiny_net.jax_model()
    with pytest.raises(ValueError, match="input images"):
        detectors.score(det, model, weights, None, inputs_of(np.zeros((2, 3))))
    with pytest.raises(ValueError, match="temperature"):
        detectors.score(detectors.get("ebo"), None, None, None, inputs_of(np.zeros((2, 3))),
                        temperature=0.0)
    with pytest.raises(ValueError, match="NaN"):
        detectors.score(detectors.get("msp"), None, None, None, inputs_of([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="rank 2"):
        detectors.score(detectors.get("mls"), None, None, None,
                        Inputs(features=Features(logits=jnp.zeros(3), feature=jnp.zeros(3))))
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) \['temperature'\]"):
        detectors.score(detectors.get("msp"), None, None, None, inputs_of(np.zeros((2, 3))),
                        temperature=2.0)
    with pytest.raises(ValueError, match="unknown detector 'nope'; valid names: .*msp"):
        detectors.get("nope")


def test_register_user_detector_without_subclassing():
    def my_score(model, variables, stats, inputs, *, temperature):
        return jnp.max(inputs.features.logits / temperature, axis=-1)

    det = detectors.Detector(
        name="test_user_mls", score=my_score,
        hparams={"temperature": detectors.HParam(2.0, sweep=(1.0, 2.0))},
    )
    with detectors.temporary_register(det):
        assert detectors.get("test_user_mls") is det
        assert [p["temperature"] for p in detectors.sweep_grid(det)] == [1.0, 2.0]
        s = detectors.score(det, None, None, None, inputs_of([[2.0, 4.0]]))
        np.testing.assert_allclose(np.asarray(s), [2.0])
        with pytest.raises(ValueError, match="already registered"):
            detectors.register(det)
    assert "test_user_mls" not in detectors.names()  # nothing leaks out of the block
