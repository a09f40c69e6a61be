"""OODD: test-time OOD detection with a dynamic (priority-queue) OOD dictionary.

Source: Yang et al., CVPR 2025 (arXiv 2503.10468); official code ``zxk1212/OODD``
(``openood/postprocessors/knn_postprocessor.py``, ``bash.sh``), read through the fork
``moxime/ooddict`` (same postprocessor); ``spec-methods-training.md`` §3.

As released (``oodd``):

* **ID dictionary (IIS)**: for every training image, 5 crops ``RandomResizedCrop(size,
  scale=(0.95, 1.0), ratio=(3/4, 4/3))``; keep the crop with the highest MSP (its
  L2-normalised feature and MSP); rank images by that MSP within their *labelled* class;
  interleave the classes rank by rank; keep the first ``floor(alpha * N)``.
* ``S_in(x)`` = the ``k_in``-th largest cosine similarity to the ID dictionary.
* **OOD dictionary**: a queue of the ``queue_size`` lowest-``S_in`` features seen so far.
  Stream processing in chunks (512): insert the whole chunk first, *then* score it, so a
  low-``S_in`` sample finds itself (cos = 1) in the dictionary.
* ``S_out(x)`` = the ``k_out``-th largest cosine similarity to queue (+ memory bank);
  score ``S_in - S_out``, higher = more in-distribution.

Release protocol (what a benchmark runner must do to reproduce the paper's numbers), per
OOD test set separately: stream = ``concat(ID-test, OOD)`` permuted with
``np.random.seed(100); np.random.permutation``, chunks of 512, queue reset to empty for each
OOD set (so ID-test scores differ per OOD set). :func:`release_protocol` does exactly that.

The registered ``score`` treats the batch it is given as the whole stream (fresh queue,
chunks of ``chunk_size`` in the given order): it is :func:`init_state` followed by one
:func:`step` over the batch. A deployed detector continues its stream with ``step``, which
takes the queue state and a ``valid`` mask (padding rows never enter the queue); calls that
split the stream at multiples of ``chunk_size`` give the same scores as one call.

The queue state is an explicit pytree (:class:`OODDState`); :func:`oodd_step` is a pure,
jit-able ``(state, chunk) -> (state, scores)`` and :func:`oodd_stream` scans it, so a stream
in a given order always gives identical scores. Ties in ``S_in`` are broken in favour of
entries already in the queue (the release's Python heap order is not reproduced; this only
matters for exactly equal similarities).

C-Out / DOS (``oodd_cout``): the paper initialises the queue and a fixed memory bank with
low-confidence random crops of ID-train images; the release does not implement it. **Our
implementation of the paper's description**: one ``RandomResizedCrop(scale=(0.08, 0.3))``
per training image, the ``cout_queue + cout_bank`` lowest-MSP crops, randomly split into
queue seeds (priority = their ``S_in``) and a fixed memory bank. All these choices are ours.

Labels: IIS ranks by the ground-truth class: pass ``Inputs.extras["labels"]`` (``[N]`` int)
on the train split. Crops: ``fit`` crops ``Inputs.x`` (normalised NHWC images) when given;
or pass precomputed crop outputs as ``extras["crop_logits"] [N, M, K]`` and
``extras["crop_features"] [N, M, D]``; with neither, it falls back to the single un-cropped
view (logged; not the released IIS).

Crop differences from torchvision: same sampling distribution but JAX PRNG (not torch's
stream); the crop is resized with bilinear ``align_corners=False`` interpolation without
antialiasing, which equals torchvision for upsampling (CIFAR: crops <= 32 px resized to
32) but not for downsampling (ImageNet-style pre_size > image_size), where torchvision
antialiases. Cropping the already-normalised image equals normalising the crop (bilinear
weights sum to 1).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxood import validate
from jaxood.data.augment import random_resized_crops
from jaxood.detectors import _ops, register
from jaxood.detectors.feature_space import train_labels
from jaxood.detectors.knn import (
    KNNStats,
    _check_k,
    bank_size,
    chunk_bank,
    l2_normalize,
    topk_similarities,
)
from jaxood.types import Detector, HParam, Inputs, Model

logger = logging.getLogger(__name__)

#: Released per-benchmark defaults (``bash.sh``): K1 = k_in, K2 = k_out, ALPHA, queue_size.
OODD_DEFAULTS = {
    "cifar10": {"k_in": 5, "k_out": 5, "alpha": 0.5, "queue_size": 128},
    "cifar100": {"k_in": 10, "k_out": 5, "alpha": 0.5, "queue_size": 512},
    "imagenet200": {"k_in": 100, "k_out": 5, "alpha": 0.5, "queue_size": 2048},
    "imagenet": {"k_in": 100, "k_out": 5, "alpha": 0.5, "queue_size": 2048},
}
CHUNK_SIZE = 512
RELEASE_SEED = 100
IIS_SCALE = (0.95, 1.0)


@functools.lru_cache(maxsize=8)
def _jit_features(model: Model):
    # Models hash by identity: one compiled feature function per model, reused across fits
    # (a cache here, not in scoring.py: detectors/ sits below it).
    return jax.jit(model.features)


def image_batches(x: Any, batch_size: int, *, input_shape=None, name: str = "train x"):
    """Yields ``(b, images [n, H, W, C] float32)`` batches of ``x``: an array, or a lazily
    batched source (``len(x)`` and ``x.batch(start, stop)``, e.g. a benchmark split larger
    than the in-memory image budget), read one batch at a time so memory stays bounded.
    Every batch is checked (:func:`jaxood.validate.images`)."""
    validate.check_positive_int(batch_size, "batch_size")
    lazy = validate.is_batched_source(x)
    if not lazy:
        x = validate.images(x, name, input_shape=input_shape)
    n = len(x)
    if n == 0:
        raise ValueError(f"`{name}` is empty; OODD needs training images")
    for b, start in enumerate(range(0, n, batch_size)):
        stop = min(n, start + batch_size)
        imgs = x.batch(start, stop) if lazy else x[start:stop]
        if lazy:
            imgs = validate.images(imgs, f"{name}[{start}:{stop}]", input_shape=input_shape)
        yield b, imgs


def _crop_batches(model, variables, x, key, *, n_crops, scale, batch_size):
    """Per batch ``b``: ``(msp [n, M], features [n, M, D])`` of ``n_crops`` random crops
    (key ``fold_in(key, b)``) of every image."""
    feats = _jit_features(model)
    for b, imgs in image_batches(x, batch_size, input_shape=model.input_shape):
        imgs = jnp.asarray(imgs)
        crops = random_resized_crops(jax.random.fold_in(key, b), imgs, n_crops, tuple(scale))
        f = feats(variables, crops.reshape(-1, *crops.shape[2:]))
        msp = jnp.max(jax.nn.softmax(f.logits, -1), -1)
        yield (np.asarray(msp).reshape(imgs.shape[0], n_crops),
               np.asarray(f.feature).reshape(imgs.shape[0], n_crops, -1))


def crop_outputs(
    model: Model,
    variables: Any,
    x: Any,
    key: jax.Array,
    *,
    n_crops: int,
    scale: tuple[float, float] = IIS_SCALE,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Runs the model on ``n_crops`` random crops of every image, in batches.

    ``x``: ``[N, H, W, C]`` normalised images, or a lazily batched source (see
    :func:`image_batches`): the same batches, so the same results.

    Returns ``(msp [N, M], features [N, M, D])`` as host arrays. Batch ``b`` uses
    ``fold_in(key, b)``, so results do not depend on anything but ``key`` and ``batch_size``.
    """
    parts = list(_crop_batches(model, variables, x, key, n_crops=n_crops, scale=scale,
                               batch_size=batch_size))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def best_crops(
    model: Model,
    variables: Any,
    x: Any,
    key: jax.Array,
    *,
    n_crops: int,
    scale: tuple[float, float] = IIS_SCALE,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`crop_outputs` reduced batch by batch to each image's highest-MSP crop (first
    one on ties, as ``np.argmax``): ``(msp [N], features [N, D])``. Memory: ``N x D``
    features, never the ``N x M x D`` of every crop nor more than one batch of images."""
    confs, chosen = [], []
    for msp, feats in _crop_batches(model, variables, x, key, n_crops=n_crops, scale=scale,
                                    batch_size=batch_size):
        best = np.argmax(msp, axis=1)
        rows = np.arange(len(best))
        confs.append(msp[rows, best])
        chosen.append(feats[rows, best])
    return np.concatenate(confs), np.concatenate(chosen)


# -------------------------------------------------------------------------------- IIS


def iis_select(crop_msp: Any, crop_features: Any, labels: Any, alpha: float) -> np.ndarray:
    """Informative In-distribution Sampling: the ID dictionary ``[floor(alpha N), D]``.

    Args:
      crop_msp: ``[N, M]`` MSP of each crop.
      crop_features: ``[N, M, D]`` feature of each crop.
      labels: ``[N]`` ground-truth classes.
      alpha: fraction kept, in ``(0, 1]``.

    Returns:
      L2-normalised features, classes interleaved by within-class MSP rank (rank 1 of every
      class in ascending class order, then rank 2, ...), truncated to ``int(alpha * N)``.
    """
    msp = np.asarray(crop_msp, np.float64)
    feats = np.asarray(crop_features, np.float32)
    if msp.ndim != 2 or feats.ndim != 3 or feats.shape[:2] != msp.shape:
        raise ValueError(
            f"crop_msp [N, M] and crop_features [N, M, D] expected, got {msp.shape}, {feats.shape}"
        )
    best = np.argmax(msp, axis=1)
    rows = np.arange(msp.shape[0])
    return iis_dictionary(msp[rows, best], feats[rows, best], labels, alpha)


def iis_dictionary(conf: Any, chosen: Any, labels: Any, alpha: float) -> np.ndarray:
    """IIS from each image's best crop: ``conf [N]`` (its MSP) and ``chosen [N, D]`` (its
    feature); see :func:`iis_select`."""
    validate.check_range(alpha, "alpha", 0.0, 1.0)
    conf = np.asarray(conf, np.float64)
    chosen = np.asarray(chosen, np.float32)
    labels = np.asarray(labels)
    n = conf.shape[0]
    if conf.ndim != 1 or chosen.shape[:1] != (n,) or chosen.ndim != 2:
        raise ValueError(f"conf [N] and chosen [N, D] expected, got {conf.shape}, {chosen.shape}")
    if labels.shape != (n,):
        raise ValueError(f"labels must be [N={n}], got {labels.shape}")
    rank = np.empty(n, np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rank[idx[np.argsort(-conf[idx], kind="stable")]] = np.arange(idx.size)
    order = np.lexsort((labels, rank))  # by rank, then class
    keep = int(alpha * n)
    if keep < 1:
        raise ValueError(
            f"`alpha`={alpha} of {n} training samples keeps nothing; use alpha >= {1 / n:.3g} "
            "or fit on more training images"
        )
    return l2_normalize(chosen[order[:keep]])


# ------------------------------------------------------------------------- statistics


@struct.dataclass
class OODDStats:
    """Fitted OODD statistics (``oodd`` and ``oodd_cout``).

    Attributes:
      id_bank: ``[T, c, D]`` the chunked, L2-normalised ID dictionary (IIS).
      id_bias: ``[T, c]`` 0 for dictionary rows, ``-inf`` for chunk padding.
      id_size: number of dictionary rows (static: it bounds ``k_in``).
      queue_seeds: ``[S, D]`` C-Out features that seed the queue, or None (``oodd``).
      memory_bank: ``[M, D]`` fixed C-Out OOD features, or None (``oodd``).
      feature_dim: D.
    """

    id_bank: jax.Array
    id_bias: jax.Array
    id_size: int = struct.field(pytree_node=False)
    queue_seeds: jax.Array | None = None
    memory_bank: jax.Array | None = None
    feature_dim: int | None = struct.field(pytree_node=False, default=None)

    @property
    def id_dictionary(self) -> KNNStats:
        """The ID dictionary as the chunked bank :func:`s_in` searches."""
        return KNNStats(
            bank=self.id_bank, bias=self.id_bias, n=self.id_size,
            chunk=int(self.id_bank.shape[1]), feature_dim=self.feature_dim,
        )


def make_stats(
    id_dictionary: Any,
    *,
    bank_chunk: int = 4096,
    queue_seeds: Any = None,
    memory_bank: Any = None,
) -> OODDStats:
    """:class:`OODDStats` from an L2-normalised ID dictionary ``[N, D]`` (e.g.
    :func:`iis_select`) and optional C-Out ``queue_seeds [S, D]`` / ``memory_bank [M, D]``."""
    bank = chunk_bank(id_dictionary, bank_chunk)
    as_array = lambda a: None if a is None else jnp.asarray(a, jnp.float32)
    return OODDStats(
        id_bank=bank.bank, id_bias=bank.bias, id_size=bank.n,
        queue_seeds=as_array(queue_seeds), memory_bank=as_array(memory_bank),
        feature_dim=bank.feature_dim,
    )


# ------------------------------------------------------------------------------ queue


@struct.dataclass
class OODDState:
    """The OOD dictionary: ``feats [Q, D]`` (normalised) and ``keys [Q]`` (their ``S_in``;
    ``+inf`` marks an empty slot)."""

    feats: jax.Array
    keys: jax.Array


def empty_state(queue_size: int, dim: int) -> OODDState:
    """An empty queue of capacity ``queue_size``."""
    if not isinstance(queue_size, (int, np.integer)) or queue_size < 1:
        raise ValueError(f"`queue_size` must be a positive int, got {queue_size!r}")
    return OODDState(jnp.zeros((queue_size, dim), jnp.float32), jnp.full((queue_size,), jnp.inf))


def s_in(features: jax.Array, id_bank: KNNStats, k_in: int) -> jax.Array:
    """``k_in``-th largest cosine similarity to the ID dictionary: ``[B, D] -> [B]``."""
    q = l2_normalize(jnp.asarray(features, jnp.float32))
    return topk_similarities(q, id_bank.bank, id_bank.bias, k_in)[:, k_in - 1]


def _insert(state: OODDState, feats: jax.Array, keys: jax.Array) -> OODDState:
    """Keeps the ``Q`` smallest keys of queue ∪ new (queue entries win ties)."""
    all_keys = jnp.concatenate([state.keys, keys])
    all_feats = jnp.concatenate([state.feats, feats])
    neg, idx = jax.lax.top_k(-all_keys, state.keys.shape[0])
    return OODDState(all_feats[idx], -neg)


def seeded_state(seeds: Any, id_bank: KNNStats, *, queue_size: int, k_in: int) -> OODDState:
    """A queue pre-filled with ``seeds [S, D]`` (C-Out), priorities = their ``S_in``."""
    seeds = l2_normalize(jnp.asarray(seeds, jnp.float32))
    state = empty_state(queue_size, seeds.shape[1])
    return _insert(state, seeds, s_in(seeds, id_bank, k_in))


def oodd_step(
    state: OODDState,
    chunk: jax.Array,
    valid: jax.Array | None = None,
    *,
    id_bank: KNNStats,
    k_in: int,
    k_out: int,
    memory_bank: jax.Array | None = None,
) -> tuple[OODDState, jax.Array]:
    """One release step: insert the chunk into the queue, then score it. Pure and jit-able.

    Args:
      state: the queue before this chunk.
      chunk: ``[C, D]`` features (normalised here).
      valid: ``[C]`` bool; False rows (padding) are neither inserted nor meaningful.
      id_bank: chunked ID dictionary (:func:`jaxood.detectors.knn.chunk_bank`).
      k_in, k_out: static neighbour ranks.
      memory_bank: ``[M, D]`` normalised fixed OOD features (C-Out), or None.

    Returns:
      ``(new_state, scores [C])`` with scores ``S_in - S_out`` (higher = more ID).
    """
    q = l2_normalize(jnp.asarray(chunk, jnp.float32))
    sin = s_in(q, id_bank, k_in)
    keys = sin if valid is None else jnp.where(valid, sin, jnp.inf)
    state = _insert(state, q, keys)
    sims = jnp.dot(q, state.feats.T, precision=jax.lax.Precision.HIGHEST)
    sims = jnp.where(jnp.isfinite(state.keys)[None, :], sims, -jnp.inf)
    if memory_bank is not None:
        mb = jnp.dot(q, memory_bank.T, precision=jax.lax.Precision.HIGHEST)
        sims = jnp.concatenate([sims, mb], axis=1)
    s_out = jax.lax.top_k(sims, k_out)[0][:, k_out - 1]
    return state, sin - s_out


# Pure kernel (arrays, queue state, static sizes): a module-level jit compiles once per shape.
@functools.partial(jax.jit, static_argnames=("k_in", "k_out", "chunk_size"))
def _stream(state, features, valid, id_bank, memory_bank, *, k_in, k_out, chunk_size):
    d = features.shape[1]
    chunks = features.reshape(-1, chunk_size, d)
    masks = valid.reshape(-1, chunk_size)

    def body(st, xs):
        return oodd_step(
            st, xs[0], xs[1], id_bank=id_bank, k_in=k_in, k_out=k_out, memory_bank=memory_bank
        )

    state, scores = jax.lax.scan(body, state, (chunks, masks))
    return scores.reshape(-1), state


def oodd_stream(
    id_bank: KNNStats,
    features: Any,
    *,
    queue_size: int,
    k_in: int,
    k_out: int,
    chunk_size: int = CHUNK_SIZE,
    memory_bank: Any = None,
    state: OODDState | None = None,
    valid: Any = None,
) -> tuple[jax.Array, OODDState]:
    """Scores a stream ``features [N, D]`` in order, chunk by chunk (``lax.scan``).

    Args:
      id_bank: chunked ID dictionary (:attr:`OODDStats.id_dictionary`).
      features: ``[N, D]`` stream in processing order.
      queue_size, k_in, k_out, chunk_size: release hyperparameters (static).
      memory_bank: optional ``[M, D]`` fixed OOD features.
      state: initial queue (default: empty, as the release).
      valid: optional ``[N]`` bool; False rows (padding) are scored but never enter the queue.

    Returns:
      ``(scores [N] in stream order, final state)``; higher = more ID.
    """
    validate.check_array(features, "features", ndim=2)
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be a positive int, got {chunk_size!r}")
    k_in = _check_k(k_in, bank_size(id_bank), "k_in")
    n, d = features.shape
    if state is None:
        state = empty_state(queue_size, d)
    elif state.keys.shape[0] != queue_size:
        raise ValueError(f"state holds {state.keys.shape[0]} slots, queue_size={queue_size}")
    n_mb = 0 if memory_bank is None else int(np.shape(memory_bank)[0])
    seeded = (
        int(np.sum(np.isfinite(np.asarray(state.keys)))) if validate.is_concrete(state.keys) else 0
    )
    available = min(queue_size, seeded + min(chunk_size, n)) + n_mb
    if not isinstance(k_out, (int, np.integer)) or not 1 <= k_out <= available:
        raise ValueError(
            f"`k_out`={k_out} must be in [1, {available}]: the OOD dictionary holds at most "
            f"min(queue_size={queue_size}, first chunk) + memory bank {n_mb} entries"
        )
    pad = (-n) % chunk_size
    x = jnp.pad(jnp.asarray(features, jnp.float32), ((0, pad), (0, 0)))
    mask = jnp.arange(n + pad) < n
    if valid is not None:
        mask = mask & jnp.pad(jnp.asarray(valid, bool), (0, pad))
    mb = None if memory_bank is None else l2_normalize(jnp.asarray(memory_bank, jnp.float32))
    scores, state = _stream(
        state, x, mask, id_bank, mb, k_in=int(k_in), k_out=int(k_out), chunk_size=int(chunk_size)
    )
    return scores[:n], state


def release_permutation(n: int, seed: int = RELEASE_SEED) -> np.ndarray:
    """``np.random.seed(seed); np.random.permutation(n)`` without touching global state."""
    return np.random.RandomState(seed).permutation(n)


def release_protocol(
    stats: OODDStats,
    id_features: Any,
    ood_features: Any,
    *,
    k_in: int,
    k_out: int,
    queue_size: int,
    chunk_size: int = CHUNK_SIZE,
    seed: int = RELEASE_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores one (ID-test, OOD set) pair exactly as the release: stream
    ``concat(id, ood)[perm(seed)]``, chunks of ``chunk_size``, fresh queue.

    Call once per OOD dataset. Returns ``(id_scores, ood_scores)`` in the *input* order
    (the release returns them in permuted order; AUROC/FPR are order-independent).
    """
    ids = np.asarray(id_features, np.float32)
    ood = np.asarray(ood_features, np.float32)
    z = np.concatenate([ids, ood])
    perm = release_permutation(z.shape[0], seed)
    state = init_state(
        stats, z.shape[1], k_in=k_in, k_out=k_out, queue_size=queue_size, chunk_size=chunk_size
    )
    scores, _ = oodd_stream(
        stats.id_dictionary,
        z[perm],
        queue_size=queue_size,
        k_in=k_in,
        k_out=k_out,
        chunk_size=chunk_size,
        memory_bank=stats.memory_bank,
        state=state,
    )
    out = np.empty(z.shape[0], np.float32)
    out[perm] = np.asarray(scores)
    return out[: ids.shape[0]], out[ids.shape[0] :]


