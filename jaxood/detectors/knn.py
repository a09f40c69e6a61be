"""Deep nearest neighbours (KNN) and the exact, chunked k-th-neighbour search it runs on.

Source: Sun et al., "Out-of-Distribution Detection with Deep Nearest Neighbors" (ICML 2022);
OpenOOD v1.5 ``openood/postprocessors/knn_postprocessor.py`` (``faiss.IndexFlatL2`` over
L2-normalised ID-train features, score ``-D[:, -1]``: minus the *squared* Euclidean distance
to the K-th neighbour) and ``configs/postprocessors/knn.yml`` (``K: 50``; APS grid
``K_list: [50, 100, 200, 500, 1000]`` in v1.5; some older snapshots list only ``[50]``).

Scores are ``[B]`` floats, higher = more in-distribution (closer to the training bank).

The search is exact and never materialises the ``[B, N]`` distance matrix: the bank is
stored in chunks ``[T, c, D]`` and a ``lax.scan`` keeps a running top-K per query. A bank
too big for device memory (ImageNet: 1.28M x 2048 floats = 10.5 GB) can stay on the host
(NumPy array or ``np.memmap``, e.g. written chunk by chunk with :func:`write_bank`); then
chunks are streamed to the device one at a time (not jit-able as a whole, but each merge
step is).

Normalisation: OpenOOD v1.5 uses ``x / (||x|| + 1e-10)``; we do the same.

Fitted statistics: :class:`KNNStats` (also the chunked ID dictionary OODD searches).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxood import validate
from jaxood.detectors import _ops, register
from jaxood.types import Detector, HParam, Inputs

NORM_EPS = 1e-10


@struct.dataclass
class KNNStats:
    """A normalised feature bank to search, in one of two layouts.

    * chunked (device): ``bank [T, c, D]``, ``bias [T, c]`` (``-inf`` marks padding rows);
    * flat (host): ``bank [N, D]`` (NumPy or ``np.memmap``), ``bias [N]``, streamed to the
      device ``chunk`` rows at a time; moved to the device (e.g. under jit) it is chunked there.

    ``bias`` is added to every similarity with that row (KNN: ``-||b||^2 / 2``).

    Attributes:
      bank, bias: as above.
      n: number of real bank rows N (static: it bounds K).
      chunk: rows per chunk (``c`` of the chunked layout; the streaming size of the flat one).
      feature_dim: D.
    """

    bank: Any
    bias: Any
    n: int = struct.field(pytree_node=False)
    chunk: int = struct.field(pytree_node=False)
    feature_dim: int | None = struct.field(pytree_node=False, default=None)


def l2_normalize(x: Any, eps: float = NORM_EPS) -> Any:
    """``x / (||x||_2 + eps)`` row-wise; ``[B, D] -> [B, D]``. NumPy in, NumPy out."""
    if isinstance(x, np.ndarray):
        x = x.astype(np.float32, copy=False)
        return x / (np.linalg.norm(x, axis=-1, keepdims=True) + eps)
    return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + eps)


# ------------------------------------------------------------------------ chunked k-th search


def chunk_bank(bank: Any, chunk: int, *, bias: Any = None) -> KNNStats:
    """Pads and reshapes a bank ``[N, D]`` into a chunked :class:`KNNStats`
    (``bank [T, c, D]``, ``bias [T, c]``, ``n = N``).

    ``bias`` ``[N]`` is added to every similarity with that bank row (default 0); padded rows
    get ``-inf`` so they are never among the top-K. ``c = min(chunk, N)``.
    """
    bank = jnp.asarray(bank, jnp.float32)
    n, d = bank.shape
    c = max(1, min(int(chunk), n))
    t = -(-n // c)
    pad = t * c - n
    b = jnp.zeros((n,), jnp.float32) if bias is None else jnp.asarray(bias, jnp.float32)
    bank = jnp.pad(bank, ((0, pad), (0, 0))).reshape(t, c, d)
    b = jnp.pad(b, (0, pad), constant_values=-jnp.inf).reshape(t, c)
    return KNNStats(bank=bank, bias=b, n=int(n), chunk=c, feature_dim=int(d))


def _merge_topk(top: jax.Array, queries: jax.Array, bank: jax.Array, bias: jax.Array, k: int):
    """Running top-k update with one bank chunk: ``top [B, k]`` -> ``[B, k]`` (descending)."""
    sims = jnp.dot(queries, bank.T, precision=jax.lax.Precision.HIGHEST) + bias[None, :]
    return jax.lax.top_k(jnp.concatenate([top, sims], axis=1), k)[0]


# Pure kernel (arrays, static k): a module-level jit compiles once per shape and k.
@functools.partial(jax.jit, static_argnames=("k",))
def topk_similarities(queries: jax.Array, bank: jax.Array, bias: jax.Array, k: int) -> jax.Array:
    """The ``k`` largest ``q . b + bias_b`` per query over a chunked bank, exactly.

    Args:
      queries: ``[B, D]``.
      bank: ``[T, c, D]`` (from :func:`chunk_bank`).
      bias: ``[T, c]`` per-row offsets (``-inf`` marks padding).
      k: static number of neighbours, ``1 <= k <= N``.

    Returns:
      ``[B, k]`` similarities in descending order; column ``k-1`` is the k-th largest.
    """
    queries = jnp.asarray(queries, jnp.float32)
    init = jnp.full((queries.shape[0], k), -jnp.inf, jnp.float32)

    def body(top, xs):
        return _merge_topk(top, queries, xs[0], xs[1], k), None

    top, _ = jax.lax.scan(body, init, (bank, bias))
    return top


# Pure kernel (arrays, static k): a module-level jit compiles once per shape and k.
_merge_topk_jit = jax.jit(_merge_topk, static_argnames=("k",))


def topk_similarities_host(
    queries: Any, bank: np.ndarray, k: int, *, chunk: int = 65536, bias: np.ndarray | None = None
) -> jax.Array:
    """Like :func:`topk_similarities` for an un-chunked host bank ``[N, D]`` (NumPy/memmap).

    Only one ``[chunk, D]`` slice of the bank is on the device at a time. Returns ``[B, k]``.
    """
    n = bank.shape[0]
    queries = jnp.asarray(queries, jnp.float32)
    top = jnp.full((queries.shape[0], k), -jnp.inf, jnp.float32)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        rows = jnp.asarray(np.asarray(bank[start:stop], np.float32))
        b = jnp.zeros((stop - start,), jnp.float32)
        if bias is not None:
            b = jnp.asarray(bias[start:stop], jnp.float32)
        if stop - start < k:  # keep shapes >= k so the merge stays a plain top_k
            rows = jnp.pad(rows, ((0, k), (0, 0)))
            b = jnp.pad(b, (0, k), constant_values=-jnp.inf)
        top = _merge_topk_jit(top, queries, rows, b, k)
    return top


def _check_k(k: Any, n: int, name: str = "K") -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise ValueError(f"`{name}` must be a Python int (static), got {k!r}")
    if not 1 <= int(k) <= n:
        raise ValueError(
            f"`{name}`={k} must be in [1, bank size {n}]: the bank holds {n} training features; "
            f"use {name} <= {n} or fit on more data"
        )
    return int(k)


def bank_size(stats: KNNStats) -> int:
    """Number of real bank rows N."""
    return int(stats.n)


# ------------------------------------------------------------------------------- KNN proper


def knn_bank(features: Any, *, chunk: int = 4096, on_host: bool = False) -> KNNStats:
    """KNN statistics from ID features ``[N, D]``: the normalised bank, chunked.

    Squared distances are computed as ``||x||^2 + ||b||^2 - 2 x.b``: we keep
    ``s = x.b - ||b||^2 / 2`` (bias ``-||b||^2/2``) so the K-th nearest is the K-th largest s.
    With ``on_host=True`` the (NumPy) bank is kept on the host un-chunked.
    """
    validate.check_array(features, "train features", ndim=2)
    if validate.is_concrete(features) and not np.any(np.asarray(features)):
        raise ValueError(
            f"KNN: all {np.shape(features)[0]} training features are zero vectors, so every "
            "input is at the same distance from the bank and gets the same score; check the "
            "features (a dead network?)"
        )
    if on_host:
        bank = l2_normalize(np.asarray(features, np.float32))
        half_sq = 0.5 * np.einsum("nd,nd->n", bank, bank)
        return KNNStats(
            bank=bank, bias=-half_sq, n=int(bank.shape[0]), chunk=int(chunk),
            feature_dim=int(bank.shape[1]),
        )
    bank = l2_normalize(jnp.asarray(features, jnp.float32))
    return chunk_bank(bank, chunk, bias=-0.5 * jnp.sum(bank * bank, axis=-1))


def write_bank(
    feature_chunks: Iterable[Any], path: str | os.PathLike, n: int, d: int, *, chunk: int = 65536
) -> KNNStats:
    """Streams ID features into an on-disk normalised bank (``.npy`` memmap), chunk by chunk.

    Use for banks that do not fit in memory at once (ImageNet train). Returns host KNN stats
    usable by :func:`knn_score`.
    """
    bank = np.lib.format.open_memmap(os.fspath(path), mode="w+", dtype=np.float32, shape=(n, d))
    bias = np.empty((n,), np.float32)
    pos = 0
    for part in feature_chunks:
        part = l2_normalize(np.asarray(part, np.float32))
        if pos + part.shape[0] > n or part.shape[1:] != (d,):
            raise ValueError(f"feature chunks do not match the declared shape ({n}, {d})")
        bank[pos : pos + part.shape[0]] = part
        bias[pos : pos + part.shape[0]] = -0.5 * np.einsum("nd,nd->n", part, part)
        pos += part.shape[0]
    if pos != n:
        raise ValueError(f"got {pos} feature rows, declared n={n}")
    bank.flush()
    return KNNStats(bank=bank, bias=bias, n=int(n), chunk=int(chunk), feature_dim=int(d))


def knn_score(features: Any, stats: KNNStats, k: int) -> jax.Array:
    """OpenOOD KNN score: ``-||x_hat - b_(k)||^2`` (minus squared distance to the k-th NN).

    Args:
      features: ``[B, D]`` penultimate features (normalised here).
      stats: from :func:`knn_bank` / :func:`write_bank`.
      k: static K, ``1 <= k <= N``.

    Returns:
      ``[B]`` scores, higher = more ID.
    """
    validate.check_array(features, "features.feature", ndim=2)
    k = _check_k(k, bank_size(stats))
    q = l2_normalize(jnp.asarray(features, jnp.float32))
    if stats.bank.ndim == 3:  # chunked layout (device arrays, or restored as NumPy)
        top = topk_similarities(q, stats.bank, stats.bias, k)
    elif isinstance(stats.bank, np.ndarray):  # host bank: stream chunks to the device
        top = topk_similarities_host(q, stats.bank, k, chunk=stats.chunk, bias=stats.bias)
    else:  # a host bank moved to the device (e.g. stats under jit)
        chunked = chunk_bank(stats.bank, stats.chunk, bias=stats.bias)
        top = topk_similarities(q, chunked.bank, chunked.bias, k)
    # ||x - b||^2 = ||x||^2 - 2 (x.b - ||b||^2/2); clamp tiny negative rounding to 0.
    dist2 = jnp.maximum(jnp.sum(q * q, axis=-1) - 2.0 * top[:, k - 1], 0.0)
    return -dist2


def _fit_knn(model, variables, data, *, bank_chunk, bank_on_host) -> KNNStats:
    return knn_bank(data["train"].features.feature, chunk=bank_chunk, on_host=bank_on_host)


def _score_knn(model, variables, stats, inputs: Inputs, *, K):
    """``-||x_hat - b_(K)||^2``, ``[B]``, higher = more ID."""
    _ops.require_stats(stats, KNNStats, "knn")
    return knn_score(inputs.features.feature, stats, K)


register(
    Detector(
        name="knn",
        score=_score_knn,
        fit=_fit_knn,
        fit_splits=("train",),
        hparams={
            "K": HParam(50, sweep=(50, 100, 200, 500, 1000), static=True,
                        check=validate.check_positive_int, doc="rank of the neighbour (top_k)"),
            "bank_chunk": HParam(4096, role="fit", static=True,
                                 check=validate.check_positive_int,
                                 doc="bank rows per search step (memory, not the result)"),
            "bank_on_host": HParam(False, role="fit", static=True,
                                   doc="keep the bank in host memory, streamed per chunk"),
        },
        stats_type=KNNStats,
        needs=frozenset({"feature"}),
        reference=(
            "Sun et al. 2022 (deep KNN); OpenOOD v1.5 knn_postprocessor.py (normalised "
            "ID-train bank, -squared L2 to the K-th NN) and knn.yml (K=50, "
            "K_list [50, 100, 200, 500, 1000]). Exact chunked search, no approximation."
        ),
    )
)
