"""AdaSCALE-A and AdaSCALE-L (Regmi 2025), exactly as spec §1 (``spec-adascale-openood.md``).

Pipeline for a batch of normalised inputs ``x [B, H, W, C]`` with penultimate feature
``f = g(x) [B, D]`` and affine head ``h``:

1. **Attribution** (:func:`perturbed_features`): ``G = d logit_{ŷ}(x) / dx`` with ``ŷ`` the
   (fixed) prediction, one ``jax.vjp`` that reuses the clean forward pass; BN in inference
   mode. Perturb the ``m = int(C*H*W*o)`` elements with the smallest ``|G|`` (over all
   channels and pixels) by ``+eps * sign(G)`` (no clipping; ``sign(0) = 0``), and compute
   ``f~ = g(x~)``. Depends only on ``(o, eps)``, so it is the cacheable, expensive part.
2. **Statistic** (:func:`q_statistic`): with top-k index sets always taken on the clean raw
   ``f``: ``Q = sum_{top k1'} |f - f~|``, ``C_o = sum_{top k2'} ReLU(f~)``,
   ``Q' = lmbda * Q + C_o`` where ``k1' = int(D*k1/100)``, ``k2' = int(D*k2/100)``. This is the
   consistent assignment (Q over top-1%, C_o over top-5%) used both when fitting and when
   scoring - not the half-swapped version of the official repository's HEAD.
3. **eCDF** (:func:`fit_ecdf`): right-continuous ``F(t) = #{Q'_i <= t} / n`` on ``n`` ID-val
   samples (at most ``num_samples``).
4. **Percentile** (:func:`adaptive_percentile`): ``p = p_min + (1 - F(Q')) (p_max - p_min)``.
5. **Scaling** (:func:`scaling_factor`): ``a = ReLU(f)``, ``k_p = D - round_half_even(D*p/100)``,
   ``r = sum(a) / sum(top-k_p a)``.
6. **Scores**: AdaSCALE-A ``logsumexp(h(e^r f))`` (raw f scaled, bias not);
   AdaSCALE-L ``logsumexp(r^2 h(f))``. Higher = more in-distribution.

The paper's ablations are hyperparameters whose defaults keep the method: ``region``
(extract: which elements are perturbed, Table 9) and ``q_form`` (fit: the form of Q',
Table 6).

All functions are pure and jit-able; ``k1``/``k2`` (percent of D) and ``o`` are static
(they fix top-k sizes); percentiles and ``lmbda`` may be traced, so the APS grid over
``(p_min, p_max)`` re-uses one compiled function.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxood import validate
from jaxood.detectors import _ops, register
from jaxood.types import Detector, Features, HParam, Inputs, Model

#: OpenOOD v1.5 / AdaSCALE sweep: all 36 pairs p_min < p_max from this list.
PERCENTILE_VALUES = (60, 65, 70, 75, 80, 85, 90, 95, 99)
PERCENTILE_GRID = tuple(
    (a, b) for i, a in enumerate(PERCENTILE_VALUES) for b in PERCENTILE_VALUES[i + 1 :]
)
FEATURE_PERTURBED = "feature_perturbed"

#: Which input elements are perturbed (paper Table 9): the ``m`` with the lowest ``|grad|``
#: (the method's choice), the highest, ``m`` chosen at random per sample, or every element.
REGIONS = ("trivial", "significant", "random", "all")
#: Forms of the OOD-likelihood statistic (paper Table 6); the first is the method's Q'.
Q_FORMS = ("lambda_q+c_o", "q", "c_o", "max_k", "lambda_q+max_k")
#: Seed of the per-sample random region (``region="random"``).
RANDOM_REGION_SEED = 0
#: Precision of the attribution (the input gradient that picks the perturbed elements).
ATTRIBUTION_DTYPES = ("float32", "float64")


def _check_pair_arg(value, name: str) -> None:
    p_min, p_max = value
    validate.check_percentile(p_min, f"{name}[0] (p_min)")
    validate.check_percentile(p_max, f"{name}[1] (p_max)")
    if p_min > p_max:
        raise ValueError(f"`{name}` must be (p_min, p_max) with p_min <= p_max, got {value}")


def _check_choice(choices):
    def check(value, name: str) -> None:
        if value not in choices:
            raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}")

    return check


def _check_count(value, name: str) -> None:
    if value < 2:
        raise ValueError(f"`{name}` must be an integer >= 2, got {value}")


#: The hyperparameter table (dict order = APS order, as OpenOOD's adascale yml).
HPARAMS = {
    "percentile": HParam(
        (75, 85), sweep=PERCENTILE_GRID, check=_check_pair_arg,
        doc="(p_min, p_max): range of the adaptive percentile",
    ),
    "k1": HParam(1.0, sweep=(1.0,), role="fit", static=True, check=validate.check_percent,
                 doc="% of D (top clean activations) for the shift Q"),
    "k2": HParam(5.0, sweep=(5.0,), role="fit", static=True, check=validate.check_percent,
                 doc="% of D for the correction term C_o"),
    "lmbda": HParam(10.0, sweep=(10.0,), role="fit", check=validate.check_nonnegative,
                    doc="weight of Q in Q' = lmbda Q + C_o"),
    "o": HParam(0.05, sweep=(0.05,), role="extract", static=True, check=validate.check_fraction,
                doc="fraction of input elements (lowest |grad|) perturbed"),
    "eps": HParam(0.5, role="extract", static=True, check=validate.check_nonnegative,
                  doc="perturbation size in normalised units (official code: 0.5)"),
    "num_samples": HParam(5000, role="fit", static=True, check=_check_count,
                          doc="n_val: ID-val samples the eCDF is fitted on"),
    "region": HParam("trivial", role="extract", static=True, check=_check_choice(REGIONS),
                     doc="perturbed elements: trivial (lowest |grad|, the method), significant "
                         "(highest), random, all (paper Table 9)"),
    "attribution_dtype": HParam(
        "float32", role="extract", static=True, check=_check_choice(ATTRIBUTION_DTYPES),
        doc="precision of the input gradient that picks the perturbed elements: float64 "
            "(CPU; jax x64 scoped to the gradient) makes the choice reproducible across "
            "implementations, float32 is the paper's"),
    "q_form": HParam(Q_FORMS[0], role="fit", static=True, check=_check_choice(Q_FORMS),
                     doc="OOD-likelihood statistic: lambda_q+c_o (the method), q, c_o, max_k "
                         "(clean top-k2 sum), lambda_q+max_k (paper Table 6)"),
}
DEFAULTS = {k: hp.default for k, hp in HPARAMS.items()}


@struct.dataclass
class AdaScaleStats:
    """Fitted AdaSCALE state: the eCDF of Q' on ID-val and the settings of Q'.

    Attributes:
      sorted_q: ``[n]`` ascending Q' values of the ID-val samples (the eCDF).
      lmbda: scalar weight of the shift term Q in Q'.
      k1, k2: percentages of D (static: they fix top-k sizes) for Q and C_o.
      feature_dim: D of the features it was fitted on (``None``: unknown).
      q_form: the form of the statistic (one of ``Q_FORMS``; default the method's Q').
    """

    sorted_q: jax.Array
    lmbda: jax.Array
    k1: float = struct.field(pytree_node=False, default=1.0)
    k2: float = struct.field(pytree_node=False, default=5.0)
    feature_dim: int | None = struct.field(pytree_node=False, default=None)
    q_form: str = struct.field(pytree_node=False, default=Q_FORMS[0])

    def q(self, feature: jax.Array, feature_perturbed: jax.Array) -> jax.Array:
        """``[B]`` Q' of samples with the fitted settings."""
        return q_statistic(
            feature, feature_perturbed, k1=self.k1, k2=self.k2, lmbda=self.lmbda,
            form=self.q_form,
        )


