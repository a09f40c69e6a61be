"""Losses, ISH gradient and the optimizer against independent NumPy / PyTorch references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxood.train import losses
from jaxood.train.ish import ish_dense, ish_kernel_grad, keep_count, shape_activation

torch = pytest.importorskip("torch")


def _np_ce(z, y):
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -logp[np.arange(len(y)), y].mean()


def _data(b=6, d=5, k=4, seed=0):
    rng = np.random.default_rng(seed)
    h = np.abs(rng.normal(size=(b, d))).astype(np.float32)
    w = rng.normal(size=(k, d)).astype(np.float32)  # torch layout [K, D]
    bias = rng.normal(size=k).astype(np.float32)
    y = rng.integers(0, k, b)
    return h, w, bias, y


def test_cross_entropy_and_logitnorm_match_numpy():
    h, w, b, y = _data()
    z = h @ w.T + b
    np.testing.assert_allclose(losses.cross_entropy(z, y), _np_ce(z, y), rtol=1e-5)
    tau = 0.04
    zn = z / (tau * (np.linalg.norm(z, axis=-1, keepdims=True) + 1e-7))
    np.testing.assert_allclose(losses.logitnorm(z, y, tau), _np_ce(zn, y), rtol=1e-5)


def _torch_elogitnorm(h, w, b, y):
    """The official formulation with the explicit K x K x D tensor (ELogitNormOOD)."""
    z = h @ w.T + b
    pred = z.argmax(1)
    zp = z.gather(1, pred[:, None])
    wdist = torch.linalg.norm(w[:, None, :] - w[None, :, :], dim=-1) + torch.eye(w.shape[0])
    d = (torch.abs(zp - z) / wdist[pred]).mean(1)
    return torch.nn.functional.cross_entropy(z / d[:, None], y)


@pytest.mark.parametrize("k", [4, 10])
def test_elogitnorm_value_and_gradients_match_torch_reference(k):
    h, w, b, y = _data(b=8, d=6, k=k, seed=k)
    th, tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (h, w, b))
    tloss = _torch_elogitnorm(th, tw, tb, torch.tensor(y))
    tloss.backward()

    def f(h, kernel, bias):
        return losses.elogitnorm(h @ kernel + bias, jnp.asarray(y), kernel)

    loss, (gh, gk, gb) = jax.value_and_grad(f, argnums=(0, 1, 2))(h, w.T, b)
    np.testing.assert_allclose(loss, tloss.item(), rtol=1e-4)
    np.testing.assert_allclose(gh, th.grad.numpy(), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(gk, tw.grad.numpy().T, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-3, atol=1e-5)
    assert all(np.all(np.isfinite(g)) for g in (gh, gk, gb))


def test_elogitnorm_scale_is_mean_over_all_classes():
    """D uses the predicted class, includes the bias, and averages over K (not K-1)."""
    h, w, b, y = _data(b=3, d=4, k=5, seed=3)
    z = h @ w.T + b
    d = np.asarray(losses.elogitnorm_scale(z, w.T))
    for i in range(3):
        p = z[i].argmax()
        terms = [abs(z[i, p] - z[i, j]) / np.linalg.norm(w[p] - w[j]) for j in range(5) if j != p]
        np.testing.assert_allclose(d[i], sum(terms) / 5, rtol=1e-4)


def test_elogitnorm_scale_is_exact_for_near_duplicate_class_rows():
    """Rows ~1e-3 apart with norms ~8: D(h) to float32 rounding, where the Gram identity fails.

    Logits are given (float32), so the only error source is the class-distance term.
    """
    rng = np.random.default_rng(5)
    d, k, b = 64, 10, 16
    w = (rng.normal(size=d) + 1e-3 * rng.normal(size=(k, d))).astype(np.float32)  # [K, D]
    z = rng.normal(size=(b, k)).astype(np.float32)
    w64, z64 = w.astype(np.float64), z.astype(np.float64)
    dist = np.linalg.norm(w64[:, None] - w64[None], axis=-1) + np.eye(k)
    pred = z64.argmax(1)
    ref = (np.abs(z64[np.arange(b), pred][:, None] - z64) / dist[pred]).mean(1)
    got = np.asarray(losses.elogitnorm_scale(jnp.asarray(z), jnp.asarray(w.T)))
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    # The test can fail: the Gram form in float32 is off by far more on these rows.
    sq = (w * w).sum(1)
    gram_d2 = np.maximum(sq[:, None] + sq[None] - 2 * (w @ w.T), 1e-12)
    gram = (
        np.abs(z64[np.arange(b), pred][:, None] - z64) / (np.sqrt(gram_d2) + np.eye(k))[pred]
    ).mean(1)
    assert np.max(np.abs(gram - ref) / ref) > 1e-3


def test_class_distances_are_chunked_without_changing_them():
    w = np.random.default_rng(6).normal(size=(7, 5)).astype(np.float32)  # kernel [D, K]
    full = np.asarray(losses.class_sq_distances(jnp.asarray(w)))
    chunked = np.asarray(losses.class_sq_distances(jnp.asarray(w), max_chunk=14))  # 2 rows
    ref = ((w.T[:, None].astype(np.float64) - w.T[None]) ** 2).sum(-1)
    np.testing.assert_allclose(full, ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(full, chunked)


def test_unknown_loss_is_a_clear_error():
    with pytest.raises(ValueError, match="elogitnorm"):
        losses.compute_loss("focal", jnp.zeros((2, 3)), jnp.zeros(2, int))


def _np_shape(h, p):
    """OpenOOD ``ISHReshaper.cache/load_minksample_expscale`` (reserve = 1 - p), in torch."""
    x = torch.tensor(h, dtype=torch.float64)
    s1 = x.sum(dim=[1])
    v, idxs = x.abs().topk(int(x.shape[1] * (1 - p)), dim=1, sorted=False)
    v = v * torch.exp((s1 / v.sum(dim=[1]))[:, None])
    return torch.zeros(x.shape, dtype=x.dtype).scatter_(1, idxs, v).numpy()


def test_ish_shaping_and_kernel_gradient_match_numpy():
    h, w, b, y = _data(b=5, d=40, k=3, seed=1)
    p = 0.85
    assert keep_count(40, p) == 6 and keep_count(640, 0.85) == 96
    np.testing.assert_allclose(shape_activation(h, p), _np_shape(h, p), rtol=1e-5)
    z = h @ w.T + b
    delta = np.asarray(jax.grad(lambda z: losses.cross_entropy(z, y))(z))
    np.testing.assert_allclose(
        ish_kernel_grad(h, delta, p), _np_shape(h, p).T @ delta, rtol=1e-4, atol=1e-7
    )


def test_ish_keeps_the_official_count_and_refuses_zero():
    """int(D * (1 - p)) in float64, as OpenOOD's ish_trainer: 640 * (1 - 0.8) = 127.999..."""
    assert [keep_count(640, p) for p in (0.8, 0.85, 0.9)] == [127, 96, 63]
    assert [keep_count(1280, p) for p in (0.8, 0.9)] == [255, 127]
    assert [keep_count(1920, p) for p in (0.8, 0.9)] == [383, 191]
    with pytest.raises(ValueError, match="ish_percentile"):
        keep_count(10, 0.95)  # int(0.5) = 0 kept
    h = np.abs(np.random.default_rng(3).normal(size=(4, 640))).astype(np.float32)
    assert np.all(np.sum(np.asarray(shape_activation(h, 0.8)) > 0, axis=1) == 127)


