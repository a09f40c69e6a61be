"""Training data sources: CIFAR-10/100 via TFDS, Fashion-MNIST and generic ``.npz`` files.

Every source returns a :class:`DatasetSplits` of in-memory ``uint8`` NHWC arrays (grayscale
kept as one channel) with integer labels, plus the per-dataset normalisation constants.

**Validation split (as OpenOOD v1.5).** OpenOOD carves a 1,000-image ID-val set out of the
CIFAR *test* split and reports accuracy on the remaining 9,000. OpenOOD's exact image list
is not available offline, so :func:`carve_val` takes ``val_size / num_classes`` images per
class (100 for CIFAR-10, 10 for CIFAR-100) chosen by ``numpy.random.default_rng(seed)``
with ``seed = 0`` and the same rule for every dataset. The choice is a pure function of
(labels, val_size, seed), so every run and every machine gets the same split.

An ``.npz`` dataset uses its own ``x_val/y_val`` when it has them, and otherwise carves val
from ``x_train`` (never from the test images a benchmark reports on); ``DatasetSplits.
val_source`` says which.

Names: ``cifar10``, ``cifar100``, ``fashion_mnist`` (``fashion_mnist.npz`` from
``../shared/data`` or ``data_dir``), ``npz:<path>`` (the layout of
:data:`jaxood.data.npzfile.LAYOUT_HELP`, shared with ``jaxood bench``; normalisation
computed from the training images). ``classes`` selects an ID subset with remapped labels.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Sequence

import numpy as np

from jaxood.data import npzfile

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
      train, val, test: ``(x uint8 [N, H, W, C], y int32 [N])``; ``test`` is None when the
        source has none, ``val`` may be empty (``val_size`` 0). See ``val_source``.
      num_classes: K (``len(classes)`` when a class subset was selected).
      mean, std: per-channel normalisation for ``x / 255``.
      val_source: where ``val`` came from, in words (logged by ``jaxood train``).
      classes: the original class ids kept, in the order of the new labels 0..K-1 (None: all).
    """

    name: str
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray] | None
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    val_source: str = ""
    classes: tuple[int, ...] | None = None

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
    """Integer labels ``[n]`` in ``[0, num_classes)`` -> int32 (the checks of
    :func:`jaxood.data.npzfile.validate_labels`: errors name ``name`` and the values)."""
    images = "x_" + name[2:] if name.startswith("y_") else "the images"
    return npzfile.validate_labels(y, name, n, num_classes, images).astype(np.int32)


