"""OpenOOD's Automatic Parameter Search and a compile-once scorer for cached arrays.

APS (``openood/evaluation_api/evaluator.py::hyperparam_search``): for every point of the
detector's sweep grid (Cartesian product in key order), fit if needed, score ID-val and
OOD-val, compute AUROC; the **first strictly greater** AUROC wins (initial maximum 0).

:class:`Scorer` jits a detector's ``score`` once per (static hyperparameters, chunk shape):
the other hyperparameters are passed as traced arguments, so sweeping e.g. AdaSCALE's
percentiles re-uses one compiled function. Scoring runs in fixed-size padded chunks sharded
over the device mesh; padded rows are dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxood import parallel
from jaxood.types import Detector, Features, Inputs, Model

_TRACER_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerArrayConversionError,
)


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


def hashable(value: Any) -> Any:
    """Lists -> tuples (recursively) so a value can be a jit static argument / dict key."""
    if isinstance(value, (list, tuple)):
        return tuple(hashable(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _is_numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float, np.number)):
        return True
    if isinstance(value, (list, tuple)) and value:
        return all(
            isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in value
        )
    return False


class Scorer:
    """Scores arrays with one detector, compiled once per static-hyperparameter setting.

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
        self._all_static = False
        self._jit = jax.jit(self._score, static_argnames=("static",))
        self._jit_x = None

    def _score(self, variables, stats, inputs, dyn, static):
        return self.det.score(self.model, variables, stats, inputs, **dyn, **dict(static))

    def _split(self, hparams: Mapping[str, Any]):
        _, _, score_kw = self.det.split_hparams(hparams)
        dyn, static = {}, {}
        for k, v in score_kw.items():
            if self._all_static or k in self.det.static_hparams or not _is_numeric(v):
                static[k] = hashable(v)
            else:
                dyn[k] = jnp.asarray(v, jnp.float32 if _is_float(v) else jnp.int32)
        return dyn, tuple(sorted(static.items()))

    def score(
        self, variables, stats, arrays: Mapping[str, np.ndarray], hparams: Mapping[str, Any]
    ) -> np.ndarray:
        """``[N]`` scores of cached arrays (higher = more ID).

        Args:
          variables, stats: model weights and fitted detector statistics.
          arrays: ``{"logits", "feature", "feature_map"?, "attention"?, **extras}`` ``[N, ...]``.
          hparams: the full hyperparameter point.
        """
        n = len(arrays["logits"])
        out = np.empty(n, np.float32)
        sharding = parallel.batch_sharding(self.mesh)
        if _host_stats(stats):
            # Statistics deliberately kept on the host (e.g. a KNN bank too big for device
            # memory): call the detector eagerly so it can stream them itself.
            for start in range(0, n, self.chunk):
                part = {k: np.asarray(v[start : start + self.chunk]) for k, v in arrays.items()}
                _, _, kw = self.det.split_hparams(hparams)
                s = self.det.score(self.model, variables, stats, to_inputs(part), **kw)
                out[start : start + len(part["logits"])] = np.asarray(s)
            return out
        stats = jax.device_put(stats, parallel.replicated(self.mesh))
        variables = jax.device_put(variables, parallel.replicated(self.mesh))
        # One fixed padded chunk size for every dataset: one compilation per static setting.
        size = self.chunk
        for start in range(0, n, size):
            stop = min(n, start + size)
            part = {k: np.asarray(v[start:stop]) for k, v in arrays.items()}
            part, mask = parallel.pad_batch(part, size)
            part = jax.device_put(part, sharding)
            s = self._call(variables, stats, to_inputs(part), hparams)
            out[start:stop] = np.asarray(s)[mask]
        return out

    def _score_x(self, variables, stats, x, dyn, static):
        # Network detectors: features (+ the detector's extract) and score in one program.
        hp = {**dyn, **dict(static)}
        extract_kw = {k: hp.pop(k) for k in self.det.extract_hparams if k in hp}
        feats = self.model.features(variables, x)
        extras = {}
        if self.det.extract is not None:
            extras = dict(self.det.extract(self.model, variables, x, **extract_kw))
        inputs = Inputs(features=feats, x=x, extras=extras)
        return self.det.score(self.model, variables, stats, inputs, **hp)

    def score_images(self, variables, stats, x, hparams) -> np.ndarray:
        """``[B]`` scores of a (padded, sharded) image batch for detectors that need the
        network; one compiled program per static-hyperparameter setting."""
        extract_kw, _, score_kw = self.det.split_hparams(hparams)
        full = {**score_kw, **extract_kw}
        dyn, static = {}, {}
        for k, v in full.items():
            if (
                self._all_static
                or k in self.det.static_hparams
                or k in extract_kw
                or not _is_numeric(v)
            ):
                static[k] = hashable(v)
            else:
                dyn[k] = jnp.asarray(v, jnp.float32 if _is_float(v) else jnp.int32)
        static = tuple(sorted(static.items()))
        if self._jit_x is None:
            self._jit_x = jax.jit(self._score_x, static_argnames=("static",))
        try:
            return np.asarray(self._jit_x(variables, stats, x, dyn, static))
        except _TRACER_ERRORS:
            if self._all_static:
                raise
            self._all_static = True
            return self.score_images(variables, stats, x, hparams)

    def score_inputs(self, variables, stats, inputs: Inputs, hparams) -> np.ndarray:
        """Scores one ready ``Inputs`` (no chunking; for stream detectors and image batches)."""
        return np.asarray(self._call(variables, stats, inputs, hparams))

    def _call(self, variables, stats, inputs, hparams):
        dyn, static = self._split(hparams)
        try:
            return self._jit(variables, stats, inputs, dyn, static)
        except _TRACER_ERRORS:
            if self._all_static:
                raise
            # The detector uses a hyperparameter in Python control flow without declaring
            # it static: fall back to all-static (one compilation per grid point).
            self._all_static = True
            dyn, static = self._split(hparams)
            return self._jit(variables, stats, inputs, dyn, static)


#: NumPy leaves of fitted statistics above this size mean "keep on the host".
HOST_STATS_BYTES = 256 * 2**20


def _host_stats(stats: Any) -> bool:
    return any(
        isinstance(leaf, np.ndarray) and leaf.nbytes > HOST_STATS_BYTES
        for leaf in jax.tree.leaves(stats)
    )


def _is_float(v: Any) -> bool:
    if isinstance(v, (list, tuple)):
        return any(_is_float(x) for x in v)
    return isinstance(v, (float, np.floating))


FEATURE_FIELDS = ("logits", "feature", "feature_map", "attention")


def to_inputs(arrays: Mapping[str, Any], x=None) -> Inputs:
    """``{"logits", "feature", ..., extras...}`` -> ``Inputs`` (non-feature keys are extras)."""
    feats = Features(**{k: arrays.get(k) for k in FEATURE_FIELDS})
    extras = {k: v for k, v in arrays.items() if k not in FEATURE_FIELDS}
    return Inputs(features=feats, x=x, extras=extras)
