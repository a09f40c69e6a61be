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


def test_image_program_runs_adascale_clean_forward_once():
    """A detector with ``extract_features`` (AdaSCALE) takes its clean features from the
    forward inside its gradient: two network forwards per batch (clean, perturbed), not
    three, and the same scores as the plain features + ``extract`` body."""
    import dataclasses

    import jax

    from jaxood import detectors
    from jaxood.detectors import adascale

    base = tiny_net.jax_model()
    calls = []

    def counted(variables, x):
        calls.append(x.shape)
        return base.features(variables, x)

    model = dataclasses.replace(base, features=counted)
    det = detectors.get("adascale_a")
    variables = tiny_net.make_weights(seed=0)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 8, 8, 3)), jnp.float32)
    stats = adascale.fit_batch(base, variables, x)
    traced, static = scoring.image_static(det, {"percentile": (60.0, 90.0)})
    jax.make_jaxpr(scoring.image_body(det, model, static))(variables, stats, x, traced)
    assert len(calls) == 2, calls
    plain = dataclasses.replace(det, extract_features=None)
    got = scoring.image_body(det, base, static)(variables, stats, x, traced)
    ref = scoring.image_body(plain, base, static)(variables, stats, x, traced)
    np.testing.assert_array_equal(np.asarray(got["score"]), np.asarray(ref["score"]))