# ------------------------------------------------------------------- 1. attribution


def num_perturbed(num_elements: int, o: float) -> int:
    """``m = int(C*H*W*o)`` (floor), the number of input elements perturbed per sample."""
    if not 0.0 <= float(o) <= 1.0:
        raise ValueError(f"`o` must be a fraction in [0, 1], got {o}")
    return int(num_elements * float(o))


def input_gradient(model: Model, variables, x: jax.Array, dtype: str = "float32"):
    """``(features, grad)``: the clean float32 ``Features`` and ``G = d logit_ŷ / dx``
    (``[B, H, W, C]``) with ``ŷ`` each sample's argmax.

    ``dtype="float64"``: ``G`` is computed in float64 from the same float32 parameters and
    inputs inside a ``jax.enable_x64`` scope and returned as float64 (use it inside such a
    scope, as :func:`perturbed_features` does); ``ŷ`` and the features are the float32 model's.
    This costs a float64 forward + backward besides the float32 forward.
    """
    if dtype not in ATTRIBUTION_DTYPES:
        raise ValueError(f"`attribution_dtype` must be one of {list(ATTRIBUTION_DTYPES)}, got "
                         f"{dtype!r}")

    def logits_fn(variables, x):
        feats = model.features(variables, x)
        return feats.logits, feats

    if dtype == "float32":
        logits, vjp_fn, feats = jax.vjp(lambda x: logits_fn(variables, x), x, has_aux=True)
        return feats, vjp_fn(_own_class(logits))[0]
    feats = model.features(variables, x)
    onehot = _own_class(feats.logits)  # outside the x64 scope: argmax there fails to trace

    def grad64(variables, x, onehot):
        wide = jax.tree_util.tree_map(
            lambda v: v.astype(jnp.float64) if jnp.issubdtype(v.dtype, jnp.floating) else v,
            variables)
        _, vjp_fn, _ = jax.vjp(lambda x: logits_fn(wide, x), x.astype(jnp.float64),
                               has_aux=True)
        return vjp_fn(onehot.astype(jnp.float64))[0]

    _check_float64_lowers(grad64, model, variables, x, onehot)
    with jax.enable_x64(True):
        return feats, grad64(variables, x, onehot)


