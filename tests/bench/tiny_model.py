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


class TinyNetNoMap(TinyNet):
    """Same network without a feature map (like a model exposing only pooled features)."""

    def __call__(self, x, train: bool = False) -> Features:
        out = super().__call__(x, train)
        return out._replace(feature_map=None)


if "bench_tiny_nomap" not in models.model_names():
    models.register_model("bench_tiny_nomap", TinyNetNoMap)


def toy_arrays(num_classes: int = 3, seed: int = 0, size: int = 8) -> dict:
    """Small uint8 RGB arrays: ID = class-coloured blobs, near = shifted colours, far = noise."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def id_images(n):
        y = np.arange(n) % num_classes
        base = np.zeros((n, size, size, 3))
        base[np.arange(n), :, :, y % 3] = 180.0
        x = base + rng.normal(0, 30, base.shape)
        return np.clip(x, 0, 255).astype(np.uint8), y

    def ood(n, kind):
        if kind == "near":  # ID-like blobs, dimmer and in two channels
            x = id_images(n)[0] * 0.7 + np.roll(id_images(n)[0], 1, axis=-1) * 0.5
        else:
            x = rng.uniform(0, 255, (n, size, size, 3))
        return np.clip(x, 0, 255).astype(np.uint8), np.full(n, -1)

    return {
        "train": id_images(60),
        "val": id_images(20),
        "test": id_images(37),
        # ID-like images labelled OOD: AUROCs near 50 that vary across APS grid points.
        "ood_val": (id_images(24)[0], np.full(24, -1)),
        "near": {"near_a": ood(23, "near"), "near_b": ood(17, "near")},
        "far": {"noise": ood(29, "far")},
    }


def register_toy_arrays(name: str = "toy-arrays", num_classes: int = 3):
    """Registers an array benchmark built from :func:`toy_arrays`."""
    from jaxood.data import benchmarks

    if name in benchmarks.names():
        return benchmarks.get(name)
    return benchmarks.register(
        benchmarks.Benchmark(
            name=name,
            num_classes=num_classes,
            id_train=None,
            id_val=None,
            id_test=None,
            ood_val=None,
            near=(benchmarks.SetRef("near_a", "", ""), benchmarks.SetRef("near_b", "", "")),
            far=(benchmarks.SetRef("noise", "", ""),),
            arrays=lambda root: toy_arrays(num_classes),
            description="toy arrays",
        )
    )
