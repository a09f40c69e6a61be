"""User inputs for ``jaxood.fit`` / ``jaxood score``: folders, image lists, ``.npz``, arrays.

Every input becomes a *source* with ``len``, ``names`` (a path or an index per sample),
``labels`` (``-1`` when unknown) and

* ``batch(start, stop) -> [n, H, W, C]`` float32 normalised images (raises on a bad image,
  naming its path), the protocol the benchmark runner's extraction reads;
* ``load(start, stop) -> (x, ok)``: the tolerant form for scoring many files: an unreadable
  image gives a zero row with ``ok = False`` and is recorded in ``source.errors`` as
  ``(path, reason)``.

:func:`prefetch` decodes the next batches in background threads (PIL releases the GIL
while decoding) so the network never waits for the decoder; memory stays bounded by the
prefetch depth, whatever the number of images.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from jaxood.data import imglist as imglist_lib
from jaxood.types import PreprocessSpec

#: File extensions a folder input is scanned for (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def list_images(folder: str) -> list[str]:
    """Image files under ``folder`` (recursive), sorted by their relative path."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder {folder!r} does not exist")
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [
            os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)
        ]
    if not found:
        raise ValueError(
            f"image folder {folder!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})"
        )
    return sorted(found, key=lambda p: os.path.relpath(p, folder))