def _check_float64_lowers(fn, model: Model, *args) -> None:
    """Fails early, with what to do, when ``fn`` traced in an x64 scope cannot be compiled
    outside it: the program that contains it is lowered after the scope has closed, and some
    gradients (``flax.linen.max_pool``'s, in JAX 0.10) then mix float64 and float32 constants;
    jaxood's own models pool with :func:`jaxood.models.pool.max_pool`, which lowers."""
    with jax.enable_x64(True):
        shapes = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), args)
        traced = jax.jit(fn).trace(*shapes)
    try:
        traced.lower()
    except TypeError as e:
        raise ValueError(
            f"attribution_dtype='float64' cannot be compiled for model {model.name!r} with "
            f"JAX {jax.__version__}: its input gradient does not lower under a scoped x64 "
            f"({e}); flax's nn.max_pool is the known cause: pool with "
            "jaxood.models.pool.max_pool, or use attribution_dtype='float32' for this model"
        ) from e


def _own_class(logits: jax.Array) -> jax.Array:
    """Cotangent = one-hot at each sample's own argmax: the gradient of sum_i logit_{i, ŷ_i},
    i.e. each sample's predicted-class raw logit w.r.t. its own input."""
    return jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=logits.dtype)


def perturbed_features(
    model: Model, variables, x: jax.Array, *, o: float = 0.05, eps: float = 0.5,
    region: str = "trivial", attribution_dtype: str = "float32",
) -> tuple[Features, jax.Array]:
    """Clean features and the feature of the attribution-guided perturbed input.

    Args:
      model, variables: the classifier (pure functions, BN in inference mode).
      x: ``[B, H, W, C]`` normalised inputs.
      o: fraction of the ``H*W*C`` elements perturbed; static.
      eps: perturbation size along ``sign(grad)`` (finite, >= 0).
      region: which ``m = int(H*W*C*o)`` elements (see ``REGIONS``): ``"trivial"`` the lowest
        ``|grad|`` (the method), ``"significant"`` the highest, ``"random"`` a per-sample
        random choice (seeded by the sample's own values, so independent of batching),
        ``"all"`` every element (``o`` ignored); static.
      attribution_dtype: precision of the gradient (see :func:`input_gradient`); static.

    Returns:
      ``(features, feature_perturbed)``: the clean ``Features`` and ``[B, D]`` ``f~``.
    """
    for name, value in (("o", o), ("eps", eps), ("region", region)):
        if validate.is_concrete(value):  # every path (functional API too) checks them
            HPARAMS[name].validate(value, name)
    x = validate.images(x, "x", input_shape=model.input_shape)
    feats, grad = input_gradient(model, variables, x, attribution_dtype)
    mask = selected_elements(grad, x, o=o, region=region)
    feature_perturbed = model.features(variables, perturbed_input(x, grad, mask, eps)).feature
    return feats, feature_perturbed


def perturbed_input(x: jax.Array, grad: jax.Array, mask: jax.Array, eps: float) -> jax.Array:
    """``x~ = x + eps * sign(G)`` on the ``mask [B, H*W*C]`` elements (no clipping,
    ``sign(0) = 0``), in ``x``'s dtype; the sign is taken at ``grad``'s precision."""
    with jax.enable_x64(grad.dtype == jnp.float64):
        delta = jnp.where(mask, eps * jnp.sign(grad.reshape(mask.shape)), 0.0)
        return x + delta.reshape(x.shape).astype(x.dtype)


def selected_elements(grad: jax.Array, x: jax.Array, *, o: float = 0.05,
                      region: str = "trivial") -> jax.Array:
    """``[B, H*W*C]`` bool: the ``m = int(H*W*C*o)`` input elements perturbed per sample
    (``region``, see :func:`perturbed_features`), ranked at ``grad``'s precision (a float64
    ``grad`` from :func:`input_gradient` is ranked inside an x64 scope)."""
    if region not in REGIONS:
        raise ValueError(f"`region` must be one of {list(REGIONS)}, got {region!r}")
    batch = x.shape[0]
    m = num_perturbed(int(np.prod(x.shape[1:])), o)
    if region == "all":
        return jnp.ones((batch, int(np.prod(x.shape[1:]))), bool)
    if m == 0:
        return jnp.zeros((batch, int(np.prod(x.shape[1:]))), bool)
    # The random region's priorities come from x alone: drawn outside the x64 scope.
    priority = _region_priority(region, None, x) if region == "random" else None
    with jax.enable_x64(grad.dtype == jnp.float64):
        flat_grad = grad.reshape(batch, -1)
        if priority is None:
            priority = _region_priority(region, flat_grad, x)
        # top_k of -|G| = the m smallest |G| (ties: lower index first).
        _, idx = jax.lax.top_k(priority, m)
        return jnp.zeros(flat_grad.shape, bool).at[jnp.arange(batch)[:, None], idx].set(True)


