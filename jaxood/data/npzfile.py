"""Reading ``.npz`` files with errors that say which file (and array) is wrong and why.

``np.load`` reports a truncated or corrupt archive as ``BadZipFile``/``EOFError``, a ragged
(object) array as a pickle refusal, and an empty file as "No data left in file". Every
``.npz`` jaxood reads (benchmarks, ``jaxood fit/score`` inputs) goes through here instead.

Array headers can be read without loading the data (:func:`array_info`), so a benchmark
file is checked (dtypes, shapes, ragged arrays) before anything is decoded.

The dataset layout (:data:`LAYOUT_HELP`, :func:`check_dataset`) is one format for
``jaxood train --dataset npz:FILE`` and ``jaxood bench --benchmark npz:FILE``, checked here
for both.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

#: What a reader of a corrupt archive can raise (zip structure, decompression, truncation).
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError)


class ArrayInfo(NamedTuple):
    """An array's header: ``shape`` and ``dtype`` (``object`` for ragged arrays)."""

    shape: tuple[int, ...]
    dtype: np.dtype


def check_file(path: str) -> None:
    """Raises a clear error when ``path`` is missing, a folder or empty."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a folder, not an .npz file")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path!r} is empty (0 bytes); re-create it with numpy.savez")


@contextlib.contextmanager
def open_npz(path: str | os.PathLike) -> Iterator[Any]:
    """``np.load(path, allow_pickle=False)`` as a context manager (the file is always
    closed); an unreadable archive raises ``ValueError`` naming the file and the reason."""
    path = os.fspath(path)
    check_file(path)
    with open(path, "rb") as fid:  # ours, so a failed np.load never leaks it
        try:
            archive = np.load(fid, allow_pickle=False)
        except _READ_ERRORS as e:
            raise ValueError(
                f"{path!r} is not a readable .npz file ({type(e).__name__}: {e}); it is "
                "truncated or corrupt: re-create it with numpy.savez"
            ) from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError(f"{path!r} holds a single array (.npy), not an .npz archive of "
                             "named arrays; save it with numpy.savez(path, x=...)")
        archive.zip.filename = path  # for messages (a file object has no name in the zip)
        try:
            yield archive
        finally:
            archive.close()


def read_array(archive: Any, key: str) -> np.ndarray:
    """``archive[key]`` with errors naming the file and the key: a missing key lists the
    ones present, a ragged (object) array says images must share a shape."""
    path = _path(archive)
    if key not in archive.files:
        raise ValueError(f"{path!r} has no array {key!r}; it has {archive.files}")
    try:
        return archive[key]
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise ValueError(_ragged(path, key)) from None
        raise ValueError(_unreadable(path, key, e)) from None
    except _READ_ERRORS as e:
        raise ValueError(_unreadable(path, key, e)) from None


def array_info(archive: Any, key: str) -> ArrayInfo:
    """The shape and dtype of ``archive[key]`` from its header, without reading the data."""
    path = _path(archive)
    try:
        with archive.zip.open(key + ".npy") as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(f)
    except _READ_ERRORS as e:
        raise ValueError(_unreadable(path, key, e)) from None
    return ArrayInfo(tuple(int(s) for s in shape), np.dtype(dtype))


def check_images(archive: Any, key: str) -> ArrayInfo:
    """Header checks of an image array: not ragged, uint8, ``[N, H, W]`` or ``[N, H, W, C]``
    (C in 1, 3), not empty. Returns its :class:`ArrayInfo`."""
    path = _path(archive)
    info = array_info(archive, key)
    if info.dtype == object:
        raise ValueError(_ragged(path, key))
    if info.dtype != np.uint8:
        raise ValueError(
            f"{path}: {key!r} must hold uint8 images [N, H, W] or [N, H, W, C] (raw pixels; "
            f"the model's preprocessing is applied when read), got {info.dtype}"
        )
    if len(info.shape) not in (3, 4) or (len(info.shape) == 4 and info.shape[-1] not in (1, 3)):
        raise ValueError(
            f"{path}: {key!r} must be [N, H, W] or [N, H, W, C] with C = 1 or 3, got shape "
            f"{info.shape}" + ("; NCHW? store x.transpose(0, 2, 3, 1)" if len(info.shape) == 4
                               and info.shape[1] in (1, 3) else "")
        )
    if info.shape[0] == 0:
        raise ValueError(f"{path}: {key!r} is empty (shape {info.shape}); every set needs images")
    return info


def check_labels(
    archive: Any, key: str, n: int, num_classes: int | None, images_key: str
) -> np.ndarray:
    """Reads class labels ``archive[key]`` and checks them with :func:`validate_labels`."""
    return validate_labels(read_array(archive, key), key, n, num_classes, images_key,
                           where=_path(archive))


def validate_labels(
    y: Any, key: str, n: int, num_classes: int | None, images_key: str, where: str = ""
) -> np.ndarray:
    """Class labels ``y``: ``[n]`` integers (integral floats allowed) in ``[0, num_classes)``
    (only ``>= 0`` when ``num_classes`` is None) -> int64. Errors name ``where`` (a file),
    ``key`` and the offending values with their counts."""
    prefix = f"{where}: " if where else ""
    y = np.asarray(y)
    integral = np.issubdtype(y.dtype, np.integer) or (
        np.issubdtype(y.dtype, np.floating) and bool(np.all(y == np.round(y))))
    if y.ndim != 1 or not integral:
        raise ValueError(
            f"{prefix}{key!r} must be [N] integer class ids, got {y.dtype} shape {y.shape}"
        )
    if len(y) != n:
        raise ValueError(f"{prefix}{key!r} has {len(y)} labels for {n} images in {images_key!r}")
    y = y.astype(np.int64)
    bad = (y < 0) if num_classes is None else (y < 0) | (y >= num_classes)
    if bad.any():
        where_ = "negative" if num_classes is None else (
            f"outside [0, {num_classes}) (num_classes = {num_classes})")
        raise ValueError(
            f"{prefix}{key!r} has {int(bad.sum())} label(s) {where_}: {value_counts(y[bad])}. "
            "ID labels must be 0..num_classes-1 (OOD images go in x_near_<name> / "
            "x_far_<name>, unlabelled)"
        )
    return y


def infer_num_classes(y: np.ndarray, key: str = "y_train", where: str = "") -> int:
    """``max(y) + 1`` when every class below it has samples; a gap means a stray label (a 99
    in a 5-class set would otherwise give a 100-class model), which is an error naming the
    labels above the gap and their counts. ``y``: checked labels (>= 0), not empty."""
    prefix = f"{where}: " if where else ""
    k = int(y.max()) + 1
    empty = np.flatnonzero(np.bincount(y, minlength=k) == 0)
    if empty.size:
        shown = ", ".join(map(str, empty[:10])) + (" ..." if empty.size > 10 else "")
        raise ValueError(
            f"{prefix}no 'num_classes' given, and {key}'s largest label {k - 1} would mean "
            f"{k} classes, but classes {shown} have no samples (a stray label?); labels above "
            f"{int(empty[0])}: {value_counts(y[y > empty[0]])}. Fix {key} or give num_classes "
            "(store it in the .npz, or pass --num-classes)"
        )
    return k


def value_counts(values: np.ndarray, limit: int = 10) -> str:
    """``"5 (12x), 99 (1x)"``: the distinct values with how often each occurs."""
    uniq, counts = np.unique(values, return_counts=True)
    shown = ", ".join(f"{u} ({c}x)" for u, c in zip(uniq[:limit], counts[:limit]))
    return shown + (f", ... ({len(uniq)} distinct values)" if len(uniq) > limit else "")


# ------------------------------------------------------------------ the dataset layout

#: Splits with labels; ``x_<split>`` images [N, H, W] or [N, H, W, C] uint8, ``y_<split>`` [N].
ID_SPLITS = ("train", "val", "test")
#: What ``jaxood bench --benchmark npz:FILE`` needs (plus at least one x_near_/x_far_ set).
BENCH_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "x_ood_val")
#: What ``jaxood train --dataset npz:FILE`` needs (val and test are optional).
TRAIN_KEYS = ("x_train", "y_train")
#: The layout, as shown by ``jaxood train --help`` (README: "The .npz data format").
LAYOUT_HELP = (
    "one .npz for train and bench: x_train, y_train (ID images uint8 [N,H,W] or [N,H,W,C], "
    "integer labels 0..K-1), x_val, y_val (ID-val: model selection, AdaSCALE/APS tuning), "
    "x_test, y_test (ID-test), optional num_classes (K; else max(y_train)+1), and for bench "
    "x_ood_val plus x_near_<name> / x_far_<name> OOD sets (unlabelled). train needs only "
    "x_train, y_train; without x_val it carves --val-size images from x_train"
)


def check_dataset(
    archive: Any, required: Sequence[str], purpose: str, num_classes: int | None = None
) -> int:
    """Checks a dataset ``.npz`` in the layout above before anything is used: ``required``
    keys, x_/y_ pairs, every ``x_*`` array (uint8 images of one shape, not ragged or empty),
    the class count and every ID split's labels. ``num_classes``: the caller's (e.g.
    ``--num-classes``), which must agree with a stored one. Returns the class count."""
    path = _path(archive)
    files = set(archive.files)
    missing = [k for k in required if k not in files]
    if missing:
        raise ValueError(f"{path} lacks {missing}; {purpose} needs {list(required)} ({LAYOUT_HELP})")
    for s in ID_SPLITS:
        pair = [f"x_{s}", f"y_{s}"]
        if (pair[0] in files) != (pair[1] in files):
            has, lacks = pair if pair[0] in files else pair[::-1]
            raise ValueError(f"{path} has {has!r} but no {lacks!r}; store both or neither")
    check_same_shapes(archive)
    k = dataset_num_classes(archive, num_classes)
    for s in ID_SPLITS:
        if f"x_{s}" in files:
            check_labels(archive, f"y_{s}", array_info(archive, f"x_{s}").shape[0], k, f"x_{s}")
    return k


def check_same_shapes(archive: Any) -> None:
    """Every ``x_*`` array: uint8 images, not ragged or empty, all of one ``H x W x C``."""
    shapes = {}
    for key in sorted(k for k in archive.files if k.startswith("x_")):
        shape = check_images(archive, key).shape
        shapes[key] = shape[1:3] + ((shape[3],) if len(shape) == 4 else (1,))
    first = shapes.get("x_train")
    odd = {k: v for k, v in shapes.items() if v != first}
    if odd:
        raise ValueError(
            f"{_path(archive)}: image arrays must share one shape (H, W, C) = {first} "
            f"(x_train's); {', '.join(f'{k} is {v}' for k, v in odd.items())}: resize them first"
        )


def dataset_num_classes(archive: Any, num_classes: int | None = None) -> int:
    """The class count: the stored ``num_classes``, else the caller's, else inferred from
    ``y_train`` (:func:`infer_num_classes`)."""
    path = _path(archive)
    if "num_classes" in archive.files:
        k = read_array(archive, "num_classes")
        if k.shape != () or not np.issubdtype(k.dtype, np.integer) or int(k) < 1:
            raise ValueError(f"{path}: 'num_classes' must be one integer >= 1, got {k!r}")
        if num_classes is not None and int(k) != num_classes:
            raise ValueError(f"{path} stores num_classes = {int(k)}, but num_classes = "
                             f"{num_classes} was asked for (--num-classes); drop one of them")
        return int(k)
    if num_classes is not None:
        return num_classes
    y = check_labels(archive, "y_train", array_info(archive, "x_train").shape[0], None, "x_train")
    return infer_num_classes(y, "y_train", where=path)


def _path(archive: Any) -> str:
    return getattr(archive.zip, "filename", None) or "the .npz file"


def _ragged(path: str, key: str) -> str:
    return (f"{path}: {key!r} is a ragged (object) array; images must share one shape: store "
            "them as a single [N, H, W] or [N, H, W, C] uint8 array (resize them first)")


def _unreadable(path: str, key: str, e: Exception) -> str:
    return (f"{path}: array {key!r} is unreadable ({type(e).__name__}: {e}); the file is "
            "truncated or corrupt: re-create it with numpy.savez")
