"""Host-side training input pipeline: deterministic shuffling, batching and prefetch.

The data order is a pure function of ``(seed, epoch)`` (:func:`epoch_permutation`) and the
batch at global step ``t`` is a pure function of ``(seed, t)``. Resuming at step ``t`` —
even in the middle of an epoch — therefore reproduces the uninterrupted run exactly, and the
"iterator position" saved in a checkpoint is just the step.

Datasets here fit in host memory (CIFAR: 150 MB of uint8), so a batch is one NumPy fancy
index (microseconds); a background thread gathers the next batches and starts their
host->device copies while the accelerator runs the current step. For data that does not fit
in memory, grain's ``MapDataset`` + ``IterDataset.mp_prefetch`` would replace this class with
the same (seed, step) contract.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of ``n`` examples in ``epoch``: ``[n]`` int64, a pure function."""
    return np.random.default_rng([int(seed), int(epoch), 0x5EED]).permutation(n)


class TrainBatches:
    """Shuffled training batches addressed by global step.

    Args:
      x: ``[N, H, W, C]`` uint8 images.
      y: ``[N]`` int labels.
      batch_size: global batch size.
      seed: shuffling seed.
      drop_last: drop the short last batch (OpenOOD keeps it: 391 steps per CIFAR epoch).
      multiple_of: the short last batch is cut down to a multiple of this (the device count)
        so it can be sharded; the few dropped examples differ every epoch.
      process_index, process_count: multi-host; each process materialises only its
        contiguous slice of every global batch.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        seed: int,
        *,
        drop_last: bool = False,
        multiple_of: int = 1,
        process_index: int = 0,
        process_count: int = 1,
    ):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if len(x) < batch_size and drop_last:
            raise ValueError(f"{len(x)} training examples are fewer than one batch of {batch_size}")
        self.x, self.y = x, y
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.drop_last, self.multiple_of = drop_last, max(int(multiple_of), 1)
        self.process_index, self.process_count = process_index, process_count
        n = len(x)
        full, rest = divmod(n, self.batch_size)
        rest -= rest % self.multiple_of
        self.steps_per_epoch = full + (1 if rest and not drop_last else 0)
        if self.steps_per_epoch == 0:
            raise ValueError(f"{n} examples give no batch of a multiple of {self.multiple_of}")
        self._perm_cache: tuple[int, np.ndarray] | None = None

    def position(self, step: int) -> tuple[int, int]:
        """``(epoch, index within epoch)`` of global step ``step``."""
        return divmod(int(step), self.steps_per_epoch)

    def indices(self, step: int) -> np.ndarray:
        """Example indices of the global batch at ``step`` (``[B]``; shorter at epoch end)."""
        epoch, i = self.position(step)
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            self._perm_cache = (epoch, epoch_permutation(len(self.x), self.seed, epoch))
        idx = self._perm_cache[1][i * self.batch_size : (i + 1) * self.batch_size]
        return idx[: len(idx) - len(idx) % self.multiple_of]

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """This process's part of the global batch at ``step``: ``(x uint8, y int32)``."""
        idx = self.indices(step)
        local = len(idx) // self.process_count
        idx = idx[self.process_index * local : (self.process_index + 1) * local]
        return self.x[idx], self.y[idx]


def prefetch(make: Callable[[int], Any], steps: range, size: int = 2) -> Iterator[tuple[int, Any]]:
    """Yields ``(step, make(step))`` for ``steps``, computing up to ``size`` ahead in a thread.

    ``make`` typically gathers the host batch and calls ``jax.device_put`` (asynchronous),
    so the copy overlaps the running step. Exceptions in the thread re-raise here.
    """
    q: queue.Queue = queue.Queue(maxsize=max(size, 1))
    stop = threading.Event()
    sentinel = object()

    def worker():
        try:
            for step in steps:
                if stop.is_set():
                    return
                q.put((step, make(step)))
        except BaseException as e:  # surface in the consumer
            q.put((None, e))
        q.put((None, sentinel))

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while True:
            step, item = q.get()
            if item is sentinel:
                return
            if step is None:
                raise item
            yield step, item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a worker waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def eval_batches(x: np.ndarray, y: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, ...]]:
    """Fixed-shape evaluation batches ``(x, y, mask)``; the last one zero-padded, mask False there."""
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        n = len(xb)
        mask = np.zeros(batch_size, bool)
        mask[:n] = True
        if n < batch_size:
            xb = np.concatenate([xb, np.zeros((batch_size - n, *xb.shape[1:]), xb.dtype)])
            yb = np.concatenate([yb, np.zeros(batch_size - n, yb.dtype)])
        yield xb, yb, mask
