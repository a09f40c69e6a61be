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

from jaxood.features.model import bind_model
from jaxood.features.model import model_identity as model_fingerprint
from jaxood.fitted.detector import FittedDetector, check_model_input
from jaxood.fitted.fitting import fit, read_hparams
from jaxood.fitted.loading import load as load_detector

__all__ = [
    "FittedDetector",
    "bind_model",
    "check_model_input",
    "fit",
    "load_detector",
    "model_fingerprint",
    "read_hparams",
]
