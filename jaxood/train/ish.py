"""ISH (Xu et al., ICLR 2024): reshape only the classifier-weight gradient.

The forward pass and every other gradient are unchanged. For the final layer
``z = h @ W + b`` the weight gradient ``sum_n h_n^T delta_n`` becomes
``sum_n h~_n^T delta_n`` with the shaped activation (``minksample_expscale``, the default
of ``kai422/ish_reshaper``)

  s1 = sum_j h_j,  keep the top k = int(D * (1 - p)) entries of |h| (mask m),
  s2 = sum of the kept h,  r = s1 / s2,  h~ = exp(r) * (m * |h|).

:func:`ish_dense` is that layer as a ``jax.custom_vjp`` (stores ``h`` and recomputes the mask
in the backward pass). The trainer uses the equivalent :func:`ish_kernel_grad`: it replaces
the fc-kernel gradient after the normal backward pass, using ``delta = dL/dz`` — identical
because the loss reaches ``W`` only through ``z``. (ISH is therefore restricted to losses
that do not read ``W`` directly, i.e. not ELogitNorm.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def keep_count(dim: int, percentile: float) -> int:
    """Number of activations kept: ``int(dim * (1 - percentile))``, the official count.

    This is the expression of OpenOOD's ``ish_trainer.py`` (``x.abs().topk(int(x.shape[1] *
    self.reserve))`` with ``reserve = 1 - param``) evaluated in the same float64 arithmetic,
    rounding error included: at D = 640 it keeps 96 for p = 0.85 but 127 for p = 0.8 and 63
    for p = 0.9 (``640 * (1 - 0.8) = 127.99999999999997``).

    Raises:
      ValueError: ``percentile`` outside [0, 1), or a count of 0 (the official code would
        then divide by an empty sum).
    """
    if not 0.0 <= percentile < 1.0:
        raise ValueError(f"ISH percentile must be in [0, 1), got {percentile}")
    k = int(dim * (1.0 - percentile))
    if k < 1:
        raise ValueError(
            f"ISH percentile {percentile} keeps int({dim} * (1 - {percentile})) = 0 of the "
            f"{dim} features; use a smaller ish_percentile"
        )
    return k


def shape_activation(h: jax.Array, percentile: float = 0.85) -> jax.Array:
    """``[B, D] -> [B, D]`` shaped activations ``exp(s1/s2) * top-k(|h|)``.

    Ties at the threshold (equal ``|h|``) are broken towards the lower feature index
    (``jax.lax.top_k``'s documented order). The official ``torch.topk(sorted=False)`` leaves
    that choice unspecified. It cannot change ``s1``, ``s2`` or the scale; it only decides
    which of several equal entries carry the value, and for the common tie, exact zeros
    after ReLU, the kept value is 0 either way.
    """
    k = keep_count(h.shape[-1], percentile)
    a = jnp.abs(h)
    _, idx = jax.lax.top_k(a, k)
    mask = jnp.zeros_like(a, bool).at[jnp.arange(a.shape[0])[:, None], idx].set(True)
    kept = jnp.where(mask, a, 0.0)
    s1 = jnp.sum(h, axis=-1, keepdims=True)
    s2 = jnp.sum(kept, axis=-1, keepdims=True)
    return jnp.exp(s1 / s2) * kept


def ish_kernel_grad(h: jax.Array, delta: jax.Array, percentile: float = 0.85) -> jax.Array:
    """ISH weight gradient ``h~^T delta``: ``[B, D], [B, K] -> [D, K]`` (Flax kernel layout).

    ``delta`` is ``dL/dz`` for the batch-mean loss (so already divided by B).
    """
    return jax.lax.stop_gradient(shape_activation(h, percentile)).T @ delta


def ish_dense(h: jax.Array, kernel: jax.Array, bias: jax.Array, percentile: float = 0.85):
    """``h [B, D] @ kernel [D, K] + bias [K]`` whose kernel gradient is the ISH one.

    The input and bias gradients are the ordinary ``g @ kernel^T`` and ``sum_n g_n``.
    """
    return _ish_dense_fn(float(percentile))(h, kernel, bias)


def _ish_dense_fn(percentile: float):
    @jax.custom_vjp
    def dense(h, kernel, bias):
        return h @ kernel + bias

    def fwd(h, kernel, bias):
        return h @ kernel + bias, (h, kernel)

    def bwd(res, g):
        h, kernel = res
        return g @ kernel.T, ish_kernel_grad(h, g, percentile), g.sum(0)

    dense.defvjp(fwd, bwd)
    return dense