def _region_priority(region: str, flat_grad: jax.Array | None, x: jax.Array) -> jax.Array:
    """``[B, N]`` priorities whose top ``m`` per row are the perturbed elements (``flat_grad``
    is not used for ``random``)."""
    if region == "trivial":
        return -jnp.abs(flat_grad)
    if region == "significant":
        return jnp.abs(flat_grad)
    # random: uniform priorities from a key folded with a hash of the sample's own values,
    # so a sample gets the same region whatever batch (or padding) it is extracted in.
    bits = jax.lax.bitcast_convert_type(x.reshape(x.shape[0], -1).astype(jnp.float32),
                                        jnp.uint32)
    weights = jnp.arange(bits.shape[1], dtype=jnp.uint32) * jnp.uint32(2654435761) + 1
    seeds = jnp.sum(bits * weights, axis=-1, dtype=jnp.uint32)
    base = jax.random.PRNGKey(RANDOM_REGION_SEED)
    return jax.vmap(
        lambda s: jax.random.uniform(jax.random.fold_in(base, s), (bits.shape[1],))
    )(seeds)


def extract(
    model: Model, variables, x: jax.Array, *, o: float, eps: float, region: str = "trivial",
    attribution_dtype: str = "float32",
) -> dict:
    """Detector ``extract``: ``{"feature_perturbed": [B, D]}`` for cached scoring."""
    _, feature_perturbed = perturbed_features(model, variables, x, o=o, eps=eps, region=region,
                                              attribution_dtype=attribution_dtype)
    return {FEATURE_PERTURBED: feature_perturbed}


def extract_with_features(
    model: Model, variables, x: jax.Array, *, o: float, eps: float, region: str = "trivial",
    attribution_dtype: str = "float32",
) -> tuple[Features, dict]:
    """Detector ``extract_features``: ``(features, {"feature_perturbed": [B, D]})``, the clean
    ``Features`` of the forward :func:`extract` runs anyway (inside ``jax.vjp``) with its
    output, so the pipeline needs no separate features pass. :func:`extract` stays its own
    function: the feature-cache key hashes its source."""
    feats, feature_perturbed = perturbed_features(
        model, variables, x, o=o, eps=eps, region=region, attribution_dtype=attribution_dtype)
    return feats, {FEATURE_PERTURBED: feature_perturbed}


# ----------------------------------------------------------------------- 2. statistic


def min_percent(d: int) -> float:
    """``100 / d`` (nudged up past float rounding): the percent of ``d`` whose truncated count
    ``int(d*p/100)`` is exactly one element."""
    p = 100.0 / d
    while int(d * p / 100) < 1:
        p = float(np.nextafter(p, np.inf))
    return p


def dim_grid(d: int) -> dict[str, tuple]:
    """Narrow models: ``k1``/``k2`` whose published percent of D rounds down to 0 elements
    become :func:`min_percent` (one element); percentile pairs whose ``p_max`` keeps no
    activation are dropped (the default pair first when it fits). ``{}`` when all fit."""
    out = {k: (min_percent(d),) for k in ("k1", "k2") if int(d * HPARAMS[k].default / 100) < 1}
    pairs = tuple(p for p in PERCENTILE_GRID if _ops.keeps_some(d, p[1]))
    if pairs != PERCENTILE_GRID:
        default = HPARAMS["percentile"].default
        out["percentile"] = (default,) * (default in pairs) + tuple(p for p in pairs
                                                                     if p != default)
    return out


def dim_check(hparams, d: int) -> None:
    """Before any network pass: ``k1``/``k2`` must select >= 1 of D elements and ``p_max``
    keep >= 1 activation (errors name the value to use; unset ones adapt to D)."""
    topk_counts(d, hparams["k1"], hparams["k2"])
    _check_percentiles(*hparams["percentile"], d)


def topk_counts(d: int, k1: float, k2: float) -> tuple[int, int]:
    """``(int(d*k1/100), int(d*k2/100))`` with truncation, each required to be >= 1."""
    return validate.topk_count(d, k1, "k1"), validate.topk_count(d, k2, "k2")


