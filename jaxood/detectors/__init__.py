"""Detector registry and the generic helpers to run any detector.

A detector is a :class:`jaxood.types.Detector` record of plain functions with one
hyperparameter table. Writing a new one is writing a ``score`` (and optionally a ``fit``)
function and one ``register(...)`` call::

    import jax.numpy as jnp
    from jaxood import detectors
    from jaxood.types import Detector, HParam

    def my_score(model, variables, stats, inputs, *, temperature):
        return jnp.max(inputs.features.logits / temperature, axis=-1)

    detectors.register(Detector(
        name="my_mls", score=my_score, needs=frozenset({"logits"}),
        hparams={"temperature": HParam(1.0, sweep=(1.0, 2.0))}))

Built-in detectors live in the submodules listed in ``_BUILTIN_MODULES`` and register
themselves on import; the registry imports them lazily on first use, together with the
plugins of the ``jaxood.detectors`` entry-point group. :func:`load_plugin` imports a user's
file or module (``--import`` on the command line). Tests register with
:func:`temporary_register` so nothing leaks into the global registry.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import itertools
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxood import validate
from jaxood.types import (
    Detector,
    Features,
    HParam,
    HParamPoint,
    Inputs,
    Model,
    PreprocessSpec,
    Stats,
    Variables,
)

__all__ = [
    "Detector",
    "HParam",
    "register",
    "temporary_register",
    "load_plugin",
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
#: Entry-point group through which installed packages add detectors.
ENTRY_POINT_GROUP = "jaxood.detectors"

_REGISTRY: dict[str, Detector] = {}
_ALIASES: dict[str, str] = {}
_loaded = False


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True  # set first: the modules below call register() while importing
    try:
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                ep.load()
            except Exception as e:  # say which plugin broke, not a bare traceback
                raise ImportError(
                    f"jaxood detector plugin {ep.name!r} ({ep.value}) failed to import: {e}"
                ) from e
    except BaseException:
        _loaded = False
        raise


def register(
    detector: Detector, *, aliases: Sequence[str] = (), overwrite: bool = False
) -> Detector:
    """Adds ``detector`` under ``detector.name`` (and ``aliases``) and returns it.

    An alias resolves to the same detector in :func:`get` but is not listed by
    :func:`names`, so a benchmark over all detectors runs it once.
    """
    if not isinstance(detector, Detector):
        raise TypeError(f"register() takes a jaxood Detector, got {type(detector).__name__}")
    for name in (detector.name, *aliases):
        if (name in _REGISTRY or name in _ALIASES) and not overwrite:
            raise ValueError(
                f"a detector named {name!r} is already registered; pass overwrite=True "
                "to replace it"
            )
    _REGISTRY[detector.name] = detector
    for alias in aliases:
        _ALIASES[alias] = detector.name
    return detector


def unregister(name: str) -> None:
    """Removes ``name`` (and the aliases pointing at it) from the registry."""
    _REGISTRY.pop(name, None)
    for alias in [a for a, target in _ALIASES.items() if target == name or a == name]:
        del _ALIASES[alias]


@contextlib.contextmanager
def temporary_register(*detectors: Detector) -> Iterator[tuple[Detector, ...]]:
    """Registers ``detectors`` for the duration of a ``with`` block (tests, notebooks).

    Replaced registrations are restored on exit, so nothing leaks into the global registry.
    """
    _load_builtins()
    saved = (dict(_REGISTRY), dict(_ALIASES))
    try:
        for d in detectors:
            register(d, overwrite=True)
        yield detectors
    finally:
        _REGISTRY.clear()
        _REGISTRY.update(saved[0])
        _ALIASES.clear()
        _ALIASES.update(saved[1])


def load_plugin(spec: str) -> None:
    """Imports a user's detectors: a ``.py`` file path or an importable module name.

    Raises:
      FileNotFoundError: the file does not exist.  ImportError: the module cannot be imported
        (the message names it).
    """
    _load_builtins()
    if spec.endswith(".py") or os.sep in spec:
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"--import {spec!r}: no such file")
        name = "jaxood_plugin_" + os.path.splitext(os.path.basename(spec))[0]
        module_spec = importlib.util.spec_from_file_location(name, spec)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[name]
            raise ImportError(f"--import {spec!r} failed: {type(e).__name__}: {e}") from e
        return
    try:
        importlib.import_module(spec)
    except ImportError as e:
        raise ImportError(f"--import {spec!r}: cannot import module ({e})") from e


def get(name: str) -> Detector:
    """Returns the registered detector ``name`` (or alias); the error lists the valid names."""
    _load_builtins()
    try:
        return _REGISTRY[_ALIASES.get(name, name)]
    except KeyError:
        hint = ""
        if isinstance(name, str) and "," in name:
            hint = " (several names? separate them with spaces, not commas)"
        elif isinstance(name, str) and name.lower() in _REGISTRY:
            hint = f" (names are lower case: {name.lower()!r})"
        raise ValueError(
            f"unknown detector {name!r}{hint}; valid names: {', '.join(sorted(_REGISTRY))}"
        ) from None


def names() -> list[str]:
    """Sorted names of all registered detectors (aliases not included)."""
    _load_builtins()
    return sorted(_REGISTRY)


def aliases() -> dict[str, str]:
    """``{alias: detector name}``."""
    _load_builtins()
    return dict(_ALIASES)


def all_detectors() -> dict[str, Detector]:
    """A copy of the registry (one entry per detector; aliases not included)."""
    _load_builtins()
    return dict(_REGISTRY)


def select(names: Sequence[str] | None, caps: set[str]) -> list[Detector]:
    """Resolves names (errors list valid ones) and checks the model supports their needs.

    With ``names=None`` every registered detector whose ``needs`` the model meets is used.
    """
    if names is None:
        return [d for d in all_detectors().values() if set(d.needs) <= caps]
    dets = [get(n) for n in names]  # ValueError listing valid names
    for d in dets:
        missing = set(d.needs) - caps
        if missing:
            raise ValueError(
                f"detector {d.name!r} needs {sorted(missing)}, which this model does not "
                f"provide (it provides {sorted(caps - {'input'})})"
            )
    return dets


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
      x: ``[B, H, W, C]`` normalised float images (float32/float64/float16/bfloat16; half
        precision is cast to float32). Checked against ``model.input_shape`` when the model
        knows it (the same checks as :class:`jaxood.FittedDetector`:
        :func:`jaxood.validate.images`).
      features: precomputed ``model.features(variables, x)``, if available.
      **hparams: hyperparameters; only the ``role="extract"`` ones are used here.

    Raises:
      ValueError: uint8 (raw) images, NCHW, another size or channel count than the model's,
        an empty batch, NaN/Inf values (a warning for values that look unnormalised).
    """
    x = validate.images(x, "x", input_shape=model.input_shape)
    extract_kw, _, _ = detector.split_hparams(hparams)
    if features is None:
        features = model.features(variables, x)
    elif not isinstance(features, Features) or np.shape(features.logits)[0] != x.shape[0]:
        got = (f"batch {np.shape(features.logits)[0]}" if isinstance(features, Features)
               else type(features).__name__)
        raise ValueError(f"`features` must be model.features(variables, x) for the same "
                         f"{x.shape[0]} images, got {got}")
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
    """Fits ``detector`` on the ID splits in ``data`` (keys from ``detector.fit_splits``).

    Returns an instance of ``detector.stats_type`` (``None`` for detectors without ``fit``).
    """
    return fit_at(detector, model, variables, data, detector.point(hparams))