def init_state(
    stats: OODDStats, feature_dim: int, *, k_in: int, k_out: int, queue_size: int, chunk_size: int
) -> OODDState:
    """The queue before the first sample: empty (``oodd``), or seeded with the C-Out
    outliers at priority ``S_in`` (``oodd_cout``). Checks the settings against ``stats``.

    Raises:
      ValueError: ``k_in`` above the ID dictionary size, ``k_out`` above what the OOD
        dictionary can ever hold, a bad ``chunk_size``, or ``feature_dim`` not the fitted D.
    """
    _ops.require_stats(stats, OODDStats, "oodd")
    if stats.feature_dim is not None and feature_dim != stats.feature_dim:
        raise ValueError(
            f"OODD was fitted on D = {stats.feature_dim} features, got D = {feature_dim}"
        )
    k_in = _check_k(k_in, stats.id_size, "k_in")
    validate.check_positive_int(chunk_size, "chunk_size")
    n_mb = 0 if stats.memory_bank is None else int(stats.memory_bank.shape[0])
    if not isinstance(k_out, (int, np.integer)) or not 1 <= k_out <= queue_size + n_mb:
        raise ValueError(
            f"`k_out`={k_out!r} must be an int in [1, queue_size + memory bank = "
            f"{queue_size + n_mb}]"
        )
    if stats.queue_seeds is None:
        return empty_state(queue_size, feature_dim)
    return seeded_state(stats.queue_seeds, stats.id_dictionary, queue_size=queue_size, k_in=k_in)


