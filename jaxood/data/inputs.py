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
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from jaxood import validate
from jaxood.data import imglist as imglist_lib
from jaxood.data import npzfile
from jaxood.data.benchmarks import ArraySource
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
    """Images already preprocessed: ``[N, H, W, C]`` float arrays (memory-mapped is fine).

    The layout (dtype, NHWC, the model's ``input_shape``) is checked when built, the values
    (NaN/Inf, unnormalised-looking pixels: one warning) per batch as they are read: see
    :func:`jaxood.validate.images`.
    """

    def __init__(
        self, x: Any, labels: Sequence[int] | None = None, *, name: str = "",
        input_shape: tuple[int, int, int] | None = None,
    ):
        self.name = name
        self._what = name or "x"
        validate.images(x, self._what, input_shape=input_shape, values=False)
        self.x, self.input_shape = x, input_shape
        self.labels = _labels(labels, len(x), self._what)
        self.names = [str(i) for i in range(len(x))]
        self.errors: list[tuple[str, str]] = []
        self._warned = False

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, start: int, stop: int) -> np.ndarray:
        x = self.x[start:stop]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x = validate.images(x, f"{self._what}[{start}:{stop}]", input_shape=self.input_shape)
        if caught and not self._warned:  # once per source, not once per batch
            self._warned = True
            warnings.warn(str(caught[0].message).replace(f"[{start}:{stop}]", ""), UserWarning,
                          stacklevel=2)
        return np.asarray(x, np.float32)

    def load(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        x = self.batch(start, stop)
        return x, np.ones(len(x), bool)

    def fingerprint(self) -> str:
        h = hashlib.sha256(np.ascontiguousarray(np.asarray(self.x)).data)
        return h.hexdigest()


def _labels(labels: Any, n: int, what: str) -> np.ndarray:
    """``[n]`` int labels (``-1`` = unknown), checked."""
    if labels is None:
        return np.full(n, -1, np.int64)
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels of {what} must be [N] integers, got {y.dtype} shape {y.shape}")
    if len(y) != n:
        raise ValueError(f"{what}: {n} images but {len(y)} labels")
    return y.astype(np.int64)


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


class RawArraySource(SourceAdapter):
    """uint8 images in memory (``[N, H, W]`` or ``[N, H, W, C]``), preprocessed per batch
    exactly as decoded files are (:class:`jaxood.data.benchmarks.ArraySource`)."""

    def __init__(
        self, images: np.ndarray, spec: PreprocessSpec, labels=None, *, name="", input_shape=None
    ):
        what = name or "images"
        images = np.asarray(images)
        if len(images) == 0:
            raise ValueError(f"`{what}` is empty; pass at least one image")
        if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):
            raise ValueError(f"`{what}`: uint8 images must be [N, H, W] or [N, H, W, C], got "
                             f"{list(images.shape)}; NCHW? use x.transpose(0, 2, 3, 1)")
        self._src = ArraySource(images, _labels(labels, len(images), what), spec, name=what)
        self.labels, self.name = self._src.labels, name
        if input_shape is not None:
            got = self._src.batch(0, 1).shape[1:]
            if tuple(got) != tuple(input_shape):
                raise ValueError(
                    f"`{what}`: uint8 images of shape {tuple(images.shape[1:])} preprocess to "
                    f"{tuple(got)} (H, W, C) but the model takes {tuple(input_shape)} "
                    f"(its preprocessing: resize {spec.resize_size}, crop {spec.crop_size}); "
                    "resize the images" + ("; NCHW? use x.transpose(0, 2, 3, 1)"
                                           if images.ndim == 4 and images.shape[1] in (1, 3)
                                           and images.shape[-1] not in (1, 3) else "")
                )
        self.names = [str(i) for i in range(len(images))]
        self.errors: list[tuple[str, str]] = []


def _npz_arrays(spec: str) -> tuple[np.ndarray, np.ndarray | None, str]:
    """``FILE.npz`` or ``FILE.npz:KEY`` -> (images, labels or None, name)."""
    path, _, key = spec.partition(".npz:")
    path = path if path.endswith(".npz") else path + ".npz"
    with npzfile.open_npz(path) as data:
        keys = list(data.files)
        if not key:
            key = next((k for k in ("x", "images") if k in keys), None)
            if key is None:
                raise ValueError(
                    f"{path!r} has arrays {keys}; name the image array as {path}:KEY "
                    "(or store it under 'x' or 'images')"
                )
        label_key = {"x": "y", "images": "labels"}.get(key, key.replace("x_", "y_", 1))
        x = npzfile.read_array(data, key)
        y = npzfile.read_array(data, label_key) if label_key in keys and label_key != key else None
    return x, y, f"{os.path.basename(path)}:{key}"


def _npy_array(path: str) -> np.ndarray:
    """A ``.npy`` file (memory-mapped), with a clear error when it is not one."""
    npzfile.check_file(path)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(
            f"{path!r} is not a readable .npy array ({type(e).__name__}: {e}); ragged or "
            "object arrays are not supported: images must share one shape"
        ) from None


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
        default the list's folder); one image file; ``FILE.npz`` / ``FILE.npz:KEY``;
        ``FILE.npy``; a list of image paths;
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
        if path.lower().endswith(IMAGE_EXTENSIONS):  # one image file
            return FileSource([path], _need(spec), input_shape, labels, name=name or path)
        if path.lower().endswith(".npy"):
            x = _npy_array(path)
            return open_input(x if labels is None else (x, labels), spec, input_shape,
                              name=name or os.path.basename(path))
        root = data_dir or os.path.dirname(os.path.abspath(path))
        try:
            il = imglist_lib.read_imglist(path, root)
        except UnicodeDecodeError:
            raise ValueError(
                f"input {path!r} is not a text image list (it is binary); give a folder, an "
                f"image list (.txt), an image ({', '.join(IMAGE_EXTENSIONS)}), FILE.npz[:KEY] "
                "or FILE.npy"
            ) from None
        paths = [il.full_path(i) for i in range(len(il))]
        return FileSource(paths, _need(spec), input_shape, il.labels, name=name or path)
    if isinstance(data, (list, tuple)) and data and isinstance(data[0], (str, os.PathLike)):
        return FileSource(list(data), _need(spec), input_shape, labels, name=name)
    what = name or "images"
    if data is None:
        raise ValueError(f"`{what}` is None; pass images (an array, a folder, an image list, "
                         "FILE.npz[:KEY], FILE.npy or a list of image paths)")
    if isinstance(data, Mapping):
        raise ValueError(
            f"`{what}` must be images (an array, a folder, an image list, FILE.npz[:KEY], "
            f"FILE.npy or image paths) or (images, labels), got a dict with keys {list(data)}"
        )
    if isinstance(data, tuple) and labels is None and data and hasattr(data[0], "shape") \
            and np.ndim(data[0]) >= 3:
        raise ValueError(f"`{what}` is a tuple of {len(data)} arrays; pass images, or "
                         "(images, labels)")
    x = validate.as_array(data, what)
    if np.dtype(x.dtype) == np.uint8:
        return RawArraySource(np.asarray(x), _need(spec), labels, name=name,
                              input_shape=input_shape)
    return NormalisedSource(x, labels, name=name, input_shape=input_shape)


def _need(spec: PreprocessSpec | None) -> PreprocessSpec:
    if spec is None:
        raise ValueError(
            "raw images (files or uint8 arrays) need the model's preprocessing, but the model "
            "has no 'preprocess' in its manifest; pass normalised float arrays instead"
        )
    return spec
