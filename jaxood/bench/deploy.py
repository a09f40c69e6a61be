"""Writing a run's tuned detector as a deployable fitted detector (``jaxood score`` loads it).
"""

from __future__ import annotations

from jaxood.bench.detector_run import DetectorRun
from jaxood.fitted import FittedDetector
from jaxood.types import HParamPoint


def save_fitted(dr: DetectorRun, loaded, point: HParamPoint, directory: str,
                tpr: float = 0.95) -> None:
    """Writes ``dr``'s detector at ``point`` as a :class:`FittedDetector` of the ``loaded``
    model to ``directory``, calibrated on the ID-val scores of that point (threshold at
    ``tpr`` of them)."""
    stats = dr.fit(point)
    calib = dr.id_val_scores(point)
    fitted = FittedDetector(
        dr.det, loaded, point, stats, calibration=calib,
        calibration_info={"n": len(calib), "used_by_fit": "val" in dr.det.fit_splits,
                          "source": "benchmark id_val"},
        batch_size=dr.store.batch_size, model_dir=loaded.directory,
    )
    fitted.threshold(tpr)
    fitted.save(directory, overwrite=True)
