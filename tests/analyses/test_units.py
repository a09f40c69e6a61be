"""The pieces under the experiments: AdaSCALE's ablation settings against an independent torch
reference, tables, rank profiles, subsets, published defaults, covariate shift, the CLI."""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxood.analyses import common, covariate, published
from jaxood.analyses.activations import clip_to_head, rank_profile
from jaxood.analyses.output import Table, aggregate, markdown_table
from jaxood.data import benchmarks
from jaxood.detectors import adascale
from tests.detectors import tiny_net
from tests.tracing import count_traces

torch = pytest.importorskip("torch")


# ------------------------------------------------------------------ perturbation regions


def torch_grad(net, x_nhwc):
    """``(x [B, C, H, W], G)``: float64 input gradient of each sample's top logit (torch)."""
    x = torch.tensor(x_nhwc.transpose(0, 3, 1, 2), dtype=torch.float64, requires_grad=True)
    logits, _ = net(x)
    top = logits.gather(1, logits.detach().argmax(1)[:, None])[:, 0]
    top.backward(torch.ones_like(top))
    return x, x.grad.detach()


def ref_perturbed(net, x_nhwc, o, eps, region):
    """Official perturbation (spec §1.2) with the element choice of paper Table 9."""
    x, grad = torch_grad(net, x_nhwc)
    # jaxood flattens NHWC; pick on the same element order.
    flat = grad.permute(0, 2, 3, 1).reshape(len(x), -1).abs()
    if region == "all":
        mask = torch.ones_like(flat)
    else:
        m = int(flat.shape[1] * o)
        _, idx = torch.topk(flat, m, dim=1, largest=region == "significant")
        mask = torch.zeros_like(flat).scatter_(1, idx, 1.0)
    mask = mask.reshape(len(x), *x_nhwc.shape[1:]).permute(0, 3, 1, 2)
    with torch.no_grad():
        _, ft = net(x.detach() + eps * torch.sign(grad) * mask)
    return ft.numpy()


@pytest.fixture(scope="module")
def net():
    weights = tiny_net.make_weights(seed=2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 8, 8, 3)).astype(np.float32)
    return tiny_net.jax_model(), weights, tiny_net.torch_net(weights)[0], x


@pytest.mark.parametrize("region,o", [("trivial", 0.05), ("significant", 0.05),
                                      ("significant", 0.5), ("all", 1.0)])
def test_region_matches_reference(net, region, o):
    model, weights, tnet, x = net
    _, ft = adascale.perturbed_features(model, weights, jnp.asarray(x), o=o, eps=0.5,
                                        region=region)
    np.testing.assert_allclose(np.asarray(ft), ref_perturbed(tnet, x, o, 0.5, region),
                               rtol=1e-4, atol=1e-5)


def test_random_region_is_per_sample_and_batch_independent(net):
    model, weights, _, x = net
    full = np.asarray(adascale.perturbed_features(model, weights, jnp.asarray(x),
                                                  region="random")[1])
    alone = np.asarray(adascale.perturbed_features(model, weights, jnp.asarray(x[3:4]),
                                                   region="random")[1])
    np.testing.assert_allclose(full[3:4], alone, rtol=1e-6, atol=1e-6)
    trivial = np.asarray(adascale.perturbed_features(model, weights, jnp.asarray(x))[1])
    assert not np.allclose(full, trivial)
    # Same image twice in a batch: the same random region.
    twice = np.asarray(adascale.perturbed_features(
        model, weights, jnp.asarray(np.stack([x[0], x[0]])), region="random")[1])
    np.testing.assert_array_equal(twice[0], twice[1])


def test_float64_attribution_matches_torch_float64(net):
    model, weights, tnet, x = net
    ref = torch_grad(tnet, x)[1].permute(0, 2, 3, 1).numpy()
    _, g64 = adascale.input_gradient(model, weights, jnp.asarray(x), "float64")
    _, g32 = adascale.input_gradient(model, weights, jnp.asarray(x), "float32")
    assert g64.dtype == np.float64 and g32.dtype == np.float32
    scale = np.abs(ref).max()
    assert np.abs(np.asarray(g64) - ref).max() / scale < 1e-12
    assert np.abs(np.asarray(g32) - ref).max() / scale > 1e-9  # float32 cannot reach it
    # The perturbed features from the float64 choice equal the float64 reference's, jitted too.
    ft = jax.jit(lambda x: adascale.perturbed_features(
        model, weights, x, attribution_dtype="float64")[1])(jnp.asarray(x))
    assert ft.dtype == np.float32
    np.testing.assert_allclose(np.asarray(ft), ref_perturbed(tnet, x, 0.05, 0.5, "trivial"),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="attribution_dtype"):
        adascale.HPARAMS["attribution_dtype"].validate("float16", "attribution_dtype")
    with pytest.raises(ValueError, match="attribution_dtype"):
        adascale.input_gradient(model, weights, jnp.asarray(x), "bfloat16")