# -------------------------------------------------------------------------------- C-Out


def cout_outliers(
    model: Model,
    variables: Any,
    x: Any,
    key: jax.Array,
    *,
    n_queue: int,
    n_bank: int,
    scale: tuple[float, float] = (0.08, 0.3),
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """C-Out outliers (our implementation of the paper's description, absent in the release).

    One small random crop per training image; the ``n_queue + n_bank`` crops with the lowest
    MSP; a random (``key``) disjoint split into queue seeds and a fixed memory bank.

    Returns:
      ``(queue_seeds [n_queue, D], memory_bank [n_bank, D])``, L2-normalised.
    """
    if n_queue < 0 or n_bank < 0 or n_queue + n_bank < 1:
        raise ValueError("C-Out needs n_queue >= 0, n_bank >= 0 and at least one outlier")
    k_crop, k_split = jax.random.split(key)
    total = n_queue + n_bank
    # The `total` lowest-MSP crops (stable: ties by image index), kept batch by batch so
    # only `total` features and one batch of images are ever in memory.
    msp = np.empty(0, np.float64)
    idx = np.empty(0, np.int64)
    feats = None
    seen = 0
    for m, f in _crop_batches(model, variables, x, k_crop, n_crops=1, scale=tuple(scale),
                              batch_size=batch_size):
        msp = np.concatenate([msp, m[:, 0]])
        idx = np.concatenate([idx, seen + np.arange(len(m))])
        feats = f[:, 0] if feats is None else np.concatenate([feats, f[:, 0]])
        seen += len(m)
        keep = np.lexsort((idx, msp))[:total]
        msp, idx, feats = msp[keep], idx[keep], feats[keep]
    if total > seen:
        raise ValueError(
            f"C-Out asks for cout_queue + cout_bank = {total} outliers from {seen} training "
            "images; lower them or fit on more images"
        )
    low = np.asarray(jax.random.permutation(k_split, total))
    chosen = l2_normalize(feats[low])
    return chosen[:n_queue], chosen[n_queue:]


# -------------------------------------------------------------------------- detectors


def _labels(inputs: Inputs) -> np.ndarray:
    return train_labels(inputs)


def _crop_data(model, variables, inputs: Inputs, *, n_crops, crop_seed):
    """``(conf [N], chosen [N, D])``: each training image's best crop (MSP, feature)."""
    extras = inputs.extras or {}
    if "crop_features" in extras and "crop_logits" in extras:
        logits = jnp.asarray(extras["crop_logits"])
        msp = np.asarray(jnp.max(jax.nn.softmax(logits, -1), -1), np.float64)
        feats = np.asarray(extras["crop_features"], np.float32)
        best = np.argmax(msp, axis=1)
        rows = np.arange(msp.shape[0])
        return msp[rows, best], feats[rows, best]
    if inputs.x is not None:
        return best_crops(
            model, variables, inputs.x, jax.random.PRNGKey(crop_seed), n_crops=n_crops
        )
    logger.warning(
        "OODD fit: no train images (Inputs.x) and no precomputed crops; IIS uses the single "
        "un-cropped view (differs from the release's 5-crop selection)"
    )
    f = inputs.features
    return np.asarray(jnp.max(jax.nn.softmax(f.logits, -1), -1)), np.asarray(f.feature)


def fit_oodd(model, variables, data, *, alpha, n_crops, crop_seed, bank_chunk) -> OODDStats:
    """IIS ID dictionary from ``data["train"]`` (labels in ``extras["labels"]``)."""
    inputs = data["train"]
    labels = _labels(inputs)
    conf, chosen = _crop_data(model, variables, inputs, n_crops=n_crops, crop_seed=crop_seed)
    return make_stats(iis_dictionary(conf, chosen, labels, alpha), bank_chunk=bank_chunk)


def _fit_oodd_cout(
    model, variables, data, *, alpha, n_crops, crop_seed, bank_chunk, cout_queue, cout_bank,
    cout_seed,
) -> OODDStats:
    """:func:`fit_oodd` plus C-Out queue seeds and memory bank (needs the train images)."""
    stats = fit_oodd(
        model, variables, data, alpha=alpha, n_crops=n_crops, crop_seed=crop_seed,
        bank_chunk=bank_chunk,
    )
    x = data["train"].x
    if x is None:
        raise ValueError("oodd_cout needs the train images (Inputs.x) to make C-Out crops")
    seeds, bank = cout_outliers(
        model, variables, x, jax.random.PRNGKey(cout_seed), n_queue=cout_queue, n_bank=cout_bank
    )
    return stats.replace(
        queue_seeds=jnp.asarray(seeds) if cout_queue else None,
        memory_bank=jnp.asarray(bank) if cout_bank else None,
    )


def step(
    model, variables, stats: OODDStats, state: OODDState, inputs: Inputs, valid: Any, *,
    k_in: int, k_out: int, queue_size: int, chunk_size: int,
) -> tuple[jax.Array, OODDState]:
    """Continues the stream with a batch: chunks of ``chunk_size`` from the batch start, each
    inserted into the queue and then scored. Pure and jit-able.

    Args:
      state: the queue so far (:func:`init_state` for a new stream).
      inputs: ``features.feature [B, D]`` in stream order.
      valid: ``[B]`` bool; False rows (padding) are scored but never enter the queue.

    Returns:
      ``(scores [B], new state)``; scores ``S_in - S_out``, higher = more ID.
    """
    _ops.require_stats(stats, OODDStats, "oodd")
    f = inputs.features.feature
    validate.check_array(f, "features.feature", ndim=2)
    return oodd_stream(
        stats.id_dictionary, f, queue_size=queue_size, k_in=k_in, k_out=k_out,
        chunk_size=chunk_size, memory_bank=stats.memory_bank, state=state, valid=valid,
    )


def _score_oodd(model, variables, stats, inputs, *, k_in, k_out, queue_size, chunk_size):
    """The batch is the whole stream, in the given order, from :func:`init_state`:
    ``[B]`` scores, higher = more ID."""
    f = inputs.features.feature
    validate.check_array(f, "features.feature", ndim=2)
    settings = dict(k_in=k_in, k_out=k_out, queue_size=queue_size, chunk_size=chunk_size)
    state = init_state(stats, int(f.shape[1]), **settings)
    valid = jnp.ones((f.shape[0],), bool)
    scores, _ = step(model, variables, stats, state, inputs, valid, **settings)
    return scores


def _count(default: int, doc: str, role: str = "score", minimum: int = 1) -> HParam:
    """An integer setting (a size, rank or seed): static, checked."""
    check = validate.check_positive_int if minimum else validate.check_nonnegative_int
    return HParam(default, role=role, static=True, check=check, doc=doc)


_CIFAR10 = OODD_DEFAULTS["cifar10"]
#: Released CIFAR-10 defaults (OODD_DEFAULTS has the others); no APS in the release.
HPARAMS = {
    "k_in": _count(_CIFAR10["k_in"], "rank of the ID-dictionary neighbour (S_in)"),
    "k_out": _count(_CIFAR10["k_out"], "rank of the OOD-dictionary neighbour (S_out)"),
    "alpha": HParam(_CIFAR10["alpha"], role="fit", check=validate.check_open_fraction,
                    doc="fraction of ID-train images kept in the ID dictionary (IIS)"),
    "queue_size": _count(_CIFAR10["queue_size"], "capacity of the OOD queue"),
    "chunk_size": _count(CHUNK_SIZE, "stream rows inserted together, then scored"),
    "n_crops": _count(5, "random crops per train image for IIS", role="fit"),
    "crop_seed": _count(0, "PRNG seed of the IIS crops", role="fit", minimum=0),
    "bank_chunk": _count(4096, "ID-dictionary rows per search step", role="fit"),
}
COUT_HPARAMS = {
    **HPARAMS,
    "cout_queue": _count(128, "C-Out outliers seeding the queue", role="fit", minimum=0),
    "cout_bank": _count(5, "C-Out outliers in the fixed memory bank", role="fit", minimum=0),
    "cout_seed": _count(0, "PRNG seed of the C-Out crops and split", role="fit", minimum=0),
}

register(
    Detector(
        name="oodd",
        score=_score_oodd,
        fit=fit_oodd,
        fit_splits=("train",),
        hparams=HPARAMS,
        stats_type=OODDStats,
        needs=frozenset({"feature", "logits"}),
        stream=True,
        init_state=init_state,
        step=step,
        reference=(
            "Yang et al. CVPR 2025 (OODD), release zxk1212/OODD knn_postprocessor.py: IIS + "
            "priority queue, insert-then-score, no APS. Defaults = CIFAR-10 (oodd.OODD_DEFAULTS "
            "for others). score() treats the batch as the stream; use oodd.release_protocol "
            "for the paper's per-OOD-set seed-100 permuted stream."
        ),
    )
)
register(
    Detector(
        name="oodd_cout",
        score=_score_oodd,
        fit=_fit_oodd_cout,
        fit_splits=("train",),
        hparams=COUT_HPARAMS,
        stats_type=OODDStats,
        needs=frozenset({"feature", "logits"}),
        stream=True,
        init_state=init_state,
        step=step,
        reference=(
            "OODD + C-Out/DOS: OUR implementation of the paper's description (not in the "
            "release): low-MSP crops (scale 0.08-0.3) of ID-train images seed the queue "
            "(cout_queue) and form a fixed memory bank (cout_bank). Needs train Inputs.x."
        ),
    )
)
