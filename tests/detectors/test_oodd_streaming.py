"""OODD's crops (IIS and C-Out) read the train images from a lazily batched source one batch
at a time, with the same results as from an in-memory array; the runner and ``jaxood.fit``
pass such a source when the split exceeds the in-memory image budget (here 0 MB)."""

import jax
import numpy as np
import pytest

import jaxood
from jaxood import detectors
from jaxood.detectors import oodd
from jaxood.features import store
from jaxood.types import Inputs
from tests.detectors import tiny_net


class RecordingSource:
    """A lazily batched source over an array that records every read."""

    def __init__(self, x):
        self.x, self.reads = x, []

    def __len__(self):
        return len(self.x)

    def batch(self, start, stop):
        self.reads.append((start, stop))
        return self.x[start:stop]


@pytest.fixture(scope="module")
def setup():
    model, weights = tiny_net.jax_model(width=16), tiny_net.make_weights(seed=3, width=16)
    x = np.random.default_rng(0).normal(size=(45, 8, 8, 3)).astype(np.float32)
    return model, weights, x


def test_crops_from_a_lazy_source_equal_the_array_and_read_one_batch_at_a_time(setup):
    model, weights, x = setup
    key = jax.random.PRNGKey(1)
    src = RecordingSource(x)
    msp, feats = oodd.crop_outputs(model, weights, x, key, n_crops=3, batch_size=16)
    msp_l, feats_l = oodd.crop_outputs(model, weights, src, key, n_crops=3, batch_size=16)
    np.testing.assert_array_equal(msp, msp_l)
    np.testing.assert_array_equal(feats, feats_l)
    assert src.reads == [(0, 16), (16, 32), (32, 45)]  # never the whole split at once


def test_best_crops_is_the_per_image_argmax_of_all_crops(setup):
    model, weights, x = setup
    key = jax.random.PRNGKey(2)
    msp, feats = oodd.crop_outputs(model, weights, x, key, n_crops=5, batch_size=16)
    conf, chosen = oodd.best_crops(model, weights, RecordingSource(x), key, n_crops=5,
                                   batch_size=16)
    best = np.argmax(msp, axis=1)  # reference: the reduction over the full [N, M] table
    np.testing.assert_array_equal(conf, msp[np.arange(len(x)), best])
    np.testing.assert_array_equal(chosen, feats[np.arange(len(x)), best])
    labels = np.arange(len(x)) % 4
    np.testing.assert_array_equal(oodd.iis_select(msp, feats, labels, 0.5),
                                  oodd.iis_dictionary(conf, chosen, labels, 0.5))


def test_cout_outliers_streamed_equal_the_full_sort(setup):
    model, weights, x = setup
    key = jax.random.PRNGKey(3)
    seeds, bank = oodd.cout_outliers(model, weights, RecordingSource(x), key, n_queue=6,
                                     n_bank=4, batch_size=8)
    # Reference: every crop at once, a stable sort of all N MSPs, the same split permutation.
    k_crop, k_split = jax.random.split(key)
    msp, feats = oodd.crop_outputs(model, weights, x, k_crop, n_crops=1, scale=(0.08, 0.3),
                                   batch_size=8)
    low = np.argsort(msp[:, 0], kind="stable")[:10]
    low = low[np.asarray(jax.random.permutation(k_split, 10))]
    chosen = feats[low, 0] / (np.linalg.norm(feats[low, 0], axis=-1, keepdims=True) + 1e-10)
    np.testing.assert_allclose(seeds, chosen[:6], rtol=1e-6)
    np.testing.assert_allclose(bank, chosen[6:], rtol=1e-6)


def test_fit_with_lazy_train_images_equals_in_memory(setup):
    model, weights, x = setup
    det = detectors.get("oodd_cout")
    feats = model.features(weights, x)
    labels = np.arange(len(x)) % 10
    hp = {"cout_queue": 6, "cout_bank": 4, "k_in": 3, "k_out": 2}

    def fit(images):
        return detectors.fit(det, model, weights, {"train": Inputs(
            feats, x=images, extras={"labels": labels})}, **hp)

    src = RecordingSource(x)
    a, b = fit(x), fit(src)
    for field in ("id_bank", "id_bias", "queue_seeds", "memory_bank"):
        np.testing.assert_array_equal(np.asarray(getattr(a, field)), np.asarray(getattr(b, field)))
    assert src.reads and max(stop - start for start, stop in src.reads) <= 256


def test_jaxood_fit_streams_train_images_above_the_budget(monkeypatch, tiny_world_oodd):
    model, weights, id_data = tiny_world_oodd
    hp = {"cout_queue": 6, "cout_bank": 4, "k_in": 3, "k_out": 2}
    in_memory = jaxood.fit("oodd_cout", (model, weights), id_data, hp, batch_size=16)
    seen = []
    original = oodd.image_batches

    def spy(x, *a, **k):
        seen.append(type(x).__name__)
        return original(x, *a, **k)

    monkeypatch.setattr(oodd, "image_batches", spy)
    monkeypatch.setattr(store, "FIT_IMAGES_MB", 0.0)
    streamed = jaxood.fit("oodd_cout", (model, weights), id_data, hp, batch_size=16)
    assert seen and all(name != "ndarray" for name in seen)  # the source itself, not an array
    for field in ("id_bank", "queue_seeds", "memory_bank"):
        np.testing.assert_array_equal(np.asarray(getattr(in_memory.stats, field)),
                                      np.asarray(getattr(streamed.stats, field)))


@pytest.fixture(scope="module")
def tiny_world_oodd(setup):
    model, weights, x = setup
    model = type(model)(**{**model.__dict__, "input_shape": (8, 8, 3)})
    rng = np.random.default_rng(4)
    return model, weights, {"train": (x, np.arange(len(x)) % 10),
                            "val": rng.normal(size=(24, 8, 8, 3)).astype(np.float32)}
