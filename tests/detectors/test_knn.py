"""KNN: exact chunked search vs a brute-force NumPy reference (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxood import detectors
from jaxood.detectors import knn
from jaxood.types import Features, Inputs


def brute_force(queries, train, k):
    """OpenOOD semantics: -squared L2 distance to the k-th neighbour of normalised rows."""
    q = queries.astype(np.float64)
    t = train.astype(np.float64)
    q = q / (np.linalg.norm(q, axis=1, keepdims=True) + 1e-10)
    t = t / (np.linalg.norm(t, axis=1, keepdims=True) + 1e-10)
    d2 = (q * q).sum(1)[:, None] + (t * t).sum(1)[None] - 2 * q @ t.T
    return -np.sort(d2, axis=1)[:, k - 1]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(20_000, 8)).astype(np.float32)
    queries = rng.normal(size=(64, 8)).astype(np.float32)
    # Plant near-copies of some queries right at chunk boundaries (4096-chunks: 4095 | 4096,
    # 8191 | 8192, and in the last, partial chunk) so the top-K spans several chunks.
    for j, pos in enumerate([4095, 4096, 8191, 8192, 19_999]):
        train[pos] = queries[j % 3] * (1.0 + 1e-3 * j)
    return train, queries


@pytest.mark.parametrize("k,chunk", [(1, 4096), (5, 4096), (50, 3000), (1000, 20_000)])
def test_device_bank_matches_brute_force(data, k, chunk):
    train, queries = data
    stats = knn.knn_bank(train, chunk=chunk)
    got = np.asarray(knn.knn_score(queries, stats, k))
    np.testing.assert_allclose(got, brute_force(queries, train, k), rtol=1e-5, atol=1e-6)


def test_host_bank_matches_brute_force(data, tmp_path):
    train, queries = data
    chunks = np.array_split(train, 7)  # uneven chunks written to an on-disk memmap
    stats = knn.write_bank(chunks, tmp_path / "bank.npy", *train.shape, chunk=4096)
    got = np.asarray(knn.knn_score(queries, stats, 5))
    ref = brute_force(queries, train, 5)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    # Under jit (as the benchmark runner calls it) the host bank arrives as a device array.
    jitted = jax.jit(lambda s, f: knn.knn_score(f, s, 5))
    np.testing.assert_allclose(np.asarray(jitted(stats, queries)), ref, rtol=1e-5, atol=1e-6)


def test_registry_fit_score_and_jit(data):
    train, queries = data
    det = detectors.get("knn")
    feats = lambda f: Features(jnp.zeros((f.shape[0], 3)), jnp.asarray(f))
    stats = detectors.fit(det, None, None, {"train": Inputs(feats(train[:2000]))}, bank_chunk=512)
    ref = brute_force(queries, train[:2000], 50)
    got = detectors.score(det, None, None, stats, Inputs(feats(queries)))
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-6)
    jitted = jax.jit(lambda s, f: knn.knn_score(f, s, 50))  # stats as traced pytree
    np.testing.assert_allclose(np.asarray(jitted(stats, queries)), ref, rtol=1e-5, atol=1e-6)


def test_k_larger_than_bank_is_a_clear_error(data):
    train, queries = data
    stats = knn.knn_bank(train[:10], chunk=4)
    assert np.all(np.isfinite(np.asarray(knn.knn_score(queries, stats, 10))))
    with pytest.raises(ValueError, match=r"`K`=11 must be in \[1, bank size 10\]"):
        knn.knn_score(queries, stats, 11)
    with pytest.raises(ValueError, match="Python int"):
        knn.knn_score(queries, stats, 2.0)
