"""A tiny Flax conv net following the jaxood module convention, for runner tests.

Registered as ``bench_tiny`` so it can be saved/loaded with ``jaxood.models``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxood import models
from jaxood.types import Features, PreprocessSpec


class TinyNet(nn.Module):
    """conv-ReLU-conv-ReLU, mean pool, Dense head; exposes the pre-pool feature map."""

    num_classes: int
    width: int = 16

    def setup(self):
        self.conv1 = nn.Conv(8, (3, 3))
        self.conv2 = nn.Conv(self.width, (3, 3))
        self.fc = nn.Dense(self.num_classes)

    def __call__(self, x, train: bool = False) -> Features:
        fmap = nn.relu(self.conv2(nn.relu(self.conv1(x))))
        feature = jnp.mean(fmap, axis=(1, 2))
        return Features(logits=self.fc(feature), feature=feature, feature_map=fmap)

    def head(self, feature):
        return self.fc(feature)


if "bench_tiny" not in models.model_names():
    models.register_model("bench_tiny", TinyNet)


def save_tiny(directory, num_classes: int, input_shape=(8, 8, 1), seed: int = 0, width: int = 16):
    """Randomly initialised TinyNet saved as a jaxood model directory."""
    module = TinyNet(num_classes=num_classes, width=width)
    variables = models.init_variables(module, jax.random.PRNGKey(seed), input_shape)
    spec = PreprocessSpec(
        None, None, "bilinear", (0.5,) * input_shape[-1], (0.25,) * input_shape[-1], input_shape[-1]
    )
    return models.save(
        directory,
        arch="bench_tiny",
        num_classes=num_classes,
        variables=variables,
        arch_kwargs={"width": width},
        input_shape=input_shape,
        preprocess=spec,
    )
