"""OpenOOD image lists: parse, verify before compute, and decode + preprocess in batches.

An image list is a text file with one image per line, ``<relative/path> <extra>``, split on
the first space (OpenOOD ``openood/datasets/imglist_dataset.py``). ``<extra>`` is the integer
class id for ID data and ``-1`` for OOD data; OpenOOD also allows a dict literal there, from
which we read the ``"label"`` key. The relative path is joined to a data directory
(``<root>/images_classic`` or ``<root>/images_largescale``).

Verification runs before any network pass: every referenced file must exist (the error lists
the first few missing paths, their count and the expected root) and, when a checksum manifest
is given, its SHA-256 must match (catches truncated/corrupt copies).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import os
from collections.abc import Mapping, Sequence

import numpy as np

from jaxood.data.transforms import preprocess
from jaxood.types import PreprocessSpec

#: How many offending paths an error message shows before "... and N more".
MAX_SHOWN = 5


@dataclasses.dataclass(frozen=True)
class ImageList:
    """A parsed image list.

    Attributes:
      paths: relative image paths, in list order.
      labels: ``[N]`` int64 class ids (``-1`` for OOD).
      data_dir: directory the relative paths are joined to.
      source: the list file it was read from (for messages and cache keys).
    """

    paths: tuple[str, ...]
    labels: np.ndarray
    data_dir: str
    source: str = ""

    def __len__(self) -> int:
        return len(self.paths)

    def full_path(self, i: int) -> str:
        return os.path.join(self.data_dir, self.paths[i])

    def fingerprint(self) -> str:
        """SHA-256 over the (path, label) lines: identifies the list's content for caching."""
        h = hashlib.sha256()
        for p, y in zip(self.paths, self.labels.tolist()):
            h.update(f"{p} {y}\n".encode())
        return h.hexdigest()


def parse_line(line: str, *, where: str = "<line>") -> tuple[str, int]:
    """Parses one ``<path> <extra>`` line into ``(path, label)``.

    Raises:
      ValueError: a line without a label, or with an unparsable label.
    """
    parts = line.strip().split(" ", 1)
    if len(parts) != 2 or not parts[1].strip():
        raise ValueError(f"{where}: expected '<relative/path> <label>', got {line.strip()!r}")
    path, extra = parts[0], parts[1].strip()
    if extra.startswith("{"):
        try:
            d = ast.literal_eval(extra)
        except (ValueError, SyntaxError):
            raise ValueError(f"{where}: unparsable dict label {extra!r}") from None
        if not isinstance(d, dict) or "label" not in d:
            raise ValueError(f"{where}: dict label without a 'label' key: {extra!r}")
        return path, int(d["label"])
    try:
        return path, int(extra)
    except ValueError:
        raise ValueError(
            f"{where}: label {extra!r} is not an integer (class id, or -1 for OOD)"
        ) from None


