"""Contract checks over every registered detector.

Each detector's formula is tested against its own reference in the per-family test files;
here the registry is swept so that a newly registered detector gets the same guarantees:

* its hyperparameter table is consistent: non-numeric values static, every default and sweep
  value valid, NaN and negative values rejected with the argument named;
* ``fit`` returns its ``stats_type``: a pytree whose leaves are arrays, static fields
  JSON-able, the fitted D recorded; it survives a host copy and flax state-dict
  serialisation unchanged (what saving a fitted detector does) and scores identically;
* the compile-once program of :mod:`jaxood.scoring` (non-static hyperparameters traced)
  equals the eager score, so a hyperparameter that must be static is caught;
* non-stream detectors: a sample's score does not depend on its batch or position, the
  jitted score compiles once per shape, scores are finite;
* stream detectors (OODD): ``score`` is ``init_state`` + ``step`` over the batch, a stream
  scored in two ``step`` calls equals one call, padding rows never enter the state.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from jaxood import detectors, scoring
from jaxood.types import ROLES, Features, Inputs, Model
from tests.detectors import tiny_net

D = 128
# Fitting settings that the tiny network (D = 128, 64 training samples) can satisfy (ViM's
# dim also below the 64 samples, or its residual space is empty and the fit refuses).
OVERRIDES = {"vim": {"dim": 16}, "knn": {"K": 5}, "oodd_cout": {"cout_queue": 6, "cout_bank": 4}}
NAMES = detectors.names()
#: (detector, overrides) per test case: every detector, plus KNN with its bank on the host.
CASES = {n: (n, OVERRIDES.get(n, {})) for n in NAMES}
CASES["knn_host_bank"] = ("knn", {"K": 5, "bank_on_host": True})


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
        feature_dim=D,
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


@functools.cache
def _network(model, extract, extract_kw):
    """Jitted features + extract (what ``detectors.prepare_inputs`` runs eagerly; AdaSCALE's
    input gradient is slow op by op)."""

    def run(variables, x):
        extras = {} if extract is None else extract(model, variables, x, **dict(extract_kw))
        return model.features(variables, x), extras

    return jax.jit(run)


def _prepare(det, model, weights, x, hp) -> Inputs:
    extract_kw = tuple((k, hp[k]) for k in det.names("extract"))
    features, extras = _network(model, det.extract, extract_kw)(weights, x)
    return Inputs(features, x if det.needs_network else None, dict(extras))


def _fit(world, name, overrides):
    """``(detector, stats, test Inputs, full hyperparameters)`` at defaults + overrides."""
    model, weights, fit_x, x_test, labels = world
    det = detectors.get(name)
    hp = det.resolve(overrides)
    data = {}
    for split in det.fit_splits:
        inp = _prepare(det, model, weights, fit_x[split], hp)
        data[split] = inp._replace(x=fit_x[split], extras={**inp.extras, "labels": labels[split]})
    stats = detectors.fit(det, model, weights, data, **hp)
    return det, stats, _prepare(det, model, weights, x_test, hp), hp


def _score_kw(det, hp):
    return {k: hp[k] for k in det.names("score")}


def _numeric(v) -> bool:
    values = v if isinstance(v, tuple) else (v,)
    return bool(values) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in values
    )


# ----------------------------------------------------------------------- the table


@pytest.mark.parametrize("name", NAMES)
def test_hparam_table_is_consistent_and_checked(name):
    det = detectors.get(name)
    assert det.reference, f"{name} has no reference"
    assert (det.fit is None) == (det.stats_type is None), f"{name}: fit without stats_type"
    assert list(det.sweep) == [k for k, hp in det.hparams.items() if hp.sweep]
    for key, hp in det.hparams.items():
        assert hp.role in ROLES
        if not _numeric(hp.default):
            assert hp.static, f"{name}.{key}: a non-numeric value must be static"
        assert det.hparams[key].validate(hp.default, key) == hp.default
        for value in hp.sweep:
            assert hp.validate(value, key) == value, f"{name}.{key}: sweep value {value!r}"
        if not _numeric(hp.default):
            continue
        size = len(hp.default) if isinstance(hp.default, tuple) else None
        for bad in (float("nan"), -1):
            value = bad if size is None else (bad,) * size
            with pytest.raises(ValueError, match=f"`{key}"):
                det.resolve({key: value})
    for point in detectors.sweep_grid(det):
        assert list(point) == list(det.hparams)


def test_ash_b_is_an_alias_of_ash():
    assert detectors.get("ash_b") is detectors.get("ash")
    assert "ash_b" not in detectors.names()
    assert detectors.aliases()["ash_b"] == "ash"


# ------------------------------------------------------------ fitted and scored


@pytest.mark.parametrize("case", list(CASES))
def test_detector_contract(world, case):
    """One fit per case (fits dominate the time), then every check that needs it."""
    det, stats, test, hp = _fit(world, *CASES[case])
    if det.fit is None:
        assert stats is None
    else:
        _check_stats(world, det, stats, test, hp)
        _check_feature_dim_named(world, det, stats, test, hp)
    _check_compiled_equals_eager(world, det, stats, test, hp)
    if det.stream:
        _check_stream_steps(world, det, stats, test, {**hp, "chunk_size": 8})
    else:
        _check_batch_invariance(world, det, stats, hp)


def _is_array(x) -> bool:
    return isinstance(x, (np.ndarray, jax.Array))


def _check_stats(world, det, stats, test, hp):
    """``stats_type``, array leaves, JSON-able static fields, D recorded; a host copy through
    flax state-dict serialisation restores the same pytree and scores identically."""
    model, weights = world[:2]
    assert isinstance(stats, det.stats_type) and dataclasses.is_dataclass(stats)
    leaves = jax.tree.leaves(stats)
    assert leaves and all(_is_array(leaf) for leaf in leaves), f"{det.name}: non-array leaves"
    for field in dataclasses.fields(stats):
        value = getattr(stats, field.name)
        if field.metadata.get("pytree_node", True):  # flat: arrays or None, no containers
            assert value is None or _is_array(value), f"{det.name}.{field.name}: {type(value)}"
        else:
            json.dumps(value)  # static settings are saved as JSON
    assert stats.feature_dim == D

    host = jax.tree.map(np.asarray, stats)
    restored = serialization.from_state_dict(stats, serialization.to_state_dict(host))
    assert type(restored) is type(stats)
    assert jax.tree.structure(restored) == jax.tree.structure(stats)
    for a, b in zip(leaves, jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert np.asarray(a).dtype == np.asarray(b).dtype
    kw = _score_kw(det, hp)
    np.testing.assert_array_equal(
        np.asarray(detectors.score(det, model, weights, restored, test, **kw)),
        np.asarray(detectors.score(det, model, weights, stats, test, **kw)),
    )


def _check_feature_dim_named(world, det, stats, test, hp):
    model, weights = world[:2]
    f = test.features
    smaller = test._replace(features=f._replace(feature=f.feature[:, :-1]))
    with pytest.raises(ValueError, match=f"D = {D}.*D = {D - 1}"):
        detectors.score(det, model, weights, stats, smaller, **_score_kw(det, hp))


def _check_compiled_equals_eager(world, det, stats, test, hp):
    """The compile-once program (non-static hyperparameters traced) equals the eager score:
    a hyperparameter used as a Python value would raise here, or change the result."""
    model, weights = world[:2]
    traced, static = scoring.split(det, hp)
    got = scoring.array_program(det, model, static)(weights, stats, test, traced)
    want = detectors.score(det, model, weights, stats, test, **_score_kw(det, hp))
    assert np.asarray(got).shape == (test.batch_size,)
    np.testing.assert_allclose(
        np.asarray(got), np.asarray(want), rtol=2e-5, atol=1e-6, err_msg=det.name
    )


def _check_batch_invariance(world, det, stats, hp):
    """Finite scores that do not depend on the batch or position; one trace per shape."""
    model, weights, _, x_test, _ = world
    kw = _score_kw(det, hp)
    static = {k: v for k, v in kw.items() if k in det.static_names}
    dynamic = {k: v for k, v in kw.items() if k not in det.static_names}
    traces = []

    def score_fn(stats, inputs, dynamic):
        traces.append(1)
        return det.score(model, weights, stats, inputs, **dynamic, **static)

    jitted = jax.jit(score_fn)

    def run(x):
        return np.asarray(jitted(stats, _prepare(det, model, weights, x, hp), dynamic))

    full = run(x_test)
    assert full.shape == (x_test.shape[0],)
    assert np.all(np.isfinite(full)), f"{det.name}: non-finite scores"
    perm = np.random.default_rng(0).permutation(x_test.shape[0])
    np.testing.assert_allclose(
        run(x_test[perm]),
        full[perm],
        rtol=2e-5,
        atol=1e-6,
        err_msg=f"{det.name}: score depends on position in the batch",
    )
    assert len(traces) == 1, f"{det.name}: recompiled for a same-shape batch"
    halves = np.concatenate([run(x_test[:10]), run(x_test[10:])])
    np.testing.assert_allclose(
        halves,
        full,
        rtol=2e-5,
        atol=1e-6,
        err_msg=f"{det.name}: score depends on the other samples in the batch",
    )


def _check_stream_steps(world, det, stats, test, hp):
    """``score`` = ``init_state`` + one ``step``; two ``step`` calls (state carried, split
    at a chunk boundary) = one call; padding rows (valid=False) never enter the state."""
    model, weights = world[:2]
    kw = _score_kw(det, hp)
    f = test.features.feature  # [24, D]: three chunks of 8
    whole = np.asarray(detectors.score(det, model, weights, stats, test, **kw))
    assert np.all(np.isfinite(whole))

    def part(rows):
        return Inputs(Features(test.features.logits[: len(rows)], rows))

    state = det.init_state(stats, D, **kw)
    one, _ = det.step(model, weights, stats, state, test, jnp.ones(24, bool), **kw)
    np.testing.assert_array_equal(np.asarray(one), whole)
    # The first call padded with copies of the next 5 rows, which would be their own
    # nearest OOD-dictionary entries if they were let in.
    padded = jnp.concatenate([f[:8], f[8:13]])
    step = jax.jit(lambda st, s, x, v: det.step(model, weights, s, st, x, v, **kw))
    s1, state = step(state, stats, part(padded), jnp.arange(13) < 8)
    s2, state = step(state, stats, part(f[8:]), jnp.ones(16, bool))
    got = np.concatenate([np.asarray(s1)[:8], np.asarray(s2)])
    np.testing.assert_allclose(got, whole, rtol=1e-6, atol=1e-6)
    # Without the mask the padding enters the queue and changes later scores.
    fresh = det.init_state(stats, D, **kw)
    _, bad_state = step(fresh, stats, part(padded), jnp.ones(13, bool))
    s2_bad, _ = step(bad_state, stats, part(f[8:]), jnp.ones(16, bool))
    assert not np.allclose(np.asarray(s2_bad), whole[8:], rtol=1e-6, atol=1e-6)
