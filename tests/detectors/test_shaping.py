"""Activation-shaping detectors against independent NumPy references of the upstream code.

References follow OpenOOD v1.5 (react/ash/scale), OptFSOOD (bfact.py, ours.py) and
andrijazz/lts (lts.py) line by line, in float64 NumPy (OptFS: float32 where the original
compares float32 features), on a random affine head over random features.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxood import detectors
from jaxood.detectors import _ops, shaping
from jaxood.types import Features, Inputs, Model

D, K, B = 342, 10, 24
RTOL = 1e-5


# ---------------------------------------------------------------------------- fixtures


def _head(variables, f):
    return f @ variables["w"] + variables["b"]


MODEL = Model(features=None, head=_head, name="affine", num_classes=K, feature_dim=D)


def _variables(seed=0, d=D, k=K, nonneg=False):
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.1, (d, k)).astype(np.float32)
    if nonneg:
        w = np.abs(w)
    return {"w": jnp.asarray(w), "b": jnp.asarray(rng.normal(0, 0.5, k).astype(np.float32))}


def _features(seed=1, n=B, d=D, negative=False):
    """Post-ReLU-like features (about 30% exact zeros), or signed ones."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.3, 1.0, (n, d)).astype(np.float32)
    return x if negative else np.maximum(x, 0)


def _inputs(f, variables):
    f = jnp.asarray(f)
    return Inputs(features=Features(logits=_head(variables, f), feature=f))


def _np_head(variables, f):
    return np.asarray(f, np.float64) @ np.asarray(variables["w"], np.float64) + np.asarray(
        variables["b"], np.float64
    )


def _np_energy(logits):
    m = logits.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]


def _score(name, variables, f, stats=None, **hp):
    det = detectors.get(name)
    return np.asarray(detectors.score(det, MODEL, variables, stats, _inputs(f, variables), **hp))


def _fit(name, variables, split, f, **hp):
    det = detectors.get(name)
    return detectors.fit(det, MODEL, variables, {split: _inputs(f, variables)}, **hp)


# ------------------------------------------------------------- references (upstream code)


def _ref_k(n, percentile):
    return n - int(np.round(n * percentile / 100.0))


def _ref_topk_idx(x, k):
    # torch.topk on distinct values; stable sort keeps lower indices first on ties.
    return np.argsort(-x, axis=1, kind="stable")[:, :k]


def ref_ash_b(x, percentile):
    x = np.asarray(x, np.float64).copy()
    s1 = x.sum(axis=1)
    k = _ref_k(x.shape[1], percentile)
    i = _ref_topk_idx(x, k)
    out = np.zeros_like(x)
    np.put_along_axis(out, i, (s1 / k)[:, None].repeat(k, 1), axis=1)
    return out


def ref_ash_p(x, percentile):
    x = np.asarray(x, np.float64)
    k = _ref_k(x.shape[1], percentile)
    i = _ref_topk_idx(x, k)
    out = np.zeros_like(x)
    np.put_along_axis(out, i, np.take_along_axis(x, i, axis=1), axis=1)
    return out


def ref_ash_s(x, percentile):
    x = np.asarray(x, np.float64)
    s1 = x.sum(axis=1)
    t = ref_ash_p(x, percentile)
    s2 = t.sum(axis=1)
    return t * np.exp(s1 / s2)[:, None]


def ref_scale(x, percentile):
    x = np.asarray(x, np.float64)
    s1 = x.sum(axis=1)
    s2 = ref_ash_p(x, percentile).sum(axis=1)
    return x * np.exp(s1 / s2)[:, None]


def ref_lts_multiplier(x, percentile):
    a = np.maximum(np.asarray(x, np.float64), 0)
    s1 = a.sum(axis=1)
    k = _ref_k(a.shape[1], percentile)
    v = np.take_along_axis(a, _ref_topk_idx(a, k), axis=1)
    return (s1 / v.sum(axis=1))[:, None] ** 2


def ref_softcap(x, threshold, n):
    x = np.asarray(x, np.float64)
    return (1 / ((1 + ((x / threshold) ** (2 * n))) ** 0.5)) * x


def ref_optfs_setup(feature, pred, w_kd):
    """OptFSOOD ours.py setup + get_lc_fv_list (NumPy, as upstream)."""
    left_b = np.quantile(feature, 1e-3)
    right_b = np.quantile(feature, 1 - 1e-3)
    width = (right_b - left_b) / 100.0
    left_boundary = np.arange(left_b, right_b, width)
    lc = w_kd[pred] * feature
    lc_fv_list = []
    for b in left_boundary:
        mask = (feature >= b) & (feature < b + width)
        lc_fv_list.append(np.mean(np.sum(mask * lc, axis=1)))
    lc_fv_list = np.array(lc_fv_list)
    theta = lc_fv_list / np.linalg.norm(lc_fv_list, 2) * 1000
    return left_boundary, width, theta


