"""jaxood: post-hoc out-of-distribution detection for image classifiers in JAX/Flax.

Scores are one float per sample, **higher = more in-distribution**, everywhere.
"""

import os as _os

# jaxlib 0.10's CPU backend can corrupt its heap ("free(): invalid pointer", seen here on
# ~1 in 3 runs) when YNNPACK fusions execute a jitted network whose weights are closed over
# as constants. Turning those fusions off costs nothing measurable for our workloads. The
# flag must be set before JAX initialises its backend; JAXOOD_KEEP_XLA_FLAGS=1 opts out.
if not _os.environ.get("JAXOOD_KEEP_XLA_FLAGS"):
    _flags = _os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" not in _flags:
        _os.environ["XLA_FLAGS"] = (_flags + " --xla_cpu_experimental_ynn_fusion_type=").strip()

from jaxood import detectors, metrics  # noqa: E402
from jaxood.types import Detector, Features, HParam, Inputs, Model, PreprocessSpec  # noqa: E402
from jaxood.version import __version__  # noqa: E402, F401  (re-exported: jaxood.__version__)

__all__ = [
    "Detector",
    "Features",
    "FittedDetector",
    "HParam",
    "Inputs",
    "Model",
    "PreprocessSpec",
    "detectors",
    "fit",
    "load_detector",
    "metrics",
]

_LAZY = {"fit", "load_detector", "FittedDetector"}


def __getattr__(name):
    # Deferred: the deployment API pulls orbax and the feature pipeline; `import jaxood`
    # (and every `import jaxood.<module>`, which runs this file first) stays light.
    if name in _LAZY:
        from jaxood import fitted

        return getattr(fitted, name)
    raise AttributeError(f"module 'jaxood' has no attribute {name!r}")
