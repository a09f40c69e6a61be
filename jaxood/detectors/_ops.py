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
