"""NAP: Neural Activation Prior (Wan et al., arXiv 2402.18162), and its combinations.

Source: the authors' LaTeX (``sec/nap.tex``, ``sec/ood.tex``, ``sec/exp.tex``, Appendix
Algorithm 1 and Table "Optimal weight parameter w"), summarised in
``spec-methods-training.md`` §2. There is no public official code.

* CNN score on the post-ReLU map before global pooling ``A [B, H, W, C]`` (NHWC)::

      S_NAP = mean_c ( max_hw A / (mean_hw A + eps) )^2,  eps = 1.0

* Transformer score on the last block's CLS-query attention row (averaged over heads by the
  model; all ``l + 1`` entries including CLS->CLS): ``S_NAP^Former = max_t a_t``. Head
  averaging and the CLS entry are our choices (the paper does not say).
* Combinations (weighted geometric mean) ``S = S_base^w * S_NAP^(1 - w)`` with
  ``S_base = logsumexp(logits)`` (NAP-E), of ASH-S-shaped logits (NAP-A) or of
  ReAct-clipped logits (NAP-R).

Non-positive base scores: a fractional power of a negative number is NaN and the paper does
not handle it. We clamp ``S_base`` (and ``S_NAP``) to ``floor`` (default ``1e-6``) before the
power, so the score is always finite; when run eagerly we log how many samples were clamped.
Such samples get the lowest possible base contribution, i.e. they look OOD, which is the
meaning of a very negative energy.

Scores are ``[B]`` floats, higher = more in-distribution.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxood import validate
from jaxood.detectors import _ops, register
from jaxood.detectors.shaping import ReactStats, ash_s, fit_react, react_logits
from jaxood.types import Detector, HParam, Inputs

logger = logging.getLogger(__name__)

#: Published w (Appendix table "Optimal weight parameter w"), per base and benchmark.
PUBLISHED_W = {
    "nap_e": {"cifar10": 0.4, "cifar100": 0.4, "imagenet": 0.6},
    "nap_a": {"cifar10": 0.5, "cifar100": 0.6, "imagenet": 0.8},
    "nap_r": {"cifar10": 0.4, "cifar100": 0.5, "imagenet": 0.8},
    "nap_d": {"cifar10": 0.5, "cifar100": 0.6, "imagenet": 0.6},
    "nap_m": {"cifar10": 0.5, "cifar100": 0.3, "imagenet": 0.3},
    "nap_k": {"cifar10": 0.8, "cifar100": 0.8, "imagenet": 0.6},
}
#: APS grid for w (covers every published value).
W_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
NAP_EPS = 1.0
BASE_FLOOR = 1e-6


def nap_score(feature_map: jax.Array, eps: Any = NAP_EPS) -> jax.Array:
    """``S_NAP``: ``[B, H, W, C] -> [B]`` (channel mean of squared max/(mean + eps))."""
    a = jnp.asarray(feature_map, jnp.float32)
    ratio = jnp.max(a, axis=(1, 2)) / (jnp.mean(a, axis=(1, 2)) + eps)
    return jnp.mean(ratio**2, axis=-1)


def nap_vit_score(attention: jax.Array) -> jax.Array:
    """``S_NAP^Former = max_t a_t`` of the CLS attention row: ``[B, T] -> [B]``."""
    return jnp.max(jnp.asarray(attention, jnp.float32), axis=-1)


def geometric_combine(base: jax.Array, nap: jax.Array, w: Any, floor: Any = BASE_FLOOR):
    """``max(base, floor)^w * max(nap, floor)^(1 - w)``, computed in log space. ``[B] -> [B]``.

    Logs (eagerly) how many base scores were below ``floor`` and got clamped.
    """
    if validate.is_concrete(base):
        n = int(np.sum(np.asarray(base) < float(floor)))
        if n:
            logger.warning(
                "NAP: clamped %d of %d non-positive base scores to %g", n, base.shape[0], floor
            )
    lb = jnp.log(jnp.maximum(base, floor))
    ln = jnp.log(jnp.maximum(nap, floor))
    return jnp.exp(w * lb + (1.0 - w) * ln)


# ---------------------------------------------------------------------- detector glue


def _map(inputs: Inputs) -> jax.Array:
    fm = inputs.features.feature_map
    if fm is None:
        raise ValueError(
            "NAP needs `features.feature_map` (the post-ReLU map before global pooling), but "
            "this model has none; use a CNN that exposes it, or `nap_vit` for transformers"
        )
    validate.check_array(fm, "features.feature_map", ndim=4)
    return fm


def _attention(inputs: Inputs) -> jax.Array:
    att = inputs.features.attention
    if att is None:
        raise ValueError(
            "nap_vit needs `features.attention` (last block's CLS attention row), but this "
            "model has none; use a ViT that exposes it, or `nap` for CNNs"
        )
    validate.check_array(att, "features.attention", ndim=2)
    return att


def _energy(logits: jax.Array) -> jax.Array:
    return jax.nn.logsumexp(logits, axis=-1)


def _score_nap(model, variables, stats, inputs, *, eps):
    """``S_NAP``, ``[B]``, higher = more ID."""
    validate.check_positive(eps, "eps")
    return nap_score(_map(inputs), eps)


def _score_nap_e(model, variables, stats, inputs, *, w, eps, floor):
    """``Energy^w * S_NAP^(1-w)``, ``[B]``, higher = more ID."""
    validate.check_fraction(w, "w")
    base = _energy(inputs.features.logits)
    return geometric_combine(base, nap_score(_map(inputs), eps), w, floor)


def _score_nap_a(model, variables, stats, inputs, *, w, ash_percentile, eps, floor):
    """``Energy(ASH-S logits)^w * S_NAP^(1-w)``, ``[B]``, higher = more ID."""
    validate.check_fraction(w, "w")
    validate.check_percentile(ash_percentile, "ash_percentile")
    shaped = ash_s(inputs.features.feature, ash_percentile)
    base = _energy(model.head(variables, shaped))
    return geometric_combine(base, nap_score(_map(inputs), eps), w, floor)


def _fit_nap_r(model, variables, data, *, react_percentile) -> ReactStats:
    """ReAct's fit (τ = ``react_percentile`` of the flattened ID-val features)."""
    return fit_react(model, variables, data, percentile=react_percentile)