def read_imglist(list_path: str | os.PathLike, data_dir: str | os.PathLike) -> ImageList:
    """Reads an OpenOOD image list file.

    Args:
      list_path: the ``.txt`` list.
      data_dir: the directory its relative paths are relative to.

    Raises:
      FileNotFoundError: the list file does not exist.
      ValueError: an empty list or a malformed line (line number given).
    """
    list_path = os.fspath(list_path)
    if not os.path.isfile(list_path):
        raise FileNotFoundError(f"image list {list_path!r} does not exist")
    paths, labels = [], []
    with open(list_path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            p, y = parse_line(line, where=f"{list_path}:{lineno}")
            paths.append(p)
            labels.append(y)
    if not paths:
        raise ValueError(f"image list {list_path!r} is empty")
    return ImageList(tuple(paths), np.asarray(labels, np.int64), os.fspath(data_dir), list_path)


def listing(items: Sequence[str]) -> str:
    shown = "\n  ".join(items[:MAX_SHOWN])
    more = f"\n  ... and {len(items) - MAX_SHOWN} more" if len(items) > MAX_SHOWN else ""
    return f"  {shown}{more}"


def read_checksums(path: str | os.PathLike) -> dict[str, str]:
    """Reads a ``sha256sum``-style manifest: ``<hex digest>  <relative/path>`` per line."""
    sums = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.strip().split(maxsplit=1)
            if len(parts) != 2 or len(parts[0]) != 64:
                raise ValueError(f"{path}:{lineno}: expected '<sha256 hex>  <path>', got {line!r}")
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(
    imglist: ImageList,
    *,
    checksums: Mapping[str, str] | None = None,
    expected_count: int | None = None,
    name: str | None = None,
) -> None:
    """Checks, before any compute, that every image of the list is present (and intact).

    Args:
      imglist: the parsed list.
      checksums: optional ``relative path -> sha256`` manifest; files listed there are
        hashed and compared (files absent from the manifest are not checked).
      expected_count: when given, the number of lines the list must have.
      name: dataset name for messages.

    Raises:
      ValueError: missing files (first few + count + the expected root), checksum
        mismatches, or a wrong line count.
    """
    label = name or os.path.basename(imglist.source) or "image list"
    if expected_count is not None and len(imglist) != expected_count:
        raise ValueError(
            f"{label}: {imglist.source} has {len(imglist)} images, expected {expected_count} "
            "(a partial or different copy of the OpenOOD lists?)"
        )
    missing = [p for p in imglist.paths if not os.path.isfile(os.path.join(imglist.data_dir, p))]
    if missing:
        raise ValueError(
            f"{label}: {len(missing)} of {len(imglist)} images listed in {imglist.source} are "
            f"missing under the expected root {imglist.data_dir!r}:\n{listing(missing)}\n"
            "Check --data-root (it must contain benchmark_imglist/ and images_classic/ or "
            "images_largescale/ as in OpenOOD v1.5)."
        )
    if checksums:
        bad = [
            p
            for p in imglist.paths
            if p in checksums and sha256_file(os.path.join(imglist.data_dir, p)) != checksums[p]
        ]
        if bad:
            raise ValueError(
                f"{label}: {len(bad)} image(s) under {imglist.data_dir!r} do not match their "
                f"SHA-256 in the checksum manifest (corrupt or different copies):\n{listing(bad)}"
            )


def load_image(path: str, spec: PreprocessSpec) -> np.ndarray:
    """Decodes one image with PIL and applies the model's eval preprocessing.

    The full-resolution decode is kept on purpose: PIL's ``draft()`` (JPEG DCT-domain
    downscaling) would be faster on large JPEGs but changes the pixels torchvision's
    transform sees (tests/data/test_imglist.py checks large JPEGs bit for bit).

    Returns:
      ``[H, W, C]`` float32, normalised (``C = spec.channels``).

    Raises:
      ValueError: the file cannot be decoded (names the file).
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            return preprocess(img, spec)
    except OSError as e:
        raise ValueError(f"could not decode image {path!r} ({e})") from e


class DecodedImages:
    """Random access to an image list's preprocessed images: ``images[i]`` is ``[H, W, C]``.

    A plain sequence (``len`` + ``__getitem__``) that grain's ``MapDataset.source`` wraps;
    picklable, so it can also feed grain worker processes.
    """

    def __init__(self, imglist: ImageList, spec: PreprocessSpec):
        self.imglist = imglist
        self.spec = spec

    def __len__(self) -> int:
        return len(self.imglist)

    def __getitem__(self, i: int) -> np.ndarray:
        return load_image(self.imglist.full_path(int(i)), self.spec)


def default_workers() -> int:
    """Decoding threads: the CPUs this process may use, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


class ImageListSource:
    """A dataset backed by an image list, decoded and preprocessed on demand.

    ``batch(start, stop)`` returns ``[stop - start, H, W, C]`` float32 normalised images
    (torchvision's eval transform, bit for bit). Any index range may be asked for, so a
    caller can shard the list by ranges (one per process or device) and pad the last batch
    itself; consecutive calls are served from a read-ahead buffer.

    Decoding runs in a grain ``MapDataset`` -> ``to_iter_dataset`` thread pool (PIL and
    NumPy release the GIL while decoding, resizing and normalising). The iterator stays
    alive between calls and keeps decoding ``readahead`` batches beyond the last one
    returned, so the next batch is ready while the caller runs the network; a call for a
    range that does not continue the previous one repositions the iterator (pending
    decodes are cancelled). Threads rather than grain's worker processes: on the 2-core
    project CPU both read 5,000 ImageNet-sized JPEGs at ~1.3x torchvision's
    ``DataLoader(num_workers=2)``, but worker processes cost ~6 s of start-up per pass
    (experiments/bench_decode.py, results/bench_decode*.json).

    Args:
      imglist: the parsed list.
      spec: the model's eval preprocessing.
      name: dataset name for messages (default: the list file name).
      workers: decoding threads (default :func:`default_workers`); 0 decodes in the calling
        thread without read-ahead.
      readahead: batches decoded ahead of the one returned (at least 1 when ``workers > 0``;
        memory: that many batches).
    """

    def __init__(
        self,
        imglist: ImageList,
        spec: PreprocessSpec,
        *,
        name: str = "",
        workers: int | None = None,
        readahead: int = 1,
    ):
        if workers is not None and workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if readahead < 0:
            raise ValueError(f"readahead must be >= 0, got {readahead}")
        self.imglist = imglist
        self.spec = spec
        self.name = name or os.path.basename(imglist.source)
        self.labels = imglist.labels
        self.images = DecodedImages(imglist, spec)
        self._workers = default_workers() if workers is None else int(workers)
        self._readahead = int(readahead)
        self._iter = None
        self._buffer = 0

    def __len__(self) -> int:
        return len(self.imglist)

    def batch(self, start: int, stop: int) -> np.ndarray:
        """Images ``start .. stop - 1`` of the list: ``[stop - start, H, W, C]`` float32."""
        start, stop = int(start), int(stop)
        if not 0 <= start < stop <= len(self):
            raise ValueError(
                f"{self.name}: batch({start}, {stop}) is outside the list's {len(self)} images"
            )
        it = self._reader(start, stop - start)
        try:
            out = np.stack([next(it) for _ in range(stop - start)])
        except BaseException:
            self.close()  # the iterator's position is unknown after a failed decode
            raise
        if stop == len(self):
            self.close()  # release the threads; a later call reopens
        return out

    def _reader(self, start: int, size: int):
        """The read-ahead iterator, positioned at ``start``, buffering enough for ``size``."""
        import grain

        if self._workers == 0:
            return (self.images[i] for i in range(start, start + size))
        # grain keeps `buffer` images in flight: after a batch is taken, the next
        # `readahead` batches are being decoded.
        buffer = max(1, self._readahead) * size
        if self._iter is None or self._buffer < buffer:
            self.close()
            options = grain.ReadOptions(num_threads=self._workers, prefetch_buffer_size=buffer)
            dataset = grain.MapDataset.source(self.images).to_iter_dataset(options)
            self._iter, self._buffer = iter(dataset), buffer
        if self._iter.get_state()["next_index"] != start:
            self._iter.set_state({"next_index": start})
        return self._iter

    def close(self) -> None:
        """Stops read-ahead and releases the decoding threads (idempotent)."""
        if self._iter is not None:
            self._iter.close()
            self._iter = None

    def fingerprint(self) -> str:
        """Identifies (list content, data dir, preprocessing) for the feature cache."""
        h = hashlib.sha256()
        h.update(self.imglist.fingerprint().encode())
        h.update(os.path.abspath(self.imglist.data_dir).encode())
        h.update(repr(sorted(self.spec.to_dict().items())).encode())
        return h.hexdigest()
