"""AdaSCALE-A/L against an independent torch reimplementation of the official code.

The reference below follows `AdaScalePostprocessor` / `ada_scale` of the official repository
(spec §1) step by step in torch float64, with the consistent k1/k2 assignment (Q over the
top-k1 %, C_o over the top-k2 %), statsmodels' right-continuous ECDF (as searchsorted) and
p in float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxood import detectors
from jaxood.detectors import adascale
from tests.detectors import tiny_net
from tests.tracing import count_traces

torch = pytest.importorskip("torch")

EPS = 0.5


# --------------------------------------------------------------------------- reference


def ref_perturb(net, x_nchw, o):
    """Official setup/inference step: grad of the predicted-class raw logit, bottom-o |G|."""
    x = x_nchw.clone().requires_grad_(True)
    logits, feature = net(x)
    pred = logits.detach().argmax(1)
    max_logit = logits.gather(1, pred[:, None])[:, 0]
    max_logit.backward(torch.ones_like(max_logit))
    grad = x.grad.detach()
    flat = grad.abs().reshape(x.shape[0], -1)
    m = int(flat.shape[1] * o)
    _, idx = torch.topk(flat, m, dim=1, largest=False)
    mask = torch.zeros_like(flat).scatter_(1, idx, 1.0).reshape(x.shape)
    x_tilde = x.detach() + EPS * torch.sign(grad) * mask
    with torch.no_grad():
        _, feature_tilde = net(x_tilde)
    return feature.detach(), feature_tilde


def ref_q(f, ft, k1, k2, lmbda):
    d = f.shape[1]
    c1, c2 = int(d * k1 / 100), int(d * k2 / 100)
    idx1 = torch.topk(f, c1, dim=1).indices
    idx2 = torch.topk(f, c2, dim=1).indices
    shift = (f - ft).abs().gather(1, idx1).sum(1)
    corr = torch.relu(ft).gather(1, idx2).sum(1)
    return (lmbda * shift + corr).detach().numpy()


def ref_fit(net, x_val, *, k1=1.0, k2=5.0, lmbda=10.0, o=0.05):
    """Setup on ID-val: the sorted Q' values the right-continuous ECDF is built from."""
    f_val, ft_val = ref_perturb(net, x_val, o)
    return np.sort(ref_q(f_val, ft_val, k1, k2, lmbda))


def ref_score_features(fc, q_sorted, f, ft, *, variant, p_min, p_max, k1=1.0, k2=5.0,
                       lmbda=10.0):
    """Inference after the perturbation: ``(energy scores [B], adaptive percentiles p [B])``
    of clean / perturbed features ``f, ft [B, D]``."""
    q = ref_q(f, ft, k1, k2, lmbda)
    ecdf = np.searchsorted(q_sorted, q, side="right") / q_sorted.size
    p = p_min + (1 - ecdf) * (p_max - p_min)  # float64
    d = f.shape[1]
    a = torch.relu(f)
    k = (d - torch.round(torch.tensor(d * p / 100.0))).to(torch.int64)
    csum = torch.sort(a, dim=1, descending=True).values.cumsum(1)
    r = a.sum(1) / csum.gather(1, (k - 1)[:, None])[:, 0]
    if variant == "a":
        logits = fc(f * torch.exp(r)[:, None])
    else:
        logits = fc(f) * (r**2)[:, None]
    return torch.logsumexp(logits, dim=1).detach().numpy(), p


def ref_score(net, fc, q_sorted, x_test, *, variant, p_min, p_max, k1=1.0, k2=5.0, lmbda=10.0,
              o=0.05):
    """Inference on images: ``(energy scores [B], adaptive percentiles p [B])``."""
    f, ft = ref_perturb(net, x_test, o)
    return ref_score_features(fc, q_sorted, f, ft, variant=variant, p_min=p_min, p_max=p_max,
                              k1=k1, k2=k2, lmbda=lmbda)


def ref_scores(net, fc, x_val, x_test, *, variant, p_min, p_max, k1=1.0, k2=5.0, lmbda=10.0,
               o=0.05):
    q_sorted = ref_fit(net, x_val, k1=k1, k2=k2, lmbda=lmbda, o=o)
    return ref_score(net, fc, q_sorted, x_test, variant=variant, p_min=p_min, p_max=p_max,
                     k1=k1, k2=k2, lmbda=lmbda, o=o)


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def setup():
    weights = tiny_net.make_weights(seed=1)
    model = tiny_net.jax_model()
    net, fc = tiny_net.torch_net(weights)
    rng = np.random.default_rng(0)
    x_val = rng.normal(size=(64, 8, 8, 3)).astype(np.float32)
    x_test = np.concatenate(
        [rng.normal(size=(24, 8, 8, 3)), 3.0 * rng.uniform(-1, 1, size=(24, 8, 8, 3))]
    ).astype(np.float32)
    return model, weights, net, fc, x_val, x_test