class FileSource:
    """Image files decoded on demand with the model's eval preprocessing.

    Args:
      paths: image files.
      spec: the model's preprocessing.
      input_shape: ``(H, W, C)`` the model takes; a decoded image of another shape is an
        error naming the file (``None``: not checked).
      labels: ``[N]`` ints (default all ``-1``).
      workers: decoding threads.
    """

    def __init__(
        self,
        paths: Sequence[str],
        spec: PreprocessSpec,
        input_shape: tuple[int, int, int] | None = None,
        labels: Sequence[int] | None = None,
        *,
        name: str = "",
        workers: int | None = None,
    ):
        self.names = [os.fspath(p) for p in paths]
        self.spec, self.input_shape, self.name = spec, input_shape, name
        n = len(self.names)
        self.labels = np.full(n, -1, np.int64) if labels is None else np.asarray(labels)
        self.errors: list[tuple[str, str]] = []
        self._pool = concurrent.futures.ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1))

    def __len__(self) -> int:
        return len(self.names)

    def _decode(self, path: str) -> np.ndarray:
        x = imglist_lib.load_image(path, self.spec)  # ValueError naming the path
        if self.input_shape is not None and tuple(x.shape) != tuple(self.input_shape):
            raise ValueError(
                f"image {path!r} preprocesses to {tuple(x.shape)} but the model takes "
                f"{tuple(self.input_shape)} (H, W, C); its preprocessing "
                f"(resize {self.spec.resize_size}, crop {self.spec.crop_size}) does not "
                "produce that size from this image"
            )
        return x

    def batch(self, start: int, stop: int) -> np.ndarray:
        return np.stack(list(self._pool.map(self._decode, self.names[start:stop])))

    def load(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        def one(path):
            try:
                return self._decode(path), None
            except (ValueError, OSError) as e:
                return None, str(e)

        results = list(self._pool.map(one, self.names[start:stop]))
        shape = self.input_shape or next((x.shape for x, _ in results if x is not None), None)
        if shape is None:  # every image in the batch failed and the size is unknown
            shape = (1, 1, self.spec.channels)
        x = np.zeros((len(results), *shape), np.float32)
        ok = np.zeros(len(results), bool)
        for i, (img, err) in enumerate(results):
            if err is None:
                x[i], ok[i] = img, True
            else:
                self.errors.append((self.names[start + i], err))
        return x, ok

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for p in self.names:
            st = os.stat(p)
            h.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        h.update(repr(sorted(self.spec.to_dict().items())).encode())
        return h.hexdigest()


class NormalisedSource:
    """Images already preprocessed: ``[N, H, W, C]`` float arrays (memory-mapped is fine)."""

    def __init__(self, x: Any, labels: Sequence[int] | None = None, *, name: str = ""):
        self.x, self.name = x, name
        self.labels = np.full(len(x), -1, np.int64) if labels is None else np.asarray(labels)
        self.names = [str(i) for i in range(len(x))]
        self.errors: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.x[start:stop], np.float32)

    def load(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        x = self.batch(start, stop)
        return x, np.ones(len(x), bool)

    def fingerprint(self) -> str:
        h = hashlib.sha256(np.ascontiguousarray(np.asarray(self.x)).data)
        return h.hexdigest()


def prefetch(source, batch_size: int, depth: int = 2) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yields ``(start, x, ok)`` batches of ``source.load`` in order, decoding up to ``depth``
    batches ahead in a background thread."""
    n = len(source)
    starts = list(range(0, n, batch_size))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = [pool.submit(source.load, s, min(n, s + batch_size)) for s in starts[:depth]]
        for i, start in enumerate(starts):
            x, ok = pending.pop(0).result()
            if i + depth < len(starts):
                s = starts[i + depth]
                pending.append(pool.submit(source.load, s, min(n, s + batch_size)))
            yield start, x, ok


class SourceAdapter:
    """Adds ``names``/``load``/``errors`` to a benchmark source (``batch`` + ``labels``)."""

    def __init__(self, src):
        self._src, self.labels = src, np.asarray(src.labels)
        self.name = getattr(src, "name", "")
        self.names = getattr(src, "names", None) or [str(i) for i in range(len(src))]
        self.errors: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self._src)

    def batch(self, start: int, stop: int) -> np.ndarray:
        return self._src.batch(start, stop)

    def load(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        x = self.batch(start, stop)
        return x, np.ones(len(x), bool)

    def fingerprint(self) -> str:
        return self._src.fingerprint()


class RawArraySource:
    """uint8 images in memory (``[N, H, W]`` or ``[N, H, W, C]``), preprocessed per batch
    exactly as decoded files are (:class:`jaxood.data.benchmarks.ArraySource`)."""

    def __init__(self, images: np.ndarray, spec: PreprocessSpec, labels=None, *, name=""):
        from jaxood.data.benchmarks import ArraySource

        labels = np.full(len(images), -1, np.int64) if labels is None else labels
        self._src = ArraySource(images, labels, spec, name=name)
        self.labels, self.name = self._src.labels, name
        self.names = [str(i) for i in range(len(images))]
        self.errors: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self._src)

    def batch(self, start: int, stop: int) -> np.ndarray:
        return self._src.batch(start, stop)

    def load(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        x = self.batch(start, stop)
        return x, np.ones(len(x), bool)

    def fingerprint(self) -> str:
        return self._src.fingerprint()


def _npz_arrays(spec: str) -> tuple[np.ndarray, np.ndarray | None, str]:
    """``FILE.npz`` or ``FILE.npz:KEY`` -> (images, labels or None, name)."""
    path, _, key = spec.partition(".npz:")
    path = path if path.endswith(".npz") else path + ".npz"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} does not exist")
    try:
        data = np.load(path, allow_pickle=False)
        keys = list(data.keys())
    except Exception as e:  # zipfile.BadZipFile, pickle refusals, truncation
        raise ValueError(f"{path!r} is not a readable .npz file ({type(e).__name__}: {e})") from e
    if not key:
        key = next((k for k in ("x", "images") if k in keys), None)
        if key is None:
            raise ValueError(
                f"{path!r} has arrays {keys}; name the image array as {path}:KEY "
                "(or store it under 'x' or 'images')"
            )
    if key not in keys:
        raise ValueError(f"{path!r} has no array {key!r}; it has {keys}")
    label_key = {"x": "y", "images": "labels"}.get(key, key.replace("x_", "y_", 1))
    try:
        x = data[key]
        y = data[label_key] if label_key in keys and label_key != key else None
    except Exception as e:
        raise ValueError(f"{path!r}: array {key!r} is unreadable ({type(e).__name__}: {e})") from e
    return x, y, f"{os.path.basename(path)}:{key}"


def open_input(
    data: Any,
    spec: PreprocessSpec | None,
    input_shape: tuple[int, int, int] | None,
    *,
    data_dir: str | None = None,
    name: str = "",
):
    """Any supported input -> a source (see the module docstring).

    Args:
      data: a folder; an OpenOOD-style image list (``.txt``; paths relative to ``data_dir``,
        default the list's folder); ``FILE.npz`` / ``FILE.npz:KEY``; a list of image paths;
        a uint8 array (raw images, preprocessed here); a float array (already normalised);
        or ``(images, labels)``.
      spec, input_shape: the model's preprocessing and ``(H, W, C)``.
    """
    if hasattr(data, "load") and hasattr(data, "names"):  # one of this module's sources
        return data
    if hasattr(data, "batch") and hasattr(data, "labels"):  # a benchmark source
        return SourceAdapter(data)
    labels = None
    if isinstance(data, tuple) and len(data) == 2:
        data, labels = data
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        if ".npz" in path:
            x, y, name = _npz_arrays(path)
            return open_input(x if y is None else (x, y), spec, input_shape, name=name)
        if os.path.isdir(path):
            return FileSource(list_images(path), _need(spec), input_shape, name=name or path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"input {path!r} does not exist")
        root = data_dir or os.path.dirname(os.path.abspath(path))
        il = imglist_lib.read_imglist(path, root)
        paths = [il.full_path(i) for i in range(len(il))]
        return FileSource(paths, _need(spec), input_shape, il.labels, name=name or path)
    if isinstance(data, (list, tuple)) and data and isinstance(data[0], (str, os.PathLike)):
        return FileSource(list(data), _need(spec), input_shape, labels, name=name)
    x = np.asarray(data) if not hasattr(data, "dtype") else data
    if np.dtype(x.dtype) == np.uint8:
        return RawArraySource(np.asarray(x), _need(spec), labels, name=name)
    return NormalisedSource(x, labels, name=name)


def _need(spec: PreprocessSpec | None) -> PreprocessSpec:
    if spec is None:
        raise ValueError(
            "raw images (files or uint8 arrays) need the model's preprocessing, but the model "
            "has no 'preprocess' in its manifest; pass normalised float arrays instead"
        )
    return spec