def q_statistic(
    feature: jax.Array,
    feature_perturbed: jax.Array,
    *,
    k1: float = 1.0,
    k2: float = 5.0,
    lmbda: float | jax.Array = 10.0,
    form: str = Q_FORMS[0],
) -> jax.Array:
    """OOD-likelihood statistic ``Q' = lmbda * Q + C_o`` per sample.

    Args:
      feature: ``[B, D]`` clean raw penultimate feature ``f``.
      feature_perturbed: ``[B, D]`` ``f~``.
      k1, k2: percentages of D (static) for ``Q`` and ``C_o``.
      lmbda: weight of the shift term.
      form: static; ``"lambda_q+c_o"`` (the method), or a paper Table 6 ablation: ``"q"``
        (Q alone), ``"c_o"`` (C_o alone), ``"max_k"`` (the clean top-k2 sum
        ``sum_{top k2'} f``), ``"lambda_q+max_k"``.

    Returns:
      ``[B]`` Q' (higher = more OOD-like).
    """
    d = feature.shape[-1]
    c1, c2 = topk_counts(d, k1, k2)
    # One top_k of the larger size: its sorted prefix is the smaller top-k set.
    _, idx = jax.lax.top_k(feature, max(c1, c2))
    f_top = jnp.take_along_axis(feature, idx, axis=-1)
    ft_top = jnp.take_along_axis(feature_perturbed, idx, axis=-1)
    shift = jnp.sum(jnp.abs(f_top[:, :c1] - ft_top[:, :c1]), axis=-1)
    correction = jnp.sum(jax.nn.relu(ft_top[:, :c2]), axis=-1)
    if form == Q_FORMS[0]:
        return lmbda * shift + correction
    if form == "q":
        return shift
    if form == "c_o":
        return correction
    clean = jnp.sum(f_top[:, :c2], axis=-1)
    if form == "max_k":
        return clean
    if form == "lambda_q+max_k":
        return lmbda * shift + clean
    raise ValueError(f"`form` must be one of {list(Q_FORMS)}, got {form!r}")


# ---------------------------------------------------------------------------- 3. eCDF


def fit_ecdf(
    q_values: jax.Array,
    *,
    num_samples: int = 5000,
    seed: int = 0,
    k1: float = 1.0,
    k2: float = 5.0,
    lmbda: float = 10.0,
    feature_dim: int | None = None,
    q_form: str = Q_FORMS[0],
) -> AdaScaleStats:
    """Fits the right-continuous eCDF on ID-val ``Q'`` values (computed with ``k1, k2,
    lmbda``, which the stats record for scoring).

    When more than ``num_samples`` values are given, a random subset of that size is used
    (the official code draws it with an unseeded ``randperm``; here it is seeded).

    Raises:
      ValueError: fewer than 2 samples or non-finite values.
    """
    q = np.asarray(q_values, dtype=np.float32).reshape(-1)
    if q.size < 2:
        raise ValueError(
            f"the AdaSCALE eCDF needs at least 2 ID samples, got {q.size}; pass more ID-val data"
        )
    validate.check_array(q, "Q' values", ndim=1)
    if int(num_samples) < 2:
        raise ValueError(f"`num_samples` must be >= 2, got {num_samples}")
    if q.size > num_samples:
        q = q[np.random.default_rng(seed).permutation(q.size)[: int(num_samples)]]
    if np.all(q == q[0]):
        warnings.warn(
            f"AdaSCALE: all {q.size} ID-val Q' values are equal ({float(q[0]):.4g}), so the eCDF "
            "is one step and the adaptive percentile takes only p_min or p_max; fit on varied "
            "ID-val images (identical or constant inputs?)",
            UserWarning,
            stacklevel=3,
        )
    return AdaScaleStats(
        sorted_q=np.sort(q), lmbda=np.asarray(lmbda, np.float32), k1=float(k1), k2=float(k2),
        feature_dim=feature_dim, q_form=q_form,
    )


def ecdf(stats: AdaScaleStats, q: jax.Array) -> jax.Array:
    """``F(q) = #{Q'_i <= q} / n`` (``searchsorted(side='right')``). ``[B] -> [B]``."""
    n = stats.sorted_q.shape[0]
    return jnp.searchsorted(stats.sorted_q, q, side="right") / n


# ---------------------------------------------------------------------- 4. percentile


def adaptive_percentile(stats: AdaScaleStats, q: jax.Array, p_min, p_max) -> jax.Array:
    """``p = p_min + (1 - F(Q')) (p_max - p_min)``, in ``[p_min, p_max]``. ``[B] -> [B]``."""
    return p_min + (1.0 - ecdf(stats, q)) * (p_max - p_min)


