"""Array benchmarks that run on a laptop CPU: ``fashion-openset`` (real data) and ``demo``.

Both return uint8 NHWC images (``[N, H, W, 1]``) with labels; ID labels are remapped to
``0..K-1`` and OOD labels are ``-1``. Splits are deterministic (fixed NumPy seeds).

``fashion-openset`` (Fashion-MNIST open-set split):
  * ID classes T-shirt/top 0, Trouser 1, Pullover 2, Dress 3, Sandal 5, Bag 8 (-> 0..5);
    train = their train-split images; val = 100 test images per class; test = the rest.
  * near-OOD: Coat 4, Shirt 6, Sneaker 7, Ankle boot 9 from the test split.
  * OOD-val: 400 images of those four classes (100 each) from the *train* split.
  * far-OOD: the 10,000 MNIST digits, scikit-learn's 1,797 8x8 digits upsampled to 28x28,
    and 2,000 uniform-noise images.

``demo`` (needs only scikit-learn's bundled data):
  * ID = digits 0-4, near-OOD = digits 5-9 (8x8, scikit-learn ``load_digits``);
  * far-OOD = uniform noise and 8x8 grey patches cut from ``load_sample_images``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from jaxood.data import npzfile

FASHION_ID = (0, 1, 2, 3, 5, 8)
FASHION_NEAR = (4, 6, 7, 9)
FASHION_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DEFAULT_DATA_DIR = os.path.join("..", "shared", "data")


def _remap(y: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    lut = np.full(10, -1, np.int64)
    lut[list(classes)] = np.arange(len(classes))
    return lut[y]


def _per_class_split(y: np.ndarray, classes: Sequence[int], per_class: int, seed: int):
    """Indices: ``per_class`` random samples of each class, and the remaining ones (sorted)."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in classes:
        idx = np.flatnonzero(y == c)
        if len(idx) < per_class:
            raise ValueError(f"class {c} has {len(idx)} samples, fewer than {per_class}")
        picked.append(rng.choice(idx, per_class, replace=False))
    picked = np.sort(np.concatenate(picked))
    in_classes = np.flatnonzero(np.isin(y, classes))
    rest = np.setdiff1d(in_classes, picked)
    return picked, rest


def _nhwc(x: np.ndarray) -> np.ndarray:
    return x[..., None] if x.ndim == 3 else x


def _ood(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _nhwc(x), np.full(len(x), -1, np.int64)


def upsample_digits(images: np.ndarray, size: int = 28) -> np.ndarray:
    """scikit-learn digits (``[N, 8, 8]`` values 0..16) -> ``[N, size, size]`` uint8 (bilinear)."""
    from PIL import Image

    u8 = np.clip(np.round(images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return np.stack(
        [np.asarray(Image.fromarray(im, "L").resize((size, size), Image.BILINEAR)) for im in u8]
    )


def noise_images(n: int, size: int, seed: int) -> np.ndarray:
    """``[n, size, size]`` uint8 uniform noise."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


def _load_npz(data_dir: str, name: str) -> dict:
    path = os.path.join(data_dir, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{name} not found in {data_dir!r}; fashion-openset reads fashion_mnist.npz and "
            "mnist_10k.npz from --data-root (default ../shared/data)"
        )
    with np.load(path) as f:
        return dict(f)


def fashion_openset(data_dir: str | None = None) -> dict:
    """The fashion-openset benchmark arrays.

    Args:
      data_dir: folder with ``fashion_mnist.npz`` (x_train, y_train, x_test, y_test) and
        ``mnist_10k.npz`` (x, y); default ``../shared/data``.

    Returns:
      ``{"train"|"val"|"test"|"ood_val": (x [N,28,28,1] uint8, y [N]),
      "near": {"fashion_near": ...}, "far": {"mnist": ..., "sk_digits": ..., "noise": ...}}``.
    """
    data_dir = data_dir or DEFAULT_DATA_DIR
    fm = _load_npz(data_dir, "fashion_mnist.npz")
    mn = _load_npz(data_dir, "mnist_10k.npz")
    from sklearn.datasets import load_digits

    xtr, ytr, xte, yte = fm["x_train"], fm["y_train"], fm["x_test"], fm["y_test"]
    train_idx = np.flatnonzero(np.isin(ytr, FASHION_ID))
    val_idx, test_idx = _per_class_split(yte, FASHION_ID, 100, seed=0)
    ood_val_idx, _ = _per_class_split(ytr, FASHION_NEAR, 100, seed=1)
    near_idx = np.flatnonzero(np.isin(yte, FASHION_NEAR))
    return {
        "train": (_nhwc(xtr[train_idx]), _remap(ytr[train_idx], FASHION_ID)),
        "val": (_nhwc(xte[val_idx]), _remap(yte[val_idx], FASHION_ID)),
        "test": (_nhwc(xte[test_idx]), _remap(yte[test_idx], FASHION_ID)),
        "ood_val": _ood(xtr[ood_val_idx]),
        "near": {"fashion_near": _ood(xte[near_idx])},
        "far": {
            "mnist": _ood(mn["x"]),
            "sk_digits": _ood(upsample_digits(load_digits().images)),
            "noise": _ood(noise_images(2000, 28, seed=2)),
        },
    }


def grey_patches(n: int, size: int = 8, seed: int = 3) -> np.ndarray:
    """``[n, size, size]`` uint8 grey patches cut at random from scikit-learn's sample photos."""
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(im, np.float64) for im in load_sample_images().images]
    grey = [(p @ np.array([0.299, 0.587, 0.114])).astype(np.uint8) for p in photos]
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size), np.uint8)
    for i in range(n):
        g = grey[i % len(grey)]
        r = rng.integers(0, g.shape[0] - size)
        c = rng.integers(0, g.shape[1] - size)
        out[i] = g[r : r + size, c : c + size]
    return out