def fit_at(
    detector: Detector, model: Model, variables: Variables, data: Mapping[str, Inputs],
    point: HParamPoint,
) -> Stats:
    """:func:`fit` at a point already resolved (:meth:`Detector.point`): the caller validated
    it once; its ``fit`` group is passed on unchanged."""
    if detector.fit is None:
        return None
    if not isinstance(data, Mapping) or not all(isinstance(v, Inputs) for v in data.values()):
        raise ValueError(
            f"`data` must map ID split names {list(detector.fit_splits)} to jaxood.Inputs "
            f"(e.g. {{'train': Inputs(features=...)}}), got {_describe(data)}"
        )
    missing = [s for s in detector.fit_splits if s not in data]
    if missing:
        raise ValueError(
            f"detector {detector.name!r} fits on ID split(s) {list(detector.fit_splits)}; "
            f"missing {missing} (got {sorted(data)})"
        )
    stats = detector.fit(model, variables, data, **point.fit)
    if detector.stats_type is not None and not isinstance(stats, detector.stats_type):
        raise TypeError(
            f"detector {detector.name!r}: fit returned {type(stats).__name__}, expected "
            f"{detector.stats_type.__name__}"
        )
    return stats


def check_stats(detector: Detector, stats: Stats, inputs: Inputs | None = None) -> None:
    """Raises a clear error when ``stats`` cannot be what ``detector.fit`` returns, or were
    fitted on features of another dimension than ``inputs`` (statistics that record their
    ``feature_dim``)."""
    if detector.fit is None:
        return
    if stats is None:
        raise ValueError(
            f"detector {detector.name!r} must be fitted first: call "
            f"jaxood.detectors.fit(...) (or jaxood.fit) and pass its result as `stats`"
        )
    if detector.stats_type is not None and not isinstance(stats, detector.stats_type):
        raise ValueError(
            f"`stats` for detector {detector.name!r} must be a {detector.stats_type.__name__} "
            f"(what its fit returns), got {type(stats).__name__}"
        )
    fitted_d = getattr(stats, "feature_dim", None)
    feature = None if inputs is None else inputs.features.feature
    if fitted_d is not None and feature is not None and np.shape(feature)[-1] != fitted_d:
        raise ValueError(
            f"detector {detector.name!r} was fitted on D = {fitted_d} features, got "
            f"D = {np.shape(feature)[-1]}: score with the model it was fitted with (or re-fit)"
        )


