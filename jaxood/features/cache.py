"""On-disk cache of per-sample arrays (logits, features, feature maps, detector extras).

An entry is a directory named by the SHA-256 of its key (model fingerprint, dataset
fingerprint, what was extracted and with which settings). Extraction writes fixed-size
*shards* (``shard_00012.npz``), each atomically (temp file + rename), so an interrupted run
resumes from the first missing shard. When all shards exist they are consolidated into one
``<name>.npy`` per array, which is opened memory-mapped: detectors that fit in chunks never
need the whole array in RAM.

Layout::

    <cache root>/<key hash[:24]>/key.json      what this entry holds (human readable)
                                 shard_*.npz   while incomplete
                                 <array>.npy   once complete
                                 done.json     completion marker (array names, count)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxood.fsutil import atomic_write_bytes, plain


def key_hash(key: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``key``."""
    blob = json.dumps(plain(key), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


class CacheEntry:
    """One cached result: a dict of ``[N, ...]`` arrays built shard by shard."""

    def __init__(self, root: str, key: Mapping[str, Any]):
        self.key = plain(dict(key))
        self.dir = os.path.join(root, key_hash(self.key)[:24])

    # -- state
    @property
    def complete(self) -> bool:
        return os.path.isfile(os.path.join(self.dir, "done.json"))

    def _shard_path(self, i: int) -> str:
        return os.path.join(self.dir, f"shard_{i:05d}.npz")

    def has_shard(self, i: int) -> bool:
        return os.path.isfile(self._shard_path(i))

    # -- writing
    def _ensure_dir(self) -> None:
        if not os.path.isdir(self.dir):
            os.makedirs(self.dir, exist_ok=True)
            atomic_write_bytes(
                os.path.join(self.dir, "key.json"), json.dumps(self.key, indent=1).encode()
            )

    def write_shard(self, i: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Atomically writes shard ``i`` (a partially written shard never looks complete)."""
        self._ensure_dir()
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=self.dir)
        os.close(fd)
        try:
            np.savez(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
            os.replace(tmp, self._shard_path(i))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def finalize(self, num_shards: int, count: int) -> None:
        """Concatenates shards ``0..num_shards-1`` into one ``.npy`` per array (streamed to a
        memory-mapped file, so peak memory is one shard), then marks the entry complete."""
        self._ensure_dir()
        with np.load(self._shard_path(0)) as first:
            names = {k: (first[k].dtype, first[k].shape[1:]) for k in first.files}
        outs = {}
        for name, (dtype, tail) in names.items():
            tmp = os.path.join(self.dir, f".tmp-{name}.npy")
            outs[name] = (tmp, np.lib.format.open_memmap(tmp, "w+", dtype, (count, *tail)))
        pos = 0
        for i in range(num_shards):
            with np.load(self._shard_path(i)) as shard:
                n = len(shard[next(iter(names))])
                for name, (_, mm) in outs.items():
                    mm[pos : pos + n] = shard[name]
                pos += n
        if pos != count:
            raise RuntimeError(f"cache {self.dir}: shards hold {pos} samples, expected {count}")
        for name, (tmp, mm) in outs.items():
            mm.flush()
            del mm
            os.replace(tmp, os.path.join(self.dir, f"{name}.npy"))
        atomic_write_bytes(
            os.path.join(self.dir, "done.json"),
            json.dumps({"arrays": sorted(names), "count": count}).encode(),
        )
        for i in range(num_shards):
            os.unlink(self._shard_path(i))

    # -- reading
    def load(self, mmap: bool = True) -> dict[str, np.ndarray]:
        """The cached arrays (memory-mapped, read-only, by default)."""
        with open(os.path.join(self.dir, "done.json")) as f:
            done = json.load(f)
        mode = "r" if mmap else None
        return {
            n: np.load(os.path.join(self.dir, f"{n}.npy"), mmap_mode=mode) for n in done["arrays"]
        }

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class FeatureCache:
    """A cache root directory; ``entry(key)`` gives the :class:`CacheEntry` for a key."""

    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root)
        os.makedirs(self.root, exist_ok=True)

    def entry(self, key: Mapping[str, Any]) -> CacheEntry:
        return CacheEntry(self.root, key)
