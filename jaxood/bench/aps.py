"""OpenOOD's Automatic Parameter Search and a compile-once scorer for cached arrays.

APS (``openood/evaluation_api/evaluator.py::hyperparam_search``): for every point of the
detector's sweep grid (Cartesian product in key order), fit if needed, score ID-val and
OOD-val, compute AUROC; the **first strictly greater** AUROC wins (initial maximum 0).

:class:`Scorer` scores through :mod:`jaxood.scoring`'s compile-once programs (one per
detector, model and static hyperparameters; the others are traced, so sweeping e.g.
AdaSCALE's percentiles re-uses one executable). Scoring runs in fixed-size padded chunks
sharded over the device mesh; padded rows are dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np

from jaxood import detectors, parallel, scoring
from jaxood.types import Detector, Features, Inputs, Model


@dataclasses.dataclass
class APSResult:
    """Outcome of a search.

    Attributes:
      best: the chosen full hyperparameter dict.
      best_auroc: its AUROC on ID-val vs OOD-val (fraction).
      table: every grid point with its AUROC, in grid order.
    """

    best: dict[str, Any]
    best_auroc: float
    table: list[tuple[dict[str, Any], float]]


def search(
    grid: Iterable[Mapping[str, Any]],
    evaluate: Callable[[dict], float],
    *,
    skip_invalid: bool = True,
) -> APSResult:
    """Evaluates every grid point and keeps the first strictly greater AUROC (initial 0).

    Args:
      grid: full hyperparameter dicts in OpenOOD order (``jaxood.detectors.sweep_grid``).
      evaluate: ``hparams -> AUROC`` on ID-val vs OOD-val.
      skip_invalid: points whose evaluation raises ValueError get AUROC NaN and are skipped.

    Returns:
      An :class:`APSResult`; when no point beats 0 (e.g. all AUROC 0) the first point.
    """
    best, best_auroc, table = None, 0.0, []
    first, errors = None, []
    for point in grid:
        point = dict(point)
        try:
            value = float(evaluate(point))
        except ValueError as e:
            if not skip_invalid:
                raise
            # A grid point that does not fit this model/data (e.g. KNN's K larger than the
            # bank, ViM's dim >= D): recorded as NaN and skipped, not fatal.
            errors.append(str(e).splitlines()[0])
            table.append((point, float("nan")))
            continue
        first = first or point
        table.append((point, value))
        if value > best_auroc:
            best, best_auroc = point, value
    if first is None:
        reason = f" (every point was invalid; first error: {errors[0]})" if errors else ""
        raise ValueError(f"APS grid is empty{reason}")
    if best is None:
        best = first
    return APSResult(best=best, best_auroc=best_auroc, table=table)


class Scorer:
    """Scores arrays or image batches with one detector through the compile-once programs
    of :mod:`jaxood.scoring` (one executable per static-hyperparameter setting and shape).

    Args:
      det: the detector.
      model: the classifier (closed over; hashes by identity).
      mesh: device mesh for sharded scoring (default: all local devices).
      chunk: rows per jitted call (padded), bounding device memory.
    """

    def __init__(self, det: Detector, model: Model, mesh=None, chunk: int = 1024):
        self.det, self.model = det, model
        self.mesh = mesh or parallel.data_mesh()
        n = self.mesh.devices.size
        self.chunk = max(n, (chunk // n) * n)

    def score(
        self, variables, stats, arrays: Mapping[str, np.ndarray], hparams: Mapping[str, Any]
    ) -> np.ndarray:
        """``[N]`` scores of cached arrays (higher = more ID).

        Args:
          variables, stats: model weights and fitted detector statistics.
          arrays: ``{"logits", "feature", "feature_map"?, "attention"?, **extras}`` ``[N, ...]``.
          hparams: the full hyperparameter point (only the score ones are used).
        """
        n = len(arrays["logits"])
        out = np.empty(n, np.float32)
        if _host_stats(stats):
            # Statistics deliberately kept on the host (e.g. a KNN bank too big for device
            # memory): call the detector eagerly so it can stream them itself.
            _, _, kw = self.det.split_hparams(hparams)
            for start in range(0, n, self.chunk):
                part = {k: np.asarray(v[start : start + self.chunk]) for k, v in arrays.items()}
                s = self.det.score(self.model, variables, stats, to_inputs(part), **kw)
                out[start : start + len(part["logits"])] = np.asarray(s)
            return out
        stats = jax.device_put(stats, parallel.replicated(self.mesh))
        variables = jax.device_put(variables, parallel.replicated(self.mesh))
        sharding = parallel.batch_sharding(self.mesh)
        # One fixed padded chunk size for every dataset: one compilation per static setting.
        for start in range(0, n, self.chunk):
            stop = min(n, start + self.chunk)
            part = {k: np.asarray(v[start:stop]) for k, v in arrays.items()}
            part, mask = parallel.pad_batch(part, self.chunk)
            part = jax.device_put(part, sharding)
            s = self.score_inputs(variables, stats, to_inputs(part), hparams)
            out[start:stop] = s[mask]
        return out

    def score_inputs(self, variables, stats, inputs: Inputs, hparams) -> np.ndarray:
        """Scores one ready ``Inputs`` (no chunking; for stream detectors and padded chunks)."""
        detectors.check_stats(self.det, stats, inputs)
        traced, static = scoring.split(self.det, hparams)
        program = scoring.array_program(self.det, self.model, static)
        return np.asarray(program(variables, stats, inputs, traced))


#: NumPy leaves of fitted statistics above this size mean "keep on the host".
HOST_STATS_BYTES = 256 * 2**20


def _host_stats(stats: Any) -> bool:
    return any(
        isinstance(leaf, np.ndarray) and leaf.nbytes > HOST_STATS_BYTES
        for leaf in jax.tree.leaves(stats)
    )


FEATURE_FIELDS = ("logits", "feature", "feature_map", "attention")


def to_inputs(arrays: Mapping[str, Any], x=None) -> Inputs:
    """``{"logits", "feature", ..., extras...}`` -> ``Inputs`` (non-feature keys are extras)."""
    feats = Features(**{k: arrays.get(k) for k in FEATURE_FIELDS})
    extras = {k: v for k, v in arrays.items() if k not in FEATURE_FIELDS}
    return Inputs(features=feats, x=x, extras=extras)
