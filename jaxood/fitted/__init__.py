"""Fitted detectors you can deploy: fit -> tune -> save -> load -> score -> threshold -> export.

::

    import jaxood
    det = jaxood.fit("adascale_a", "runs/fashion/best", {"val": "id_val/"},
                     hparams="runs/bench/fashion-openset/wrn16_4/aps.json")
    det.save("det/")
    det = jaxood.load_detector("det/", "runs/fashion/best")
    scores = det.score_images("new_images/")         # [N], higher = more in-distribution
    is_ood = det.predict(x_normalised)               # score < threshold (default: keep 95% ID)
    det.export("det.jaxexport")                      # runs with only jax installed
"""

from jaxood.fitted.detector import FittedDetector, check_model_input
from jaxood.fitted.fitting import bind_model, fit, read_hparams
from jaxood.fitted.io import load as load_detector
from jaxood.fitted.io import model_fingerprint

__all__ = [
    "FittedDetector",
    "bind_model",
    "check_model_input",
    "fit",
    "load_detector",
    "model_fingerprint",
    "read_hparams",
]