def to_nchw(x):
    return torch.tensor(x.transpose(0, 3, 1, 2), dtype=torch.float64)


# ------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("variant", ["a", "l"])
@pytest.mark.parametrize("percentile", [(60, 90), (75, 85), (80, 99)])
def test_matches_torch_reference(setup, variant, percentile):
    model, weights, net, fc, x_val, x_test = setup
    expected, _ = ref_scores(
        net, fc, to_nchw(x_val), to_nchw(x_test), variant=variant,
        p_min=percentile[0], p_max=percentile[1],
    )
    det = detectors.get(f"adascale_{variant}")
    val = detectors.prepare_inputs(det, model, weights, jnp.asarray(x_val))
    test = detectors.prepare_inputs(det, model, weights, jnp.asarray(x_test))
    stats = detectors.fit(det, model, weights, {"val": val})
    got = detectors.score(det, model, weights, stats, test, percentile=percentile)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)


def test_end_to_end_batch_api_matches_registry(setup):
    model, weights, _, _, x_val, x_test = setup
    stats = adascale.fit_batch(model, weights, jnp.asarray(x_val), batch_size=24)
    direct = jax.jit(
        adascale.score_batch, static_argnums=(0,), static_argnames=("variant", "o")
    )(model, weights, stats, jnp.asarray(x_test), variant="l", percentile=(60, 95))
    det = detectors.get("adascale_l")
    val = detectors.prepare_inputs(det, model, weights, jnp.asarray(x_val))
    stats2 = detectors.fit(det, model, weights, {"val": val})
    np.testing.assert_allclose(np.asarray(stats.sorted_q), np.asarray(stats2.sorted_q), rtol=1e-5)
    test = detectors.prepare_inputs(det, model, weights, jnp.asarray(x_test))
    via_registry = detectors.score(det, model, weights, stats2, test, percentile=(60, 95))
    np.testing.assert_allclose(np.asarray(direct), np.asarray(via_registry), rtol=1e-6)


def test_perturbation_matches_reference_features(setup):
    model, weights, net, _, _, x_test = setup
    _, ft_ref = ref_perturb(net, to_nchw(x_test), 0.05)
    _, ft = adascale.perturbed_features(model, weights, jnp.asarray(x_test), o=0.05, eps=EPS)
    np.testing.assert_allclose(np.asarray(ft), ft_ref.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_extract_with_features_is_extract_and_the_clean_forward(setup, dtype):
    """The one-pass hook gives ``extract``'s outputs bit for bit and the clean forward's
    features (the torch reference's). Their last bits may differ from a plain forward's on
    this net (its BN divides by ``sqrt(var)``, which XLA rounds differently inside a gradient
    program: the feature pipeline checks the bits before using the hook)."""
    model, weights, net, _, _, x_test = setup
    x = jnp.asarray(x_test)
    hp = {"o": 0.05, "eps": EPS, "region": "trivial", "attribution_dtype": dtype}
    feats, extras = jax.jit(lambda w, x: adascale.extract_with_features(model, w, x, **hp))(
        weights, x)
    alone = jax.jit(lambda w, x: model.features(w, x))(weights, x)
    extract = jax.jit(lambda w, x: adascale.extract(model, w, x, **hp))(weights, x)
    assert sorted(extras) == sorted(extract) == [adascale.FEATURE_PERTURBED]
    got, want = extras[adascale.FEATURE_PERTURBED], extract[adascale.FEATURE_PERTURBED]
    assert got.dtype == want.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    for f in ("logits", "feature", "feature_map"):  # the map: sums cancelling near 0
        np.testing.assert_allclose(np.asarray(getattr(feats, f)), np.asarray(getattr(alone, f)),
                                   rtol=1e-5, atol=1e-5)
    f_ref, _ = ref_perturb(net, to_nchw(x_test), 0.05)
    np.testing.assert_allclose(np.asarray(feats.feature), f_ref.numpy(), rtol=1e-5, atol=1e-6)


def test_a_detector_declares_extract_features_only_with_extract():
    with pytest.raises(ValueError, match="extract_features given without extract"):
        detectors.Detector(name="x", score=lambda model, variables, stats, inputs: None,
                           extract_features=adascale.extract_with_features)


@pytest.mark.parametrize(
    "d, k1, k2, expected",
    [(342, 1, 5, (3, 17)), (512, 1, 5, (5, 25)), (640, 1, 5, (6, 32)), (768, 1, 5, (7, 38)),
     (2048, 1, 5, (20, 102)), (1920, 1, 5, (19, 96)), (3024, 1, 30, (30, 907))],
)
def test_topk_counts_from_spec_table(d, k1, k2, expected):
    assert adascale.topk_counts(d, k1, k2) == expected


@pytest.mark.parametrize("elements, expected", [(3072, 153), (150528, 7526), (442368, 22118)])
def test_number_of_perturbed_elements(elements, expected):
    assert adascale.num_perturbed(elements, 0.05) == expected


def test_k_from_ecdf_is_exact_round_half_even():
    # Exhaustive over counts for a few (d, n): compare with Python's exact Fraction rounding.
    from fractions import Fraction

    for d, n in [(342, 1000), (640, 400), (2048, 50)]:
        counts = jnp.arange(n + 1)
        for p_min, p_max in [(60, 65), (75, 85), (60, 99)]:
            got = np.asarray(adascale._k_from_ecdf(d, n, counts, p_min, p_max))
            exp = [
                d - round(Fraction(d) * (p_min + (1 - Fraction(c, n)) * (p_max - p_min)) / 100)
                for c in range(n + 1)
            ]
            np.testing.assert_array_equal(got, exp)


def test_l_with_equal_percentiles_is_lts(setup):
    shaping = pytest.importorskip("jaxood.detectors.shaping")
    model, weights, _, _, x_val, x_test = setup
    det = detectors.get("adascale_l")
    val = detectors.prepare_inputs(det, model, weights, jnp.asarray(x_val))
    test = detectors.prepare_inputs(det, model, weights, jnp.asarray(x_test))
    stats = detectors.fit(det, model, weights, {"val": val})
    lts = detectors.get("lts")
    for p in (65, 85, 95):
        ours = detectors.score(det, model, weights, stats, test, percentile=(p, p))
        theirs = detectors.score(lts, model, weights, None, test, percentile=p)
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-6)
    assert shaping is not None


