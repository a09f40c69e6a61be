"""Reading ``.npz`` files with errors that say which file (and array) is wrong and why.

``np.load`` reports a truncated or corrupt archive as ``BadZipFile``/``EOFError``, a ragged
(object) array as a pickle refusal, and an empty file as "No data left in file". Every
``.npz`` jaxood reads (benchmarks, ``jaxood fit/score`` inputs) goes through here instead.

Array headers can be read without loading the data (:func:`array_info`), so a benchmark
file is checked (dtypes, shapes, ragged arrays) before anything is decoded.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
import zlib
from collections.abc import Iterator
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
    """Reads class labels ``archive[key]``: ``[n]`` integers in ``[0, num_classes)`` (only
    ``>= 0`` when ``num_classes`` is None); errors name the key and the offending values."""
    path = _path(archive)
    y = read_array(archive, key)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer)
                           or (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))):
        raise ValueError(
            f"{path}: {key!r} must be [N] integer class ids, got {y.dtype} shape {y.shape}"
        )
    if len(y) != n:
        raise ValueError(f"{path}: {key!r} has {len(y)} labels for {n} images in {images_key!r}")
    y = y.astype(np.int64)
    bad = (y < 0) if num_classes is None else (y < 0) | (y >= num_classes)
    if bad.any():
        values = np.unique(y[bad])
        shown = ", ".join(map(str, values[:10])) + (" ..." if len(values) > 10 else "")
        where = "negative" if num_classes is None else (
            f"outside [0, {num_classes}) (num_classes = {num_classes})")
        raise ValueError(
            f"{path}: {key!r} has {int(bad.sum())} label(s) {where}: {shown}. ID labels must "
            "be 0..num_classes-1 (OOD images go in x_near_<name> / x_far_<name>, unlabelled)"
        )
    return y


def _path(archive: Any) -> str:
    return getattr(archive.zip, "filename", None) or "the .npz file"


def _ragged(path: str, key: str) -> str:
    return (f"{path}: {key!r} is a ragged (object) array; images must share one shape: store "
            "them as a single [N, H, W] or [N, H, W, C] uint8 array (resize them first)")


def _unreadable(path: str, key: str, e: Exception) -> str:
    return (f"{path}: array {key!r} is unreadable ({type(e).__name__}: {e}); the file is "
            "truncated or corrupt: re-create it with numpy.savez")
