"""Scoring cached per-sample arrays with one detector, compiled once.

:class:`Scorer` scores through :mod:`jaxood.scoring`'s compile-once programs (one per
detector, model and static hyperparameters; the others are traced, so sweeping e.g.
AdaSCALE's percentiles re-uses one executable). Scoring runs in fixed-size padded chunks
sharded over the device mesh; padded rows are dropped. :func:`to_inputs` turns cached arrays
into the ``Inputs`` a detector reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxood import detectors, parallel, scoring
from jaxood.types import Detector, Features, Inputs, Model


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
          hparams: the point's :class:`~jaxood.types.HParamPoint` (or a dict, resolved
            here once); only the score hyperparameters are used.
        """
        point = self.det.point(hparams)
        n = len(arrays["logits"])
        out = np.empty(n, np.float32)
        if _host_stats(stats):
            # Statistics deliberately kept on the host (e.g. a KNN bank too big for device
            # memory): call the detector eagerly so it can stream them itself.
            for start in range(0, n, self.chunk):
                part = {k: np.asarray(v[start : start + self.chunk]) for k, v in arrays.items()}
                s = self.det.score(self.model, variables, stats, to_inputs(part), **point.score)
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
            s = self.score_inputs(variables, stats, to_inputs(part), point)
            out[start:stop] = s[mask]
        return out

    def score_inputs(self, variables, stats, inputs: Inputs, hparams) -> np.ndarray:
        """Scores one ready ``Inputs`` (no chunking; for stream detectors and padded chunks)."""
        detectors.check_stats(self.det, stats, inputs)
        point = self.det.point(hparams)
        program = scoring.array_program(self.det, self.model, point.score_static)
        return np.asarray(program(variables, stats, inputs, point.traced))


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
