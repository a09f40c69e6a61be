"""On-device augmentation: zero-padded random crop + horizontal flip, normalisation (training),
and torchvision's ``RandomResizedCrop`` as a pure function of a key (OODD's crops).

Runs inside the jitted train step on ``uint8`` batches (4x less host->device traffic than
float32) and draws its randomness from a key derived from (seed, step), so a resumed run
sees exactly the same augmented images as an uninterrupted one.

Order and padding follow OpenOOD/torchvision: ``RandomHorizontalFlip`` then
``RandomCrop(size, padding=4)`` with **zero pixels** (value 0 *before* normalisation, so
padded pixels become ``-mean/std``), then ``(x/255 - mean) / std``.
"""

from __future__ import annotations

import functools
import math
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


#: torchvision ``RandomResizedCrop``'s default aspect-ratio range.
RATIO = (3.0 / 4.0, 4.0 / 3.0)


# ------------------------------------------------------------------ random resized crops


def crop_params(
    key: jax.Array, height: int, width: int, scale: tuple[float, float], ratio=RATIO,
    attempts: int = 10,
) -> jax.Array:
    """torchvision ``RandomResizedCrop.get_params`` as a pure function of ``key``.

    Returns ``int32 [4] = (top, left, h, w)``: the first of ``attempts`` candidates that
    fits, else the centre-crop fallback with the ratio clamped.
    """
    u = jax.random.uniform(key, (2 * attempts + 2,))
    return _params_from_uniforms(u, height, width, scale, ratio, attempts)


def _params_from_uniforms(u, height, width, scale, ratio, attempts):
    """``crop_params`` given ``2 * attempts + 2`` uniforms in [0, 1) (area, log-ratio, i, j)."""
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * u[:attempts])
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = jnp.exp(lo + (hi - lo) * u[attempts : 2 * attempts])
    w = jnp.round(jnp.sqrt(target * aspect)).astype(jnp.int32)
    h = jnp.round(jnp.sqrt(target / aspect)).astype(jnp.int32)
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = jnp.argmax(ok)
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = height, int(round(height * max(ratio)))
    else:
        fw, fh = width, height
    found = ok.any()
    h_sel = jnp.where(found, h[first], fh)
    w_sel = jnp.where(found, w[first], fw)
    # torch.randint(0, n + 1): uniform integer in [0, n]
    top = jnp.floor(u[-2] * (height - h_sel + 1)).astype(jnp.int32)
    left = jnp.floor(u[-1] * (width - w_sel + 1)).astype(jnp.int32)
    top = jnp.where(found, top, (height - fh) // 2)
    left = jnp.where(found, left, (width - fw) // 2)
    return jnp.stack([top, left, h_sel, w_sel]).astype(jnp.int32)


def _axis_matrix(start, length, in_size: int, out_size: int) -> jax.Array:
    """``[out, in]`` interpolation matrix of torch bilinear ``align_corners=False`` resizing
    of the window ``[start, start + length)`` (two non-zeros per row, weights sum to 1)."""
    o = jnp.arange(out_size, dtype=jnp.float32)
    src = jnp.maximum((o + 0.5) * (length / out_size) - 0.5, 0.0)
    i0 = jnp.minimum(jnp.floor(src).astype(jnp.int32), length - 1)
    i1 = jnp.minimum(i0 + 1, length - 1)
    frac = (src - i0.astype(jnp.float32))[:, None]
    cols = jnp.arange(in_size)[None, :]
    return (1.0 - frac) * (cols == start + i0[:, None]) + frac * (cols == start + i1[:, None])


def resized_crop(image: jax.Array, params: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    """Crops ``image [H, W, C]`` to ``params = (top, left, h, w)`` and resizes to ``out_hw``
    with bilinear interpolation (torch ``align_corners=False``, no antialias).

    Written as two small matrix products (rows, then columns) so it compiles fast under vmap.
    """
    height, width = image.shape[:2]
    ry = _axis_matrix(params[0], params[2], height, out_hw[0])
    rx = _axis_matrix(params[1], params[3], width, out_hw[1])
    hi = jax.lax.Precision.HIGHEST
    rows = jnp.einsum("sh,hwc->swc", ry, image, precision=hi)
    return jnp.einsum("tw,swc->stc", rx, rows, precision=hi)


@functools.partial(jax.jit, static_argnames=("n_crops", "scale"))
def random_resized_crops(
    key: jax.Array, images: jax.Array, n_crops: int, scale: tuple[float, float]
) -> jax.Array:
    """``n_crops`` independent random resized crops per image, resized back to ``[H, W]``.

    Args:
      key: PRNG key (the crops are a pure function of it).
      images: ``[N, H, W, C]`` normalised images.
      n_crops: crops per image.
      scale: the crop's area range as a fraction of the image (torchvision ``scale``).

    Returns:
      ``[N, n_crops, H, W, C]``.
    """
    n, height, width, ch = images.shape
    # One RNG call for all crops (vmapping per-crop keys compiles very slowly on CPU).
    u = jax.random.uniform(key, (n * n_crops, 22))
    params = jax.vmap(lambda v: _params_from_uniforms(v, height, width, scale, RATIO, 10))(u)
    src = jnp.repeat(images, n_crops, axis=0)
    out = jax.vmap(lambda img, p: resized_crop(img, p, (height, width)))(src, params)
    return out.reshape(n, n_crops, height, width, ch)
