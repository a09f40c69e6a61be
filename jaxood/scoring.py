"""Compile-once scoring programs shared by the benchmark runner and fitted detectors.

As big_vision's ``get_eval_fn``: a jitted program is built once per (detector, model, static
hyperparameters) and cached (``functools.lru_cache`` on hashable arguments); ``jax.jit``
then caches one executable per input shape. Hyperparameters that are not declared static
are passed as traced arrays, so sweeping them (APS) re-uses one executable.

A detector that uses a traced hyperparameter in Python control flow or as a shape raises a
clear error naming it here: there is no silent fallback to all-static compilation.

Programs:

* :func:`array_program` scores arrays already extracted (the runner's feature cache):
  ``(variables, stats, inputs, traced) -> [B]``.
* :func:`image_program` runs the network, the detector's ``extract`` and its ``score`` in one
  XLA program: ``(variables, stats, x, traced) -> {"score": [B], "pred": [B],
  "max_softmax": [B]}``. It is what a fitted detector calls and exports.
* :func:`stream_program`: a stream detector's step on a batch.
* the extraction passes (:mod:`jaxood.features.extract`): :func:`sharded` jits a per-batch
  function built by :func:`features_fn` (features, or features and a detector's extract in
  one pass), :func:`extract_fn` or :func:`image_score_fn` (one
  function object per model / detector / static setting, so one compilation each; traced
  hyperparameters travel in the replicated arguments).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxood import detectors, parallel
from jaxood.types import Detector, Inputs, Model

_TRACER_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerArrayConversionError,
)
_CACHE_SIZE = 256


def split(det: Detector, hparams: Mapping[str, Any]):
    """``(traced, static)`` of the score hyperparameters, for :func:`array_program`.

    ``hparams``: an :class:`~jaxood.types.HParamPoint` of ``det`` (used as it is) or a dict
    (resolved and validated here). ``traced``: ``{name: array}`` of the non-static ones;
    ``static``: a sorted, hashable ``((name, value), ...)`` of the rest.
    """
    point = det.point(hparams)
    return point.traced, point.score_static


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
        if det.extract_features is not None:  # one clean forward (AdaSCALE's, inside its vjp)
            feats, extras = det.extract_features(model, variables, x, **extract_kw)
            extras = dict(extras)
        else:
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
    """``(traced, static)`` for :func:`image_program`: the traced score hyperparameters, and
    the static score plus every extract hyperparameter (extract ones always static: they fix
    what the network pass computes)."""
    point = det.point(hparams)
    return point.traced, point.image_static


# --------------------------------------------------------------------------- extraction passes


@functools.lru_cache(maxsize=_CACHE_SIZE)
def sharded(fn, mesh: jax.sharding.Mesh):
    """``jax.jit(fn)`` of a per-batch function ``(args, x [B, ...]) -> {name: [B, ...]}`` with
    ``args`` replicated and ``x`` and the outputs batch-sharded over ``mesh``. Cached on the
    function object: ``fn`` comes from one of the cached builders below (a closure built per
    call would be a new program per call)."""
    return jax.jit(
        fn,
        in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)),
        out_shardings=parallel.batch_sharding(mesh),
    )


@functools.lru_cache(maxsize=_CACHE_SIZE)
def features_fn(model: Model, fields: tuple[str, ...], det: Detector | None = None,
                extract_hparams: tuple = ()):
    """``(variables, x) -> {field: array}`` of the requested ``Features`` fields.

    With ``det`` (a detector with ``extract_features``) the same pass also returns
    ``det.extract``'s outputs at the sorted ``((name, value), ...)`` ``extract_hparams``, the
    fields taken from the clean forward that pass runs anyway: one program, one clean forward,
    each output bit-identical to :func:`extract_fn`'s and the plain features pass's."""

    def fn(variables, x):
        if det is None:
            feats, extras = model.features(variables, x), {}
        else:
            feats, extras = det.extract_features(model, variables, x, **dict(extract_hparams))
        out = {}
        for f in fields:
            value = getattr(feats, f)
            if value is None:
                raise ValueError(f"model {model.name!r} does not provide `{f}`")
            out[f] = value
        clash = set(out) & set(extras)
        if clash:
            raise ValueError(f"detector {det.name!r}: extract outputs {sorted(clash)} have the "
                             "names of Features fields; rename them")
        return {**out, **dict(extras)}

    return fn


@functools.lru_cache(maxsize=_CACHE_SIZE)
def extract_fn(det: Detector, model: Model, extract_hparams: tuple):
    """``(variables, x) -> dict`` of ``det.extract`` at the sorted ``((name, value), ...)``
    extract hyperparameters (static: they fix what is computed)."""
    kw = dict(extract_hparams)

    def fn(variables, x):
        return dict(det.extract(model, variables, x, **kw))

    return fn


@functools.lru_cache(maxsize=_CACHE_SIZE)
def image_score_fn(det: Detector, model: Model, static: tuple):
    """``((variables, stats, traced), x) -> {"score": [B]}``: :func:`image_program`'s score
    as a per-batch function for the extraction passes (network scores of ODIN-style
    detectors, cached per split and point). ``static`` as for :func:`image_program`; the
    traced hyperparameters are in the arguments, so a sweep compiles once per static
    setting."""
    body = _guard(det, image_body(det, model, static))

    def fn(args, x):
        variables, stats, traced = args
        return {"score": body(variables, stats, x, traced)["score"]}

    return fn


# --------------------------------------------------------------------------- model programs


@functools.lru_cache(maxsize=_CACHE_SIZE)
def model_program(fn, model: Model, static: tuple = ()):
    """``jax.jit`` of ``(*args) -> fn(model, *args, **dict(static))``: a pure function of a
    model whose other arguments (variables, arrays, fitted state, hyperparameters that may be
    traced) are traced. ``static``: the sorted, hashable ``((name, value), ...)`` keyword
    settings that fix shapes or control flow.

    One program per ``(fn, model, static)``, then one executable per input shape. ``fn`` must
    be a module-level function: a closure built per call is a new cache key, so a new
    compilation, per call. The analyses' model programs (AdaSCALE's grid cache, the stability
    passes) come from here."""
    return jax.jit(functools.partial(fn, model, **dict(static)))
