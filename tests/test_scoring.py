"""scoring.model_program: one compiled program per (function, model, static settings); the
variables, inputs and traced hyperparameters are arguments."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxood import scoring
from tests.detectors import tiny_net
from tests.tracing import count_traces

torch = pytest.importorskip("torch")


def tempered_logits(model, variables, x, temperature, *, power):
    return model.features(variables, x).logits ** power / temperature


def test_model_program_compiles_once_per_static_setting():
    model = tiny_net.jax_model()
    x = np.random.default_rng(0).normal(size=(6, 8, 8, 3)).astype(np.float32)
    calls = [(1, 0, 1.0), (1, 1, 2.0), (2, 1, 2.0), (1, 2, 0.5)]  # (power, seed, temperature)
    with count_traces() as traces:
        got = [scoring.model_program(tempered_logits, model, (("power", p),))(
            tiny_net.make_weights(seed=s), jnp.asarray(x), t) for p, s, t in calls]
    assert traces["tempered_logits"] == 2, traces  # power 1, then power 2
    assert scoring.model_program(tempered_logits, model, (("power", 1),)) is \
        scoring.model_program(tempered_logits, model, (("power", 1),))
    for out, (p, s, t) in zip(got, calls):  # the traced arguments are not stale
        net = tiny_net.torch_net(tiny_net.make_weights(seed=s))[0]
        logits = net(torch.tensor(x.transpose(0, 3, 1, 2), dtype=torch.float64))[0].numpy()
        np.testing.assert_allclose(np.asarray(out), logits ** p / t,
                                   rtol=1e-4, atol=1e-5)
