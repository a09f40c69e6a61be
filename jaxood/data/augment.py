"""On-device training augmentation: zero-padded random crop + horizontal flip, normalisation.

Runs inside the jitted train step on ``uint8`` batches (4x less host->device traffic than
float32) and draws its randomness from a key derived from (seed, step), so a resumed run
sees exactly the same augmented images as an uninterrupted one.

Order and padding follow OpenOOD/torchvision: ``RandomHorizontalFlip`` then
``RandomCrop(size, padding=4)`` with **zero pixels** (value 0 *before* normalisation, so
padded pixels become ``-mean/std``), then ``(x/255 - mean) / std``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def normalize(x_uint8: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """``[B, H, W, C]`` uint8 -> float32 ``(x / 255 - mean) / std``."""
    x = x_uint8.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def crop_and_flip(x: jax.Array, offsets: jax.Array, flips: jax.Array, padding: int) -> jax.Array:
    """Deterministic part of the augmentation.

    Args:
      x: ``[B, H, W, C]`` images (any dtype).
      offsets: ``[B, 2]`` int crop origins (row, col) in ``[0, 2 * padding]`` within the
        zero-padded image.
      flips: ``[B]`` bool, flip horizontally (applied before the crop).
      padding: zero padding on every side.

    Returns:
      ``[B, H, W, C]``, same dtype.
    """
    b, h, w, c = x.shape
    x = jnp.where(flips[:, None, None, None], x[:, :, ::-1, :], x)
    if padding <= 0:
        return x
    padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))
    return jax.vmap(crop)(padded, offsets)


def random_crop_flip(
    key: jax.Array, x: jax.Array, padding: int = 4, flip: bool = True
) -> jax.Array:
    """Random zero-padded crop (uniform offsets) and horizontal flip with probability 1/2."""
    k_off, k_flip = jax.random.split(key)
    b = x.shape[0]
    offsets = jax.random.randint(k_off, (b, 2), 0, 2 * max(padding, 0) + 1)
    flips = jax.random.bernoulli(k_flip, 0.5, (b,)) if flip else jnp.zeros((b,), bool)
    return crop_and_flip(x, offsets, flips, padding)
