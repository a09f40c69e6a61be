"""On-device augmentation and the host pipeline against NumPy references; the random resized
crops against torchvision."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from jaxood.data import augment
from jaxood.data.pipeline import TrainBatches, epoch_permutation, eval_batches, prefetch


def _np_crop_flip(x, offsets, flips, pad):
    out = np.empty_like(x)
    h, w = x.shape[1:3]
    for i in range(len(x)):
        img = x[i, :, ::-1] if flips[i] else x[i]
        img = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))  # zeros, as torchvision fill=0
        out[i] = img[offsets[i, 0] : offsets[i, 0] + h, offsets[i, 1] : offsets[i, 1] + w]
    return out


def test_crop_and_flip_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 7, 6, 3), dtype=np.uint8)
    offsets = np.array([[0, 0], [8, 8], [3, 5], [8, 0], [4, 4]])
    flips = np.array([False, True, True, False, True])
    got = augment.crop_and_flip(jnp.asarray(x), jnp.asarray(offsets), jnp.asarray(flips), 4)
    np.testing.assert_array_equal(np.asarray(got), _np_crop_flip(x, offsets, flips, 4))


def test_normalize_matches_numpy_and_padding_maps_to_minus_mean_over_std():
    x = np.array([[[[0, 128, 255]]]], np.uint8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    want = (x / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(
        augment.normalize(jnp.asarray(x), mean, std), want, rtol=1e-5, atol=1e-6
    )


def test_random_crop_flip_draws_every_offset_and_both_flips():
    x = jnp.arange(16, dtype=jnp.float32).reshape(1, 4, 4, 1).repeat(400, 0)
    out = np.asarray(augment.random_crop_flip(jax.random.PRNGKey(0), x, padding=2))
    # Identify (offset, flip) of each output against all 5*5*2 candidates.
    base = np.asarray(x[:1])
    candidates = {}
    for r in range(5):
        for c in range(5):
            for f in (False, True):
                img = _np_crop_flip(base, np.array([[r, c]]), np.array([f]), 2)[0]
                candidates.setdefault(img.tobytes(), set()).add((r, c, f))
    seen = set()
    for o in out:
        seen |= candidates[o.tobytes()]
    assert len(seen) == 50


def test_epoch_permutation_is_pure_and_differs_per_epoch():
    a, b = epoch_permutation(100, 3, 0), epoch_permutation(100, 3, 0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, epoch_permutation(100, 3, 1))
    assert not np.array_equal(a, epoch_permutation(100, 4, 0))
    np.testing.assert_array_equal(np.sort(a), np.arange(100))


def test_train_batches_cover_each_example_once_per_epoch_and_keep_last():
    x = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    y = np.arange(10)
    tb = TrainBatches(x, y, 4, seed=0)
    assert tb.steps_per_epoch == 3  # 4 + 4 + 2 (drop_last=False, as OpenOOD)
    for epoch in range(2):
        got = np.concatenate([tb.batch(epoch * 3 + i)[1] for i in range(3)])
        np.testing.assert_array_equal(np.sort(got), y)
        np.testing.assert_array_equal(got, epoch_permutation(10, 0, epoch))
    assert TrainBatches(x, y, 4, seed=0, drop_last=True).steps_per_epoch == 2
    # Last batch cut to a multiple of the device count (3 devices: 10 = 4 + 4 + 2 -> 2 is cut to 0).
    assert TrainBatches(x, y, 3, seed=0, multiple_of=3).steps_per_epoch == 3
    tb3 = TrainBatches(x, y, 6, seed=0, multiple_of=3)
    assert len(tb3.indices(1)) == 3
    # Two processes: contiguous halves of the global batch.
    halves = [
        TrainBatches(x, y, 4, seed=0, process_index=p, process_count=2).batch(0)[1] for p in (0, 1)
    ]
    np.testing.assert_array_equal(np.concatenate(halves), tb.batch(0)[1])
    with pytest.raises(ValueError, match="positive"):
        TrainBatches(x, y, 0, seed=0)


def test_prefetch_yields_in_order_and_reraises():
    assert [s for s, _ in prefetch(lambda s: s * 2, range(3, 8))] == [3, 4, 5, 6, 7]

    def bad(s):
        if s == 2:
            raise RuntimeError("boom")
        return s

    with pytest.raises(RuntimeError, match="boom"):
        list(prefetch(bad, range(5)))


def test_eval_batches_pad_and_mask():
    x, y = np.ones((5, 2, 2, 1), np.uint8), np.arange(5)
    out = list(eval_batches(x, y, 3))
    assert [b[0].shape[0] for b in out] == [3, 3]
    np.testing.assert_array_equal(out[1][2], [True, True, False])
    assert out[1][0][2].sum() == 0


#: OODD's IIS crop scale (jaxood.detectors.oodd.IIS_SCALE), the crops this test checks.
IIS_SCALE = (0.95, 1.0)


def test_crops_match_torchvision_resized_crop():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(32, 32, 3)).astype(np.float32)
    key = jax.random.PRNGKey(3)
    params = jax.jit(jax.vmap(lambda k: augment.crop_params(k, 32, 32, IIS_SCALE)))(jax.random.split(key, 6))
    crop = jax.jit(lambda p: augment.resized_crop(jnp.asarray(img), p, (32, 32)))
    for p in np.asarray(params):
        top, left, h, w = map(int, p)
        area = h * w / 1024
        assert 0 < h <= 32 and 0 < w <= 32 and top + h <= 32 and left + w <= 32
        assert 0.9 <= area <= 1.0 and 3 / 4 - 0.1 <= w / h <= 4 / 3 + 0.1
        got = np.asarray(crop(p))
        t = torch.from_numpy(img).permute(2, 0, 1)
        ref = TF.resized_crop(t, top, left, h, w, [32, 32], antialias=True).permute(1, 2, 0)
        np.testing.assert_allclose(got, ref.numpy(), rtol=1e-5, atol=1e-5)
    crops = augment.random_resized_crops(key, jnp.asarray(img[None].repeat(2, 0)), 5, IIS_SCALE)
    assert crops.shape == (2, 5, 32, 32, 3)
    np.testing.assert_array_equal(
        crops, augment.random_resized_crops(key, jnp.asarray(img[None].repeat(2, 0)), 5, IIS_SCALE)
    )
