"""Training data sources: CIFAR-10/100 via TFDS, Fashion-MNIST and generic ``.npz`` files.

Every source returns a :class:`DatasetSplits` of in-memory ``uint8`` NHWC arrays (grayscale
kept as one channel) with integer labels, plus the per-dataset normalisation constants.

**Validation split (as OpenOOD v1.5).** OpenOOD carves a 1,000-image ID-val set out of the
CIFAR *test* split and reports accuracy on the remaining 9,000. OpenOOD's exact image list
is not available offline, so :func:`carve_val` takes ``val_size / num_classes`` images per
class (100 for CIFAR-10, 10 for CIFAR-100) chosen by ``numpy.random.default_rng(seed)``
with ``seed = 0`` and the same rule for every dataset. The choice is a pure function of
(labels, val_size, seed), so every run and every machine gets the same split.

Names: ``cifar10``, ``cifar100``, ``fashion_mnist`` (``fashion_mnist.npz`` from
``../shared/data`` or ``data_dir``), ``npz:<path>`` (keys ``x_train, y_train, x_test,
y_test``; normalisation computed from the training images).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np

# OpenOOD v1.5 constants (spec-methods-training section 7.1).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
# The usual Fashion-MNIST training-set statistics (recomputed in tests/data/test_sources.py).
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)

DATASETS = ("cifar10", "cifar100", "fashion_mnist", "npz:<path>")
#: Where ``fashion_mnist`` is looked for when no ``data_dir`` is given (repo/../shared/data).
SHARED_DATA = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data"


@dataclasses.dataclass(frozen=True)
class DatasetSplits:
    """In-memory splits of an image-classification dataset.

    Attributes:
      name: dataset name.
      train, val, test: ``(x uint8 [N, H, W, C], y int32 [N])``; ``val`` is carved from the
        original test split (OpenOOD protocol) and ``test`` is the rest of it.
      num_classes: K.
      mean, std: per-channel normalisation for ``x / 255``.
    """

    name: str
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.train[0].shape[1:])


def as_nhwc_uint8(x: np.ndarray, name: str = "x") -> np.ndarray:
    """``[N, H, W]`` or ``[N, H, W, C]`` uint8 -> ``[N, H, W, C]`` uint8 (clear error otherwise)."""
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise ValueError(f"`{name}` must be uint8 images in [0, 255], got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(
            f"`{name}` must be [N, H, W] or [N, H, W, 1|3] images, got shape {x.shape}"
        )
    return x


def check_labels(
    y: np.ndarray, n: int, name: str = "y", num_classes: int | None = None
) -> np.ndarray:
    """Integer labels ``[n]`` in ``[0, num_classes)``."""
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"`{name}` must have shape [{n}] (one label per image), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"`{name}` must hold integer class labels, got dtype {y.dtype}")
    if n and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        raise ValueError(
            f"`{name}` labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]"
        )
    return y.astype(np.int32)


def carve_val(
    y: np.ndarray, val_size: int, num_classes: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(val_idx, rest_idx)``: ``val_size / num_classes`` per class, seeded.

    Both index arrays are sorted so the split does not depend on anything but the labels.
    """
    if val_size <= 0:
        return np.zeros(0, np.int64), np.arange(len(y))
    per_class, extra = divmod(val_size, num_classes)
    if extra:
        raise ValueError(f"val_size {val_size} must be a multiple of the {num_classes} classes")
    rng = np.random.default_rng(seed)
    picked = []
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)
        if len(idx) < per_class:
            raise ValueError(
                f"class {c} has {len(idx)} test images, fewer than {per_class} for val"
            )
        picked.append(rng.choice(idx, per_class, replace=False))
    val = np.sort(np.concatenate(picked))
    rest = np.setdiff1d(np.arange(len(y)), val)
    return val, rest