def test_a_with_equal_percentiles_is_scale_on_relu_features(setup):
    pytest.importorskip("jaxood.detectors.shaping")
    model, weights, _, _, x_val, x_test = setup
    det = detectors.get("adascale_a")
    val = detectors.prepare_inputs(det, model, weights, jnp.asarray(x_val))
    test = detectors.prepare_inputs(det, model, weights, jnp.asarray(x_test))
    assert float(jnp.min(test.features.feature)) >= 0  # post-ReLU features
    stats = detectors.fit(det, model, weights, {"val": val})
    scale = detectors.get("scale")
    for p in (65, 85, 95):
        ours = detectors.score(det, model, weights, stats, test, percentile=(p, p))
        theirs = detectors.score(scale, model, weights, None, test, percentile=p)
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-6)


def test_percentile_within_bounds_and_monotone_in_q():
    rng = np.random.default_rng(3)
    stats = adascale.fit_ecdf(rng.normal(size=200))
    q = jnp.asarray(np.sort(rng.normal(scale=2.0, size=500)).astype(np.float32))
    for p_min, p_max in adascale.PERCENTILE_GRID:
        p = np.asarray(adascale.adaptive_percentile(stats, q, p_min, p_max))
        assert np.all(p >= p_min - 1e-4) and np.all(p <= p_max + 1e-4)
        assert np.all(np.diff(p) <= 1e-6)  # larger Q' (more OOD-like) -> smaller percentile


def test_ecdf_is_right_continuous():
    stats = adascale.fit_ecdf(np.array([1.0, 2.0, 2.0, 3.0]))
    got = np.asarray(adascale.ecdf(stats, jnp.array([0.5, 1.0, 2.0, 2.5, 3.0, 9.0])))
    np.testing.assert_allclose(got, [0.0, 0.25, 0.75, 0.75, 1.0, 1.0])


def test_grid_scores_match_per_pair_scores(setup):
    model, weights, _, _, x_val, x_test = setup
    det = detectors.get("adascale_a")
    val = detectors.prepare_inputs(det, model, weights, jnp.asarray(x_val))
    test = detectors.prepare_inputs(det, model, weights, jnp.asarray(x_test))
    stats = detectors.fit(det, model, weights, {"val": val})
    f, ft = test.features.feature, test.extras["feature_perturbed"]
    cache = adascale.grid_cache(model, weights, stats, f, ft)
    for variant in ("a", "l"):
        grid = np.asarray(adascale.grid_scores(stats, cache, adascale.PERCENTILE_GRID,
                                               variant=variant))
        for i, pair in enumerate(adascale.PERCENTILE_GRID):
            one = adascale.score_from_features(model, weights, stats, f, ft, variant=variant,
                                               percentile=pair)
            np.testing.assert_allclose(grid[i], np.asarray(one), rtol=2e-6)


