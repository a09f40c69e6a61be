"""jaxood: post-hoc out-of-distribution detection for image classifiers in JAX/Flax.

Scores are one float per sample, **higher = more in-distribution**, everywhere.
"""

from jaxood import detectors, metrics
from jaxood.types import Detector, Features, Inputs, Model, PreprocessSpec

__version__ = "0.1.0"

__all__ = ["Detector", "Features", "Inputs", "Model", "PreprocessSpec", "detectors", "metrics"]
