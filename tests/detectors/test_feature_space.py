"""MDS, RMDS, ViM, GEN, DICE, fDBD, GradNorm against independent NumPy/sklearn/torch
re-implementations of the OpenOOD v1.5 postprocessors."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import sklearn.covariance
import torch

from jaxood import detectors
from jaxood.detectors import feature_space as fs
from jaxood.types import Features, Inputs, Model

D, K, N, B = 12, 5, 400, 40
RTOL = 1e-5


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(K, D)).astype(np.float32)
    b = rng.normal(size=(K,)).astype(np.float32)
    variables = {"W": jnp.asarray(w), "b": jnp.asarray(b)}
    head = lambda v, f: jnp.dot(f, v["W"].T, precision="highest") + v["b"]
    model = Model(features=None, head=head, name="lin", num_classes=K, feature_dim=D)

    def make(n, shift=0.0):
        f = np.maximum(rng.normal(size=(n, D)) + shift, 0).astype(np.float32)
        return f, (f.astype(np.float64) @ w.T + b).astype(np.float32)

    ftr, ltr = make(N, 0.5)
    ytr = rng.integers(0, K, N)
    fte, lte = make(B, 0.2)
    train = Inputs(Features(jnp.asarray(ltr), jnp.asarray(ftr)), extras={"labels": ytr})
    test = Inputs(Features(jnp.asarray(lte), jnp.asarray(fte)))
    return dict(
        model=model,
        variables=variables,
        w=w,
        b=b,
        ftr=ftr,
        ltr=ltr,
        ytr=ytr,
        fte=fte,
        lte=lte,
        train=train,
        test=test,
    )


def run(name, s, **hp):
    """Fits with ``hp`` and scores with its score-role part."""
    det = detectors.get(name)
    stats = detectors.fit(det, s["model"], s["variables"], {"train": s["train"]}, **hp)
    score_hp = {k: v for k, v in hp.items() if k in det.names("score")}
    return np.asarray(
        detectors.score(det, s["model"], s["variables"], stats, s["test"], **score_hp)
    )


def _class_gaussian(f, y):
    means = np.stack([f[y == c].mean(0) for c in range(K)])
    centered = np.concatenate([f[y == c] - means[c] for c in range(K)])
    prec = sklearn.covariance.EmpiricalCovariance(assume_centered=False).fit(centered).precision_
    return means, prec


def _maha(x, mean, prec):
    t = x - mean
    return np.einsum("bi,ij,bj->b", t, prec, t)


def test_mds_matches_openood_reference(setup):
    s = setup
    f = s["ftr"].astype(np.float64)
    means, prec = _class_gaussian(f, s["ytr"])
    x = s["fte"].astype(np.float64)
    ref = np.max(np.stack([-_maha(x, means[c], prec) for c in range(K)], 1), 1)
    np.testing.assert_allclose(run("mds", s), ref, rtol=RTOL)


def test_rmds_matches_openood_reference(setup):
    s = setup
    f = s["ftr"].astype(np.float64)
    means, prec = _class_gaussian(f, s["ytr"])
    mu0 = f.mean(0)
    prec0 = sklearn.covariance.EmpiricalCovariance(assume_centered=False).fit(f - mu0).precision_
    x = s["fte"].astype(np.float64)
    bg = -_maha(x, mu0, prec0)
    ref = np.max(np.stack([-_maha(x, means[c], prec) - bg for c in range(K)], 1), 1)
    np.testing.assert_allclose(run("rmds", s), ref, rtol=RTOL, atol=1e-4)


def test_class_moments_chunked_equals_full(setup):
    s = setup
    acc = fs.ClassMoments(K, D)
    for part in np.array_split(np.arange(N), 3):
        acc.update(s["ftr"][part], s["ytr"][part])
    means, prec = _class_gaussian(s["ftr"].astype(np.float64), s["ytr"])
    st = acc.mds_stats()
    np.testing.assert_allclose(st["means"], means, rtol=1e-6)
    np.testing.assert_allclose(st["precision"], prec, rtol=1e-4, atol=1e-6)


def test_vim_matches_openood_reference(setup):
    s = setup
    dim = 6
    w, b = s["w"].astype(np.float64), s["b"].astype(np.float64)
    f = s["ftr"].astype(np.float64)
    u = -np.matmul(np.linalg.pinv(w), b)
    ec = sklearn.covariance.EmpiricalCovariance(assume_centered=True).fit(f - u)
    vals, vecs = np.linalg.eig(ec.covariance_)
    ns = np.ascontiguousarray((vecs.T[np.argsort(vals * -1)[dim:]]).T)
    alpha = (f @ w.T + b).max(-1).mean() / np.linalg.norm((f - u) @ ns, axis=-1).mean()
    x = s["fte"].astype(np.float64)
    ref = scipy.special.logsumexp(x @ w.T + b, -1) - alpha * np.linalg.norm((x - u) @ ns, axis=-1)
    np.testing.assert_allclose(run("vim", s, dim=dim), ref, rtol=RTOL, atol=1e-5)


@pytest.mark.parametrize("gamma,m", [(0.1, 100), (2.0, 3), (0.5, 1)])
def test_gen_matches_openood_reference(setup, gamma, m):
    s = setup
    p = scipy.special.softmax(s["lte"].astype(np.float64), -1)
    top = np.sort(p, 1)[:, -m:]
    ref = -np.sum(top**gamma * (1 - top) ** gamma, 1)
    np.testing.assert_allclose(run("gen", s, gamma=gamma, M=m), ref, rtol=RTOL)


@pytest.mark.parametrize("p", [90, 55.5])
def test_dice_matches_openood_reference(setup, p):
    s = setup
    mean_act = s["ftr"].astype(np.float64).mean(0)
    w = s["w"].astype(np.float64)
    contrib = mean_act[None] * w
    mask = contrib > np.percentile(contrib, p)
    logits = s["fte"].astype(np.float64) @ (w * mask).T + s["b"]
    ref = scipy.special.logsumexp(logits, -1)
    np.testing.assert_allclose(run("dice", s, p=p), ref, rtol=RTOL)


@pytest.mark.parametrize("dist", [True, False])
def test_fdbd_matches_openood_reference(setup, dist):
    s = setup
    w = s["w"].astype(np.float64)
    den = np.zeros((K, K))
    for q in range(K):
        row = np.linalg.norm(w - w[q], axis=1)
        row[q] = 1
        den[q] = row
    out, x = s["lte"].astype(np.float64), s["fte"].astype(np.float64)
    pred = out.argmax(1)
    num = np.sum(np.abs(out - out.max(1, keepdims=True)) / den[pred], 1)
    norm = np.linalg.norm(x - s["ftr"].astype(np.float64).mean(0) if dist else x, axis=1)
    np.testing.assert_allclose(run("fdbd", s, distance_as_normalizer=dist), num / norm, rtol=RTOL)


def test_gradnorm_matches_torch_autograd(setup):
    s = setup
    fc = torch.nn.Linear(D, K).double()
    with torch.no_grad():
        fc.weight.copy_(torch.from_numpy(s["w"].astype(np.float64)))
        fc.bias.copy_(torch.from_numpy(s["b"].astype(np.float64)))
    ref = []
    for row in torch.from_numpy(s["fte"].astype(np.float64)):
        fc.zero_grad()
        loss = torch.mean(torch.sum(-torch.ones(1, K) * torch.log_softmax(fc(row[None]), -1), -1))
        loss.backward()
        ref.append(fc.weight.grad.abs().sum().item())
    np.testing.assert_allclose(run("gradnorm", s), np.array(ref), rtol=RTOL)


def test_openood_sweep_grids():
    assert detectors.get("gen").sweep == {
        "gamma": (0.01, 0.1, 0.5, 1, 2, 5, 10),
        "M": (10, 50, 100, 200, 500, 1000),
    }
    assert detectors.get("vim").sweep == {"dim": (256, 1000)}
    assert detectors.get("fdbd").sweep == {"distance_as_normalizer": (True, False)}
    assert detectors.get("dice").defaults == {"p": 90}


# ------------------------------------------------------------------------------ bad input


def test_class_without_samples_is_a_clear_error(setup):
    s = setup
    y = s["ytr"].copy()
    y[y == 3] = 2
    train = s["train"]._replace(extras={"labels": y})
    with pytest.raises(ValueError, match=r"class\(es\) \[3\] have no training samples"):
        detectors.fit(detectors.get("mds"), s["model"], s["variables"], {"train": train})


def test_missing_labels_is_a_clear_error(setup):
    s = setup
    train = s["train"]._replace(extras={})
    with pytest.raises(ValueError, match="extras\\['labels'\\]"):
        detectors.fit(detectors.get("rmds"), s["model"], s["variables"], {"train": train})


def test_vim_dim_too_large_is_a_clear_error(setup):
    s = setup
    with pytest.raises(ValueError, match="ViM `dim`"):
        detectors.fit(
            detectors.get("vim"), s["model"], s["variables"], {"train": s["train"]}, dim=D
        )
