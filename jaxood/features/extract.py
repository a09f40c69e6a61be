"""Sharded, padded + masked, cached and resumable extraction of per-sample arrays.

``extract`` runs a jitted per-batch function (the model's features, or a detector's
``extract``) over a data source:

* batches are padded to a fixed size (``jaxood.parallel.pad_batch``) so there is one
  compilation and the short last batch is scored exactly once (padded rows are dropped);
* each batch is placed with ``batch_sharding`` over a 1-D mesh of all local devices, the
  variables replicated, so the work splits across devices;
* results are written in shards of ``shard_batches`` batches to a :class:`CacheEntry`;
  finished shards are skipped on re-run, so an interrupted extraction resumes;
* a tqdm progress bar counts batches.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import numpy as np

from jaxood import parallel, scoring, validate
from jaxood.distributed import Processes
from jaxood.features.cache import CacheEntry
from jaxood.features.timing import StageTimes


class Source(Protocol):
    """What extraction reads: ``len``, ``labels``, ``batch(start, stop)``, ``fingerprint()``."""

    labels: np.ndarray

    def __len__(self) -> int: ...

    def batch(self, start: int, stop: int) -> np.ndarray: ...

    def fingerprint(self) -> str: ...


def device_batch_size(batch_size: int, mesh: jax.sharding.Mesh) -> int:
    """``batch_size`` rounded up to a multiple of the mesh's device count.

    Raises:
      ValueError: ``batch_size`` is not an integer >= 1.
    """
    validate.check_positive_int(batch_size, "batch_size")
    n = mesh.devices.size
    return max(n, int(math.ceil(batch_size / n)) * n)


def extract(
    fn: Callable,
    variables: Any,
    source: Source,
    groups: Sequence[tuple[CacheEntry, Sequence[str] | None]],
    *,
    batch_size: int = 256,
    shard_batches: int = 8,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = True,
    desc: str = "",
    processes: Processes | None = None,
    timer: StageTimes | None = None,
    stage: str = "extract",
) -> list[dict[str, np.ndarray]]:
    """Runs ``fn`` over ``source`` and caches the outputs; returns the cached arrays.

    With several ``processes`` (a multi-host run on shared storage) every process computes
    the missing shards ``i`` with ``i % count == index`` on its local devices, so each sample
    is computed exactly once across processes; after a barrier process 0 consolidates the
    entry, and after a second barrier every process reads it. Every process must call this
    with the same arguments in the same order.

    Args:
      fn: ``(variables, x [B, H, W, C]) -> {name: [B, ...]}``, not yet jitted (it is jitted
        here with the mesh's shardings, once per function object: build it with one of
        :mod:`jaxood.scoring`'s cached builders, ``features_fn``, ``extract_fn``,
        ``image_score_fn``).
      variables: model variables (replicated on the mesh).
      source: the dataset.
      groups: ``(entry, names)`` pairs: each entry stores the listed output names (``None``
        = every output no other group names). Complete entries are not recomputed; a shard is skipped only when
        every entry has it.
      batch_size: per-step global batch (rounded up to a multiple of the device count).
      shard_batches: batches per cache shard (the resume granularity).
      mesh: device mesh (default: all local devices).
      progress: show a tqdm bar.
      desc: bar label.
      timer: records ``<stage>/decode`` (waiting for ``source.batch``),
        ``<stage>/first_batch`` (the first batch of each compiled function: includes the XLA
        compile), ``<stage>/network`` (the other batches, until their outputs are on the
        host) and ``<stage>/cache_write``; items are images.
      stage: the prefix of those stage names.

    Returns:
      For each group, its ``{name: array}`` (memory-mapped ``[N, ...]``), in source order.
    """
    procs = processes or Processes()
    # ``None`` resolves to "every output no group names", over all groups (complete or not).
    named = frozenset(k for _, names in groups for k in names or ())
    pending = [(e, names, named) for e, names in groups if not e.complete]
    if pending:
        mesh = mesh or parallel.data_mesh()
        bs = device_batch_size(batch_size, mesh)
        n = len(source)
        if n == 0:
            raise ValueError(f"dataset {desc or 'source'} is empty")
        shard_size = bs * shard_batches
        num_shards = int(math.ceil(n / shard_size))
        todo = [i for i in range(num_shards) if not all(e.has_shard(i) for e, *_ in pending)]
        todo = procs.mine(todo)
        if todo:
            timing = (timer or StageTimes(), stage)
            _run_shards(fn, variables, source, pending, todo, n, bs, shard_size, mesh, progress,
                        desc, timing)
        tag = pending[0][0].dir
        procs.barrier(f"shards {tag}")
        if procs.is_main:
            for e, *_ in pending:
                e.finalize(num_shards, n)
        procs.barrier(f"finalized {tag}")
    return [e.load() for e, _ in groups]


def _run_shards(
    fn, variables, source, pending, todo, n, bs, shard_size, mesh, progress, desc, timing
):
    timer, stage = timing
    step = scoring.sharded(fn, mesh)
    variables = jax.device_put(variables, parallel.replicated(mesh))
    total = sum(int(math.ceil((min(n, (i + 1) * shard_size) - i * shard_size) / bs)) for i in todo)
    bar = _progress(total, desc, progress)
    try:
        for i in todo:
            lo, hi = i * shard_size, min(n, (i + 1) * shard_size)
            arrays = _run_range(step, variables, source, lo, hi, bs, mesh, bar, timing)
            with timer.stage(f"{stage}/cache_write", items=hi - lo):
                for entry, names, named in pending:
                    keep = ({k: v for k, v in arrays.items() if k not in named} if names is None
                            else {k: arrays[k] for k in names})
                    if not entry.has_shard(i):
                        entry.write_shard(i, keep)
    finally:
        bar.close()


def _run_range(
    step, variables, source, lo, hi, bs, mesh, bar, timing=None
) -> dict[str, np.ndarray]:
    """Runs the jitted ``step`` over ``source[lo:hi]`` in padded batches of ``bs``; padded
    rows are dropped, so every sample is computed exactly once. ``timing``: ``(StageTimes,
    stage prefix)`` (see :func:`extract`)."""
    timer, stage = timing or (StageTimes(), "extract")
    in_sharding = parallel.batch_sharding(mesh)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(lo, hi, bs):
        stop = min(hi, start + bs)
        t0 = time.perf_counter()
        x, mask = parallel.pad_batch(source.batch(start, stop), bs)
        t1 = time.perf_counter()
        out = step(variables, jax.device_put(x, in_sharding))
        for k, v in out.items():
            parts.setdefault(k, []).append(np.asarray(v)[mask])
        t2 = time.perf_counter()
        timer.add(f"{stage}/decode", t1 - t0, stop - start)
        compiled = timer.first_call((step, x.shape))
        timer.add(f"{stage}/{'first_batch' if compiled else 'network'}", t2 - t1, stop - start)
        bar.update(1)
    return {k: np.concatenate(v) for k, v in parts.items()}


def extract_arrays(
    fn: Callable,
    variables: Any,
    source: Source,
    *,
    batch_size: int = 256,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = False,
    desc: str = "",
) -> dict[str, np.ndarray]:
    """Like :func:`extract` but in memory (no cache): ``{name: [N, ...]}`` of ``fn`` over
    ``source``, with the same padded, sharded batches (hence the same numbers)."""
    mesh = mesh or parallel.data_mesh()
    bs = device_batch_size(batch_size, mesh)
    n = len(source)
    if n == 0:
        raise ValueError(f"dataset {desc or 'source'} is empty")
    step = scoring.sharded(fn, mesh)
    variables = jax.device_put(variables, parallel.replicated(mesh))
    bar = _progress(int(math.ceil(n / bs)), desc, progress)
    try:
        return _run_range(step, variables, source, 0, n, bs, mesh, bar)
    finally:
        bar.close()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc or "extract", unit="batch", leave=False)


def detector_fields(det) -> list[str]:
    """The ``Features`` fields a detector reads: logits and feature, plus the feature map /
    attention when it needs them."""
    return ["logits", "feature", *(f for f in ("feature_map", "attention") if f in det.needs)]
