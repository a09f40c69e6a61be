"""Covariate-shifted ID sets for array benchmarks that define none (full-spectrum OOD).

OpenOOD's CIFAR-10/ImageNet lists carry covariate-shifted ID sets (CIFAR-10-C, ImageNet-C/R/
V2). ``fashion-openset`` and ``demo`` do not, so :func:`with_covariate_shift` registers a
copy of such a benchmark whose ``csid`` sets are corrupted ID-test images (CIFAR-10-C style,
severity 3): Gaussian noise (sigma 0.08), Gaussian blur (sigma 0.7 px) and contrast (x 0.4
around the image mean), on a fixed random subset of the ID test split. Labels stay the ID
classes. Every other split is the base benchmark's (same data, same feature cache).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from jaxood.data import benchmarks

CORRUPTIONS = ("gaussian_noise", "gaussian_blur", "contrast")
SUFFIX = "+cs"


def corrupt(images: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """``[N, H, W, C]`` uint8 -> corrupted uint8 (see the module doc for the severities)."""
    from scipy.ndimage import gaussian_filter  # deferred: only the blur needs scipy

    x = images.astype(np.float64) / 255.0
    if kind == "gaussian_noise":
        x = x + np.random.default_rng(seed).normal(0.0, 0.08, x.shape)
    elif kind == "gaussian_blur":
        x = gaussian_filter(x, sigma=(0, 0.7, 0.7, 0))
    elif kind == "contrast":
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        x = (x - mean) * 0.4 + mean
    else:
        raise ValueError(f"unknown corruption {kind!r}; valid: {', '.join(CORRUPTIONS)}")
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def with_covariate_shift(name: str, size: int = 2000, seed: int = 0) -> str:
    """The benchmark to run full-spectrum OOD on: ``name`` itself when it defines
    covariate-shifted ID sets, else a registered ``<name>+cs`` copy with corrupted ID-test
    subsets (``size`` images each). Returns its name.

    Raises:
      ValueError: an image-list benchmark without covariate-shifted sets.
    """
    base = benchmarks.get(name)
    if base.csid:
        return name
    if base.arrays is None:
        raise ValueError(f"benchmark {name!r} defines no covariate-shifted ID sets")

    def arrays(root):
        data = dict(base.arrays(root))
        x, y = data["test"]
        idx = np.sort(np.random.default_rng(seed).permutation(len(x))[:size])
        data["csid"] = {k: (corrupt(x[idx], k, seed), np.asarray(y)[idx]) for k in CORRUPTIONS}
        return data

    derived = dataclasses.replace(
        base, name=name + SUFFIX, arrays=arrays,
        csid=tuple(benchmarks.SetRef(k, "", "") for k in CORRUPTIONS),
        description=base.description + f"; covariate-shifted ID: {', '.join(CORRUPTIONS)} of "
        f"{size} ID-test images",
    )
    benchmarks.register(derived, overwrite=True)
    return derived.name


def fsood_unavailable(name: str, data_root: str | None) -> str | None:
    """Why full-spectrum OOD cannot run on benchmark ``name`` here (``None`` when it can): an
    image-list benchmark without covariate-shifted ID sets, or with their lists absent."""
    base = benchmarks.get(name)
    if base.arrays is not None:
        return None
    if not base.csid:
        return f"benchmark {name!r} defines no covariate-shifted ID sets"
    missing = [r.imglist for r in base.csid
               if not os.path.isfile(os.path.join(data_root or "", r.imglist))]
    if missing:
        return (f"covariate-shifted ID lists absent under data root {data_root!r}: "
                f"{', '.join(missing)}")
    return None