def _check_percentiles(p_min, p_max, d: int) -> None:
    validate.check_percentile(p_min, "p_min")
    validate.check_percentile(p_max, "p_max")
    if validate.is_concrete(p_min) and validate.is_concrete(p_max):
        if float(p_min) > float(p_max):
            raise ValueError(f"`p_min` ({p_min}) must be <= `p_max` ({p_max})")
        _ops.k_from_percentile(d, float(p_max))  # raises if k rounds to 0


def _k_from_ecdf(d: int, n: int, count: jax.Array, p_min, p_max) -> jax.Array:
    """``k_p = d - round_half_even(d * p / 100)`` for ``p`` from eCDF count ``count``.

    For integer ``p_min``/``p_max`` (every published grid) the rounding is done in exact
    integer arithmetic: ``d*p/100 = N / (100 n)`` with ``N = d (p_min n + (n - c)(p_max -
    p_min))``. Float32 would flip the rounding at ~1.6e-5 of (d, n, c, pair) combinations; the
    official float64 code itself differs from the exact value at ~5e-7 of them.
    Non-integer percentiles fall back to float32.
    """
    count = count.astype(jnp.int32)
    p_min_f = jnp.asarray(p_min, jnp.float32)
    p_max_f = jnp.asarray(p_max, jnp.float32)
    p = p_min_f + (1.0 - count / n) * (p_max_f - p_min_f)
    k_float = d - jnp.round(d * p / 100.0)
    if d * 100 * n >= 2**31:  # the exact path would overflow int32
        return k_float.astype(jnp.int32)
    lo, hi = jnp.round(p_min_f), jnp.round(p_max_f)
    integral = (lo == p_min_f) & (hi == p_max_f)
    lo_i, hi_i = lo.astype(jnp.int32), hi.astype(jnp.int32)
    numer = d * (lo_i * n + (n - count) * (hi_i - lo_i))
    denom = 100 * n
    quot, rem = numer // denom, numer % denom
    round_up = (2 * rem > denom) | ((2 * rem == denom) & (quot % 2 == 1))
    k_exact = d - (quot + round_up.astype(jnp.int32))
    return jnp.where(integral, k_exact, k_float.astype(jnp.int32))


def percentile_to_k(d: int, p: jax.Array) -> jax.Array:
    """``k_p = d - round_half_even(d * p / 100)`` for arbitrary float ``p [B]`` (float32)."""
    return (d - jnp.round(d * jnp.asarray(p, jnp.float32) / 100.0)).astype(jnp.int32)


# ------------------------------------------------------------------------ 5. scaling


def scaling_factor(feature: jax.Array, k: jax.Array) -> jax.Array:
    """``r = sum(ReLU f) / sum(top-k ReLU f)`` per sample with per-sample counts ``k [B]``.

    ``k`` is clipped to ``[1, D]``. An all-zero activation vector (nothing to scale) gives
    ``r = 1`` instead of 0/0. Returns ``[B]``, ``r >= 1``.
    """
    a = jax.nn.relu(feature)
    k = jnp.clip(k, 1, feature.shape[-1])
    total = jnp.sum(a, axis=-1)
    top = _ops.topk_sum(a, k)
    return jnp.where(top > 0, total / jnp.where(top > 0, top, 1.0), 1.0)


# --------------------------------------------------------------------------- scores


def _ratio(stats, feature, feature_perturbed, percentile):
    pair = isinstance(percentile, (tuple, list)) and len(percentile) == 2
    if not pair and (not hasattr(percentile, "shape") or tuple(percentile.shape) != (2,)):
        raise ValueError(
            f"`percentile` must be a pair (p_min, p_max) like (75, 85), got {percentile!r}"
        )
    p_min, p_max = percentile
    d = feature.shape[-1]
    _check_percentiles(p_min, p_max, d)
    q = stats.q(feature, feature_perturbed)
    count = jnp.searchsorted(stats.sorted_q, q, side="right")
    k = _k_from_ecdf(d, stats.sorted_q.shape[0], count, p_min, p_max)
    return scaling_factor(feature, k)


def score_from_features(
    model: Model,
    variables,
    stats: AdaScaleStats,
    feature: jax.Array,
    feature_perturbed: jax.Array,
    *,
    variant: str = "a",
    percentile=(75, 85),
) -> jax.Array:
    """AdaSCALE scores from (cached) clean and perturbed features.

    Args:
      stats: the fitted :class:`AdaScaleStats` (eCDF and the k1/k2/lmbda of Q').
      feature, feature_perturbed: ``[B, D]`` raw ``f`` and ``f~``.
      variant: ``"a"`` (scale activations: ``h(e^r f)``) or ``"l"`` (scale logits:
        ``r^2 h(f)``).
      percentile: ``(p_min, p_max)``.

    Returns:
      ``[B]`` energy scores, higher = more in-distribution.
    """
    _check_pair(feature, feature_perturbed)
    _check_dim(stats, feature)
    r = _ratio(stats, feature, feature_perturbed, percentile)
    if variant == "a":
        logits = model.head(variables, jnp.exp(r)[:, None] * feature)
    elif variant == "l":
        logits = (r**2)[:, None] * model.head(variables, feature)
    else:
        raise ValueError(f"`variant` must be 'a' or 'l', got {variant!r}")
    return jax.nn.logsumexp(logits, axis=-1)


