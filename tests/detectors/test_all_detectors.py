"""Contract checks over every registered detector (batch invariance, one trace, finiteness).

Each detector's formula is tested against its own reference in the per-family test files;
here the registry is swept so that a newly registered detector gets the same guarantees:
a sample's score does not depend on the batch it is in or its position, the jitted score
compiles once per shape, and scores are finite. Streaming detectors (OODD) are excluded:
their score depends on the stream by design (``Detector.stream``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxood import detectors
from jaxood.types import Features, Model
from tests.detectors import tiny_net

# Fitting settings that the tiny network (D = 128, 64 training samples) can satisfy.
OVERRIDES = {"vim": {"dim": 64}, "knn": {"K": 5}}


def _tiny_model_with_attention() -> Model:
    """The tiny net plus an ``attention`` row (softmax over spatial positions), so detectors
    that read a transformer's CLS attention can be exercised too."""
    base = tiny_net.jax_model()

    def features(v, x):
        f = base.features(v, x)
        b = x.shape[0]
        att = jax.nn.softmax(jnp.mean(f.feature_map, axis=-1).reshape(b, -1), axis=-1)
        return Features(f.logits, f.feature, f.feature_map, att)

    return Model(
        features=features,
        head=base.head,
        name="tiny_att",
        num_classes=10,
        feature_dim=128,
        has_feature_map=True,
        has_attention=True,
    )


@pytest.fixture(scope="module")
def world():
    model = _tiny_model_with_attention()
    weights = tiny_net.make_weights(seed=4)
    rng = np.random.default_rng(5)
    x_train = jnp.asarray(rng.normal(size=(64, 8, 8, 3)), jnp.float32)
    x_val = jnp.asarray(rng.normal(size=(32, 8, 8, 3)), jnp.float32)
    x_test = jnp.asarray(
        np.concatenate([rng.normal(size=(12, 8, 8, 3)), rng.uniform(-3, 3, (12, 8, 8, 3))]),
        jnp.float32,
    )
    labels = {"train": jnp.asarray(np.arange(64) % 10), "val": jnp.asarray(np.arange(32) % 10)}
    return model, weights, {"train": x_train, "val": x_val}, x_test, labels


def _registered():
    return [
        n
        for n, d in sorted(detectors.all_detectors().items())
        if not d.stream and not n.startswith("test_")
    ]


@pytest.mark.parametrize("name", _registered())
def test_batch_invariance_single_trace_and_finite(world, name):
    model, weights, fit_x, x_test, labels = world
    det = detectors.get(name)
    hp = {**det.defaults, **OVERRIDES.get(name, {})}
    data = {}
    for split in det.fit_splits:
        inp = detectors.prepare_inputs(det, model, weights, fit_x[split], **hp)
        data[split] = inp._replace(x=fit_x[split], extras={**inp.extras, "labels": labels[split]})
    stats = detectors.fit(det, model, weights, data, **hp)
    _, _, score_hp = det.split_hparams(hp)
    static = {k: v for k, v in score_hp.items() if k in det.static_hparams}
    dynamic = {k: v for k, v in score_hp.items() if k not in det.static_hparams}

    traces = []

    def score_fn(stats, inputs, dynamic):
        traces.append(1)
        return det.score(model, weights, stats, inputs, **dynamic, **static)

    jitted = jax.jit(score_fn)

    def run(x):
        return np.asarray(
            jitted(stats, detectors.prepare_inputs(det, model, weights, x, **hp), dynamic)
        )

    full = run(x_test)
    assert full.shape == (x_test.shape[0],)
    assert np.all(np.isfinite(full)), f"{name}: non-finite scores"
    perm = np.random.default_rng(0).permutation(x_test.shape[0])
    np.testing.assert_allclose(
        run(x_test[perm]),
        full[perm],
        rtol=2e-5,
        atol=1e-6,
        err_msg=f"{name}: score depends on position in the batch",
    )
    assert len(traces) == 1, f"{name}: recompiled for a same-shape batch"
    halves = np.concatenate([run(x_test[:10]), run(x_test[10:])])
    np.testing.assert_allclose(
        halves,
        full,
        rtol=2e-5,
        atol=1e-6,
        err_msg=f"{name}: score depends on the other samples in the batch",
    )


def test_every_detector_documents_its_source():
    for name, det in detectors.all_detectors().items():
        if name.startswith("test_"):
            continue
        assert det.reference, f"{name} has no reference"
        for key in det.sweep:
            assert key in det.defaults
