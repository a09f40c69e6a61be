"""OODD against an independent re-implementation of the released algorithm (NumPy +
Python PriorityQueue, as in zxk1212/OODD knn_postprocessor.py), plus queue invariants."""

import functools
from queue import PriorityQueue

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxood import detectors
from jaxood.detectors import oodd
from jaxood.detectors.knn import chunk_bank
from jaxood.types import Features, Inputs, Model

D = 8


def normalize(x):
    x = x.astype(np.float64)
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-10)


def kth_largest(bank, queries, k):
    sims = queries @ bank.T
    return np.sort(sims, axis=1)[:, -k]


class _Item:
    def __init__(self, score, data):
        self.score, self.data = score, data

    def __lt__(self, other):  # reversed, so get() pops the largest score (the release)
        return float(self.score) > float(other.score)


def release_reference(id_bank, stream, *, k_in, k_out, queue_size, chunk=512, memory_bank=None):
    """The release's conf_postprocess loop on an already-ordered stream (float64)."""
    queue, scores = PriorityQueue(), []
    stream = normalize(stream)
    for start in range(0, len(stream), chunk):
        batch = stream[start : start + chunk]
        s_in = kth_largest(id_bank, batch, k_in)
        for j in range(len(batch)):
            queue.put(_Item(s_in[j], batch[j]))
            if queue.qsize() > queue_size:
                queue.get()
        food = np.array([item.data for item in queue.queue])
        if memory_bank is not None:
            food = np.concatenate([food, memory_bank])
        scores.append(s_in - kth_largest(food, batch, k_out))
    return np.concatenate(scores)


def iis_reference(msp, feats, labels, alpha):
    best = msp.argmax(1)
    conf = msp[np.arange(len(msp)), best]
    chosen = normalize(feats[np.arange(len(msp)), best])
    per_class = [
        np.flatnonzero(labels == c)[np.argsort(-conf[labels == c], kind="stable")]
        for c in np.unique(labels)
    ]
    order = [idx[i] for i in range(max(map(len, per_class))) for idx in per_class if i < len(idx)]
    return chosen[np.array(order)[: int(alpha * len(msp))]]


@pytest.fixture(scope="module")
def bank():
    rng = np.random.default_rng(0)
    msp = rng.uniform(size=(300, 5))
    feats = rng.normal(size=(300, 5, D)).astype(np.float32) + 1.0
    labels = rng.integers(0, 4, 300)
    ref = iis_reference(msp, feats, labels, 0.5)
    got = oodd.iis_select(msp, feats, labels, 0.5)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)  # IIS == release ordering
    return ref


def stream_data(seed, n_id=700, n_ood=900):
    rng = np.random.default_rng(seed)
    ids = rng.normal(size=(n_id, D)) + 1.0
    ood = rng.normal(size=(n_ood, D)) * 2.0
    return ids.astype(np.float32), ood.astype(np.float32)


def test_release_protocol_matches_reference(bank):
    ids, ood = stream_data(1)
    z = np.concatenate([ids, ood])
    perm = np.random.RandomState(100).permutation(len(z))
    ref = release_reference(bank, z[perm], k_in=5, k_out=5, queue_size=128)
    ref_unperm = np.empty_like(ref)
    ref_unperm[perm] = ref
    stats = oodd.make_stats(bank, bank_chunk=64)
    got_id, got_ood = oodd.release_protocol(stats, ids, ood, k_in=5, k_out=5, queue_size=128)
    np.testing.assert_allclose(got_id, ref_unperm[: len(ids)], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_ood, ref_unperm[len(ids) :], rtol=1e-5, atol=1e-5)


def test_stream_with_memory_bank_small_chunks_matches_reference(bank):
    ids, ood = stream_data(2, 150, 150)
    z = np.concatenate([ids, ood])
    mb = normalize(np.random.default_rng(3).normal(size=(5, D)))
    ref = release_reference(bank, z, k_in=3, k_out=7, queue_size=40, chunk=64, memory_bank=mb)
    got, state = oodd.oodd_stream(
        chunk_bank(bank, 100), z, queue_size=40, k_in=3, k_out=7, chunk_size=64, memory_bank=mb
    )
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-5)
    assert state.keys.shape == (40,)