def from_arrays(
    name: str,
    x_train,
    y_train,
    x_test,
    y_test,
    *,
    num_classes: int | None = None,
    mean=None,
    std=None,
    val_size: int = 1000,
    val_seed: int = 0,
) -> DatasetSplits:
    """Builds splits from arrays; val is carved from the test arrays (see module doc)."""
    x_train, x_test = as_nhwc_uint8(x_train, "x_train"), as_nhwc_uint8(x_test, "x_test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"train images {x_train.shape[1:]} and test images {x_test.shape[1:]} differ"
        )
    if num_classes is None:
        num_classes = int(max(np.max(y_train), np.max(y_test))) + 1
    y_train = check_labels(y_train, len(x_train), "y_train", num_classes)
    y_test = check_labels(y_test, len(x_test), "y_test", num_classes)
    if mean is None or std is None:
        scaled = x_train.reshape(-1, x_train.shape[-1]).astype(np.float64) / 255.0
        mean, std = tuple(scaled.mean(0).round(4)), tuple(scaled.std(0).round(4))
    val_idx, rest = carve_val(y_test, val_size, num_classes, val_seed)
    return DatasetSplits(
        name=name,
        train=(x_train, y_train),
        val=(x_test[val_idx], y_test[val_idx]),
        test=(x_test[rest], y_test[rest]),
        num_classes=num_classes,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
    )


def load_npz(path: str | os.PathLike, name: str | None = None, **kwargs) -> DatasetSplits:
    """Reads an ``.npz`` with ``x_train, y_train, x_test, y_test``."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {str(path)!r} does not exist")
    with np.load(path) as f:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
        if missing:
            raise ValueError(f"{path} lacks the arrays {sorted(missing)} (has {sorted(f.files)})")
        arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    return from_arrays(name or path.stem, **arrays, **kwargs)


def load_tfds(name: str, data_dir: str | None = None, *, val_size: int = 1000) -> DatasetSplits:
    """CIFAR-10/100 through ``tfds.data_source`` (array_record; TensorFlow not needed).

    Raises:
      FileNotFoundError: when the prepared dataset is not in ``data_dir`` (nothing is
        downloaded here).
    """
    import tensorflow_datasets as tfds

    if data_dir is not None and not os.path.isdir(data_dir):
        raise FileNotFoundError(f"data directory {data_dir!r} does not exist")
    arrays = {}
    for split in ("train", "test"):
        try:
            source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        except Exception as e:  # tfds raises AssertionError/DatasetNotFoundError variants
            raise FileNotFoundError(
                f"TFDS dataset {name!r} is not prepared in {data_dir or '~/tensorflow_datasets'} "
                f"({type(e).__name__}: {e}); prepare it once with `tfds build {name} "
                "--file_format=array_record` on a machine with internet, then pass --data-dir"
            ) from e
        xs, ys = [], []
        for i in range(len(source)):
            ex = source[i]
            xs.append(np.asarray(ex["image"], np.uint8))
            ys.append(int(ex["label"]))
        arrays[f"x_{split}"] = np.stack(xs)
        arrays[f"y_{split}"] = np.asarray(ys, np.int32)
    num_classes = 10 if name == "cifar10" else 100
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    return from_arrays(
        name, **arrays, num_classes=num_classes, mean=mean, std=std, val_size=val_size
    )


def load_dataset(name: str, data_dir: str | None = None, *, val_size: int = 1000) -> DatasetSplits:
    """Loads a dataset by name: ``cifar10``, ``cifar100``, ``fashion_mnist`` or ``npz:<path>``.

    Raises:
      ValueError: unknown name (the message lists the valid ones).
      FileNotFoundError: missing data directory or file.
    """
    if name in ("cifar10", "cifar100"):
        return load_tfds(name, data_dir, val_size=val_size)
    if name == "fashion_mnist":
        root = pathlib.Path(data_dir) if data_dir else SHARED_DATA
        if not root.is_dir():
            raise FileNotFoundError(f"data directory {str(root)!r} does not exist")
        return load_npz(
            root / "fashion_mnist.npz",
            "fashion_mnist",
            num_classes=10,
            mean=FASHION_MNIST_MEAN,
            std=FASHION_MNIST_STD,
            val_size=val_size,
        )
    if name.startswith("npz:"):
        return load_npz(name[4:], val_size=val_size)
    raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