def score(
    detector: Detector,
    model: Model,
    variables: Variables,
    stats: Stats,
    inputs: Inputs,
    **hparams: Any,
) -> jax.Array:
    """``[B]`` scores (higher = more ID) of ``inputs`` at the ``role="score"`` hyperparameters
    ``hparams`` (defaults filled in).

    Raises:
      ValueError: not fitted, or an extract/fit hyperparameter given here: those are fixed
        when the inputs are prepared / the statistics fitted, so they cannot change at scoring.
    """
    if not isinstance(inputs, Inputs):
        raise ValueError(
            f"`inputs` must be a jaxood.Inputs (from prepare_inputs, or "
            f"Inputs(features=...)), got {type(inputs).__name__}"
        )
    check_stats(detector, stats, inputs)
    fixed = sorted(k for k in hparams if k in detector.hparams and k not in detector.names("score"))
    if fixed:
        roles = {k: detector.hparams[k].role for k in fixed}
        raise ValueError(
            f"detector {detector.name!r}: {roles} are not score hyperparameters; pass them to "
            "prepare_inputs (extract) or fit instead"
        )
    _, _, score_kw = detector.split_hparams(hparams)
    scores = detector.score(model, variables, stats, inputs, **score_kw)
    check_scores(detector, scores, inputs.batch_size)
    return scores


def check_scores(detector: Detector, scores: Any, batch: int) -> None:
    """A detector's ``score`` must return ``[B]`` (one float per input); works at trace
    time too (shapes are static), so compiled programs check it once."""
    shape = tuple(np.shape(scores))
    if shape != (batch,):
        raise ValueError(
            f"detector {detector.name!r}: score returned shape {shape} for a batch of {batch}; "
            f"it must return [B] = ({batch},), one score per input (higher = more ID)"
        )


def _describe(data: Any) -> str:
    if isinstance(data, Mapping):
        return "{" + ", ".join(f"{k!r}: {type(v).__name__}" for k, v in data.items()) + "}"
    return type(data).__name__


def dim_adapted(detector: Detector, feature_dim: int | None) -> dict[str, tuple]:
    """``{name: values}`` replacing published sweeps that do not fit feature dimension
    ``feature_dim`` (``detector.dim_grid``); ``{}`` when they fit or D is unknown."""
    if detector.dim_grid is None or feature_dim is None:
        return {}
    return {k: tuple(v) for k, v in detector.dim_grid(int(feature_dim)).items()}


def model_hparams(detector: Detector, spec: PreprocessSpec | None) -> dict[str, tuple]:
    """The hyperparameters that describe the model's input normalisation (ODIN's ``std``,
    ``mean``), taken from the preprocessing ``spec``; ``{}`` without a spec."""
    if spec is None:
        return {}
    return {n: tuple(getattr(spec, n)) for n in ("std", "mean") if n in detector.hparams}


def sweep_grid(detector: Detector, feature_dim: int | None = None) -> Iterator[dict[str, Any]]:
    """The APS grid in OpenOOD order: Cartesian product of ``detector.sweep`` lists in table
    order, each point completed with the defaults. Yields the defaults once when the
    detector has no sweep. With ``feature_dim``, sweeps that do not fit it are replaced by
    the detector's D-relative ones (:func:`dim_adapted`)."""
    adapted = dim_adapted(detector, feature_dim)
    sweep = {**detector.sweep, **adapted}
    defaults = {**detector.defaults, **{k: v[0] for k, v in adapted.items()}}
    keys = list(sweep)
    if not keys:
        yield defaults
        return
    for values in itertools.product(*(sweep[k] for k in keys)):
        yield {**defaults, **dict(zip(keys, values))}
