"""Detector registry and the generic helpers to run any detector.

A detector is a :class:`jaxood.types.Detector` record of plain functions. Writing a new one
is writing a ``score`` (and optionally a ``fit``) function and one ``register(...)`` call::

    import jax.numpy as jnp
    from jaxood import detectors

    def my_score(model, variables, stats, inputs, *, temperature):
        return jnp.max(inputs.features.logits / temperature, axis=-1)

    detectors.register(detectors.Detector(
        name="my_mls", score=my_score, defaults={"temperature": 1.0},
        sweep={"temperature": [1.0, 2.0]}, needs=frozenset({"logits"})))

Built-in detectors live in the submodules listed in ``_BUILTIN_MODULES`` and register
themselves on import; the registry imports them lazily on first use.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import jax

from jaxood.types import Detector, Features, Inputs, Model, Stats, Variables

__all__ = [
    "Detector",
    "register",
    "get",
    "names",
    "all_detectors",
    "prepare_inputs",
    "fit",
    "score",
    "sweep_grid",
]

# Modules whose import registers the built-in detectors.
_BUILTIN_MODULES = (
    "jaxood.detectors.logits",
    "jaxood.detectors.shaping",
    "jaxood.detectors.adascale",
    "jaxood.detectors.nap",
    "jaxood.detectors.knn",
    "jaxood.detectors.oodd",
    "jaxood.detectors.feature_space",
)

_REGISTRY: dict[str, Detector] = {}
_loaded = False


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    _loaded = True


def register(detector: Detector, *, overwrite: bool = False) -> Detector:
    """Adds ``detector`` to the registry under ``detector.name`` and returns it."""
    if not isinstance(detector, Detector):
        raise TypeError(f"register() takes a jaxood Detector, got {type(detector).__name__}")
    if detector.name in _REGISTRY and not overwrite:
        raise ValueError(
            f"a detector named {detector.name!r} is already registered; pass overwrite=True "
            "to replace it"
        )
    _REGISTRY[detector.name] = detector
    return detector


def get(name: str) -> Detector:
    """Returns the registered detector ``name``; the error lists the valid names."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown detector {name!r}; valid names: {', '.join(sorted(_REGISTRY))}"
        ) from None


def names() -> list[str]:
    """Sorted names of all registered detectors."""
    _load_builtins()
    return sorted(_REGISTRY)


def all_detectors() -> dict[str, Detector]:
    """A copy of the registry."""
    _load_builtins()
    return dict(_REGISTRY)


def prepare_inputs(
    detector: Detector,
    model: Model,
    variables: Variables,
    x: jax.Array,
    *,
    features: Features | None = None,
    **hparams: Any,
) -> Inputs:
    """Runs the network (and the detector's ``extract``) on ``x`` and packs an ``Inputs``.

    Args:
      detector: the detector that will consume the inputs.
      model, variables: the classifier.
      x: ``[B, H, W, C]`` normalised images.
      features: precomputed ``model.features(variables, x)``, if available.
      **hparams: hyperparameters; only the detector's ``extract_hparams`` are used here.
    """
    extract_kw, _, _ = detector.split_hparams(hparams)
    if features is None:
        features = model.features(variables, x)
    extras = {}
    if detector.extract is not None:
        extras = dict(detector.extract(model, variables, x, **extract_kw))
    keep_x = x if detector.needs_network else None
    return Inputs(features=features, x=keep_x, extras=extras)


def fit(
    detector: Detector,
    model: Model,
    variables: Variables,
    data: Mapping[str, Inputs],
    **hparams: Any,
) -> Stats:
    """Fits ``detector`` on the ID splits in ``data`` (keys from ``detector.fit_splits``)."""
    if detector.fit is None:
        return None
    missing = [s for s in detector.fit_splits if s not in data]
    if missing:
        raise ValueError(
            f"detector {detector.name!r} fits on ID split(s) {list(detector.fit_splits)}; "
            f"missing {missing} (got {sorted(data)})"
        )
    _, fit_kw, _ = detector.split_hparams(hparams)
    return detector.fit(model, variables, data, **fit_kw)


def score(
    detector: Detector,
    model: Model,
    variables: Variables,
    stats: Stats,
    inputs: Inputs,
    **hparams: Any,
) -> jax.Array:
    """``[B]`` scores (higher = more ID) of ``inputs`` with defaults filled in."""
    _, _, score_kw = detector.split_hparams(hparams)
    return detector.score(model, variables, stats, inputs, **score_kw)


def sweep_grid(detector: Detector) -> Iterator[dict[str, Any]]:
    """The APS grid in OpenOOD order: Cartesian product of ``detector.sweep`` lists in key
    order, each point completed with the defaults. Yields the defaults once when the
    detector has no sweep."""
    keys = list(detector.sweep)
    if not keys:
        yield dict(detector.defaults)
        return
    for values in itertools.product(*(detector.sweep[k] for k in keys)):
        yield {**detector.defaults, **dict(zip(keys, values))}
