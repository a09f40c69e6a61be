"""Logit-based detectors: MSP, MLS, EBO (energy) and ODIN.

Semantics follow OpenOOD v1.5 (``openood/postprocessors/{base,maxlogit,ebo,odin}_postprocessor.py``;
spec §2.1-§2.4). Scores: ``[B]`` floats, higher = more in-distribution.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxood import validate
from jaxood.detectors import register
from jaxood.types import Detector, HParam, Inputs, Model

# ----------------------------------------------------------------------------- pure scores


def msp(logits: jax.Array) -> jax.Array:
    """Maximum softmax probability. ``[B, K] -> [B]`` in (0, 1]."""
    return jnp.max(jax.nn.softmax(logits, axis=-1), axis=-1)


def max_logit(logits: jax.Array) -> jax.Array:
    """Maximum logit (MLS). ``[B, K] -> [B]``."""
    return jnp.max(logits, axis=-1)


def energy(logits: jax.Array, temperature: float | jax.Array = 1.0) -> jax.Array:
    """Negative free energy ``T * logsumexp(logits / T)``. ``[B, K] -> [B]``."""
    return temperature * jax.nn.logsumexp(logits / temperature, axis=-1)


def odin_perturb(
    model: Model,
    variables,
    x: jax.Array,
    *,
    temperature: float | jax.Array,
    noise: float | jax.Array,
    std: Sequence[float],
) -> jax.Array:
    """ODIN's input pre-processing: ``x - noise * b / std`` with ``b = +1 where dL/dx >= 0``.

    ``L`` is the cross-entropy of ``logits / T`` against each sample's own prediction; the
    sum over the batch gives each sample its own gradient (BN in inference mode). Zero
    gradients count as +1 (``torch.ge(grad, 0)`` in OpenOOD).

    Args:
      x: ``[B, H, W, C]`` normalised inputs.
      std: per-channel normalisation std (length C) the gradient sign is divided by.

    Returns:
      ``[B, H, W, C]`` perturbed inputs.
    """

    def loss(x):
        logits = model.features(variables, x).logits
        pred = jax.lax.stop_gradient(jnp.argmax(logits, axis=-1))
        logp = jax.nn.log_softmax(logits / temperature, axis=-1)
        return -jnp.sum(jnp.take_along_axis(logp, pred[:, None], axis=-1))

    grad = jax.grad(loss)(x)
    sign = jnp.where(grad >= 0, 1.0, -1.0).astype(x.dtype)
    return x - noise * sign / jnp.asarray(std, x.dtype)


def odin(model, variables, x, *, temperature=1000.0, noise=0.0014, std=(0.5, 0.5, 0.5)):
    """ODIN score ``max softmax(logits(x_perturbed) / T)``. ``[B, H, W, C] -> [B]``."""
    x_tilde = odin_perturb(model, variables, x, temperature=temperature, noise=noise, std=std)
    return msp(model.features(variables, x_tilde).logits / temperature)


# ----------------------------------------------------------------------- detector records


def _logits(inputs: Inputs) -> jax.Array:
    logits = inputs.features.logits
    validate.check_array(logits, "features.logits", ndim=2)
    return logits


def _score_msp(model, variables, stats, inputs):
    return msp(_logits(inputs))


def _score_mls(model, variables, stats, inputs):
    return max_logit(_logits(inputs))


def _score_ebo(model, variables, stats, inputs, *, temperature):
    validate.check_positive(temperature, "temperature")
    return energy(_logits(inputs), temperature)


def _score_odin(model, variables, stats, inputs, *, temperature, noise, std):
    if inputs.x is None:
        raise ValueError("ODIN needs the input images (Inputs.x): it perturbs the input")
    validate.check_images(inputs.x, "inputs.x", input_shape=model.input_shape)
    if len(std) != inputs.x.shape[-1]:
        raise ValueError(
            f"ODIN `std` has {len(std)} value(s) but the images have {inputs.x.shape[-1]} "
            "channel(s): pass the model's per-channel normalisation std"
        )
    validate.check_positive(temperature, "temperature")
    validate.check_range(noise, "noise", 0.0, float("inf"))
    return odin(model, variables, inputs.x, temperature=temperature, noise=noise, std=std)


register(
    Detector(
        name="msp",
        score=_score_msp,
        needs=frozenset({"logits"}),
        reference="Hendrycks & Gimpel 2017; OpenOOD base_postprocessor.py",
    )
)
register(
    Detector(
        name="mls",
        score=_score_mls,
        needs=frozenset({"logits"}),
        reference="Hendrycks et al. 2022 (max logit); OpenOOD maxlogit_postprocessor.py",
    )
)
register(
    Detector(
        name="ebo",
        score=_score_ebo,
        hparams={"temperature": HParam(1.0, sweep=(1.0,), check=validate.check_positive)},
        needs=frozenset({"logits"}),
        reference="Liu et al. 2020 (energy); OpenOOD ebo_postprocessor.py, ebo.yml",
    )
)
register(
    Detector(
        name="odin",
        score=_score_odin,
        hparams={
            "temperature": HParam(
                1000.0, sweep=(1.0, 10.0, 100.0, 1000.0), check=validate.check_positive
            ),
            "noise": HParam(0.0014, sweep=(0.0014, 0.0028), check=validate.check_nonnegative),
            "std": HParam(
                (0.5, 0.5, 0.5), static=True, check=validate.check_positive, any_length=True,
                doc="the model's normalisation std (the runner and jaxood.fit pass it)",
            ),
        },
        needs=frozenset({"logits", "input"}),
        reference=(
            "Liang et al. 2018; OpenOOD odin_postprocessor.py, odin.yml. `std` is the dataset "
            "normalisation std (OpenOOD falls back to 0.5); the runner passes the model's."
        ),
    )
)
