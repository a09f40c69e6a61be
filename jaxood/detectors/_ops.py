"""Small primitives shared by the built-in detectors: top-k helpers (SCALE, LTS, ASH,
AdaSCALE) and the fitted-statistics type check."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def k_from_percentile(d: int, percentile: float) -> int:
    """OpenOOD's ``k = d - round(d * p / 100)`` with NumPy's round-half-to-even (Python float64).

    The number of largest activations SCALE/ASH/LTS keep at percentile ``p``. Raises when k
    would be 0 (nothing kept), which happens for p close to 100.
    """
    k = int(d - np.round(d * float(percentile) / 100.0))
    if k < 1:
        raise ValueError(
            f"percentile {percentile} keeps 0 of {d} activations (k = d - round(d*p/100) = {k}); "
            f"use a percentile below {100.0 * (d - 0.5) / d:.4g}"
        )
    return k


def keeps_some(d: int, percentile: float) -> bool:
    """True when :func:`k_from_percentile` keeps at least one of ``d`` activations."""
    return int(d - np.round(d * float(percentile) / 100.0)) >= 1


def percentile_dim_grid(name: str, default: float, sweep: tuple):
    """A ``Detector.dim_grid`` for a top-k percentile ``name``: the published ``sweep``
    values that keep at least one of D activations (the default first when it does), or
    the largest percentile keeping one when none does; ``{}`` when all fit."""

    def dim_grid(d: int) -> dict[str, tuple]:
        fits = tuple(v for v in sweep if keeps_some(d, v))
        if fits == tuple(sweep) and keeps_some(d, default):
            return {}
        if not fits:
            fits = (round(100.0 * (d - 1) / d, 6),) if d > 1 else ()
        first = (default,) if default in fits else ()
        return {name: first + tuple(v for v in fits if v != default)} if fits else {}

    return dim_grid


def percentile_dim_check(name: str):
    """A ``Detector.dim_check``: the percentile ``name`` must keep one of D activations."""

    def dim_check(hparams, d: int) -> None:
        p = float(hparams[name])
        if not keeps_some(d, p):
            raise ValueError(
                f"`{name}`={p:g} keeps 0 of the model's D = {d} feature activations "
                f"(k = D - round(D*p/100)); use {name} <= {100.0 * (d - 1) / max(d, 1):.4g}, "
                f"or leave it unset to get a value adapted to D"
            )

    return dim_check


def topk_sum(a: jax.Array, k) -> jax.Array:
    """Sum of the ``k`` largest entries of each row.

    Args:
      a: ``[B, D]``.
      k: a Python int (static; uses ``lax.top_k``) or an int array ``[B]`` of per-sample
        counts in ``[1, D]`` (sort + cumulative sum, so shapes stay static under jit).

    Returns:
      ``[B]`` sums.
    """
    if isinstance(k, (int, np.integer)):
        return jnp.sum(jax.lax.top_k(a, int(k))[0], axis=-1)
    desc = -jnp.sort(-a, axis=-1)
    csum = jnp.cumsum(desc, axis=-1)
    idx = jnp.clip(jnp.asarray(k, jnp.int32) - 1, 0, a.shape[-1] - 1)
    return jnp.take_along_axis(csum, idx[:, None], axis=-1)[:, 0]


def topk_mask(a: jax.Array, k: int) -> jax.Array:
    """Boolean ``[B, D]`` mask of the ``k`` largest entries per row (ties broken by index,
    like ``torch.topk``/``lax.top_k``)."""
    _, idx = jax.lax.top_k(a, int(k))
    return jnp.zeros(a.shape, bool).at[jnp.arange(a.shape[0])[:, None], idx].set(True)


def require_stats(stats: Any, stats_type: type, detector: str) -> None:
    """Raises a clear error unless ``stats`` is the ``stats_type`` a detector's fit returns.

    ``jaxood.detectors.score`` checks this too; score functions repeat it because they are
    also called directly (and inside ``jax.jit``, where a dataclass keeps its type).
    """
    if not isinstance(stats, stats_type):
        got = "None" if stats is None else type(stats).__name__
        raise ValueError(
            f"detector {detector!r} needs the {stats_type.__name__} its fit returns, got "
            f"{got}; run jaxood.detectors.fit first"
        )