def fit(
    model: Model, variables, data: Mapping[str, Inputs], *, k1, k2, lmbda, num_samples,
    q_form=Q_FORMS[0],
):
    """Detector ``fit``: the eCDF of Q' on ID-val (``data["val"]``, with extras from
    :func:`extract`)."""
    val = data["val"]
    feature, feature_perturbed = _cached(val)
    _check_pair(feature, feature_perturbed)
    q = q_statistic(feature, feature_perturbed, k1=k1, k2=k2, lmbda=lmbda, form=q_form)
    return fit_ecdf(
        q, num_samples=num_samples, k1=k1, k2=k2, lmbda=lmbda, feature_dim=np.shape(feature)[-1],
        q_form=q_form,
    )


def _check_dim(stats: AdaScaleStats, feature) -> None:
    if not isinstance(stats, AdaScaleStats):
        raise ValueError(
            f"`stats` must be the AdaScaleStats returned by fit / fit_batch, got "
            f"{type(stats).__name__}; fit first"
        )
    d = np.shape(feature)[-1]
    if stats.feature_dim is not None and d != stats.feature_dim:
        raise ValueError(
            f"AdaSCALE was fitted on features of D = {stats.feature_dim}, got D = {d}: "
            "score with the model it was fitted with"
        )


def _cached(inputs: Inputs) -> tuple[jax.Array, jax.Array]:
    if FEATURE_PERTURBED not in inputs.extras:
        raise ValueError(
            "AdaSCALE needs the perturbed features in Inputs.extras['feature_perturbed']; "
            "build inputs with jaxood.detectors.prepare_inputs (it runs the detector's extract)"
        )
    return inputs.features.feature, inputs.extras[FEATURE_PERTURBED]


def _check_pair(feature, feature_perturbed) -> None:
    validate.check_array(feature, "feature", ndim=2)
    validate.check_array(feature_perturbed, "feature_perturbed", ndim=2)
    if np.shape(feature) != np.shape(feature_perturbed):
        raise ValueError(
            f"clean feature {np.shape(feature)} and perturbed feature "
            f"{np.shape(feature_perturbed)} shapes differ"
        )


def _make_score(variant: str):
    def score(model, variables, stats, inputs, *, percentile):
        feature, feature_perturbed = _cached(inputs)
        return score_from_features(
            model, variables, stats, feature, feature_perturbed,
            variant=variant, percentile=percentile,
        )

    score.__name__ = f"score_adascale_{variant}"
    score.__doc__ = f"AdaSCALE-{variant.upper()} detector score; see score_from_features."
    return score


def score_batch(
    model: Model,
    variables,
    stats: AdaScaleStats,
    x: jax.Array,
    *,
    variant: str = "a",
    percentile=(75, 85),
    o: float = 0.05,
    eps: float = 0.5,
    region: str = "trivial",
    attribution_dtype: str = "float32",
) -> jax.Array:
    """End-to-end AdaSCALE scores of images ``x [B, H, W, C] -> [B]`` (higher = more ID).

    One forward with a vjp to the input, one forward of the perturbed input, then the cheap
    post-feature arithmetic (k1, k2, lmbda, q_form come from ``stats``). ``o``, ``eps`` and
    ``region`` (and ``attribution_dtype``) must be the values ``stats`` was fitted with. jit
    with ``static_argnames=("variant", "o", "region", "attribution_dtype")``.
    For a deployable detector with its settings saved, use ``jaxood.fit``.
    """
    feats, feature_perturbed = perturbed_features(
        model, variables, x, o=o, eps=eps, region=region, attribution_dtype=attribution_dtype)
    return score_from_features(
        model, variables, stats, feats.feature, feature_perturbed,
        variant=variant, percentile=percentile,
    )


# detectors/ sits below scoring.py, so fit_batch's program is a module-level jit with the model
# static (models hash by identity): one compilation per model, static setting and batch shape,
# with the variables, images and lmbda traced.
@functools.partial(jax.jit, static_argnames=("model", "k1", "k2", "o", "eps", "region",
                                             "q_form", "attribution_dtype"))
def _images_q(model: Model, variables, x, lmbda, *, k1, k2, o, eps, region, q_form,
              attribution_dtype):
    """``[B]`` Q' of images ``x [B, H, W, C]`` (the per-batch program of :func:`fit_batch`)."""
    feats, feature_perturbed = perturbed_features(
        model, variables, x, o=o, eps=eps, region=region, attribution_dtype=attribution_dtype)
    return q_statistic(feats.feature, feature_perturbed, k1=k1, k2=k2, lmbda=lmbda, form=q_form)