def test_same_stream_same_order_identical_scores(bank):
    ids, ood = stream_data(4)
    stats = oodd.make_stats(bank, bank_chunk=64)
    a = oodd.release_protocol(stats, ids, ood, k_in=5, k_out=5, queue_size=128)
    b = oodd.release_protocol(stats, ids, ood, k_in=5, k_out=5, queue_size=128)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = oodd.release_protocol(stats, ids, ood, k_in=5, k_out=5, queue_size=128, seed=7)
    assert not np.array_equal(a[0], c[0])  # the order matters, and the seed sets the order


def test_step_calls_with_padding_match_reference(bank):
    # A deployed stream: three calls of the registered `step`, state carried, each batch
    # padded to 40 rows with copies of real rows marked invalid; split points are multiples
    # of chunk_size, so the result must be the release's single stream.
    ids, ood = stream_data(5, 40, 40)
    z = np.concatenate([ids, ood])[np.random.RandomState(0).permutation(80)]
    ref = release_reference(bank, z, k_in=3, k_out=4, queue_size=20, chunk=16)
    det = detectors.get("oodd")
    stats = oodd.make_stats(bank, bank_chunk=64)
    kw = dict(k_in=3, k_out=4, queue_size=20, chunk_size=16)
    step = jax.jit(lambda st, x, v: det.step(None, None, stats, st, x, v, **kw))
    state = det.init_state(stats, D, **kw)
    rng, got = np.random.default_rng(1), []
    for lo, hi in [(0, 32), (32, 48), (48, 80)]:
        x = z[rng.integers(0, 80, 40)]  # padding that would disturb the queue if let in
        x[: hi - lo] = z[lo:hi]
        inputs = Inputs(Features(jnp.zeros((40, 3)), jnp.asarray(x)))
        s, state = step(state, inputs, jnp.arange(40) < hi - lo)
        got.append(np.asarray(s)[: hi - lo])
    np.testing.assert_allclose(np.concatenate(got), ref, rtol=1e-5, atol=1e-5)
    # ... and equals the registered score of the whole stream as one batch.
    whole = detectors.score(det, None, None, stats, Inputs(Features(jnp.zeros((80, 3)), z)), **kw)
    np.testing.assert_allclose(np.concatenate(got), np.asarray(whole), rtol=1e-6, atol=1e-6)
    assert isinstance(state, oodd.OODDState) and state.keys.shape == (20,)


_STEP = jax.jit(functools.partial(oodd.oodd_step, k_in=2, k_out=1))


@settings(max_examples=20, deadline=None)
@given(
    queue_size=st.sampled_from([1, 3, 8]),
    n=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_queue_holds_lowest_s_in_so_far(bank, queue_size, n, seed):
    # Fixed chunk shape (4) so the jitted step compiles once per queue size; partial last
    # chunks go through the `valid` mask.
    chunk = 4
    id_bank = chunk_bank(bank, 64)
    x = np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)
    state = oodd.empty_state(queue_size, D)
    step = lambda s, c, v: _STEP(s, c, v, id_bank=id_bank)
    s_in = kth_largest(bank, normalize(x), 2)
    for start in range(0, n, chunk):
        part = np.zeros((chunk, D), np.float32)
        m = min(chunk, n - start)
        part[:m] = x[start : start + m]
        state, _ = step(state, part, jnp.arange(chunk) < m)
        keys = np.asarray(state.keys)
        seen = np.sort(s_in[: start + m])
        held = np.sort(keys[np.isfinite(keys)])
        assert held.size == min(queue_size, start + m)  # size invariant
        np.testing.assert_allclose(held, seen[: held.size], atol=1e-5)  # lowest S_in so far
        # every held feature is one of the stream's samples, with its own S_in as key
        fe = np.asarray(state.feats)[np.isfinite(keys)]
        np.testing.assert_allclose(
            kth_largest(bank, fe.astype(np.float64), 2), keys[np.isfinite(keys)], atol=1e-5
        )


