"""Training metrics without per-step host syncs: a window of device scalars, fetched at once.

``train_step`` returns device scalars; :class:`MetricsWindow` only keeps references to
them, so the host never waits for a step to finish. Every ``log_every`` steps (and at epoch
ends and checkpoints) :meth:`MetricsWindow.flush` fetches the window in one transfer,
stops on the first non-finite loss, and turns it into a log record with the throughput.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np


class TrainingDiverged(ValueError):
    """The loss or the parameters became NaN/inf; nothing was saved over the last good checkpoint."""


class MetricsWindow:
    """Steps since the last flush, and the running epoch and throughput totals.

    Throughput windows run from one flush to the next; a window in which a new program was
    compiled (:meth:`exclude`) or that follows evaluation or checkpointing
    (:meth:`restart_clock`) is left out of the average, as is the first one.
    """

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.metrics: list[Any] = []
        self.images = 0
        self.excluded = False
        self.t_start: float | None = None  # None until the first flush (compile window)
        self.epoch_loss_sum, self.epoch_steps, self.epoch_correct, self.epoch_count = 0.0, 0, 0, 0
        self.timed_images, self.timed_seconds = 0, 0.0

    def __len__(self) -> int:
        return len(self.steps)

    def add(self, step: int, metrics: Mapping[str, jax.Array], images: int) -> None:
        self.steps.append(step)
        self.metrics.append(metrics)
        self.images += images

    def exclude(self) -> None:
        """Leave the current window out of the throughput (e.g. it compiled a new shape)."""
        self.excluded = True

    def restart_clock(self) -> None:
        """The time since the last flush was not training (evaluation, checkpoint)."""
        if self.t_start is not None:
            self.t_start = time.perf_counter()

    def flush(self, last_good_checkpoint: int | None) -> dict | None:
        """Fetches the window; returns ``{steps, loss, train_acc, images_per_s}`` or None.

        Raises:
          TrainingDiverged: a loss in the window is not finite (names the first such step).
        """
        if not self.steps:
            return None
        fetched = jax.device_get(self.metrics)
        for step, m in zip(self.steps, fetched):
            if not np.isfinite(m["loss"]):
                raise TrainingDiverged(
                    f"loss is {m['loss']} at step {step}; stopping. Nothing was saved after "
                    f"the last good checkpoint (step {last_good_checkpoint}). Lower the "
                    "learning rate or check the data."
                )
        losses = [float(m["loss"]) for m in fetched]
        correct = int(sum(int(m["correct"]) for m in fetched))
        count = int(sum(int(m["count"]) for m in fetched))
        self.epoch_loss_sum += sum(losses)
        self.epoch_steps += len(losses)
        self.epoch_correct += correct
        self.epoch_count += count
        now, rate = time.perf_counter(), None
        if self.t_start is not None and not self.excluded:
            self.timed_seconds += now - self.t_start
            self.timed_images += self.images
            rate = self.images / max(now - self.t_start, 1e-9)
        record = {
            "loss": float(np.mean(losses)),
            "train_acc": correct / max(count, 1),
            "images_per_s": rate,
        }
        self.steps, self.metrics, self.images, self.excluded, self.t_start = [], [], 0, False, now
        return record

    def end_epoch(self) -> tuple[float, float]:
        """``(mean step loss, accuracy)`` of the flushed steps since the last call; resets."""
        out = (
            self.epoch_loss_sum / max(self.epoch_steps, 1),
            self.epoch_correct / max(self.epoch_count, 1),
        )
        self.epoch_loss_sum, self.epoch_steps, self.epoch_correct, self.epoch_count = 0.0, 0, 0, 0
        return out

    @property
    def images_per_s(self) -> float | None:
        """Mean throughput over the timed windows (compile, eval and saves excluded)."""
        return self.timed_images / self.timed_seconds if self.timed_seconds > 0 else None


class MetricsLog:
    """Appends JSON records to ``metrics.jsonl`` (process 0 only)."""

    def __init__(self, path: str, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: Mapping[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps({**record, "time": time.time()}) + "\n")