def fit_batch(
    model: Model, variables, x_val: jax.Array, *, k1=1.0, k2=5.0, lmbda=10.0, o=0.05,
    eps=0.5, num_samples=5000, batch_size: int = 256, region="trivial", q_form=Q_FORMS[0],
    attribution_dtype="float32",
) -> AdaScaleStats:
    """Fits the eCDF directly from ID-val images ``x_val [N, H, W, C]`` (in batches)."""
    x_val = validate.images(x_val, "x_val", input_shape=model.input_shape)
    validate.check_positive_int(batch_size, "batch_size")
    for name, value in (("k1", k1), ("k2", k2), ("lmbda", lmbda), ("o", o), ("eps", eps),
                        ("num_samples", num_samples), ("region", region), ("q_form", q_form),
                        ("attribution_dtype", attribution_dtype)):
        HPARAMS[name].validate(value, name)

    static = dict(k1=float(k1), k2=float(k2), o=float(o), eps=float(eps), region=region,
                  q_form=q_form, attribution_dtype=attribution_dtype)
    qs = [np.asarray(_images_q(model, variables, x_val[i : i + batch_size], lmbda, **static))
          for i in range(0, len(x_val), batch_size)]
    d = jax.eval_shape(model.features, variables, x_val[:1]).feature.shape[-1]
    return fit_ecdf(
        np.concatenate(qs), num_samples=num_samples, k1=k1, k2=k2, lmbda=lmbda, feature_dim=d,
        q_form=q_form,
    )


# ---------------------------------------------------------- fast APS re-scoring (cached)


class GridCache(NamedTuple):
    """Per-sample quantities that do not depend on ``(p_min, p_max)``."""

    q: jax.Array  # [N] Q'
    relu_total: jax.Array  # [N] sum ReLU f
    relu_cumsum: jax.Array  # [N, D] cumulative sums of ReLU f sorted descending
    logits_nobias: jax.Array  # [N, K] W f (the head without its bias)
    logits: jax.Array  # [N, K] h(f)
    bias: jax.Array  # [K] h(0)


def grid_cache(model, variables, stats: AdaScaleStats, feature, feature_perturbed):
    """Precomputes everything the percentile sweep re-uses (the head must be affine)."""
    q = stats.q(feature, feature_perturbed)
    a = jax.nn.relu(feature)
    desc = -jnp.sort(-a, axis=-1)
    logits = model.head(variables, feature)
    bias = model.head(variables, jnp.zeros((1, feature.shape[-1]), feature.dtype))[0]
    return GridCache(q, jnp.sum(a, -1), jnp.cumsum(desc, -1), logits - bias, logits, bias)


def grid_scores(stats: AdaScaleStats, cache: GridCache, percentiles: jax.Array, *, variant="a"):
    """Scores for many ``(p_min, p_max)`` pairs at once: ``[P, 2] -> [P, N]``.

    Equal to :func:`score_from_features` for each pair (up to float rounding of the head
    decomposition ``h(e^r f) = e^r W f + b``), but without re-sorting or re-running the head.
    """
    d = cache.relu_cumsum.shape[-1]
    n = stats.sorted_q.shape[0]
    count = jnp.searchsorted(stats.sorted_q, cache.q, side="right")

    def one(pair):
        k = jnp.clip(_k_from_ecdf(d, n, count, pair[0], pair[1]), 1, d)
        top = jnp.take_along_axis(cache.relu_cumsum, (k - 1)[:, None], axis=-1)[:, 0]
        r = jnp.where(top > 0, cache.relu_total / jnp.where(top > 0, top, 1.0), 1.0)
        if variant == "a":
            logits = jnp.exp(r)[:, None] * cache.logits_nobias + cache.bias
        else:
            logits = (r**2)[:, None] * cache.logits
        return jax.nn.logsumexp(logits, axis=-1)

    return jax.vmap(one)(jnp.asarray(percentiles, jnp.float32))


# ------------------------------------------------------------------------ registry

for _variant in ("a", "l"):
    register(
        Detector(
            name=f"adascale_{_variant}",
            score=_make_score(_variant),
            fit=fit,
            fit_splits=("val",),
            extract=extract,
            extract_features=extract_with_features,
            hparams=HPARAMS,
            stats_type=AdaScaleStats,
            needs=frozenset({"logits", "feature"}),
            dim_grid=dim_grid,
            dim_check=dim_check,
            reference=(
                "Regmi 2025, AdaSCALE (arXiv 2503.08023); official code "
                "openood/postprocessors/adascale_postprocessor.py with the consistent k1/k2 "
                "assignment (spec-adascale-openood.md §1)"
            ),
        )
    )