def test_fit_batch_compiles_once_per_static_setting(setup):
    """Issue 19 item 4: fit_batch's program takes the variables, images and lmbda as
    arguments: other weights, images and lmbda of the same shapes re-use it (and are not
    stale: each fit matches the torch reference); another static k1 is a new program."""
    _, _, _, _, x_val, x_test = setup
    model = tiny_net.jax_model()  # a fresh model: no program compiled for it yet
    other = tiny_net.make_weights(seed=4)
    calls = [(tiny_net.make_weights(seed=1), x_val[:32], 10.0, 1.0),
             (other, x_test[:32], 3.0, 1.0), (other, x_test[16:48], 3.0, 2.0)]
    with count_traces() as traces:
        fits = [adascale.fit_batch(model, w, jnp.asarray(x), batch_size=16, lmbda=lmbda, k1=k1)
                for w, x, lmbda, k1 in calls]
    assert traces["_images_q"] == 2, traces  # k1 = 1.0, then k1 = 2.0
    for stats, (w, x, lmbda, k1) in zip(fits, calls):
        want = ref_fit(tiny_net.torch_net(w)[0], to_nchw(x), k1=k1, lmbda=lmbda)
        np.testing.assert_allclose(np.asarray(stats.sorted_q), want, rtol=1e-5)


def test_batch_invariance(setup):
    model, weights, _, _, x_val, x_test = setup
    stats = adascale.fit_batch(model, weights, jnp.asarray(x_val))
    full = np.asarray(adascale.score_batch(model, weights, stats, jnp.asarray(x_test)))
    perm = np.random.default_rng(0).permutation(len(x_test))
    shuffled = np.asarray(adascale.score_batch(model, weights, stats, jnp.asarray(x_test[perm])))
    np.testing.assert_allclose(shuffled, full[perm], rtol=1e-6)
    single = np.asarray(adascale.score_batch(model, weights, stats, jnp.asarray(x_test[5:6])))
    np.testing.assert_allclose(single, full[5:6], rtol=1e-6)


def test_jit_compiles_once_per_shape(setup):
    model, weights, _, _, x_val, x_test = setup
    stats = adascale.fit_batch(model, weights, jnp.asarray(x_val))
    traces = []

    def fn(stats, f, ft, percentile):
        traces.append(1)
        return adascale.score_from_features(model, weights, stats, f, ft, percentile=percentile)

    jitted = jax.jit(fn)
    feats, ft = adascale.perturbed_features(model, weights, jnp.asarray(x_test))
    for pair in adascale.PERCENTILE_GRID[:6]:
        jitted(stats, feats.feature, ft, jnp.asarray(pair, jnp.float32)).block_until_ready()
    assert len(traces) == 1


def test_scores_finite_on_zero_features():
    # All-zero activations: r is defined as 1 (no 0/0), scores stay finite.
    stats = adascale.fit_ecdf(np.array([0.0, 1.0, 2.0]))
    w = {"fc_w": np.ones((128, 10), np.float32), "fc_b": np.zeros(10, np.float32)}
    model = tiny_net.jax_model()
    f = jnp.zeros((4, 128))
    s = adascale.score_from_features(model, w, stats, f, f)
    assert np.all(np.isfinite(np.asarray(s)))


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors(setup):
    model, weights, _, _, x_val, x_test = setup
    with pytest.raises(ValueError, match="at least 2"):
        adascale.fit_ecdf(np.array([1.0]))
    stats = adascale.fit_ecdf(np.arange(10.0))
    f = jnp.abs(jnp.asarray(np.random.default_rng(0).normal(size=(4, 128)), jnp.float32))
    with pytest.raises(ValueError, match="p_min"):
        adascale.score_from_features(model, weights, stats, f, f, percentile=(90, 60))
    with pytest.raises(ValueError, match=r"\(0, 100\)"):
        adascale.score_from_features(model, weights, stats, f, f, percentile=(0, 60))
    with pytest.raises(ValueError, match=r"\(0, 100\)"):
        adascale.score_from_features(model, weights, stats, f, f, percentile=(60, 100))
    with pytest.raises(ValueError, match="keeps 0"):
        adascale.score_from_features(model, weights, stats, f, f, percentile=(60, 99.9))
    with pytest.raises(ValueError, match="rounds down to 0"):
        adascale.q_statistic(f, f, k1=0.1)
    bad = np.asarray(x_test).copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        adascale.perturbed_features(model, weights, jnp.asarray(bad))
    with pytest.raises(ValueError, match=r"one image .* use x\[None\]"):
        adascale.perturbed_features(model, weights, jnp.asarray(x_test[0]))
    with pytest.raises(ValueError, match="floating"):
        adascale.perturbed_features(model, weights, jnp.zeros((2, 8, 8, 3), jnp.int32))
    det = detectors.get("adascale_a")
    no_extras = detectors.prepare_inputs(detectors.get("msp"), model, weights, jnp.asarray(x_val))
    with pytest.raises(ValueError, match="perturbed features"):
        detectors.fit(det, model, weights, {"val": no_extras})
    nan_f = f.at[0, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="NaN"):
        adascale.score_from_features(model, weights, stats, nan_f, f)
