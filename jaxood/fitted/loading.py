"""Loading a saved fitted detector: the files (:mod:`jaxood.fitted.io`) checked against the
registered detector and the model, rebuilt into a :class:`FittedDetector`."""

from __future__ import annotations

import os
import warnings
from typing import Any

from jaxood import detectors as registry
from jaxood.features.model import bind_model
from jaxood.fitted import io
from jaxood.fitted.detector import FittedDetector

#: ``batch_info`` of a detector saved before the choice of its batch size was recorded.
UNRECORDED = {"rule": "unrecorded"}


def load(directory: str, model: Any, *, batch_size: int | None = None) -> FittedDetector:
    """Loads a saved detector for ``model`` (dir, ``LoadedModel`` or ``(Model, variables)``).

    ``batch_size``: rows per compiled call; default the saved one (chosen at fit time).

    Raises:
      FileNotFoundError / ValueError: missing/corrupt files, an unregistered detector,
        another detector version, or a model other than the one it was fitted on.
    """
    manifest = io.read_manifest(directory)
    try:
        det = registry.get(manifest["detector"])
    except ValueError:
        raise ValueError(
            f"{directory}: detector {manifest['detector']!r} is not registered; import the "
            "module that registers it first (--import my_detectors.py on the command line)"
        ) from None
    if str(det.version) != str(manifest["detector_version"]):
        raise ValueError(
            f"{directory}: saved with {det.name!r} version {manifest['detector_version']}, "
            f"installed version is {det.version}; re-fit the detector"
        )
    loaded = bind_model(model)
    io.check_same_model(manifest["model"], loaded, repr(directory))
    if manifest.get("xla_flags", "") != os.environ.get("XLA_FLAGS", ""):
        warnings.warn(
            f"{directory} was saved under XLA_FLAGS={manifest.get('xla_flags')!r}, this process "
            f"runs {os.environ.get('XLA_FLAGS', '')!r}: scores of gradient-based detectors "
            "(AdaSCALE, ODIN) can differ slightly", stacklevel=2)
    arrays = io.restore_arrays(directory, manifest)
    layout = manifest["layout"]
    stats = None
    if det.stats_type is not None and manifest["stats_type"] is not None:
        stats = io.rebuild(det.stats_type, arrays.get("stats", {}), layout["stats"],
                         layout["stats_static"])
    threshold = dict(manifest["threshold"])
    fitted = FittedDetector(
        det, loaded, manifest["hparams"], stats,
        calibration=arrays["calibration"]["scores"],
        calibration_info=manifest["calibration"],
        threshold_value=threshold.pop("value"),
        threshold_info=threshold or None,
        batch_size=manifest["batch_size"] if batch_size is None else batch_size,
        batch_info=None if batch_size is not None else manifest.get("batch", UNRECORDED),
        model_dir=loaded.directory or manifest.get("model_dir"),
        adapted=manifest.get("adapted", {}),
    )
    if layout.get("state"):
        template = det.init_state(stats, fitted.feature_dim, **fitted.score_hparams)
        state_arrays = arrays.get("state", {})
        fitted.state = type(template)(**{k: state_arrays[k] for k in layout["state"]})
    return fitted