def ref_optfs_shape(feature, left_boundary, width, theta):
    """ours.py postprocess shaping; torch compares float32 features with float32 scalars."""
    feat_p = np.zeros(feature.shape, np.float64)
    for i, x in enumerate(left_boundary):
        mask = (feature >= np.float32(x)) & (feature < np.float32(x + width))
        feat_p += mask * feature.astype(np.float64) * np.float32(theta[i])
    return feat_p


# ------------------------------------------------------------------------------ k values


@pytest.mark.parametrize(
    "d, expected",
    [
        # k = d - round_half_even(d*p/100), worked by hand; p = 65, 70, 75, 80, 85, 90, 95, 99.
        (342, [120, 103, 86, 68, 51, 34, 17, 3]),  # 75 -> 256.5 rounds to 256 (half-even)
        (640, [224, 192, 160, 128, 96, 64, 32, 6]),
        (2048, [717, 614, 512, 410, 307, 205, 102, 20]),
    ],
)
def test_k_values_by_hand(d, expected):
    ps = [65, 70, 75, 80, 85, 90, 95, 99]
    assert [_ops.k_from_percentile(d, p) for p in ps] == expected
    # The detectors use that k: ASH-P keeps exactly k entries of a strictly positive vector.
    f = np.random.default_rng(0).uniform(0.1, 1.0, (2, d)).astype(np.float32)
    for i in (0, 2, 6):
        assert int(np.count_nonzero(np.asarray(shaping.ash_p(f, ps[i]))[0])) == expected[i]


# ------------------------------------------------------------------ parity with references