def _score_nap_r(model, variables, stats, inputs, *, w, eps, floor):
    """``Energy(ReAct logits)^w * S_NAP^(1-w)``, ``[B]``, higher = more ID."""
    _ops.require_stats(stats, ReactStats, "nap_r")
    validate.check_fraction(w, "w")
    logits = react_logits(model, variables, inputs.features.feature, stats.threshold)
    return geometric_combine(_energy(logits), nap_score(_map(inputs), eps), w, floor)


def _score_nap_vit(model, variables, stats, inputs):
    """``max_t a_t``, ``[B]``, higher = more ID."""
    return nap_vit_score(_attention(inputs))


def _score_nap_vit_e(model, variables, stats, inputs, *, w, floor):
    """``Energy^w * max(attention)^(1-w)``, ``[B]``, higher = more ID."""
    validate.check_fraction(w, "w")
    base = _energy(inputs.features.logits)
    return geometric_combine(base, nap_vit_score(_attention(inputs)), w, floor)


_REF = "Wan et al. arXiv 2402.18162 (NAP), LaTeX sources; spec-methods-training.md §2."
_MAP = frozenset({"feature_map"})


def _w(default: float) -> HParam:
    return HParam(default, sweep=W_GRID, check=validate.check_fraction,
                  doc="weight of the base score in the geometric mean")


_EPS = HParam(NAP_EPS, check=validate.check_positive, doc="S_NAP denominator offset")
_FLOOR = HParam(BASE_FLOOR, check=validate.check_positive,
                doc="scores are clamped to >= floor before the fractional power")

register(
    Detector(
        name="nap",
        score=_score_nap,
        hparams={"eps": _EPS},
        needs=_MAP,
        reference=_REF + " S_NAP alone, eps = 1.0.",
    )
)
register(
    Detector(
        name="nap_e",
        score=_score_nap_e,
        hparams={"w": _w(PUBLISHED_W["nap_e"]["cifar10"]), "eps": _EPS, "floor": _FLOOR},
        needs=_MAP | {"logits"},
        reference=_REF + " Energy^w * S_NAP^(1-w); default w = CIFAR-10 value (nap.PUBLISHED_W).",
    )
)
register(
    Detector(
        name="nap_a",
        score=_score_nap_a,
        hparams={
            "w": _w(PUBLISHED_W["nap_a"]["cifar10"]),
            # Static: it fixes ASH-S's top-k size.
            "ash_percentile": HParam(90, static=True, check=validate.check_percentile,
                                     doc="ASH-S percentile of the base score"),
            "eps": _EPS,
            "floor": _FLOOR,
        },
        needs=_MAP | {"feature"},
        reference=_REF + " Energy of ASH-S logits (percentile unstated; 90 as ASH's CIFAR "
        "config) ^w * S_NAP^(1-w).",
    )
)
register(
    Detector(
        name="nap_r",
        score=_score_nap_r,
        fit=_fit_nap_r,
        fit_splits=("val",),
        hparams={
            "w": _w(PUBLISHED_W["nap_r"]["cifar10"]),
            "react_percentile": HParam(90, role="fit", check=validate.check_percentile,
                                       doc="ReAct's τ = this percentile of ID-val features"),
            "eps": _EPS,
            "floor": _FLOOR,
        },
        stats_type=ReactStats,
        needs=_MAP | {"feature"},
        reference=_REF + " Energy of ReAct-clipped logits (threshold: 90th percentile of "
        "ID-val features, as OpenOOD ReAct) ^w * S_NAP^(1-w).",
    )
)
register(
    Detector(
        name="nap_vit",
        score=_score_nap_vit,
        needs=frozenset({"attention"}),
        reference=_REF + " Transformer variant: max of the head-averaged CLS attention row.",
    )
)
register(
    Detector(
        name="nap_vit_e",
        score=_score_nap_vit_e,
        hparams={"w": _w(0.6), "floor": _FLOOR},
        needs=frozenset({"attention", "logits"}),
        reference=_REF + " Energy^w * max(attention)^(1-w); w for ViT is not published "
        "(0.6 = ImageNet NAP-E value, our choice).",
    )
)