@pytest.fixture(scope="module")
def tiny_model():
    rng = np.random.default_rng(0)
    proj = jnp.asarray(rng.normal(size=(8 * 8 * 1, D)).astype(np.float32) * 0.3)
    w = jnp.asarray(rng.normal(size=(3, D)).astype(np.float32))

    def features(v, x):
        f = jax.nn.relu(x.reshape(x.shape[0], -1) @ v["proj"])
        return Features(f @ v["w"].T, f)

    model = Model(features=features, head=lambda v, f: f @ v["w"].T, num_classes=3, feature_dim=D)
    x = rng.normal(size=(60, 8, 8, 1)).astype(np.float32)
    return model, {"proj": proj, "w": w}, x, rng.integers(0, 3, 60)


def test_fit_from_images_and_cout_variant(tiny_model):
    model, variables, x, y = tiny_model
    train = Inputs(
        model.features(variables, jnp.asarray(x)), x=jnp.asarray(x), extras={"labels": y}
    )
    det = detectors.get("oodd")
    stats = detectors.fit(det, model, variables, {"train": train}, alpha=0.5, n_crops=5)
    assert stats.id_size == 30
    test = Inputs(model.features(variables, jnp.asarray(x[:20])))
    s1 = detectors.score(det, model, variables, stats, test, k_out=3, queue_size=10, chunk_size=8)
    assert s1.shape == (20,) and np.all(np.isfinite(s1))
    # precomputed crop outputs give the same dictionary as fitting from images
    msp, feats = oodd.crop_outputs(model, variables, x, jax.random.PRNGKey(0), n_crops=5)
    with np.errstate(divide="ignore"):  # msp == 1 -> logit -inf is fine for softmax
        logits = np.log(np.stack([msp, 1 - msp], -1))  # same MSP, 2-class logits
    pre = train._replace(
        x=None, extras={"labels": y, "crop_logits": logits, "crop_features": feats}
    )
    stats2 = detectors.fit(det, model, variables, {"train": pre})
    np.testing.assert_allclose(stats2.id_bank, stats.id_bank, atol=1e-6)

    cdet = detectors.get("oodd_cout")
    cstats = detectors.fit(cdet, model, variables, {"train": train}, cout_queue=6, cout_bank=4)
    assert cstats.queue_seeds.shape == (6, D) and cstats.memory_bank.shape == (4, D)
    s2 = detectors.score(cdet, model, variables, cstats, test, k_out=3, queue_size=10, chunk_size=8)
    assert np.all(np.isfinite(s2))
    with pytest.raises(ValueError, match="train images"):
        detectors.fit(cdet, model, variables, {"train": pre})


def test_bad_input_is_a_clear_error(bank):
    id_bank = chunk_bank(bank, 64)
    x = np.ones((10, D), np.float32)
    with pytest.raises(ValueError, match="queue_size"):
        oodd.oodd_stream(id_bank, x, queue_size=0, k_in=2, k_out=1)
    with pytest.raises(ValueError, match="k_in"):
        oodd.oodd_stream(id_bank, x, queue_size=4, k_in=len(bank) + 1, k_out=1)
    with pytest.raises(ValueError, match="k_out"):
        oodd.oodd_stream(id_bank, x, queue_size=4, k_in=2, k_out=5)
    with pytest.raises(ValueError, match="extras\\['labels'\\]"):
        detectors.fit(detectors.get("oodd"), None, None, {"train": Inputs(Features(x, x))})
    stats = oodd.make_stats(bank, bank_chunk=64)
    kw = dict(k_in=2, k_out=1, queue_size=4, chunk_size=8)
    with pytest.raises(ValueError, match="fitted on D = 8 features, got D = 7"):
        oodd.init_state(stats, D - 1, **kw)
    with pytest.raises(ValueError, match="k_out"):
        oodd.init_state(stats, D, **{**kw, "k_out": 5})
    with pytest.raises(ValueError, match="k_in"):
        oodd.init_state(stats, D, **{**kw, "k_in": len(bank) + 1})
    with pytest.raises(ValueError, match="needs the OODDStats its fit returns, got None"):
        detectors.get("oodd").score(None, None, None, Inputs(Features(x, x)), **kw)
