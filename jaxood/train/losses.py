"""Training losses: cross-entropy, LogitNorm, ELogitNorm (mean over the batch).

All take ``logits [B, K]`` and integer ``labels [B]`` and return a scalar. ELogitNorm also
needs the classifier weight (Flax layout ``kernel [D, K]``) and bias ``[K]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

LOSSES = ("ce", "logitnorm", "elogitnorm")


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy, ``[B, K], [B] -> []``."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def logitnorm(logits: jax.Array, labels: jax.Array, tau: float = 0.04) -> jax.Array:
    """LogitNorm (Wei et al. 2022): ``CE(z / (tau * (||z||_2 + 1e-7)), y)``.

    ``tau`` = 0.04 is OpenOOD's default (``train_logitnorm.yml``).
    """
    norms = jnp.linalg.norm(logits, axis=-1, keepdims=True) + 1e-7
    return cross_entropy(logits / (norms * tau), labels)


def class_sq_distances(kernel: jax.Array, max_chunk: int = 1 << 24) -> jax.Array:
    """``||w_a - w_b||^2`` for all class pairs, ``kernel [D, K] -> [K, K]``, by subtraction.

    Subtracting the rows first (as the official ``torch.linalg.norm(W[:, None] - W[None])``)
    keeps full relative precision when two rows nearly coincide; the Gram identity
    ``|a|^2 + |b|^2 - 2 a.b`` cancels catastrophically there in float32. The ``K x K x D``
    differences are formed ``max_chunk`` elements at a time (one chunk for CIFAR's 10/100
    classes; ImageNet's 1000 x 1000 x 2048 would need 8 GB at once).
    """
    w = kernel.T.astype(jnp.float32)  # [K, D]
    k, d = w.shape
    rows = max(1, min(k, max_chunk // max(k * d, 1)))
    return jax.lax.map(lambda wa: jnp.sum(jnp.square(w - wa), axis=-1), w, batch_size=rows)


def elogitnorm_scale(logits: jax.Array, kernel: jax.Array) -> jax.Array:
    """ELogitNorm's per-sample scale ``D(h)``, ``[B]``.

    ``D = mean_j |z_yhat - z_j| / ||w_yhat - w_j||`` over **all** K classes (the ``j = yhat``
    term is 0/1, as the official code, which adds the identity to the distance matrix),
    with ``yhat`` the predicted class. The logit difference includes the bias, so each term
    is the exact distance from the feature to a decision hyperplane.

    The distances come from :func:`class_sq_distances` (direct subtraction, stable for
    near-duplicate rows); the diagonal is masked *before* the square root and exact
    duplicates are clamped at 1e-12 so no NaN/inf gradient appears. Gradients flow through
    both the numerator and the denominator (no stop-gradient, as the official code).

    Args:
      logits: ``[B, K]`` (``z = h @ kernel + bias``).
      kernel: ``[D, K]`` classifier weight (Flax layout; PyTorch's ``fc.weight.T``).
    """
    k = logits.shape[-1]
    pred = jnp.argmax(logits, axis=-1)  # [B]
    d2 = class_sq_distances(kernel)[pred]  # [B, K] = ||w_pred - w_j||^2
    is_pred = jax.nn.one_hot(pred, k, dtype=bool)
    denom = jnp.sqrt(jnp.where(is_pred, 1.0, jnp.maximum(d2, 1e-12)))
    z_pred = jnp.take_along_axis(logits, pred[:, None], axis=-1)
    return jnp.mean(jnp.abs(z_pred - logits) / denom, axis=-1)


def elogitnorm(logits: jax.Array, labels: jax.Array, kernel: jax.Array) -> jax.Array:
    """ELogitNorm (Ding et al.): ``CE(z / D(h), y)`` with :func:`elogitnorm_scale`.

    As the official code, no epsilon is added to ``D`` (it is 0 only if all logits are
    exactly equal, which a trained or randomly initialised network does not produce).
    """
    return cross_entropy(logits / elogitnorm_scale(logits, kernel)[:, None], labels)


def compute_loss(name: str, logits, labels, *, kernel=None, tau: float = 0.04) -> jax.Array:
    """Dispatches on ``name`` in :data:`LOSSES`."""
    if name == "ce":
        return cross_entropy(logits, labels)
    if name == "logitnorm":
        return logitnorm(logits, labels, tau)
    if name == "elogitnorm":
        return elogitnorm(logits, labels, kernel)
    raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