def test_region_and_q_form_are_validated():
    det_hp = adascale.HPARAMS
    with pytest.raises(ValueError, match="region"):
        det_hp["region"].validate("everywhere", "region")
    with pytest.raises(ValueError, match="q_form"):
        det_hp["q_form"].validate("q+c", "q_form")
    assert det_hp["region"].default == "trivial" and det_hp["q_form"].default == "lambda_q+c_o"


# ---------------------------------------------------------------------------- Q' forms


def ref_forms(f, ft, k1, k2, lmbda):
    d = f.shape[1]
    c1, c2 = int(d * k1 / 100), int(d * k2 / 100)
    order = np.argsort(-f, axis=1, kind="stable")
    top = lambda a, c: np.take_along_axis(a, order[:, :c], 1)  # noqa: E731
    q = np.abs(top(f, c1) - top(ft, c1)).sum(1)
    co = np.maximum(top(ft, c2), 0).sum(1)
    mk = top(f, c2).sum(1)
    return {"lambda_q+c_o": lmbda * q + co, "q": q, "c_o": co, "max_k": mk,
            "lambda_q+max_k": lmbda * q + mk}


def test_q_forms_match_numpy():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(50, 200)).astype(np.float32)
    ft = f + 0.1 * rng.normal(size=f.shape).astype(np.float32)
    want = ref_forms(f.astype(np.float64), ft.astype(np.float64), 1.0, 5.0, 10.0)
    for form in adascale.Q_FORMS:
        got = adascale.q_statistic(jnp.asarray(f), jnp.asarray(ft), k1=1.0, k2=5.0, lmbda=10.0,
                                   form=form)
        np.testing.assert_allclose(np.asarray(got), want[form], rtol=1e-5, atol=1e-5)
        # The chunked program (fixed padded size) gives the same values.
        np.testing.assert_allclose(common.chunked_q(f, ft, 10.0, k1=1.0, k2=5.0, form=form),
                                   np.asarray(got), rtol=1e-6, atol=1e-6)
    stats = adascale.fit_ecdf(want["q"], q_form="q")
    assert stats.q_form == "q"
    np.testing.assert_allclose(np.asarray(stats.q(jnp.asarray(f), jnp.asarray(ft))), want["q"],
                               rtol=1e-5)


def test_adascorer_compiles_once_per_static_setting_over_grid_points_and_splits(monkeypatch):
    """Issue 19 item 4: scoring many percentile pairs on splits of different sizes traces the
    Q' and grid programs once per static setting (padded row and pair chunks); the per-split
    grid cache once per split size; scores equal the unchunked computation."""
    monkeypatch.setattr(common, "Q_CHUNK", 32)  # several row chunks on small splits
    model = tiny_net.jax_model(width=128, classes=10)
    weights = tiny_net.make_weights(seed=3, width=128, classes=10)
    run = SimpleNamespace(model=model, variables=weights, near=["near/a"], far=["far/b"],
                          ood_sets=["near/a", "far/b"])
    rng = np.random.default_rng(0)
    sizes = {"id_val": 30, "ood_val": 45, "id_test": 50, "near/a": 20, "far/b": 70}
    arrays = {}
    for split, n in sizes.items():
        f = np.maximum(rng.normal(size=(n, 128)), 0).astype(np.float32)
        arrays[split] = (f, f + 0.05 * rng.normal(size=f.shape).astype(np.float32))
    pairs = adascale.PERCENTILE_GRID[:11]  # more than PAIR_CHUNK: the last chunk is padded
    scorer = common.AdaScorer(run, arrays)
    with count_traces() as traces:
        for lmbda in (10.0, 3.0):  # traced: the same programs
            stats = common.fit_stats(*arrays["id_val"], lmbda=lmbda)
            rows = scorer.evaluate(stats, pairs)
            scorer.evaluate(stats, pairs[:2], variant="l")
    assert len(rows) == len(pairs) and all(np.isfinite(r["val_AUROC"]) for r in rows)
    assert traces["_q_values"] == 1, traces
    assert traces["grid_scores"] == 2, traces  # one per variant
    assert traces["grid_cache"] == len(set(sizes.values())), traces
    with count_traces() as again:
        common.AdaScorer(run, arrays, share=scorer).evaluate(stats, pairs[3:])
    assert not {"_q_values", "grid_scores", "grid_cache"} & set(again), again
    for split, (f, ft) in arrays.items():
        cache = adascale.grid_cache(model, weights, stats, jnp.asarray(f), jnp.asarray(ft))
        want = adascale.grid_scores(stats, cache, jnp.asarray(pairs, jnp.float32))
        np.testing.assert_allclose(scorer.scores(stats, pairs, split), np.asarray(want),
                                   rtol=1e-6)


