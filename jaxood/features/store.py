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

import functools
import hashlib
import inspect
import json
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxood import parallel, scoring
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


def splits_read(det: Detector, splits) -> set[str]:
    """Of a run's ``splits`` (names), those ``det`` reads: all but ID-train, which only a fit
    on train reads."""
    out = set(splits)
    if "train" not in det.fit_splits:
        out.discard(FIT_SPLITS["train"])
    return out


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
    (``features/*``, ``extract/<detector>/*``, ``features+extract/<detector>/*`` for a pass
    that computes both, see :meth:`share_forward`, and ``netscore/<detector>/*``).
    """

    def __init__(
        self, opened, loaded, cache: FeatureCache, *, batch_size, mesh, progress, map_splits=(),
        processes: Processes | None = None, timer: StageTimes | None = None,
        sample_shape: Sequence[int] | None = None,
    ):
        self.sources = opened.all_sources()
        self.sample_shape = sample_shape  # one preprocessed image's shape, if known
        self.model, self.variables = loaded.model, loaded.variables
        self.model_fp = cache_identity(model_identity(loaded))
        self.cache, self.batch_size, self.mesh, self.progress = cache, batch_size, mesh, progress
        self.map_splits = set(map_splits)  # splits whose feature maps some detector reads
        self._mem: dict[tuple, dict] = {}
        self._joint: dict[str, tuple[Detector, Mapping[str, Any]]] = {}  # see share_forward
        self._exact: dict[tuple, bool] = {}  # see _one_pass_is_exact
        self._fingerprints: dict[str, str] = {}
        self.network_passes = 0  # how many datasets needed a network pass (cache misses)
        self.processes = processes or Processes()
        self.timer = timer or StageTimes()

    @functools.cached_property
    def feature_dim(self) -> int:
        """D of the model's feature, by shape evaluation (no network pass)."""
        shape = self.sample_shape or self.sources["id_val"].batch(0, 1).shape[1:]
        x = jax.ShapeDtypeStruct((1, *shape), np.float32)
        return int(jax.eval_shape(self.model.features, self.variables, x).feature.shape[-1])

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

    def share_forward(self, det: Detector, extract_hp: Mapping[str, Any],
                      splits: Sequence[str]) -> None:
        """When the features of one of ``splits`` are computed, compute ``det``'s extras at
        ``extract_hp`` in the same pass (``det.extract_features``: one decode and one clean
        forward per image instead of two), unless they are cached already. A detector
        without ``extract_features`` is ignored; a split keeps its first registration (other
        extract settings run their own pass, as before). The arrays and cache entries are
        the same as those of separate passes."""
        if det.extract_features is None:
            return
        for split in splits:
            self._joint.setdefault(split, (det, dict(extract_hp)))

    def _extra_entry(self, det: Detector, split: str, extract_hp: Mapping[str, Any]):
        """``(memory key, cache entry, plain sorted hyperparameters)`` of ``det``'s extras."""
        hp = {k: plain_value(v) for k, v in sorted(extract_hp.items())}
        fn_id = extract_id(det)
        entry = self.cache.entry(self._key(split, {"kind": "extract", "fn": fn_id, "hparams": hp}))
        return ("extra", split, fn_id, tuple(hp.items())), entry, hp

    def _joint_pass(self, split: str):
        """``(det, memory key, entry, hp)`` of the extras to compute with ``split``'s
        features, or ``None`` (none registered, or already in memory / in the cache)."""
        if split not in self._joint:
            return None
        det, extract_hp = self._joint[split]
        mem_key, entry, hp = self._extra_entry(det, split, extract_hp)
        if mem_key in self._mem or entry.complete:
            return None
        return det, mem_key, entry, hp

    def _one_pass_is_exact(self, split: str, det: Detector, hp: Mapping, fields) -> bool:
        """Whether the one-pass program gives this model's features pass's bits, checked
        once per setting on the first batch of ``split``, so a features cache entry holds the
        same bits whichever pass wrote it. They can differ in the last bit: XLA rewrites a
        plain forward's ``a / sqrt(v)`` as ``a * rsqrt(v)`` but, where the backward pass
        shares the reciprocal, as ``a * (1 / sqrt(v))``. jaxood's networks gave the same
        bits where checked; a model that does not gets separate passes, with a warning. Every process
        of a multi-host run is assumed to reach the same answer (as for every cached bit)."""
        key = (extract_id(det), tuple(hp.items()), tuple(fields))
        if key not in self._exact:
            with self.timer.stage(f"check/features+extract/{det.name}"):
                mesh = self.mesh or parallel.data_mesh()
                head = _Head(self.sources[split], extract.device_batch_size(self.batch_size, mesh))
                fns = (scoring.features_fn(self.model, tuple(fields)),
                       scoring.features_fn(self.model, tuple(fields), det, tuple(hp.items())))
                runs = [extract.extract_arrays(fn, self.variables, head,
                                               batch_size=self.batch_size, mesh=mesh)
                        for fn in fns]
            self._exact[key] = all(np.array_equal(runs[0][f], runs[1][f]) for f in fields)
            if not self._exact[key]:
                warnings.warn(
                    f"model {self.model.name!r}: the features from {det.name}'s extract pass "
                    "differ in the last bits from the features pass; running them as two "
                    "passes so the feature cache keeps one value per key", stacklevel=2)
        return self._exact[key]

    def base(self, split: str, fields: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """``{"logits", "feature", *fields}`` of ``split`` (cached on disk and in memory).
        Computing them also computes a detector's extras registered by
        :meth:`share_forward`."""
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
            results = self._features_pass(split, todo, entries)
            for f, r in zip(todo, results):
                self._mem[("base", split, f)] = out[f] = r[f]
        return out

    def _features_pass(self, split: str, todo: list[str], entries) -> list[dict]:
        """Computes the missing ``entries`` of ``split``'s ``todo`` fields, in one pass with
        the extras :meth:`share_forward` registered when those are missing too and the one
        pass gives the same bits (:meth:`_one_pass_is_exact`)."""
        joint = None if all(e.complete for e, _ in entries) else self._joint_pass(split)
        if joint is None or not self._one_pass_is_exact(split, joint[0], joint[3], todo):
            return self._run(split, scoring.features_fn(self.model, tuple(todo)), entries,
                             f"{split} features", "features")
        det, mem_key, entry, hp = joint
        fn = scoring.features_fn(self.model, tuple(todo), det, tuple(hp.items()))
        results = self._run(split, fn, [*entries, (entry, None)],
                            f"{split} features + {det.name} extract", f"features+extract/{det.name}")
        self._mem[mem_key] = results[-1]
        return results[:-1]

    def extras(
        self, det: Detector, split: str, extract_hp: Mapping[str, Any]
    ) -> dict[str, np.ndarray]:
        """The detector's ``extract`` outputs for ``split`` at ``extract_hp`` (cached)."""
        if det.extract is None:
            return {}
        mem_key, entry, hp = self._extra_entry(det, split, extract_hp)
        if mem_key not in self._mem:
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


class _Head:
    """The first ``n`` samples of a source (a :class:`~jaxood.features.extract.Source`)."""

    def __init__(self, source, n: int):
        self.source, self.n = source, min(n, len(source))
        self.labels = np.asarray(source.labels)[: self.n]

    def __len__(self) -> int:
        return self.n

    def batch(self, start: int, stop: int) -> np.ndarray:
        return self.source.batch(start, min(stop, self.n))
