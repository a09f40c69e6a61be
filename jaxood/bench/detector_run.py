"""One detector on one run's :class:`~jaxood.features.store.DataStore`: its arrays, its fit
(memoised per fit setting), its scores (cached arrays, the network, or a stream) and APS over
its grid. The benchmark runner drives one per detector and run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxood import detectors as det_registry
from jaxood import metrics
from jaxood.bench import aps as aps_lib
from jaxood.features import extract as ex
from jaxood.features.scorer import Scorer, to_inputs
from jaxood.features.store import FIT_IMAGES_MB, FIT_SPLITS, DataStore, fit_inputs
from jaxood.types import Detector, HParamPoint

#: Seed of OpenOOD/OODD's stream permutation for streaming detectors.
STREAM_SEED = 100


class DetectorRun:
    """Fits, searches and scores one detector on one run's DataStore."""

    def __init__(
        self,
        det: Detector,
        store: DataStore,
        overrides: Mapping[str, Any] | None = None,
        fit_images_mb: float = FIT_IMAGES_MB,
    ):
        self.det, self.store = det, store
        self.fit_images_mb = fit_images_mb
        self.overrides = dict(overrides or {})
        self.scorer = Scorer(det, store.model, store.mesh)
        self.fields = ex.detector_fields(det)[2:]
        self._stats: dict[tuple, Any] = {}

    def arrays(self, split: str, point: HParamPoint) -> dict[str, np.ndarray]:
        """``{"logits", "feature", ...fields, ...extras}`` of ``split`` at ``point``.

        Every method takes a point of :meth:`grid` (or a dict, resolved once on entry)."""
        point = self.det.point(point)
        return {
            **self.store.base(split, self.fields),
            **self.store.extras(self.det, split, point.extract),
        }

    def fit(self, point: HParamPoint):
        """Fitted statistics at ``point``, memoised on its (extract, fit) hyperparameters."""
        if self.det.fit is None:
            return None
        point = self.det.point(point)
        if point.fit_key not in self._stats:
            data = {
                s: fit_inputs(self.det, self.arrays(FIT_SPLITS[s], point),
                              self.store.sources[FIT_SPLITS[s]], images_mb=self.fit_images_mb)
                for s in self.det.fit_splits
            }
            # Keep one fitted state at a time: APS visits fit settings in order and a
            # state can be large (e.g. a KNN bank).
            self._stats = {point.fit_key: det_registry.fit_at(
                self.det, self.store.model, self.store.variables, data, point)}
        return self._stats[point.fit_key]

    def score(self, split: str, point: HParamPoint) -> np.ndarray:
        """``[N]`` scores of a dataset (higher = more ID)."""
        point = self.det.point(point)
        stats = self.fit(point)
        if self.det.needs_network:
            return self.store.network_scores(self.det, split, stats, point)
        return self.scorer.score(self.store.variables, stats, self.arrays(split, point), point)

    def score_stream(
        self, id_split: str | Sequence[str], ood_split: str, point: HParamPoint
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stream protocol (OODD): permute ID ∪ OOD with seed 100, score the stream once.
        ``id_split`` may list several ID splits (full-spectrum: ID-test + covariate-shifted
        sets), concatenated in order before the permutation."""
        point = self.det.point(point)
        stats = self.fit(point)
        ids = [id_split] if isinstance(id_split, str) else list(id_split)
        parts = [self.arrays(k, point) for k in ids]
        a = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
        b = self.arrays(ood_split, point)
        n_id = len(a["logits"])
        perm = np.random.RandomState(STREAM_SEED).permutation(n_id + len(b["logits"]))
        joined = {k: np.concatenate([np.asarray(a[k]), np.asarray(b[k])])[perm] for k in a}
        s = self.scorer.score_inputs(self.store.variables, stats, to_inputs(joined), point)
        unperm = np.empty_like(s)
        unperm[perm] = s
        return unperm[:n_id], unperm[n_id:]

    def id_val_scores(self, point: HParamPoint) -> np.ndarray:
        """``[N]`` ID-val scores at ``point`` (a stream detector: the whole set as one fresh
        stream), e.g. to calibrate a threshold."""
        point = self.det.point(point)
        if self.det.stream:
            return self.scorer.score_inputs(self.store.variables, self.fit(point),
                                            to_inputs(self.arrays("id_val", point)), point)
        return self.score("id_val", point)

    def pair_scores(self, id_split: str, ood_split: str, point) -> tuple[np.ndarray, np.ndarray]:
        if self.det.stream:
            return self.score_stream(id_split, ood_split, point)
        return self.score(id_split, point), self.score(ood_split, point)

    def grid(self, use_aps: bool) -> list[HParamPoint]:
        """The hyperparameter points APS evaluates, each resolved and validated here once
        (one point: defaults + overrides when APS is off or the detector has no sweep);
        sweeps that do not fit the model's feature dimension are replaced by the detector's
        D-relative ones."""
        d = self.store.feature_dim
        if not use_aps or not self.det.sweep:
            adapted = det_registry.dim_adapted(self.det, d)
            return [self.det.point({**self.det.defaults, **{k: v[0] for k, v in adapted.items()},
                                    **self.overrides})]
        return [self.det.point({**p, **self.overrides})
                for p in det_registry.sweep_grid(self.det, d)]

    def search(self, use_aps: bool) -> aps_lib.APSResult:
        """APS over :meth:`grid` (first strictly greater AUROC wins)."""
        grid = self.grid(use_aps)

        def evaluate(point):
            s_id, s_ood = self.pair_scores("id_val", "ood_val", point)
            return metrics.auroc(s_id, s_ood)

        if len(grid) == 1:
            return aps_lib.APSResult(best=grid[0], best_auroc=float("nan"), table=[])
        return aps_lib.search(grid, evaluate)
