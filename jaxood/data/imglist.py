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
import concurrent.futures
import dataclasses
import hashlib
import os
from collections.abc import Mapping, Sequence

import numpy as np

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


def _listing(items: Sequence[str]) -> str:
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
            f"missing under the expected root {imglist.data_dir!r}:\n{_listing(missing)}\n"
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
                f"SHA-256 in the checksum manifest (corrupt or different copies):\n{_listing(bad)}"
            )


def load_image(path: str, spec: PreprocessSpec) -> np.ndarray:
    """Decodes one image with PIL and applies the model's eval preprocessing.

    Returns:
      ``[H, W, C]`` float32, normalised (``C = spec.channels``).
    """
    from PIL import Image

    from jaxood.data.transforms import preprocess

    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(preprocess(img, spec), np.float32)
    except OSError as e:
        raise ValueError(f"could not decode image {path!r} ({e})") from e


class ImageListSource:
    """A dataset backed by an image list, decoded and preprocessed on demand.

    ``batch(start, stop)`` returns ``[stop - start, H, W, C]`` float32 normalised images,
    decoded with a small thread pool (PIL releases the GIL while decoding).
    """

    def __init__(
        self,
        imglist: ImageList,
        spec: PreprocessSpec,
        *,
        name: str = "",
        workers: int | None = None,
    ):
        self.imglist = imglist
        self.spec = spec
        self.name = name or os.path.basename(imglist.source)
        self.labels = imglist.labels
        self._workers = workers or min(8, os.cpu_count() or 1)

    def __len__(self) -> int:
        return len(self.imglist)

    def batch(self, start: int, stop: int) -> np.ndarray:
        paths = [self.imglist.full_path(i) for i in range(start, stop)]
        with concurrent.futures.ThreadPoolExecutor(self._workers) as pool:
            imgs = list(pool.map(lambda p: load_image(p, self.spec), paths))
        return np.stack(imgs)

    def fingerprint(self) -> str:
        """Identifies (list content, data dir, preprocessing) for the feature cache."""
        h = hashlib.sha256()
        h.update(self.imglist.fingerprint().encode())
        h.update(os.path.abspath(self.imglist.data_dir).encode())
        h.update(repr(sorted(self.spec.to_dict().items())).encode())
        return h.hexdigest()
