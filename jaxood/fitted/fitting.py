"""``jaxood.fit``: model + ID data + hyperparameters -> a calibrated :class:`FittedDetector`.

The features the fit reads are extracted with the benchmark runner's programs and batching
(:func:`jaxood.features.extract.extract_arrays`) and handed to ``fit`` as the runner does
(:func:`jaxood.features.store.fit_inputs`), so a fit on the same data and settings gives the
same statistics as ``jaxood bench``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxood import detectors as registry
from jaxood import parallel, scoring, validate
from jaxood.data import inputs as inputs_lib
from jaxood.features import extract as ex
from jaxood.features.model import bind_model, input_shape, variables_fingerprint
from jaxood.features.store import fit_inputs
from jaxood.fitted import batching
from jaxood.fitted.detector import FittedDetector, model_feature_dim
from jaxood.models import LoadedModel
from jaxood.types import Detector, HParamPoint, Inputs


def read_hparams(det: Detector, hparams: Any, model: LoadedModel | None = None) -> dict:
    """Hyperparameters from a dict, an ``aps.json`` file or a bench results folder holding
    one. With several runs in ``aps.json``, the run of this model (by weights fingerprint)
    is used."""
    if hparams is None:
        return {}
    if isinstance(hparams, Mapping):
        return dict(hparams)
    if not isinstance(hparams, (str, os.PathLike)):
        raise ValueError(
            f"`hparams` must be a dict, an aps.json file or a bench results folder, got "
            f"{type(hparams).__name__}"
        )
    path = os.fspath(hparams)
    if os.path.isdir(path):
        path = os.path.join(path, "aps.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"hyperparameter file {path!r} does not exist")
    try:
        with open(path) as f:
            table = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    if det.name not in table:
        raise ValueError(
            f"{path} has no tuned hyperparameters for {det.name!r} (it has {sorted(table)}); "
            f"run `jaxood bench ... --detectors {det.name}` first"
        )
    runs = table[det.name]
    return dict(_pick_run(runs, model, path)["chosen"])


def _pick_run(runs: list, model: LoadedModel | None, path: str) -> dict:
    """The run of ``aps.json`` tuned on ``model``'s weights (checked even for one run: the
    values tuned on another model are not this model's)."""
    if not isinstance(runs, list) or not runs or not all(
            isinstance(r, Mapping) and isinstance(r.get("chosen"), Mapping) for r in runs):
        raise ValueError(f"{path} is not an aps.json written by `jaxood bench` (each detector "
                         "maps to a list of runs with 'chosen' hyperparameters)")
    if model is None:
        return runs[0]
    weights = variables_fingerprint(model.variables)
    match = [r for r in runs if (r.get("model_fingerprint") or {}).get("weights") == weights]
    if not match:
        tuned = sorted({str(r.get("model")) for r in runs})
        raise ValueError(
            f"{path} was tuned on other model(s) {tuned}, not on this model's weights "
            f"(sha256 {weights[:12]}…); run `jaxood bench` with this model, or pass the "
            "hyperparameters as a dict (--hparams) if you mean to reuse them"
        )
    return match[0]


def _extraction_fns(det, loaded, point: HParamPoint) -> dict:
    """``{progress label: per-batch function}`` the fit extracts with: the network's
    features, then the detector's ``extract`` (if any)."""
    fns = {"features": scoring.features_fn(loaded.model, tuple(ex.detector_fields(det)))}
    if det.extract is not None:
        fns[f"{det.name} extract"] = scoring.extract_fn(det, loaded.model,
                                                        tuple(sorted(point.extract.items())))
    return fns


def _extraction_batch(fns, loaded, memory_mb) -> int:
    """The largest batch every extraction function fits under ``memory_mb``, each measured
    as :func:`jaxood.fitted.batching.choose` does (on the jitted program extraction runs,
    so the probe compilations are its own)."""
    shape = input_shape(loaded)
    if shape is None:
        return batching.MAX_BATCH_SIZE
    mesh = parallel.data_mesh()
    variables = batching.structs(loaded.variables, parallel.replicated(mesh))

    def lowering(fn):
        step = scoring.sharded(fn, mesh)
        return lambda b: step.lower(variables, jax.ShapeDtypeStruct(
            (b, *shape), np.float32, sharding=parallel.batch_sharding(mesh)))

    return min(batching.choose(lowering(fn), mesh, memory_mb)[0] for fn in fns.values())


def _split_inputs(det, fns, loaded, source, batch_size, progress) -> Inputs:
    """Features (+ the detector's extras, labels, small image sets) of one ID split."""
    arrays = {}
    for desc, fn in fns.items():
        arrays.update(ex.extract_arrays(fn, loaded.variables, source, batch_size=batch_size,
                                        progress=progress, desc=desc))
    return fit_inputs(det, arrays, source)