def demo_dataset(data_dir: str | None = None) -> dict:
    """The demo benchmark arrays (8x8 digits; ``data_dir`` is ignored).

    ID digits 0-4 are split per class into val (20 each), test (40 each) and train (the
    rest, ~540). Digits 5-9: 20 each for OOD-val, the rest as near-OOD test. Far-OOD:
    500 noise images and 500 photo patches.
    """
    del data_dir
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    y = d.target.astype(np.int64)
    id_classes, near_classes = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
    val_idx, rest = _per_class_split(y, id_classes, 20, seed=0)
    test_idx, _ = _per_class_split(
        np.where(np.isin(np.arange(len(y)), rest), y, -1), id_classes, 40, seed=1
    )
    train_idx = np.setdiff1d(rest, test_idx)
    ood_val_idx, near_idx = _per_class_split(y, near_classes, 20, seed=2)
    return {
        "train": (_nhwc(x[train_idx]), y[train_idx]),
        "val": (_nhwc(x[val_idx]), y[val_idx]),
        "test": (_nhwc(x[test_idx]), y[test_idx]),
        "ood_val": _ood(x[ood_val_idx]),
        "near": {"digits_5_9": _ood(x[near_idx])},
        "far": {
            "noise": _ood(noise_images(500, 8, seed=4)),
            "photo_patches": _ood(grey_patches(500)),
        },
    }


def _tfds_split(name: str, split: str, data_dir: str | None, limit: int | None = None):
    """``(x uint8 [N, H, W, C], y [N])`` of a prepared TFDS split (nothing is downloaded)."""
    import tensorflow_datasets as tfds

    try:
        src = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises several error types for a missing dataset
        raise FileNotFoundError(
            f"TFDS dataset {name!r} ({split}) is not prepared in "
            f"{data_dir or '~/tensorflow_datasets'} ({type(e).__name__}); prepare it once with "
            f"`tfds build {name} --file_format=array_record` and pass --data-root"
        ) from e
    n = len(src) if limit is None else min(limit, len(src))
    xs, ys = zip(
        *(
            (np.asarray(ex["image"], np.uint8), int(ex["label"]))
            for ex in (src[i] for i in range(n))
        )
    )
    return _nhwc(np.stack(xs)), np.asarray(ys, np.int64)