# ------------------------------------------------------------------- tables and profiles


def test_aggregate_mean_population_std_and_nan():
    t = Table("t", "T", ["a"], ["x", "y"], [
        {"a": 1, "x": 1.0, "y": float("nan")}, {"a": 1, "x": 3.0, "y": 2.0},
        {"a": 2, "x": 5.0, "y": 1.0}])
    rows = {r["a"]: r for r in aggregate(t).rows}
    assert rows[1]["x"] == 2.0 and rows[1]["x_std"] == 1.0 and rows[1]["n"] == 2
    assert rows[1]["y"] == 2.0 and rows[1]["y_std"] == 0.0
    md = markdown_table(aggregate(t))
    assert "| 1 | 2.00 ± 1.00 |" in md and "| 2 | 5.00 | 1.00 |" in md


def test_rank_profile_matches_naive_loop():
    rng = np.random.default_rng(3)
    f = rng.normal(size=(37, 16))
    v = rng.normal(size=(37, 16))
    mean, std = rank_profile(f, v, chunk=10)
    ranked = np.array([v[i][np.argsort(-f[i], kind="stable")] for i in range(len(f))])
    np.testing.assert_allclose(mean, ranked.mean(0), rtol=1e-10)
    np.testing.assert_allclose(std, ranked.std(0), rtol=1e-8, atol=1e-10)


def test_relative_axis_is_scaled_to_the_head_of_the_ranks():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rel = np.concatenate([np.linspace(2.0, 5.0, 90), np.full(10, 4000.0), [np.nan]])
    fig, ax = plt.subplots()
    ax.plot(np.arange(101), rel)
    clip_to_head(ax, [rel, rel / 2])
    lo, hi = ax.get_ylim()
    plt.close(fig)
    assert lo <= 0.0 and 5.0 < hi < 6.0  # the tail (4000, where a -> 0) is off the axis


def test_subset_source_rows_and_fingerprint():
    from jaxood.types import PreprocessSpec

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 4, 4, 1), dtype=np.uint8)
    spec = PreprocessSpec(None, None, "bilinear", (0.5,), (0.25,), 1)
    src = benchmarks.ArraySource(images, np.arange(50), spec, "s")
    idx = common.subset_indices(50, 7, seed=1)
    sub = common.SubsetSource(src, idx)
    assert len(sub) == 7 and list(sub.labels) == list(idx)
    np.testing.assert_array_equal(sub.batch(2, 5), src.batch(0, 50)[idx[2:5]])
    assert sub.fingerprint() != src.fingerprint()
    assert common.subset_indices(50, 50, seed=1) is None  # whole split: no subset


# --------------------------------------------------------------------- published values


def test_published_defaults_tables_12_13():
    wrn = {"arch": "wrn", "arch_kwargs": {"depth": 28, "widen_factor": 10}}
    hp, rec = published.overrides("cifar10", wrn, ["adascale_a", "adascale_l", "oodd", "msp"])
    assert hp["adascale_a"]["percentile"] == (60, 95) and hp["adascale_a"]["k2"] == 80.0
    assert hp["adascale_l"]["percentile"] == (60, 85)
    assert hp["oodd"] == {"k_in": 5, "k_out": 5, "alpha": 0.5, "queue_size": 128}
    assert "Table 12" in rec["adascale_a"]["source"] and "msp" not in hp
    assert rec["msp"]["source"].startswith("detector default")
    hp, rec = published.overrides("imagenet", {"arch": "resnet50"}, ["adascale_l", "nap_r"])
    assert hp["adascale_l"]["percentile"] == (80, 85) and hp["nap_r"] == {"w": 0.8}
    hp, rec = published.overrides("fashion-openset", {"arch": "wrn", "arch_kwargs": {
        "depth": 16, "widen_factor": 4}}, ["adascale_a"])
    assert hp == {} and "nothing published" in rec["adascale_a"]["source"]
    hp, rec = published.overrides("fashion-openset", wrn, ["adascale_a"], like="cifar10")
    assert hp["adascale_a"]["percentile"] == (60, 95) and "borrowed" in rec["adascale_a"]["source"]
    # Every published value is valid for the detector.
    from jaxood import detectors

    for (dataset, net), _ in published.ADASCALE_TABLES.items():
        for variant in ("a", "l"):
            values, _ = published._adascale(variant, dataset, net)
            detectors.get(f"adascale_{variant}").resolve(values)


# ---------------------------------------------------------------------- covariate shift