def fit(
    detector: str | Detector,
    model: Any,
    id_data: Mapping[str, Any],
    hparams: Any = None,
    *,
    calibration: Any = None,
    tpr: float = 0.95,
    batch_size: int | None = None,
    memory_mb: float | None = None,
    data_dir: str | None = None,
    progress: bool = False,
) -> FittedDetector:
    """Fits ``detector`` on ID data, calibrates it and sets a threshold keeping ``tpr`` of ID.

    Args:
      detector: a registered name (``jaxood detectors``) or a ``Detector``.
      model: a saved-model directory (a ``jaxood train`` workdir resolves to its best
        model), a ``LoadedModel`` or a ``(Model, variables)`` pair.
      id_data: ``{"train": ..., "val": ...}``: the ID splits the detector fits on
        (``detector.fit_splits``) plus ``"val"``; each a folder, an image list, an ``.npz``,
        a list of paths, uint8 images, normalised float images or ``(images, labels)``
        (see :func:`jaxood.data.inputs.open_input`).
      hparams: ``None`` (defaults), a dict, or an ``aps.json`` / bench results folder.
        Defaults that do not fit the model's feature dimension D (a percent of D rounding
        to 0 elements on a narrow model) are adapted to D and recorded in
        ``fitted.adapted``; given values that cannot work are refused before any network
        pass.
      calibration: held-out ID data for the threshold. Default: ``id_data["val"]``; when the
        detector also fits on it (AdaSCALE, ReAct, ...), a seeded random 20 % (at least 20
        images) of it is held out for calibration and the fit uses the rest, so the
        ``confidence=`` guarantee holds (recorded in ``fitted.calibration_info``).
      tpr: the default threshold keeps this fraction of ID calibration inputs.
      batch_size: the largest number of rows per compiled call (extraction and scoring).
        ``None`` (default): the largest power of two up to 256 whose per-image memory, as
        XLA reports it for each compiled program, fits ``memory_mb`` per device
        (:mod:`jaxood.fitted.batching`; recorded in ``fitted.batch_info``).
      memory_mb: that per-device budget in MiB (default
        :data:`jaxood.fitted.batching.SCORE_MEMORY_MB`); only without ``batch_size``.

    Returns:
      A :class:`FittedDetector`.
    """
    if not isinstance(detector, (str, Detector)):
        raise ValueError(
            f"`detector` must be a registered name (see `jaxood detectors`) or a "
            f"jaxood.Detector, got {type(detector).__name__}"
        )
    det = registry.get(detector) if isinstance(detector, str) else detector
    validate.check_open_fraction(tpr, "tpr")
    if batch_size is None:
        batching.check_memory_mb(memory_mb)
    elif memory_mb is not None:
        raise ValueError("give `batch_size` or `memory_mb` (the budget that chooses it), not both")
    else:
        batching.given(batch_size)
    loaded = bind_model(model)
    given = {**registry.model_hparams(det, loaded.preprocess),
             **read_hparams(det, hparams, loaded)}
    hp, adapted = registry.adapt_to_dim(det, det.resolve(given), given, model_feature_dim(loaded))
    point = det.point(hp)
    _check_id_data(det, id_data, calibration)

    def source(data, name):
        return inputs_lib.open_input(
            data, loaded.preprocess, input_shape(loaded), data_dir=data_dir, name=name
        )

    sources = {s: source(id_data[s], f"id_data[{s!r}]") for s in det.fit_splits}
    held_out = _held_out_calibration(sources) if calibration is None else None
    fns = _extraction_fns(det, loaded, point)
    ex_batch = batch_size
    if sources and batch_size is None:  # no probe for a detector without a fit
        ex_batch = _extraction_batch(fns, loaded, memory_mb)
    data = {s: _split_inputs(det, fns, loaded, src, ex_batch, progress)
            for s, src in sources.items()}
    stats = registry.fit_at(det, loaded.model, loaded.variables, data, point)
    fitted = FittedDetector(det, loaded, point, stats, batch_size=batch_size,
                            model_dir=loaded.directory, adapted=adapted, memory_mb=memory_mb)
    if held_out is not None:
        src, info = held_out
        fitted.calibrate(src, name=src.name)
        fitted.calibration_info.update(info)
    elif calibration is None:
        fitted.calibrate(id_data["val"], data_dir=data_dir, used_by_fit="val" in det.fit_splits,
                         name="id_data['val']")
    else:
        fitted.calibrate(calibration, data_dir=data_dir)
    fitted.threshold(tpr)
    return fitted


def _held_out_calibration(sources: dict):
    """When the fit reads ID-val, split it: ``sources["val"]`` becomes the fit part and the
    held-out part is returned as ``(source, info)`` for calibration; ``None`` when the fit
    does not read ID-val or it is too small to split (then calibration reuses it, which
    ``threshold(confidence=...)`` warns about)."""
    if "val" not in sources:
        return None
    full = sources["val"]
    split = inputs_lib.holdout_split(len(full))
    if split is None:
        return None
    fit_rows, held = split
    sources["val"] = inputs_lib.SubsetSource(full, fit_rows, name="id_data['val'] (fit part)")
    src = inputs_lib.SubsetSource(full, held, name="id_data['val'] (held-out part)")
    return src, {"held_out_from": "id_data['val']", "fit_rows": len(fit_rows),
                 "split": "holdout_split(n, fraction=0.2, minimum=20, seed=0)"}


def _check_id_data(det: Detector, id_data, calibration) -> None:
    if not isinstance(id_data, Mapping):
        raise ValueError(
            f"`id_data` must map split names to data, e.g. {{'val': images}}, got "
            f"{type(id_data).__name__}"
        )
    needed = sorted(set(det.fit_splits) | ({"val"} if calibration is None else set()))
    missing = [s for s in needed if s not in id_data]
    if missing:
        raise ValueError(
            f"detector {det.name!r} needs ID data {needed} (fit on {list(det.fit_splits)}, "
            f"calibrate on 'val'); missing {missing}"
        )
    unknown = set(id_data) - {"train", "val"}
    if unknown:
        raise ValueError(f"`id_data` keys must be 'train' and/or 'val', got {sorted(unknown)}")
    unused = sorted(set(id_data) - set(det.fit_splits) - {"val"} - ({"val"} if calibration
                                                                     is not None else set()))
    if unused:
        warnings.warn(
            f"id_data {unused} not used: {det.name!r} fits on {list(det.fit_splits)} and "
            "calibrates on 'val'",
            UserWarning,
            stacklevel=3,
        )
