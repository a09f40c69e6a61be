"""Logit- and gradient-based detectors: MSP, MLS, EBO (energy), GEN, ODIN and GradNorm.

Semantics follow OpenOOD v1.5 (``openood/postprocessors/<name>_postprocessor.py``;
spec §2.1-§2.4 for MSP, MLS, EBO, ODIN). ODIN perturbs the input along the gradient of the
softmax; GradNorm is the norm of the last layer's gradient (in closed form). Scores: ``[B]``
floats, higher = more in-distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

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


def gen_score(logits: jax.Array, gamma: Any, m: int) -> jax.Array:
    """Generalized entropy: ``-sum_{top-M probs} p^gamma (1 - p)^gamma``.

    Source: Liu et al. 2023 (GEN); OpenOOD v1.5 ``gen_postprocessor.py`` (M largest softmax
    probabilities; ``M > K`` uses all K, as the torch slice does); ``gen.yml``:
    ``gamma: 0.1, M: 100``, ``gamma_list [0.01, 0.1, 0.5, 1, 2, 5, 10]``,
    ``M_list [10, 50, 100, 200, 500, 1000]``. ``[B, K] -> [B]``, higher = more ID.
    """
    # Numerics: with p_max close to 1, float32 ``1 - p_max`` (as OpenOOD computes it) keeps
    # few correct digits and ``(1 - p)^gamma`` with small gamma amplifies that. We use
    # ``1 - p_max = s / (1 + s)`` with ``s = sum_{j != max} exp(z_j - z_max)``, and
    # ``-expm1(log p)`` for the other classes (p <= 1/2 there, so it is well-conditioned).
    z = logits - jnp.max(logits, axis=-1, keepdims=True)
    is_max = jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=bool)
    s = jnp.sum(jnp.where(is_max, 0.0, jnp.exp(z)), axis=-1, keepdims=True)
    logp = z - jnp.log1p(s)
    one_minus = jnp.where(is_max, s / (1.0 + s), -jnp.expm1(logp))
    top, idx = jax.lax.top_k(logp, min(int(m), logits.shape[-1]))
    rest = jnp.take_along_axis(one_minus, idx, axis=-1)
    return -jnp.sum(jnp.exp(gamma * top) * rest**gamma, axis=-1)


def gradnorm_score(features: jax.Array, logits: jax.Array) -> jax.Array:
    """GradNorm: L1 norm of ``d/dW sum_k -log softmax_k(W f + b)`` for the last layer.

    Source: Huang et al. 2021; OpenOOD v1.5 ``gradnorm_postprocessor.py`` (targets = all
    ones of length ``num_classes``, gradient of the fc weight only, ``sum |grad|``);
    ``gradnorm.yml``: no hyperparameters, no fit. In closed form
    ``dL/dW_ij = (K p_i - 1) f_j``, so the score is ``sum_i |K p_i - 1| * sum_j |f_j|``.
    ``[B, D], [B, K] -> [B]``, higher = more ID.
    """
    p = jax.nn.softmax(logits, axis=-1)
    k = logits.shape[-1]
    return jnp.sum(jnp.abs(k * p - 1.0), axis=-1) * jnp.sum(jnp.abs(features), axis=-1)


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


def _score_gen(model, variables, stats, inputs, *, gamma, M):
    """Minus the generalized entropy of the top-M probabilities, ``[B]``, higher = more ID."""
    validate.check_positive(gamma, "gamma")
    if not isinstance(M, (int, np.integer)) or M < 1:
        raise ValueError(f"GEN `M` must be a positive int (static), got {M!r}")
    return gen_score(_logits(inputs), gamma, int(M))


def _score_gradnorm(model, variables, stats, inputs):
    """L1 norm of the fc-weight gradient, ``[B]``, higher = more ID."""
    feature = inputs.features.feature
    validate.check_array(feature, "features.feature", ndim=2)
    return gradnorm_score(feature, _logits(inputs))


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
register(
    Detector(
        name="gen",
        score=_score_gen,
        hparams={
            "gamma": HParam(0.1, sweep=(0.01, 0.1, 0.5, 1, 2, 5, 10),
                            check=validate.check_positive, doc="entropy exponent"),
            # Static: it fixes the top_k size.
            "M": HParam(100, sweep=(10, 50, 100, 200, 500, 1000), static=True,
                        check=validate.check_positive_int,
                        doc="number of largest probabilities (M > K uses all K)"),
        },
        needs=frozenset({"logits"}),
        reference="Liu et al. 2023; OpenOOD v1.5 openood/postprocessors/gen_postprocessor.py, "
        "gen.yml.",
    )
)
register(
    Detector(
        name="gradnorm",
        score=_score_gradnorm,
        needs=frozenset({"feature", "logits"}),
        reference="Huang et al. 2021; OpenOOD v1.5 openood/postprocessors/"
        "gradnorm_postprocessor.py, gradnorm.yml (closed form of the fc-weight gradient L1 "
        "norm).",
    )
)
