"""The per-run store of splits, and the inputs of a detector's fit.

:class:`DataStore` holds one model opened on one benchmark: every split's per-sample arrays
(logits, features, feature maps, a detector's extras, network scores), extracted lazily
through :mod:`jaxood.features.extract` into the on-disk :mod:`jaxood.features.cache` and kept
in memory. The benchmark runner, the analyses and the multi-host path read it.

:func:`fit_inputs` builds the ``Inputs`` of one ID split for a detector's ``fit`` (cached or
freshly extracted arrays, labels, and the images: in memory up to :data:`FIT_IMAGES_MB`,
else the lazily batched source); the runner and ``jaxood.fit`` both use it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxood import scoring
from jaxood.distributed import Processes
from jaxood.features import extract
from jaxood.features.cache import FeatureCache
from jaxood.features.model import cache_identity, model_identity, variables_fingerprint
from jaxood.features.scorer import to_inputs
from jaxood.features.timing import StageTimes
from jaxood.fsutil import plain
from jaxood.types import Detector, Inputs, plain_value

#: ID splits up to this size (as float32) are given to ``fit`` as an image array
#: (``Inputs.x``); larger ones as the lazily batched source (``len`` + ``batch(start, stop)``),
#: which fits that use images (OODD's crops) read batch by batch with bounded memory.
FIT_IMAGES_MB = 64.0

#: A detector's ``fit_splits`` name -> the store's split key.
FIT_SPLITS = {"train": "id_train", "val": "id_val"}


def fit_inputs(
    det: Detector, arrays: Mapping[str, Any], source, *, images_mb: float | None = None
) -> Inputs:
    """The ``Inputs`` of one ID split for ``det.fit``.

    Args:
      det: the detector.
      arrays: ``{"logits", "feature", ..., extras}`` ``[N, ...]`` of the split.
      source: the split's data source (``len``, ``labels``, ``batch(start, stop)``).
      images_mb: images up to this size as float32 are decoded into ``Inputs.x`` (always
        for detectors that need the network); larger splits pass the source itself.
        ``None``: :data:`FIT_IMAGES_MB`.

    Returns:
      ``Inputs`` with ``extras["labels"]`` ``[N]`` when the source has class labels.
    """
    arrays = dict(arrays)
    labels = np.asarray(source.labels)
    if np.any(labels >= 0):
        arrays["labels"] = labels
    n = len(source)
    limit = FIT_IMAGES_MB if images_mb is None else images_mb
    x = source
    if det.needs_network or n * _sample_floats(source) * 4 <= limit * 1e6:
        x = source.batch(0, n)
    return to_inputs(arrays, x=x)


def _sample_floats(source) -> int:
    """Floats per preprocessed sample (one sample decoded; 0 for an empty source)."""
    return int(np.prod(source.batch(0, 1).shape[1:])) if len(source) else 0


def extract_id(det: Detector) -> str:
    """Identity of a detector's ``extract`` for cache keys: its qualified name, the detector's
    ``version`` and a hash of the function's source, so a fixed extract never reuses stale
    cached arrays (bump ``version`` when code it calls changes)."""
    return function_id(det, det.extract)


def function_id(det: Detector, fn) -> str:
    """``module.qualname@v<version>:<source hash>`` of one of a detector's functions."""
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):  # no source (builtins, REPL): the version alone identifies it
        source = ""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    name = f"{fn.__module__}.{getattr(fn, '__qualname__', det.name)}"
    return f"{name}@v{det.version}:{digest}"