def test_ish_ties_keep_the_lower_index():
    h = np.array([[3.0, 1.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0]], np.float32)
    out = np.asarray(shape_activation(h, 0.7))  # keeps int(10 * 0.3) = 3: 3.0 and two 2.0s
    np.testing.assert_array_equal(out[0] > 0, [1, 0, 1, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(
        out[0, [0, 2, 3]], np.exp(10.0 / 7.0) * np.array([3, 2, 2]), rtol=1e-6
    )


def test_ish_dense_changes_only_the_kernel_gradient():
    h, w, b, y = _data(b=5, d=20, k=3, seed=2)
    loss_ish = lambda h, k, b: losses.cross_entropy(ish_dense(h, k, b, 0.85), y)
    loss_std = lambda h, k, b: losses.cross_entropy(h @ k + b, y)
    g_ish = jax.grad(loss_ish, argnums=(0, 1, 2))(h, w.T, b)
    g_std = jax.grad(loss_std, argnums=(0, 1, 2))(h, w.T, b)
    np.testing.assert_allclose(loss_ish(h, w.T, b), loss_std(h, w.T, b), rtol=1e-6)
    np.testing.assert_allclose(g_ish[0], g_std[0], rtol=1e-5)
    np.testing.assert_allclose(g_ish[2], g_std[2], rtol=1e-5)
    z = h @ w.T + b
    delta = np.asarray(jax.grad(lambda z: losses.cross_entropy(z, y))(z))
    np.testing.assert_allclose(g_ish[1], _np_shape(h, 0.85).T @ delta, rtol=1e-4, atol=1e-7)
    assert not np.allclose(g_ish[1], g_std[1])
    with pytest.raises(ValueError, match="percentile"):
        shape_activation(h, 1.0)


@pytest.mark.parametrize(
    "kw, fc_wd",
    [
        ({"fc_weight_decay": 5e-5}, 5e-5),
        ({"ish": True}, 5e-5),
        ({"ish": True, "fc_weight_decay": 1e-3}, 1e-3),
        ({}, 5e-4),
    ],
)
def test_optimizer_and_schedule_match_torch_sgd_nesterov_cosine(kw, fc_wd):
    """optax chain == torch SGD(nesterov, wd) + OpenOOD LambdaLR cosine, step by step; ISH
    implies OpenOOD's classifier weight decay 5e-5 unless fc_weight_decay is given."""
    from jaxood.train.config import TrainConfig
    from jaxood.train.optim import make_optimizer

    total = 7
    cfg = TrainConfig(lr=0.1, min_lr=1e-6, weight_decay=5e-4, **kw)
    rng = np.random.default_rng(0)
    a0 = rng.normal(size=(3, 2)).astype(np.float32)
    f0 = rng.normal(size=(2,)).astype(np.float32)
    targets = [rng.normal(size=(3, 2)).astype(np.float32) for _ in range(total)]

    params = {"body": {"w": jnp.asarray(a0)}, "fc": {"bias": jnp.asarray(f0)}}
    tx = make_optimizer(cfg, total)
    state = tx.init(params)

    ta = torch.tensor(a0, requires_grad=True)
    tf = torch.tensor(f0, requires_grad=True)
    opt = torch.optim.SGD(
        [{"params": [ta], "weight_decay": 5e-4}, {"params": [tf], "weight_decay": fc_wd}],
        lr=0.1,
        momentum=0.9,
        nesterov=True,
    )
    cos = lambda t: 1e-6 / 0.1 + (1 - 1e-6 / 0.1) * 0.5 * (1 + np.cos(np.pi * t / total))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cos)

    def loss(p, t):
        return jnp.sum((p["body"]["w"] - t) ** 2) + jnp.sum(p["fc"]["bias"] ** 3)

    for t in targets:
        g = jax.grad(loss)(params, t)
        updates, state = tx.update(g, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        opt.zero_grad()
        (((ta - torch.tensor(t)) ** 2).sum() + (tf**3).sum()).backward()
        opt.step()
        sched.step()
    np.testing.assert_allclose(params["body"]["w"], ta.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(params["fc"]["bias"], tf.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_classifier_decay_needs_an_fc_head():
    from jaxood.train.config import TrainConfig
    from jaxood.train.optim import make_optimizer

    tx = make_optimizer(TrainConfig(ish=True), 10)
    with pytest.raises(ValueError, match="'fc' classifier"):
        tx.init({"head": {"w": jnp.zeros(2)}})