def carve_val(
    y: np.ndarray, val_size: int, num_classes: int, seed: int = 0, source: str = "test"
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(val_idx, rest_idx)``: ``val_size / num_classes`` per class, seeded.

    Both index arrays are sorted so the split does not depend on anything but the labels.
    ``source`` names the split carved from, for the messages.
    """
    if val_size <= 0:
        return np.zeros(0, np.int64), np.arange(len(y))
    per_class, extra = divmod(val_size, num_classes)
    if extra or not per_class:
        fit = max(per_class, 1) * num_classes
        raise ValueError(
            f"val_size {val_size} must be a multiple of the {num_classes} classes (val takes "
            f"the same number of {source} images per class): pass e.g. --val-size {fit}, "
            "or --val-size 0 for no val"
        )
    rng = np.random.default_rng(seed)
    counts = np.bincount(y, minlength=num_classes)
    picked = []
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)
        if len(idx) < per_class:
            raise ValueError(
                f"class {c} has {len(idx)} {source} images, fewer than the {per_class} per "
                f"class val_size {val_size} needs: pass a smaller --val-size (at most "
                f"{int(counts.min()) * num_classes}), or --val-size 0 for no val"
            )
        picked.append(rng.choice(idx, per_class, replace=False))
    val = np.sort(np.concatenate(picked))
    rest = np.setdiff1d(np.arange(len(y)), val)
    return val, rest


def select_classes(
    split: tuple[np.ndarray, np.ndarray], classes: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """The samples of ``classes`` with labels remapped to their positions in ``classes``
    (``classes[i]`` -> ``i``); labels must be checked ints >= 0."""
    x, y = split
    lut = np.full(max(int(y.max(initial=0)), max(classes)) + 1, -1, np.int64)
    lut[list(classes)] = np.arange(len(classes))
    keep = np.flatnonzero(lut[y] >= 0)
    return x[keep], lut[y[keep]].astype(np.int32)


def check_classes(
    classes: Sequence[int], num_classes: int | None = None, where: str = "the dataset"
) -> tuple[int, ...]:
    """``classes`` (``--classes``): distinct ids >= 0 (and < ``num_classes`` when given),
    at least one."""
    classes = tuple(int(c) for c in classes)
    if len(classes) < 2:
        raise ValueError(
            f"classes (--classes) selects {len(classes)} class(es) {list(classes)}; a classifier "
            "needs at least 2 (with one, every prediction is that class and accuracy is a "
            "trivial 100 %): give the ID class ids, e.g. 0,1,2")
    dup = sorted({c for c in classes if classes.count(c) > 1})
    if dup:
        raise ValueError(f"classes (--classes) lists {dup} more than once: {classes}")
    top = num_classes if num_classes is not None else float("inf")
    out = [c for c in classes if not 0 <= c < top]
    if out:
        has = "" if num_classes is None else f", which has {num_classes} (ids 0..{top - 1})"
        raise ValueError(f"classes (--classes) {out} are not class ids of {where}{has}")
    return classes


def from_arrays(
    name: str,
    x_train,
    y_train,
    x_test=None,
    y_test=None,
    *,
    x_val=None,
    y_val=None,
    num_classes: int | None = None,
    classes: Sequence[int] | None = None,
    mean=None,
    std=None,
    val_size: int = 1000,
    val_from: str = "test",
    val_seed: int = 0,
) -> DatasetSplits:
    """Builds checked splits from arrays (``x_*`` uint8 ``[N, H, W(, C)]``, ``y_*`` ints).

    ``num_classes``: K, else ``max(y_train) + 1`` (an error when a class in between has no
    samples: a stray label). ``classes``: keep only these ids, relabelled 0..len-1 in the
    given order (before val is carved). Val: ``x_val/y_val`` when given, else ``val_size``
    images (per class, seeded: :func:`carve_val`) carved from ``val_from`` ("train" or
    "test"; OpenOOD carves CIFAR's from test). ``mean/std``: else the training images'.
    """
    raw = {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}
    splits = {s: _check_split(s, *d) for s, d in raw.items() if d[0] is not None}
    if num_classes is None:
        x, y = splits["train"]
        num_classes = npzfile.infer_num_classes(check_labels(y, len(x), "y_train"), "y_train")
    for s, (x, y) in splits.items():
        splits[s] = (x, check_labels(y, len(x), f"y_{s}", num_classes))
    if classes is not None:
        classes = check_classes(classes, num_classes, name)
        splits = {s: select_classes(d, classes) for s, d in splits.items()}
        num_classes = len(classes)
    splits, val_source = _split_val(splits, val_size, num_classes, val_from, val_seed)
    if mean is None or std is None:
        train_x = splits["train"][0]
        scaled = train_x.reshape(-1, train_x.shape[-1]).astype(np.float64) / 255.0
        mean, std = tuple(scaled.mean(0).round(4)), tuple(scaled.std(0).round(4))
    return DatasetSplits(
        name=name, train=splits["train"], val=splits["val"], test=splits.get("test"),
        num_classes=num_classes, mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std), val_source=val_source, classes=classes,
    )


def _check_split(split: str, x, y) -> tuple[np.ndarray, np.ndarray]:
    if y is None:
        raise ValueError(f"x_{split} is given without y_{split}; give both or neither")
    return as_nhwc_uint8(x, f"x_{split}"), np.asarray(y)


def _split_val(splits: dict, val_size: int, num_classes: int, val_from: str, seed: int):
    """``splits`` with ``val`` set, and where it came from (one line for the log)."""
    for s, (x, _) in splits.items():
        if x.shape[1:] != splits["train"][0].shape[1:]:
            raise ValueError(f"x_{s} images {x.shape[1:]} differ from x_train's "
                             f"{splits['train'][0].shape[1:]}: resize them first")
    if "val" in splits:
        return splits, f"x_val/y_val ({len(splits['val'][0])} images; --val-size unused)"
    source = val_from if val_from in splits else "train"
    x, y = splits[source]
    val_idx, rest = carve_val(y, val_size, num_classes, seed, source=f"x_{source}")
    splits = {**splits, source: (x[rest], y[rest]), "val": (x[val_idx], y[val_idx])}
    if val_size <= 0:
        return splits, "none (--val-size 0): no model selection, the last epoch's model is kept"
    why = " (OpenOOD protocol)" if source == "test" else " (the test split is left untouched)"
    return splits, (f"{len(val_idx)} images carved from x_{source} ({len(val_idx) // num_classes}"
                    f" per class, seed {seed}){why}; --val-size sets the number")


def load_npz(
    path: str | os.PathLike, name: str | None = None, *, num_classes: int | None = None,
    val_from: str = "train", **kwargs,
) -> DatasetSplits:
    """Reads a dataset ``.npz`` in the layout of :data:`jaxood.data.npzfile.LAYOUT_HELP` (the
    one ``jaxood bench --benchmark npz:`` reads), checked by ``npzfile.check_dataset``; needs
    ``x_train, y_train``; ``x_val/y_val`` and ``x_test/y_test`` are used when present."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"dataset file {path!r} does not exist")
    with npzfile.open_npz(path) as f:
        k = npzfile.check_dataset(f, npzfile.TRAIN_KEYS, "training", num_classes)
        arrays = {key: npzfile.read_array(f, key) for s in npzfile.ID_SPLITS
                  for key in (f"x_{s}", f"y_{s}") if key in f.files}
    return from_arrays(name or pathlib.Path(path).stem, **arrays, num_classes=k,
                       val_from=val_from, **kwargs)


def load_tfds(name: str, data_dir: str | None = None, **kwargs) -> DatasetSplits:
    """CIFAR-10/100 through ``tfds.data_source`` (array_record; TensorFlow not needed);
    ``kwargs`` as :func:`from_arrays` (``val_size``, ``classes``).

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
    return from_arrays(name, **arrays, num_classes=num_classes, mean=mean, std=std, **kwargs)


def load_dataset(
    name: str,
    data_dir: str | None = None,
    *,
    val_size: int = 1000,
    classes: Sequence[int] | None = None,
    num_classes: int | None = None,
) -> DatasetSplits:
    """Loads a dataset by name: ``cifar10``, ``cifar100``, ``fashion_mnist`` or ``npz:<path>``.

    Val: CIFAR and Fashion-MNIST carve ``val_size`` images from the test split (OpenOOD; the
    fashion-openset benchmark's val is the same images); an ``.npz`` uses its ``x_val/y_val``,
    else carves them from ``x_train``. ``classes``: an ID subset, relabelled 0..len-1.
    ``num_classes``: an ``.npz``'s class count when it stores none (else inferred).

    Raises:
      ValueError: unknown name (the message lists the valid ones), bad data or arguments.
      FileNotFoundError: missing data directory or file.
    """
    kwargs = {"val_size": val_size, "classes": classes}
    if name in ("cifar10", "cifar100"):
        return load_tfds(name, data_dir, **kwargs)
    if name == "fashion_mnist":
        root = pathlib.Path(data_dir) if data_dir else SHARED_DATA
        if not root.is_dir():
            raise FileNotFoundError(f"data directory {str(root)!r} does not exist")
        return load_npz(root / "fashion_mnist.npz", "fashion_mnist", num_classes=10,
                        mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD, val_from="test", **kwargs)
    if name.startswith("npz:"):
        return load_npz(name[4:], num_classes=num_classes, **kwargs)
    raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