def test_covariate_shift_benchmark():
    name = covariate.with_covariate_shift("demo", size=30, seed=0)
    assert name == "demo+cs"
    spec = benchmarks.get("demo").preprocess
    from jaxood.types import PreprocessSpec

    spec = spec or PreprocessSpec(None, None, "bilinear", (0.5,), (0.25,), 1)
    plain = benchmarks.open_benchmark("demo", None, spec, need_train=False)
    opened = benchmarks.open_benchmark(name, None, spec, need_train=False, csid=True)
    assert set(opened.csid) == set(covariate.CORRUPTIONS)
    assert not benchmarks.open_benchmark(name, None, spec, need_train=False).csid
    for src in opened.csid.values():
        assert len(src) == 30 and np.all(src.labels >= 0)
    # The other splits are the base benchmark's: same data, same cache entries.
    assert opened.id_test.fingerprint() == plain.id_test.fingerprint()
    x = np.full((2, 8, 8, 1), 100, np.uint8)
    assert np.array_equal(covariate.corrupt(x, "contrast"), x)  # flat image: no contrast
    noisy = covariate.corrupt(x, "gaussian_noise", seed=1)
    assert noisy.dtype == np.uint8 and not np.array_equal(noisy, x)
    with pytest.raises(ValueError, match="unknown corruption"):
        covariate.corrupt(x, "fog")


# -------------------------------------------------------------------------------- CLI


def test_cli_list_and_errors(capsys, tmp_path):
    from jaxood.cli import main

    assert main(["experiment", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("fig7_pgrid", "table9_region", "table11_latency", "table4_training"):
        assert name in out
    assert main(["experiment", "nope", "--benchmark", "demo", "--model", "x"]) == 2
    assert "unknown experiment 'nope'" in capsys.readouterr().err
    assert main(["experiment", "fig7_pgrid", "--benchmark", "demo"]) == 2
    assert "--model is required" in capsys.readouterr().err
    assert main(["experiment", "fig7_pgrid", "--benchmark", "demo", "--model", "x",
                 "--option", "values=[80,"]) == 2
    assert "is not JSON" in capsys.readouterr().err
    assert main(["experiment", "report", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "REPORT.md").read_text().startswith("# The AdaSCALE")


def test_beats_both_ends_counts_adaptive_cells():
    from jaxood.analyses.pgrid import beats_both_ends

    cells = [{"p_min": a, "p_max": b, "val_AUROC": v} for a, b, v in [
        (60, 60, 80.0), (80, 80, 85.0), (90, 90, 70.0),
        (60, 80, 86.0),  # beats 80 and 85
        (60, 90, 82.0),  # beats 80 and 70
        (80, 90, 84.0),  # loses to 85
    ]]
    assert beats_both_ends(cells) == (2, 3)


def test_float64_attribution_fails_early_where_it_cannot_lower():
    import flax.linen as nn

    from jaxood.types import Features, Model

    def features(v, x):
        f = nn.max_pool(x * v["w"], (2, 2), (2, 2)).reshape(len(x), -1)
        return Features(logits=f[:, :3], feature=f)

    model = Model(features=features, head=lambda v, f: f[:, :3], name="maxpool")
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 1)), jnp.float32)
    ok = jax.jit(lambda x: adascale.perturbed_features(model, {"w": jnp.ones(())}, x)[1])(x)
    assert ok.shape == (2, 4)  # float32 works
    with pytest.raises(ValueError, match="attribution_dtype='float64' cannot be compiled"):
        jax.jit(lambda x: adascale.perturbed_features(
            model, {"w": jnp.ones(())}, x, attribution_dtype="float64")[1])(x)


def test_float64_attribution_lowers_with_jaxood_max_pool():
    import torch

    from jaxood.models import pool
    from jaxood.types import Features, Model

    def features(v, x):
        f = pool.max_pool(x * v["w"], 2, 2, 0).reshape(len(x), -1)
        return Features(logits=f[:, :3], feature=f)

    model = Model(features=features, head=lambda v, f: f[:, :3], name="jaxood_pool")
    x_np = np.random.default_rng(0).normal(size=(2, 4, 4, 1))
    x = jnp.asarray(x_np, jnp.float32)
    v = {"w": jnp.ones(())}
    f64 = jax.jit(lambda x: adascale.perturbed_features(
        model, v, x, attribution_dtype="float64")[1])(x)
    assert f64.shape == (2, 4)
    with jax.enable_x64(True):
        _, grad = adascale.input_gradient(model, v, x, "float64")
    assert grad.dtype == jnp.float64
    # Reference: torch's float64 gradient of each sample's own argmax logit.
    tx = torch.tensor(np.asarray(x, np.float64)).permute(0, 3, 1, 2).requires_grad_(True)
    logits = torch.nn.functional.max_pool2d(tx, 2, 2).permute(0, 2, 3, 1).reshape(2, -1)[:, :3]
    logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    np.testing.assert_allclose(np.asarray(grad), tx.grad.permute(0, 2, 3, 1).numpy(), atol=1e-12)