def cifar10_tfds(data_dir: str | None = None) -> dict:
    """CIFAR-10 vs TFDS-available OOD sets (offline approximation of OpenOOD's CIFAR-10).

    ID: CIFAR-10 train; val = 100 test images per class (seeded, as OpenOOD's 1,000-image
    val), test = the rest. OOD-val: 1,000 CIFAR-100 *train* images (OpenOOD uses TIN, which
    is not in TFDS). Near-OOD: CIFAR-100 test. Far-OOD: SVHN (``svhn_cropped``) test.
    """
    x, y = _tfds_split("cifar10", "train", data_dir)
    xt, yt = _tfds_split("cifar10", "test", data_dir)
    per_class = min(100, int(np.bincount(yt, minlength=10).min()) // 2)
    val_idx, test_idx = _per_class_split(yt, range(10), per_class, seed=0)
    x100, _ = _tfds_split("cifar100", "train", data_dir, limit=1000)
    return {
        "train": (x, y),
        "val": (xt[val_idx], yt[val_idx]),
        "test": (xt[test_idx], yt[test_idx]),
        "ood_val": _ood(x100),
        "near": {"cifar100": _ood(_tfds_split("cifar100", "test", data_dir)[0])},
        "far": {"svhn": _ood(_tfds_split("svhn_cropped", "test", data_dir)[0])},
    }


NPZ_KEYS = npzfile.BENCH_KEYS


def npz_spec(path: str) -> dict:
    """Benchmark metadata of a user ``.npz`` benchmark (see :func:`npz_benchmark`), after
    checking the file (before any image is decoded) with :func:`npzfile.check_dataset`, the
    checks ``jaxood train --dataset npz:`` makes too, plus at least one OOD set.

    Raises:
      FileNotFoundError / ValueError: naming the file, the key and what is wrong.
    """
    if not os.path.isfile(path) and not os.path.isdir(path):
        raise FileNotFoundError(f"benchmark file {path!r} does not exist")
    with npzfile.open_npz(path) as f:
        files = set(f.files)
        near = sorted(k[len("x_near_") :] for k in files if k.startswith("x_near_"))
        far = sorted(k[len("x_far_") :] for k in files if k.startswith("x_far_"))
        k = npzfile.check_dataset(f, NPZ_KEYS, "an npz benchmark")
        if not near and not far:
            raise ValueError(f"{path} has no x_near_<name> or x_far_<name> arrays")
    return {
        "num_classes": k,
        "near": tuple(near),
        "far": tuple(far),
        "loader": lambda data_dir=None: npz_benchmark(path),
        "description": f"arrays from {os.path.basename(path)}",
    }


def npz_benchmark(path: str) -> dict:
    """A benchmark stored as one ``.npz``: uint8 images ``x_*`` ([N, H, W] or [N, H, W, C]),
    int labels ``y_train/y_val/y_test``, OOD arrays ``x_ood_val``, ``x_near_<name>``,
    ``x_far_<name>`` (labels -1), optional ``num_classes``. Checked by :func:`npz_spec`."""
    with npzfile.open_npz(path) as f:
        def read(key):
            return npzfile.read_array(f, key)

        out = {
            s: (_nhwc(read(f"x_{s}")), read(f"y_{s}").astype(np.int64))
            for s in ("train", "val", "test")
        }
        out["ood_val"] = _ood(read("x_ood_val"))
        out["near"] = {k[7:]: _ood(read(k)) for k in sorted(f.files) if k.startswith("x_near_")}
        out["far"] = {k[6:]: _ood(read(k)) for k in sorted(f.files) if k.startswith("x_far_")}
    return out


#: Benchmark metadata consumed by :mod:`jaxood.data.benchmarks`.
SPECS = {
    "fashion-openset": {
        "num_classes": len(FASHION_ID),
        "near": ("fashion_near",),
        "far": ("mnist", "sk_digits", "noise"),
        "loader": fashion_openset,
        "description": "Fashion-MNIST open set: 6 ID classes; near = the other 4; far = MNIST, "
        "sklearn digits, noise",
    },
    "cifar10-tfds": {
        "num_classes": 10,
        "near": ("cifar100",),
        "far": ("svhn",),
        "loader": cifar10_tfds,
        "description": "CIFAR-10 from TFDS; OOD-val CIFAR-100 train, near CIFAR-100, far SVHN",
        "preprocess": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    },
    "demo": {
        "num_classes": 5,
        "near": ("digits_5_9",),
        "far": ("noise", "photo_patches"),
        "loader": demo_dataset,
        "description": "sklearn 8x8 digits: ID 0-4, near 5-9, far = noise and photo patches",
    },
}