@pytest.mark.parametrize("percentile", [65, 90, 95])
@pytest.mark.parametrize(
    "name, ref",
    [("ash", ref_ash_b), ("ash_b", ref_ash_b), ("ash_s", ref_ash_s), ("ash_p", ref_ash_p)],
)
def test_ash_matches_openood(name, ref, percentile):
    v, f = _variables(), _features()
    want = _np_energy(_np_head(v, ref(f, percentile)))
    np.testing.assert_allclose(_score(name, v, f, percentile=percentile), want, rtol=RTOL)
    fn = {"ash": shaping.ash_b, "ash_b": shaping.ash_b, "ash_s": shaping.ash_s}.get(
        name, shaping.ash_p
    )
    np.testing.assert_allclose(fn(f, percentile), ref(f, percentile), rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize("percentile", [65, 85, 95])
@pytest.mark.parametrize("negative", [False, True])
def test_scale_matches_openood(percentile, negative):
    v, f = _variables(), _features(negative=negative)
    if negative:  # keep SCALE's top-k sum away from 0 so the reference is well conditioned
        f = f + 0.5
    want = _np_energy(_np_head(v, ref_scale(f, percentile)))
    np.testing.assert_allclose(_score("scale", v, f, percentile=percentile), want, rtol=RTOL)


@pytest.mark.parametrize("percentile", [65, 95])
@pytest.mark.parametrize("negative", [False, True])
def test_lts_matches_repo(percentile, negative):
    v, f = _variables(), _features(negative=negative)
    want = _np_energy(_np_head(v, f) * ref_lts_multiplier(f, percentile))
    np.testing.assert_allclose(_score("lts", v, f, percentile=percentile), want, rtol=RTOL)


@pytest.mark.parametrize("percentile", [85, 99])
def test_react_matches_openood(percentile):
    v, val, test = _variables(), _features(seed=2, n=200), _features(seed=3)
    stats = _fit("react", v, "val", val, percentile=percentile)
    tau = np.percentile(val.flatten(), percentile)
    np.testing.assert_allclose(float(stats.threshold), tau, rtol=1e-6)
    want = _np_energy(_np_head(v, np.minimum(test, tau)))
    got = _score("react", v, test, stats)
    np.testing.assert_allclose(got, want, rtol=RTOL)


def test_react_threshold_traced_matches_numpy():
    val = _features(seed=2, n=200)
    for p in (85.0, 99.0):
        got = jax.jit(shaping.react_threshold)(val, p)  # jnp.percentile path
        np.testing.assert_allclose(float(got), np.percentile(val.flatten(), p), rtol=1e-5)


@pytest.mark.parametrize("negative", [False, True])
def test_bfact_matches_optfs(negative):
    v, train, test = _variables(), _features(seed=2, n=300), _features(seed=3, negative=negative)
    stats = _fit("bfact", v, "train", train)  # defaults: percentile 95, n 2
    tau = np.percentile(train.flatten(), 95)
    np.testing.assert_allclose(float(stats.threshold), tau, rtol=1e-6)
    want = _np_energy(_np_head(v, ref_softcap(test, tau, 2)))
    np.testing.assert_allclose(_score("bfact", v, test, stats), want, rtol=RTOL)
    # A traced float n gives the same as the integer power.
    got_float = jax.jit(lambda f: shaping.bfact_shape(f, stats.threshold, 2.0))(test)
    np.testing.assert_allclose(got_float, ref_softcap(test, tau, 2), rtol=1e-5, atol=1e-6)


def test_optfs_matches_repo():
    v = _variables()
    train, test = _features(seed=2, n=600), _features(seed=3)
    train_logits = np.asarray(_head(v, jnp.asarray(train)))
    pred = train_logits.argmax(1)
    w_kd = np.asarray(v["w"]).T  # torch layout [K, D]
    left, width, theta = ref_optfs_setup(train, pred, w_kd)

    stats = _fit("optfs", v, "train", train)
    np.testing.assert_array_equal(np.asarray(stats.left), left.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(stats.right), (left + width).astype(np.float32))
    np.testing.assert_allclose(np.asarray(stats.theta), theta, rtol=RTOL, atol=1e-3)
    # Chunking the fit does not change it.
    small = shaping.optfs_fit_stats(train, pred, np.asarray(v["w"]), chunk=97)
    np.testing.assert_allclose(small.theta, np.asarray(stats.theta), rtol=1e-6)

    feat_p = ref_optfs_shape(test, left, width, theta)
    np.testing.assert_allclose(shaping.optfs_shape(test, stats), feat_p, rtol=RTOL, atol=1e-3)
    test_pred = np.asarray(_head(v, jnp.asarray(test))).argmax(1)
    vanilla = np.sum(w_kd.astype(np.float64)[test_pred] * feat_p, axis=1)
    np.testing.assert_allclose(_score("optfs", v, test, stats), vanilla, rtol=RTOL)
    energy = _np_energy(_np_head(v, feat_p))
    np.testing.assert_allclose(_score("optfs_energy", v, test, stats), energy, rtol=RTOL)


def test_optfs_zero_outside_bins():
    v, train = _variables(), _features(seed=2, n=300, negative=True)
    stats = _fit("optfs", v, "train", train)
    lo, hi = float(stats.left[0]), float(stats.right[-1])
    f = np.array([[lo - 1.0, hi + 1.0, hi, (lo + hi) / 2]], np.float32)
    f = np.pad(f, ((0, 0), (0, D - 4)))
    shaped = np.asarray(shaping.optfs_shape(f, stats))
    assert shaped[0, 0] == 0 and shaped[0, 1] == 0 and shaped[0, 2] == 0
    assert shaped[0, 3] != 0


def test_affine_head_params():
    import flax.linen as nn

    v = _variables()
    w, b = shaping.affine_head_params(MODEL, v, D)
    np.testing.assert_array_equal(np.asarray(w), np.asarray(v["w"]))
    np.testing.assert_array_equal(np.asarray(b), np.asarray(v["b"]))

    dense = nn.Dense(7)
    rng = np.random.default_rng(1)
    params = {  # the layout nn.Dense.init produces (init itself is slow to compile)
        "params": {
            "kernel": jnp.asarray(rng.normal(size=(5, 7)).astype(np.float32)),
            "bias": jnp.asarray(rng.normal(size=7).astype(np.float32)),
        }
    }
    flax_model = Model(features=None, head=dense.apply)
    w, b = shaping.affine_head_params(flax_model, params, 5)
    np.testing.assert_array_equal(np.asarray(w), np.asarray(params["params"]["kernel"]))
    np.testing.assert_array_equal(np.asarray(b), np.asarray(params["params"]["bias"]))

    curved = Model(features=None, head=lambda v, f: jnp.tanh(_head(v, f)))
    with pytest.raises(ValueError, match="not affine"):
        shaping.affine_head_params(curved, v, D)


# ---------------------------------------------------------------------------- properties


def test_scale_lts_factors_at_least_one():
    f = _features()
    for p in (65, 85, 95):
        assert np.all(np.asarray(shaping.scale_factor(f, p)) >= 1 - 1e-6)
        assert np.all(np.asarray(shaping.lts_factor(f, p)) >= 1 - 1e-6)
        # LTS uses ReLU, so signed features still give r >= 1.
        assert np.all(np.asarray(shaping.lts_factor(_features(negative=True), p)) >= 1 - 1e-6)
    # Equal activations: r = d / k exactly.
    flat = np.ones((1, D), np.float32)
    np.testing.assert_allclose(shaping.scale_factor(flat, 90), D / 34, rtol=1e-6)


def test_all_zero_features_are_finite():
    v = _variables()
    zero = np.zeros((B, D), np.float32)
    ebo = _np_energy(_np_head(v, zero))
    for name in ("scale", "lts", "ash_s", "ash_b", "ash_p"):
        got = _score(name, v, zero)
        assert np.all(np.isfinite(got)), name
        np.testing.assert_allclose(got, ebo, rtol=RTOL)


def test_ash_invariants():
    f = _features()
    for p in (65, 90):
        b = np.asarray(shaping.ash_b(f, p))
        np.testing.assert_allclose(b.sum(1), f.sum(1), rtol=1e-5)  # ASH-B keeps the row sum
        pruned = np.asarray(shaping.ash_p(f, p))
        kept = pruned != 0
        np.testing.assert_array_equal(pruned[kept], f[kept])
        assert np.all(pruned[kept].min() >= 0)
        s = np.asarray(shaping.ash_s(f, p))
        np.testing.assert_allclose(
            s, pruned * np.exp(f.sum(1) / pruned.sum(1))[:, None], rtol=1e-5, atol=1e-6
        )


def test_react_large_threshold_is_energy():
    v, f = _variables(), _features()
    stats = shaping.ReactStats(threshold=jnp.asarray(f.max() + 1.0))
    np.testing.assert_allclose(_score("react", v, f, stats), _np_energy(_np_head(v, f)), rtol=RTOL)
    # BFAct with a huge τ is (numerically) the identity too.
    big = shaping.BFActStats(threshold=jnp.asarray(1e6, jnp.float32))
    np.testing.assert_allclose(_score("bfact", v, f, big), _np_energy(_np_head(v, f)), rtol=RTOL)


@settings(max_examples=10, deadline=None)
@given(t1=st.floats(0.05, 3.0), t2=st.floats(0.05, 3.0))
def test_react_monotone_in_threshold_for_nonneg_weights(t1, t2):
    # min(f, τ) grows with τ, so with W >= 0 every logit, hence the energy, is non-decreasing.
    v, f = _variables(nonneg=True), _features()
    lo, hi = sorted((t1, t2))
    s_lo = _score("react", v, f, shaping.ReactStats(threshold=jnp.float32(lo)))
    s_hi = _score("react", v, f, shaping.ReactStats(threshold=jnp.float32(hi)))
    assert np.all(s_hi >= s_lo - 1e-5)


def test_bfact_shrinks_and_keeps_sign():
    f = _features(negative=True)
    out = np.asarray(shaping.bfact_shape(f, 0.7, 2))
    assert np.all(np.abs(out) <= np.abs(f) + 1e-7)
    assert np.all(np.sign(out) == np.sign(f))


ALL = {
    "react": ("val", {}),
    "bfact": ("train", {}),
    "optfs": ("train", {}),
    "optfs_energy": ("train", {}),
    "ash": (None, {}),
    "ash_b": (None, {}),
    "ash_s": (None, {}),
    "ash_p": (None, {}),
    "scale": (None, {}),
    "lts": (None, {}),
}


def _stats_for(name, v):
    split, _ = ALL[name]
    return None if split is None else _fit(name, v, split, _features(seed=5, n=200))


def test_registry_entries():
    for name in ALL:
        det = detectors.get(name)
        assert "feature" in det.needs
        for hp in det.static_names:
            assert hp in ("percentile", "n")
        for point in detectors.sweep_grid(det):
            assert set(point) == set(det.defaults)
    assert detectors.get("react").fit_splits == ("val",)
    assert detectors.get("bfact").fit_splits == ("train",)
    assert detectors.get("scale").defaults == {"percentile": 85}
    assert detectors.get("lts").defaults == {"percentile": 95}
    # Fit-time percentiles: τ is fitted, score only reads it from the stats.
    assert detectors.get("react").names("fit") == ("percentile",)
    assert detectors.get("bfact").names("fit") == ("percentile",)
    assert detectors.get("bfact").names("score") == ("n",)


def _jitted_score(name, v, stats, traces):
    det = detectors.get(name)
    _, _, hp = det.split_hparams({})
    static = {k: hp.pop(k) for k in det.static_names if k in hp}

    @jax.jit
    def run(inputs):
        traces.append(1)
        return det.score(MODEL, v, stats, inputs, **static, **hp)

    return run


@pytest.mark.parametrize("name", list(ALL))
def test_batch_invariance_and_single_trace(name):
    v = _variables()
    traces = []
    run = _jitted_score(name, v, _stats_for(name, v), traces)
    f, other = _features(seed=6), _features(seed=7)
    full = np.asarray(run(_inputs(f, v)))
    assert np.all(np.isfinite(full))
    # Position: a permuted batch permutes the scores.
    perm = np.random.default_rng(0).permutation(B)
    np.testing.assert_allclose(np.asarray(run(_inputs(f[perm], v))), full[perm], rtol=1e-6)
    # Company: the other rows of the batch do not matter.
    mixed = np.concatenate([f[: B // 2], other[B // 2 :]])
    got = np.asarray(run(_inputs(mixed, v)))[: B // 2]
    np.testing.assert_allclose(got, full[: B // 2], rtol=1e-6)
    assert len(traces) == 1  # same shape, new values: no retrace


@pytest.mark.parametrize("name", ["scale", "optfs"])
def test_new_batch_size_traces_once_more(name):
    v = _variables()
    traces = []
    run = _jitted_score(name, v, _stats_for(name, v), traces)
    f = _features(seed=6)
    full = np.asarray(run(_inputs(f, v)))
    np.testing.assert_allclose(np.asarray(run(_inputs(f[3:7], v))), full[3:7], rtol=1e-6)
    run(_inputs(f[7:11], v))
    assert len(traces) == 2


# ---------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("name", list(ALL))
def test_nan_features_raise(name):
    v = _variables()
    stats = _stats_for(name, v)
    f = _features()
    f[2, 5] = np.nan
    det = detectors.get(name)
    with pytest.raises(ValueError, match="NaN"):
        detectors.score(
            det,
            MODEL,
            v,
            stats,
            Inputs(features=Features(logits=jnp.zeros((B, K)), feature=jnp.asarray(f))),
        )


@pytest.mark.parametrize("name", ["react", "bfact", "optfs"])
def test_nan_fit_features_raise(name):
    split = "val" if name == "react" else "train"
    f = _features()
    f[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN/Inf"):
        _fit(name, _variables(), split, f)


@pytest.mark.parametrize("percentile", [0, 100, -5, 120, float("nan"), 99.9])
@pytest.mark.parametrize("name", ["ash", "ash_s", "ash_p", "scale", "lts"])
def test_bad_percentile_raises(name, percentile):
    # 99.9 on d = 342: k = 342 - round(341.658) = 0 -> nothing kept.
    with pytest.raises(ValueError, match="percentile"):
        _score(name, _variables(), _features(n=2), percentile=percentile)


@pytest.mark.parametrize("percentile", [0, 100])
def test_bad_fit_percentile_raises(percentile):
    with pytest.raises(ValueError, match="percentile"):
        _fit("react", _variables(), "val", _features(n=4), percentile=percentile)


def test_other_bad_inputs():
    v = _variables()
    with pytest.raises(ValueError, match="fit"):
        _score("react", v, _features(), None)
    with pytest.raises(ValueError, match="rank"):
        shaping.ash_b(np.ones(D, np.float32), 90)
    with pytest.raises(ValueError, match="static"):
        jax.jit(lambda f, p: shaping.scale_factor(f, p))(_features(n=2), 85.0)
    with pytest.raises(ValueError, match="n"):
        shaping.bfact_shape(_features(n=2), 1.0, 0)
    with pytest.raises(ValueError, match="`n` must be an integer"):  # static integer order
        _score("bfact", v, _features(n=2), _fit("bfact", v, "train", _features(n=50)), n=2.5)
    # τ is fitted: ReAct's percentile goes to fit, not score.
    with pytest.raises(ValueError, match="percentile"):
        _score("react", v, _features(n=2), _fit("react", v, "val", _features(n=50)), percentile=85)
    with pytest.raises(ValueError, match="threshold"):
        _fit("bfact", v, "train", np.zeros((4, D), np.float32))
    with pytest.raises(ValueError, match="constant"):
        _fit("optfs", v, "train", np.ones((4, D), np.float32))
    with pytest.raises(ValueError, match="missing"):
        detectors.fit(detectors.get("react"), MODEL, v, {"train": _inputs(_features(), v)})


def test_jit_with_static_percentile_via_partial():
    v, f = _variables(), _features()
    det = detectors.get("scale")
    run = jax.jit(functools.partial(det.score, MODEL), static_argnames=tuple(det.static_names))
    np.testing.assert_allclose(
        run(v, None, _inputs(f, v), percentile=85),
        _score("scale", v, f, percentile=85),
        rtol=1e-6,
    )
