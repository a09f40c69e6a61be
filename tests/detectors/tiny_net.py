"""A tiny conv net defined twice, in JAX and in torch, with the same weights.

Used as the "small random network" for detector references: the torch twin is an
independent implementation of the forward pass, and autograd in torch gives the input
gradients the references need.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxood.types import Features, Model


def make_weights(seed: int = 0, channels: int = 3, width: int = 128, classes: int = 10):
    """Random weights: conv3x3 (HWIO) + BN stats + second conv + linear head."""
    rng = np.random.default_rng(seed)
    return {
        "conv1": rng.normal(0, 0.4, (3, 3, channels, 32)).astype(np.float32),
        "bn_scale": rng.uniform(0.5, 1.5, 32).astype(np.float32),
        "bn_bias": rng.normal(0, 0.2, 32).astype(np.float32),
        "bn_mean": rng.normal(0, 0.2, 32).astype(np.float32),
        "bn_var": rng.uniform(0.5, 2.0, 32).astype(np.float32),
        "conv2": rng.normal(0, 0.15, (3, 3, 32, width)).astype(np.float32),
        "fc_w": rng.normal(0, 0.3, (width, classes)).astype(np.float32),
        "fc_b": rng.normal(0, 0.5, classes).astype(np.float32),
    }


def jax_model(width: int = 128, classes: int = 10) -> Model:
    """``features(variables, x_nhwc)``: conv-BN-ReLU-conv-ReLU, mean pool, affine head."""

    def conv(x, w):
        return jax.lax.conv_general_dilated(
            x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=jax.lax.Precision.HIGHEST,
        )

    def head(v, feature):
        return jnp.dot(feature, v["fc_w"], precision=jax.lax.Precision.HIGHEST) + v["fc_b"]

    def features(v, x):
        h = conv(x, v["conv1"])
        h = (h - v["bn_mean"]) / jnp.sqrt(v["bn_var"] + 1e-5) * v["bn_scale"] + v["bn_bias"]
        h = jax.nn.relu(h)
        fmap = jax.nn.relu(conv(h, v["conv2"]))
        feature = jnp.mean(fmap, axis=(1, 2))
        return Features(logits=head(v, feature), feature=feature, feature_map=fmap)

    return Model(features=features, head=head, name="tiny", num_classes=classes,
                 feature_dim=width, has_feature_map=True)


def torch_net(weights):
    """The same network in torch (NCHW). Returns ``net(x) -> (logits, feature)``."""
    import torch

    w = {k: torch.tensor(v, dtype=torch.float64) for k, v in weights.items()}
    conv1 = w["conv1"].permute(3, 2, 0, 1)
    conv2 = w["conv2"].permute(3, 2, 0, 1)

    def net(x):
        h = torch.nn.functional.conv2d(x, conv1, padding=1)
        h = torch.nn.functional.batch_norm(
            h, w["bn_mean"], w["bn_var"], w["bn_scale"], w["bn_bias"], training=False, eps=1e-5
        )
        h = torch.relu(h)
        fmap = torch.relu(torch.nn.functional.conv2d(h, conv2, padding=1))
        feature = fmap.mean(dim=(2, 3))
        return feature @ w["fc_w"] + w["fc_b"], feature

    def fc(feature):
        return feature @ w["fc_w"] + w["fc_b"]

    return net, fc
