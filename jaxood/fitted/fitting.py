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

from jaxood import detectors as registry
from jaxood import scoring, validate
from jaxood.data import inputs as inputs_lib
from jaxood.features import extract as ex
from jaxood.features.model import bind_model, input_shape, variables_fingerprint
from jaxood.features.store import fit_inputs
from jaxood.fitted.detector import BATCH_SIZE, FittedDetector
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
    if len(runs) == 1 or model is None:
        return runs[0]
    weights = variables_fingerprint(model.variables)
    match = [r for r in runs if r.get("model_fingerprint", {}).get("weights") == weights]
    if not match:
        raise ValueError(
            f"{path} holds {len(runs)} runs and none was tuned on this model's weights; "
            "pass the chosen hyperparameters as a dict"
        )
    return match[0]


def _split_inputs(det, loaded, source, point: HParamPoint, batch_size, progress) -> Inputs:
    """Features (+ the detector's extras, labels, small image sets) of one ID split."""
    fn = scoring.features_fn(loaded.model, tuple(ex.detector_fields(det)))
    arrays = ex.extract_arrays(
        fn, loaded.variables, source, batch_size=batch_size, progress=progress, desc="features"
    )
    if det.extract is not None:
        efn = scoring.extract_fn(det, loaded.model, tuple(sorted(point.extract.items())))
        arrays.update(ex.extract_arrays(efn, loaded.variables, source, batch_size=batch_size,
                                        progress=progress, desc=f"{det.name} extract"))
    return fit_inputs(det, arrays, source)


def fit(
    detector: str | Detector,
    model: Any,
    id_data: Mapping[str, Any],
    hparams: Any = None,
    *,
    calibration: Any = None,
    tpr: float = 0.95,
    batch_size: int = BATCH_SIZE,
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
      calibration: held-out ID data for the threshold; default ``id_data["val"]``.
      tpr: the default threshold keeps this fraction of ID calibration inputs.
      batch_size: rows per compiled call.

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
    validate.check_positive_int(batch_size, "batch_size")
    loaded = bind_model(model)
    point = det.point({**registry.model_hparams(det, loaded.preprocess),
                       **read_hparams(det, hparams, loaded)})
    _check_id_data(det, id_data, calibration)

    def source(data, name):
        return inputs_lib.open_input(
            data, loaded.preprocess, input_shape(loaded), data_dir=data_dir, name=name
        )

    data = {
        s: _split_inputs(det, loaded, source(id_data[s], f"id_data[{s!r}]"), point, batch_size,
                         progress)
        for s in det.fit_splits
    }
    stats = registry.fit_at(det, loaded.model, loaded.variables, data, point)
    fitted = FittedDetector(det, loaded, point, stats, batch_size=batch_size,
                            model_dir=loaded.directory)
    if calibration is None:
        fitted.calibrate(id_data["val"], data_dir=data_dir, used_by_fit="val" in det.fit_splits,
                         name="id_data['val']")
    else:
        fitted.calibrate(calibration, data_dir=data_dir)
    fitted.threshold(tpr)
    return fitted


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
