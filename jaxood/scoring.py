"""Compile-once scoring programs shared by the benchmark runner and fitted detectors.

As big_vision's ``get_eval_fn``: a jitted program is built once per (detector, model, static
hyperparameters) and cached (``functools.lru_cache`` on hashable arguments); ``jax.jit``
then caches one executable per input shape. Hyperparameters that are not declared static
are passed as traced arrays, so sweeping them (APS) re-uses one executable.

A detector that uses a traced hyperparameter in Python control flow or as a shape raises a
clear error naming it here: there is no silent fallback to all-static compilation.

Two programs:

* :func:`array_program` scores arrays already extracted (the runner's feature cache):
  ``(variables, stats, inputs, traced) -> [B]``.
* :func:`image_program` runs the network, the detector's ``extract`` and its ``score`` in one
  XLA program: ``(variables, stats, x, traced) -> {"score": [B], "pred": [B],
  "max_softmax": [B]}``. It is what a fitted detector calls and exports.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxood import detectors
from jaxood.types import Detector, Inputs, Model

_TRACER_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerArrayConversionError,
)
_CACHE_SIZE = 256


def split(det: Detector, hparams: Mapping[str, Any], roles=("score",)):
    """``(traced, static)`` for the hyperparameters of ``roles``.

    ``traced``: ``{name: array}`` (dtype: :func:`_traced_dtype`) of the non-static
    numeric ones; ``static``: a sorted, hashable ``((name, value), ...)`` of the rest.
    Extract hyperparameters are always static (they select cached arrays).
    """
    full = det.resolve(hparams)
    traced, static = {}, {}
    for name in (n for role in roles for n in det.names(role)):
        hp, value = det.hparams[name], full[name]
        if hp.static or hp.role == "extract":
            static[name] = value
        else:
            traced[name] = np.asarray(value, _traced_dtype(hp.default, value))
    return traced, tuple(sorted(static.items()))


def _traced_dtype(default, value):
    """float32 when the default is a float (so a sweep mixing 1 and 0.5 compiles once) or the
    value is not an integer (never truncated); int32 otherwise."""
    def floats(v):
        return [x for x in np.ravel(np.asarray(v, object)) if isinstance(x, float)]

    if floats(default) or any(x != int(x) for x in floats(value)):
        return np.float32
    return np.int32


def _explain(det: Detector, err: Exception, traced_names) -> ValueError:
    first = str(err).strip().splitlines()[0][:200]
    return ValueError(
        f"detector {det.name!r} used a traced hyperparameter as a Python value or a shape "
        f"({type(err).__name__}: {first}). Its traced hyperparameters are "
        f"{sorted(traced_names)}; declare the one that fixes shapes or control flow with "
        "HParam(..., static=True)"
    )


def _is_tracer_error(e: Exception) -> bool:
    # jax raises its own types for most misuses of traced values, plain IndexError /
    # TypeError for some (e.g. a traced slice bound); those mention the tracer.
    return isinstance(e, _TRACER_ERRORS) or (
        isinstance(e, (IndexError, TypeError)) and "Tracer" in str(e)
    )


def _guard(det: Detector, jitted):
    def call(*args):
        try:
            return jitted(*args)
        except (*_TRACER_ERRORS, IndexError, TypeError) as e:
            if not _is_tracer_error(e):
                raise
            raise _explain(det, e, args[-1]) from e

    return call


@functools.lru_cache(maxsize=_CACHE_SIZE)
def array_program(det: Detector, model: Model, static: tuple):
    """Jitted ``(variables, stats, inputs: Inputs, traced) -> [B]`` scores of cached arrays."""

    def program(variables, stats, inputs, traced):
        score = det.score(model, variables, stats, inputs, **traced, **dict(static))
        detectors.check_scores(det, score, inputs.batch_size)
        return score

    return _guard(det, jax.jit(program))


def image_body(det: Detector, model: Model, static: tuple):
    """The un-jitted body of :func:`image_program` (what :mod:`jaxood.fitted.export`
    serialises): ``(variables, stats, x, traced) -> {"score", "pred", "max_softmax"}``."""
    static_d = dict(static)
    extract_kw = {k: static_d.pop(k) for k in det.names("extract")}

    def body(variables, stats, x, traced):
        feats = model.features(variables, x)
        extras = {}
        if det.extract is not None:
            extras = dict(det.extract(model, variables, x, **extract_kw))
        keep_x = x if det.needs_network else None
        inputs = Inputs(features=feats, x=keep_x, extras=extras)
        score = det.score(model, variables, stats, inputs, **traced, **static_d)
        detectors.check_scores(det, score, x.shape[0])
        return {"score": score, **_class_outputs(feats.logits)}

    return body


@functools.lru_cache(maxsize=_CACHE_SIZE)
def image_program(det: Detector, model: Model, static: tuple):
    """Jitted ``(variables, stats, x [B, H, W, C], traced) -> {"score", "pred",
    "max_softmax"}`` (each ``[B]``): features, the detector's extract and score in one
    program. ``static`` holds the static score and extract hyperparameters."""
    return _guard(det, jax.jit(image_body(det, model, static)))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def stream_program(det: Detector, model: Model, static: tuple):
    """Stream detectors: jitted ``(variables, stats, state, x, valid [B], traced) ->
    ({"score", "pred", "max_softmax"}, state)``; rows with ``valid`` False (padding) never
    enter the state."""
    static_d = dict(static)

    def program(variables, stats, state, x, valid, traced):
        feats = model.features(variables, x)
        inputs = Inputs(features=feats, x=x if det.needs_network else None)
        score, state = det.step(model, variables, stats, state, inputs, valid, **traced,
                                **static_d)
        detectors.check_scores(det, score, x.shape[0])
        return {"score": score, **_class_outputs(feats.logits)}, state

    return _guard(det, jax.jit(program))


def _class_outputs(logits):
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    return {
        "pred": jnp.argmax(logits, axis=-1).astype(jnp.int32),
        "max_softmax": jnp.max(probs, axis=-1),
    }


def image_static(det: Detector, hparams: Mapping[str, Any]):
    """``(traced, static)`` for :func:`image_program` (extract + score hyperparameters)."""
    return split(det, hparams, roles=("extract", "score"))