class DataStore:
    """Lazily extracted, cached per-sample arrays of every dataset of one run.

    Keys are ``"id_train"``, ``"id_val"``, ``"id_test"``, ``"ood_val"``, ``"near/<name>"``,
    ``"far/<name>"``, ``"csid/<name>"``. ``timer`` gets the network passes' stages
    (``features/*``, ``extract/<detector>/*``, ``netscore/<detector>/*``).
    """

    def __init__(
        self, opened, loaded, cache: FeatureCache, *, batch_size, mesh, progress, map_splits=(),
        processes: Processes | None = None, timer: StageTimes | None = None,
    ):
        self.sources = opened.all_sources()
        self.model, self.variables = loaded.model, loaded.variables
        self.model_fp = cache_identity(model_identity(loaded))
        self.cache, self.batch_size, self.mesh, self.progress = cache, batch_size, mesh, progress
        self.map_splits = set(map_splits)  # splits whose feature maps some detector reads
        self._mem: dict[tuple, dict] = {}
        self._fingerprints: dict[str, str] = {}
        self.network_passes = 0  # how many datasets needed a network pass (cache misses)
        self.processes = processes or Processes()
        self.timer = timer or StageTimes()

    def _key(self, split: str, what: Mapping[str, Any]) -> dict:
        src = self.sources[split]
        if split not in self._fingerprints:  # hashing a large list/array once is enough
            self._fingerprints[split] = src.fingerprint()
        return {"model": self.model_fp, "data": self._fingerprints[split], "n": len(src), **what}

    def _run(self, split, fn, groups, desc, stage):
        if not all(e.complete for e, _ in groups):
            self.network_passes += 1
        return extract.extract(
            fn,
            self.variables,
            self.sources[split],
            groups,
            batch_size=self.batch_size,
            mesh=self.mesh,
            progress=self.progress,
            desc=desc,
            processes=self.processes,
            timer=self.timer,
            stage=stage,
        )

    def base(self, split: str, fields: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """``{"logits", "feature", *fields}`` of ``split`` (cached on disk and in memory)."""
        fields = ["logits", "feature", *fields]
        if split in self.map_splits and "feature_map" not in fields:
            fields.append("feature_map")
        out = {}
        todo = []
        for f in fields:
            if ("base", split, f) in self._mem:
                out[f] = self._mem[("base", split, f)]
            else:
                todo.append(f)
        if todo:
            entries = [
                (self.cache.entry(self._key(split, {"kind": "features", "field": f})), [f])
                for f in todo
            ]
            results = self._run(
                split, scoring.features_fn(self.model, tuple(todo)), entries, f"{split} features", "features"
            )
            for f, r in zip(todo, results):
                self._mem[("base", split, f)] = out[f] = r[f]
        return out

    def extras(
        self, det: Detector, split: str, extract_hp: Mapping[str, Any]
    ) -> dict[str, np.ndarray]:
        """The detector's ``extract`` outputs for ``split`` at ``extract_hp`` (cached)."""
        if det.extract is None:
            return {}
        hp = {k: plain_value(v) for k, v in sorted(extract_hp.items())}
        fn_id = extract_id(det)
        mem_key = ("extra", split, fn_id, tuple(hp.items()))
        if mem_key not in self._mem:
            entry = self.cache.entry(
                self._key(split, {"kind": "extract", "fn": fn_id, "hparams": hp})
            )
            fn = scoring.extract_fn(det, self.model, tuple(hp.items()))
            (self._mem[mem_key],) = self._run(
                split, fn, [(entry, None)], f"{split} {det.name} extract", f"extract/{det.name}"
            )
        return self._mem[mem_key]

    def network_scores(self, det: Detector, split: str, stats, hp) -> np.ndarray:
        """``[N]`` scores of a detector that needs the network (ODIN: a gradient pass per
        hyperparameter point), cached like features per (split, hyperparameters, stats).
        ``hp``: the point (:class:`~jaxood.types.HParamPoint`, or a dict resolved here). One
        compiled program per static setting: the traced hyperparameters are arguments."""
        point = det.point(hp)
        traced, static = point.traced, point.image_static
        what = {
            "kind": "netscore", "fn": function_id(det, det.score), "static": static,
            "traced": {k: v.tolist() for k, v in sorted(traced.items())},
            "stats": None if stats is None else variables_fingerprint(stats),
        }
        mem_key = ("netscore", split, json.dumps(plain(what), sort_keys=True))
        if mem_key not in self._mem:
            entry = self.cache.entry(self._key(split, what))
            (out,) = extract.extract(
                scoring.image_score_fn(det, self.model, static), (self.variables, stats, traced),
                self.sources[split], [(entry, None)],
                batch_size=self.batch_size, mesh=self.mesh, progress=self.progress,
                desc=f"{split} {det.name} score", processes=self.processes,
                timer=self.timer, stage=f"netscore/{det.name}",
            )
            self._mem[mem_key] = np.asarray(out["score"])
        return self._mem[mem_key]

    def labels(self, split: str) -> np.ndarray:
        return np.asarray(self.sources[split].labels)
