"""NAP, NAP-E/A/R and the transformer variant vs independent NumPy references."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from jaxood import detectors
from jaxood.types import Features, Inputs, Model

B, H, W, C, K = 16, 4, 4, 10, 6


def np_nap(a, eps=1.0):
    a = a.astype(np.float64)
    return np.mean((a.max(axis=(1, 2)) / (a.mean(axis=(1, 2)) + eps)) ** 2, axis=-1)


def np_ash_s(f, p):
    """OpenOOD ash_s on [B, D]: keep top k = D - round(D p / 100), scale by exp(s1 / s2)."""
    f = f.astype(np.float64)
    d = f.shape[1]
    k = d - int(np.round(d * p / 100.0))
    out = np.zeros_like(f)
    for i, row in enumerate(f):
        idx = np.argsort(-row, kind="stable")[:k]
        out[i, idx] = row[idx]
    return out * np.exp(f.sum(1) / out.sum(1))[:, None]


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    fmap = np.maximum(rng.normal(size=(B, H, W, C)), 0).astype(np.float32)
    feat = fmap.mean(axis=(1, 2))
    w = rng.normal(size=(K, C)).astype(np.float32)
    b = (rng.normal(size=(K,)) + 2.0).astype(np.float32)
    logits = (feat.astype(np.float64) @ w.T + b).astype(np.float32)
    att = scipy.special.softmax(rng.normal(size=(B, 17)), -1).astype(np.float32)
    head = lambda v, f: jnp.dot(f, v["W"].T, precision="highest") + v["b"]
    model = Model(features=None, head=head, num_classes=K, feature_dim=C, has_feature_map=True)
    variables = {"W": jnp.asarray(w), "b": jnp.asarray(b)}
    inputs = Inputs(
        Features(jnp.asarray(logits), jnp.asarray(feat), jnp.asarray(fmap), jnp.asarray(att))
    )
    return dict(
        fmap=fmap,
        feat=feat,
        w=w,
        b=b,
        logits=logits,
        att=att,
        model=model,
        variables=variables,
        inputs=inputs,
    )


def score(name, s, stats=None, inputs=None, **hp):
    det = detectors.get(name)
    return np.asarray(
        detectors.score(det, s["model"], s["variables"], stats, inputs or s["inputs"], **hp)
    )


def test_nap_alone(setup):
    np.testing.assert_allclose(score("nap", setup), np_nap(setup["fmap"]), rtol=1e-5)


@pytest.mark.parametrize("w", [0.4, 0.0, 1.0])
def test_nap_e(setup, w):
    lse = scipy.special.logsumexp(setup["logits"].astype(np.float64), -1)
    assert np.all(lse > 0)
    ref = lse**w * np_nap(setup["fmap"]) ** (1 - w)
    np.testing.assert_allclose(score("nap_e", setup, w=w), ref, rtol=1e-5)


def test_nap_e_guard_for_non_positive_energy(setup):
    s = setup
    logits = s["logits"] - 50.0  # logsumexp < 0 for every sample
    inputs = s["inputs"]._replace(
        features=s["inputs"].features._replace(logits=jnp.asarray(logits))
    )
    got = score("nap_e", s, inputs=inputs, w=0.4)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, 1e-6**0.4 * np_nap(s["fmap"]) ** 0.6, rtol=1e-5)


def test_nap_a_with_ash_s(setup):
    s = setup
    base = scipy.special.logsumexp(np_ash_s(s["feat"], 70) @ s["w"].T + s["b"], -1)
    ref = base**0.5 * np_nap(s["fmap"]) ** 0.5
    np.testing.assert_allclose(score("nap_a", s, w=0.5, ash_percentile=70), ref, rtol=1e-5)


def test_nap_r_with_react(setup):
    s = setup
    det = detectors.get("nap_r")
    val = np.abs(np.random.default_rng(5).normal(size=(50, C))).astype(np.float32)
    stats = detectors.fit(
        det, s["model"], s["variables"], {"val": Inputs(Features(None, jnp.asarray(val)))}
    )
    thr = np.percentile(val, 90)
    base = scipy.special.logsumexp(np.minimum(s["feat"], thr) @ s["w"].T + s["b"], -1)
    ref = base**0.4 * np_nap(s["fmap"]) ** 0.6
    np.testing.assert_allclose(score("nap_r", s, stats=stats, w=0.4), ref, rtol=1e-5)


def test_nap_vit(setup):
    s = setup
    np.testing.assert_allclose(score("nap_vit", s), s["att"].max(-1), rtol=1e-6)
    lse = scipy.special.logsumexp(s["logits"].astype(np.float64), -1)
    ref = lse**0.6 * s["att"].max(-1).astype(np.float64) ** 0.4
    np.testing.assert_allclose(score("nap_vit_e", s, w=0.6), ref, rtol=1e-5)


def test_published_w_defaults_and_grid():
    from jaxood.detectors.nap import PUBLISHED_W

    assert detectors.get("nap_e").defaults["w"] == 0.4
    assert detectors.get("nap_r").defaults["w"] == 0.4
    assert detectors.get("nap_a").defaults["w"] == 0.5
    for name in ("nap_e", "nap_a", "nap_r"):
        grid = detectors.get(name).sweep["w"]
        assert all(v in grid for v in PUBLISHED_W[name].values())


def test_models_without_map_or_attention_fail_clearly(setup):
    s = setup
    no_map = s["inputs"]._replace(
        features=s["inputs"].features._replace(feature_map=None, attention=None)
    )
    for name in ("nap", "nap_e", "nap_a"):
        with pytest.raises(ValueError, match="feature_map"):
            score(name, s, inputs=no_map)
    with pytest.raises(ValueError, match="attention"):
        score("nap_vit", s, inputs=no_map)
    with pytest.raises(ValueError, match="`w` must be in"):
        score("nap_e", s, w=1.5)
