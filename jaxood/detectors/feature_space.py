"""Feature-space and head-based detectors: MDS, RMDS, ViM, DICE, fDBD.

GEN and GradNorm (functions of the logits and of the last layer's gradient) live in
:mod:`jaxood.detectors.logits`.

Each follows the OpenOOD v1.5 postprocessor of the same name (``Jingkang50/OpenOOD``,
``openood/postprocessors/<name>_postprocessor.py`` and ``configs/postprocessors/<name>.yml``);
the exact source and any deviation are given in each function's docstring. Scores are
``[B]`` floats, higher = more in-distribution.

Class labels: MDS/RMDS need the ID-train labels. The runner passes them as
``Inputs.extras["labels"]`` (``[N]`` int in ``[0, num_classes)``) on the ``"train"`` split.

Head weights: ViM, DICE and fDBD need the final affine layer ``logits = W f + b``. Models
are pure functions, so we read it off ``model.head`` (``b = head(0)``, ``W^T = head(I) - b``)
at fit time and store it in the stats.

Fitting statistics in float64 NumPy on the host; every fit has a chunked accumulator
(:class:`ClassMoments`, :func:`vim_fit_chunks`) so the training features never need to be
in memory at once. The fitted statistics are typed pytrees (:class:`MDSStats`,
:class:`RMDSStats`, :class:`VimStats`, :class:`DiceStats`, :class:`FDBDStats`) of float32
arrays.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from flax import struct

from jaxood import validate
from jaxood.detectors import _ops, register
from jaxood.types import Detector, HParam, Inputs, Model

LABELS_KEY = "labels"
_HI = jax.lax.Precision.HIGHEST


# ------------------------------------------------------------------------------ helpers


def head_affine(model: Model, variables: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The head as ``(W [K, D], b [K])`` with ``logits = f @ W.T + b`` (float64)."""
    zero = jnp.zeros((1, dim), jnp.float32)
    b = np.asarray(model.head(variables, zero), np.float64)[0]
    wt = np.asarray(model.head(variables, jnp.eye(dim, dtype=jnp.float32)), np.float64) - b
    return wt.T, b


def train_labels(inputs: Inputs, num_classes: int | None = None) -> np.ndarray:
    """``Inputs.extras["labels"]`` as ``[N]`` int64, checked against the features."""
    labels = inputs.extras.get(LABELS_KEY) if inputs.extras else None
    if labels is None:
        raise ValueError(
            "this detector needs the ID-train class labels: pass them as "
            f"Inputs.extras[{LABELS_KEY!r}] ([N] int) on the 'train' split"
        )
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D int array, got {labels.dtype} {labels.shape}")
    if labels.shape[0] != inputs.batch_size:
        raise ValueError(f"{labels.shape[0]} labels for {inputs.batch_size} feature rows")
    if labels.size and (labels.min() < 0 or (num_classes and labels.max() >= num_classes)):
        bad = np.unique(labels[(labels < 0) | (labels >= (num_classes or np.inf))])
        shown = ", ".join(map(str, bad[:10])) + (" ..." if bad.size > 10 else "")
        raise ValueError(
            f"ID-train labels must be class ids in [0, {num_classes}) (the model's classes), "
            f"got {shown}; pass the labels the model was trained with"
        )
    return labels


def _iter_chunks(x: Any, chunk: int = 65536) -> Iterable[np.ndarray]:
    for start in range(0, x.shape[0], chunk):
        yield np.asarray(x[start : start + chunk], np.float64)


# --------------------------------------------------------------------- MDS / RMDS (fit)


class ClassMoments:
    """Streaming per-class counts, sums and the total second moment ``sum x x^T`` (float64).

    Feed feature/label chunks with :meth:`update`, then :meth:`mds_stats` /
    :meth:`rmds_stats`. Memory: ``C*D + D*D`` floats regardless of N.
    """

    def __init__(self, num_classes: int, dim: int):
        self.num_classes, self.dim = int(num_classes), int(dim)
        self.count = np.zeros(self.num_classes, np.int64)
        self.sum = np.zeros((self.num_classes, self.dim))
        self.outer = np.zeros((self.dim, self.dim))

    def update(self, features: Any, labels: Any) -> ClassMoments:
        """Adds a chunk: ``features [n, D]``, ``labels [n]`` int."""
        f = np.asarray(features, np.float64)
        y = np.asarray(labels).astype(np.int64)
        if f.ndim != 2 or f.shape[1] != self.dim or y.shape != (f.shape[0],):
            raise ValueError(
                f"expected features [n, {self.dim}] and labels [n], got {f.shape}, {y.shape}"
            )
        if y.size and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes})")
        self.count += np.bincount(y, minlength=self.num_classes)
        np.add.at(self.sum, y, f)
        self.outer += f.T @ f
        return self

    def _means(self) -> np.ndarray:
        empty = np.flatnonzero(self.count == 0)
        if empty.size:
            raise ValueError(
                f"class(es) {empty.tolist()} have no training samples; class means (MDS/RMDS) "
                "need at least one sample per class (check labels / num_classes)"
            )
        return self.sum / self.count[:, None]

    def mds_stats(self, detector: str = "MDS") -> dict[str, np.ndarray]:
        """Class means ``[C, D]`` and the shared (pooled within-class, /N) covariance's
        precision, as sklearn ``EmpiricalCovariance().fit(centered).precision_`` (pinvh).

        Degenerate fits (see :func:`check_covariance`): a covariance of zero raises, one that
        is singular for lack of samples (``N - C < D``) warns.
        """
        means = self._means()
        n = self.count.sum()
        cov = (self.outer - (means * self.count[:, None]).T @ means) / n
        check_covariance(cov, self.outer / n, int(n), int(n) - self.num_classes, detector,
                         "within-class")
        return {"means": means, "precision": scipy.linalg.pinvh(cov)}

    def rmds_stats(self) -> dict[str, np.ndarray]:
        """MDS stats plus the class-agnostic mean ``[D]`` and precision (background model)."""
        out = self.mds_stats("RMDS")
        n = self.count.sum()
        mean = self.sum.sum(0) / n
        cov = self.outer / n - np.outer(mean, mean)
        check_covariance(cov, self.outer / n, int(n), int(n) - 1, "RMDS", "class-agnostic")
        out.update(whole_mean=mean, whole_precision=scipy.linalg.pinvh(cov))
        return out


#: A covariance whose trace is below this fraction of the features' mean squared norm is
#: zero up to rounding: every training feature equals its mean.
DEGENERATE_RTOL = 1e-9


def check_covariance(
    cov: np.ndarray, second_moment: np.ndarray, n: int, dof: int, detector: str, kind: str
) -> None:
    """Degenerate Gaussian fits (MDS/RMDS), detected instead of scored silently.

    * covariance 0 (every training feature equals its class mean: identical features, one
      sample per class, a constant network): the Mahalanobis distance is undefined and
      ``pinvh`` of rounding noise gives scores of ~1e16 -> ``ValueError``;
    * fewer degrees of freedom than dimensions (``dof = N - C < D``): the covariance is
      singular for lack of samples; the pseudo-inverse (OpenOOD's and sklearn's choice, kept
      for exactness) ignores the missing directions, so deviations along them go undetected
      -> ``UserWarning`` saying how many samples are needed.
    """
    d = cov.shape[0]
    scale = max(float(np.trace(second_moment)), np.finfo(np.float64).tiny)
    if float(np.trace(cov)) <= DEGENERATE_RTOL * scale:
        raise ValueError(
            f"{detector}: the {kind} covariance of the {n} training features is 0 (every "
            "feature equals its class mean: identical features, one sample per class, or a "
            "constant network), so the Mahalanobis distance is undefined; fit on varied "
            f"training features (at least {d + 1} per Gaussian for a full-rank covariance)"
        )
    if dof < d:
        warnings.warn(
            f"{detector}: {n} training features give the {kind} covariance at most "
            f"{max(dof, 0)} degrees of freedom for D = {d} dimensions; its pseudo-inverse (as "
            f"OpenOOD/sklearn) ignores the other {d - max(dof, 0)} directions, so deviations "
            f"along them go undetected. Fit on at least {n - dof + d} training samples",
            UserWarning,
            stacklevel=4,
        )


@struct.dataclass
class MDSStats:
    """Class-conditional Gaussians with a shared covariance, in whitened coordinates.

    Attributes:
      whiten: ``[D, D]`` ``L`` with ``L L^T`` = the shared precision matrix.
      means: ``[C, D]`` class means times ``L``.
      feature_dim: D.
    """

    whiten: jax.Array
    means: jax.Array
    feature_dim: int | None = struct.field(pytree_node=False, default=None)


@struct.dataclass
class RMDSStats:
    """:class:`MDSStats` plus the class-agnostic background Gaussian (RMDS).

    Attributes:
      whiten, means: as :class:`MDSStats`.
      bg_whiten: ``[D, D]`` whitening of the background precision.
      bg_mean: ``[1, D]`` background mean times ``bg_whiten``.
      feature_dim: D.
    """

    whiten: jax.Array
    means: jax.Array
    bg_whiten: jax.Array
    bg_mean: jax.Array
    feature_dim: int | None = struct.field(pytree_node=False, default=None)


def _whiten(precision: np.ndarray) -> np.ndarray:
    """``L`` with ``L L^T = precision`` (PSD; eigendecomposition so pinv'd matrices work)."""
    lam, vec = np.linalg.eigh((precision + precision.T) / 2)
    return vec * np.sqrt(np.clip(lam, 0, None))


def _gaussian_stats(means: np.ndarray, precision: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """``(L [D, D], means @ L [C, D])`` in float32."""
    lw = _whiten(precision)
    return jnp.asarray(lw, jnp.float32), jnp.asarray(means @ lw, jnp.float32)


def _sq_mahalanobis(x: jax.Array, whiten: jax.Array, m: jax.Array) -> jax.Array:
    """``[B, D] -> [B, C]`` squared Mahalanobis distances to each whitened mean ``m [C, D]``."""
    z = jnp.dot(x, whiten, precision=_HI)
    d = (
        jnp.sum(z * z, -1, keepdims=True)
        - 2.0 * jnp.dot(z, m.T, precision=_HI)
        + jnp.sum(m * m, -1)[None, :]
    )
    return jnp.maximum(d, 0.0)


def mds_stats_from(acc: ClassMoments) -> MDSStats:
    """Score-ready MDS stats from a filled :class:`ClassMoments`."""
    s = acc.mds_stats()
    whiten, means = _gaussian_stats(s["means"], s["precision"])
    return MDSStats(whiten=whiten, means=means, feature_dim=acc.dim)


def rmds_stats_from(acc: ClassMoments) -> RMDSStats:
    """Score-ready RMDS stats from a filled :class:`ClassMoments`."""
    s = acc.rmds_stats()
    whiten, means = _gaussian_stats(s["means"], s["precision"])
    bg_whiten, bg_mean = _gaussian_stats(s["whole_mean"][None], s["whole_precision"])
    return RMDSStats(
        whiten=whiten, means=means, bg_whiten=bg_whiten, bg_mean=bg_mean, feature_dim=acc.dim
    )


def mds_score(features: jax.Array, stats: MDSStats) -> jax.Array:
    """Mahalanobis (OpenOOD v1.5 ``mds``): ``max_c -(f - mu_c)^T P (f - mu_c)``.

    Source: Lee et al. 2018; OpenOOD v1.5 ``mds_postprocessor.py`` (penultimate feature
    only, no input noise, no layer ensemble; class means + shared covariance from ID-train,
    ``sklearn.covariance.EmpiricalCovariance`` precision); ``mds.yml``: ``APS_mode: False``.
    ``[B, D] -> [B]``, higher = more ID.
    """
    f = jnp.asarray(features, jnp.float32)
    return -jnp.min(_sq_mahalanobis(f, stats.whiten, stats.means), axis=-1)


def rmds_score(features: jax.Array, stats: RMDSStats) -> jax.Array:
    """Relative Mahalanobis: ``max_c [-MD_c(f) + MD_0(f)]`` with MD_0 the class-agnostic
    Gaussian fitted on all ID-train features.

    Source: Ren et al. 2021; OpenOOD v1.5 ``rmds_postprocessor.py``; ``rmds.yml``:
    ``APS_mode: False``. ``[B, D] -> [B]``, higher = more ID.
    """
    f = jnp.asarray(features, jnp.float32)
    bg = _sq_mahalanobis(f, stats.bg_whiten, stats.bg_mean)[:, 0]
    return jnp.max(-_sq_mahalanobis(f, stats.whiten, stats.means) + bg[:, None], axis=-1)


def _fit_moments(model, data, num_classes=None) -> ClassMoments:
    inputs = data["train"]
    f = inputs.features.feature
    validate.check_array(f, "train features.feature", ndim=2)
    k = num_classes or model.num_classes or int(inputs.features.logits.shape[-1])
    labels = train_labels(inputs, k)
    acc = ClassMoments(k, f.shape[1])
    for start in range(0, f.shape[0], 65536):
        acc.update(f[start : start + 65536], labels[start : start + 65536])
    return acc


# ------------------------------------------------------------------------------------ ViM


@struct.dataclass
class VimStats:
    """ViM's fitted residual space.

    Attributes:
      u: ``[D]`` origin shift ``-pinv(W) b``.
      ns: ``[D, D - dim]`` basis of the residual space.
      alpha: scalar virtual-logit scale (mean max-logit / mean residual norm on ID-train).
      feature_dim: D.
    """

    u: jax.Array
    ns: jax.Array
    alpha: jax.Array
    feature_dim: int | None = struct.field(pytree_node=False, default=None)


#: ViM refuses a fit whose mean residual norm is below this fraction of the mean feature
#: norm (the residual is rounding noise: alpha would be ~1e13 or more).
VIM_RESIDUAL_RTOL = 1e-6


def vim_fit_chunks(
    chunks: Callable[[], Iterable[Any]], w: np.ndarray, b: np.ndarray, dim: int
) -> VimStats:
    """ViM statistics in two streaming passes over ID-train features.

    Args:
      chunks: a callable returning a fresh iterator of ``[n, D]`` feature chunks (called twice).
      w, b: head ``[K, D]``, ``[K]``.
      dim: principal-subspace dimension; the residual space is spanned by the ``D - dim``
        eigenvectors of the smallest eigenvalues. Must satisfy ``0 <= dim < D``.

    Raises:
      ValueError: a bad ``dim``, or a degenerate fit: ``N <= dim`` training features, or
        features (e.g. identical rows) with no residual outside the principal subspace.
    """
    d = w.shape[1]
    if not isinstance(dim, (int, np.integer)) or not 0 <= dim < d:
        raise ValueError(
            f"ViM `dim`={dim} must be an int in [0, feature dim {d}) (no residual space "
            "otherwise); OpenOOD's grid [256, 1000] only fits features with D > dim"
        )
    u = -np.linalg.pinv(w) @ b  # origin shift: the point the head maps to logits 0
    n, cov = 0, np.zeros((d, d))
    for f in chunks():
        c = np.asarray(f, np.float64) - u
        cov += c.T @ c
        n += c.shape[0]
    if n <= dim:
        raise ValueError(
            f"ViM `dim`={dim} needs more than {dim} training features, got N = {n}: the "
            f"principal subspace then holds every training feature, the residual is 0 and "
            "alpha = mean max-logit / mean residual norm is unbounded. Fit on more training "
            "data or lower `dim`"
        )
    lam, vec = np.linalg.eigh(cov / n)
    order = np.argsort(-lam, kind="stable")
    ns = vec[:, order[dim:]]
    vsum = msum = fsum = 0.0
    for f in chunks():
        f = np.asarray(f, np.float64)
        vsum += np.linalg.norm((f - u) @ ns, axis=-1).sum()
        fsum += np.linalg.norm(f - u, axis=-1).sum()
        msum += (f @ w.T + b).max(-1).sum()
    if vsum <= VIM_RESIDUAL_RTOL * fsum:
        raise ValueError(
            f"ViM: the {n} training features have no component outside the top-{dim} "
            f"principal subspace (mean residual norm {vsum / n:.3g} vs feature norm "
            f"{fsum / n:.3g}: identical or rank <= {dim} features), so alpha = mean max-logit "
            "/ mean residual norm is unbounded. Fit on varied training features or lower `dim`"
        )
    # float32, as a float64 scalar meets the float32 residual norms (x64 is off) anyway.
    alpha = np.asarray(msum / vsum, np.float32)
    return VimStats(
        u=jnp.asarray(u, jnp.float32), ns=jnp.asarray(ns, jnp.float32), alpha=alpha,
        feature_dim=int(d),
    )


def vim_score(features: jax.Array, logits: jax.Array, stats: VimStats) -> jax.Array:
    """ViM: ``logsumexp(logits) - alpha * ||(f - u) NS||``.

    Source: Wang et al. 2022; OpenOOD v1.5 ``vim_postprocessor.py`` (``u = -pinv(W) b``,
    ``EmpiricalCovariance(assume_centered=True)`` of ``f - u`` on ID-train, residual space =
    eigenvectors past the top ``dim``, ``alpha = mean max-logit / mean residual norm`` on
    ID-train); ``vim.yml``: ``dim: 256``, ``dim_list: [256, 1000]``, APS on.
    We use ``eigh`` (the covariance is symmetric) where OpenOOD uses ``eig``.
    ``[B, D], [B, K] -> [B]``, higher = more ID.
    """
    f = jnp.asarray(features, jnp.float32)
    vlogit = jnp.linalg.norm(jnp.dot(f - stats.u, stats.ns, precision=_HI), axis=-1)
    return jax.nn.logsumexp(logits, axis=-1) - stats.alpha * vlogit


# ----------------------------------------------------------------------------------- DICE


@struct.dataclass
class DiceStats:
    """DICE's fitted contributions.

    Attributes:
      mean_act: ``[D]`` mean ID-train feature.
      w: ``[K, D]`` head weight; ``b``: ``[K]`` head bias.
      feature_dim: D.
    """

    mean_act: jax.Array
    w: jax.Array
    b: jax.Array
    feature_dim: int | None = struct.field(pytree_node=False, default=None)


def dice_score(features: jax.Array, stats: DiceStats, p: Any) -> jax.Array:
    """DICE: energy of logits from sparsified weights ``W * [mean_act * W > perc_p]``.

    Source: Sun & Li 2022; OpenOOD v1.5 ``dice_postprocessor.py`` (``mean_act`` = mean
    pooled ID-train feature; threshold ``np.percentile(contrib, p)`` over all ``K*D``
    contributions, linear interpolation; strict ``>``); ``dice.yml``: ``p: 90``,
    ``APS_mode: False`` (``p_list [90]``). ``[B, D] -> [B]``, higher = more ID.
    """
    contrib = stats.mean_act[None, :] * stats.w
    thresh = jnp.percentile(contrib, p)
    masked = stats.w * (contrib > thresh)
    logits = jnp.dot(features, masked.T, precision=_HI) + stats.b
    return jax.nn.logsumexp(logits, axis=-1)


# ----------------------------------------------------------------------------------- fDBD


@struct.dataclass
class FDBDStats:
    """fDBD's fitted terms.

    Attributes:
      train_mean: ``[D]`` mean ID-train feature.
      den: ``[K, K]`` ``||w_j - w_p||`` (1 on the diagonal).
      feature_dim: D.
    """

    train_mean: jax.Array
    den: jax.Array
    feature_dim: int | None = struct.field(pytree_node=False, default=None)


def fdbd_denominator(w: np.ndarray) -> np.ndarray:
    """``[K, K]`` with ``[p, j] = ||w_j - w_p||`` and 1 on the diagonal."""
    den = np.linalg.norm(w[None, :, :] - w[:, None, :], axis=-1) if w.shape[0] <= 256 else None
    if den is None:  # Gram identity avoids the K x K x D tensor for big heads
        sq = np.sum(w * w, -1)
        den = np.sqrt(np.clip(sq[:, None] + sq[None, :] - 2 * w @ w.T, 0, None))
    off = den + np.eye(len(den))
    if np.any(off == 0):
        j, p = np.argwhere(off == 0)[0]
        raise ValueError(
            f"fDBD: head weight rows {j} and {p} are identical, so the distance to the decision "
            "boundary between those classes is undefined (division by ||w_j - w_p|| = 0)"
        )
    np.fill_diagonal(den, 1.0)
    return den


def fdbd_score(
    features: jax.Array, logits: jax.Array, stats: FDBDStats, distance_as_normalizer: bool
) -> jax.Array:
    """fDBD: mean-free sum of ``|z_max - z_j| / ||w_max - w_j||`` over classes, divided by
    ``||f - mu_train||`` (or ``||f||`` when ``distance_as_normalizer`` is False).

    Source: Liu & Qin 2024 (fDBD); OpenOOD v1.5 ``fdbd_postprocessor.py`` (sum over all j,
    the ``j = pred`` term is 0/1); ``fdbd.yml``: ``distance_as_normalizer: True``,
    sweep ``[True, False]``, APS on. ``[B, D], [B, K] -> [B]``, higher = more ID. A feature
    exactly at the train mean (``||f|| = 0`` without the normaliser) scores ``+inf``, as in
    OpenOOD (maximally ID; a calibration set holding one is refused by name).
    """
    f = jnp.asarray(features, jnp.float32)
    pred = jnp.argmax(logits, axis=-1)
    diff = jnp.abs(logits - jnp.max(logits, axis=-1, keepdims=True))
    num = jnp.sum(diff / stats.den[pred], axis=-1)
    ref = f - stats.train_mean if distance_as_normalizer else f
    return num / jnp.linalg.norm(ref, axis=-1)


# ------------------------------------------------------------------------- detector glue


def _feat(inputs: Inputs) -> jax.Array:
    validate.check_array(inputs.features.feature, "features.feature", ndim=2)
    return inputs.features.feature


def _logits(inputs: Inputs) -> jax.Array:
    validate.check_array(inputs.features.logits, "features.logits", ndim=2)
    return inputs.features.logits


def _fit_mds(model, variables, data) -> MDSStats:
    return mds_stats_from(_fit_moments(model, data))


def _fit_rmds(model, variables, data) -> RMDSStats:
    return rmds_stats_from(_fit_moments(model, data))


def vim_dim_grid(d: int) -> dict[str, tuple]:
    """ViM's ``dim`` must be < D: keep OpenOOD's (256, 1000) values that fit; with none
    (D <= 256), use (D // 4, D // 2)."""
    fits = tuple(v for v in (256, 1000) if v < d)
    if fits == (256, 1000):
        return {}
    return {"dim": fits or (max(1, d // 4), max(1, d // 2))}


def _fit_vim(model, variables, data, *, dim) -> VimStats:
    f = data["train"].features.feature
    validate.check_array(f, "train features.feature", ndim=2)
    w, b = head_affine(model, variables, f.shape[1])
    return vim_fit_chunks(functools.partial(_iter_chunks, f), w, b, dim)


def _fit_dice(model, variables, data) -> DiceStats:
    f = data["train"].features.feature
    validate.check_array(f, "train features.feature", ndim=2)
    w, b = head_affine(model, variables, f.shape[1])
    total = sum(c.sum(0) for c in _iter_chunks(f))
    if not np.any(total):
        raise ValueError(
            "DICE: the mean ID-train feature is 0 in every dimension, so every contribution "
            "W * mean_act is 0, the sparsified head keeps no weight and every input gets the "
            "same score; check the features (a dead network?)"
        )
    return DiceStats(
        mean_act=jnp.asarray(total / f.shape[0], jnp.float32),
        w=jnp.asarray(w, jnp.float32),
        b=jnp.asarray(b, jnp.float32),
        feature_dim=int(f.shape[1]),
    )


def _fit_fdbd(model, variables, data) -> FDBDStats:
    f = data["train"].features.feature
    validate.check_array(f, "train features.feature", ndim=2)
    w, _ = head_affine(model, variables, f.shape[1])
    total = sum(c.sum(0) for c in _iter_chunks(f))
    return FDBDStats(
        train_mean=jnp.asarray(total / f.shape[0], jnp.float32),
        den=jnp.asarray(fdbd_denominator(w), jnp.float32),
        feature_dim=int(f.shape[1]),
    )


def _score_mds(model, variables, stats, inputs):
    """``max_c -MD_c(f)``, ``[B]``, higher = more ID."""
    _ops.require_stats(stats, MDSStats, "mds")
    return mds_score(_feat(inputs), stats)


def _score_rmds(model, variables, stats, inputs):
    """``max_c [-MD_c(f) + MD_0(f)]``, ``[B]``, higher = more ID."""
    _ops.require_stats(stats, RMDSStats, "rmds")
    return rmds_score(_feat(inputs), stats)


def _score_vim(model, variables, stats, inputs):
    """``logsumexp(logits) - alpha ||residual||``, ``[B]``, higher = more ID."""
    _ops.require_stats(stats, VimStats, "vim")
    return vim_score(_feat(inputs), _logits(inputs), stats)


def _score_dice(model, variables, stats, inputs, *, p):
    """Energy of the sparsified head, ``[B]``, higher = more ID."""
    _ops.require_stats(stats, DiceStats, "dice")
    validate.check_percentile(p, "p")
    return dice_score(_feat(inputs), stats, p)


def _score_fdbd(model, variables, stats, inputs, *, distance_as_normalizer):
    """Mean-free decision-boundary distance over the feature norm, ``[B]``, higher = more ID."""
    _ops.require_stats(stats, FDBDStats, "fdbd")
    return fdbd_score(_feat(inputs), _logits(inputs), stats, bool(distance_as_normalizer))


_FEATURE = frozenset({"feature"})
_FEATURE_LOGITS = frozenset({"feature", "logits"})
_OPENOOD = "OpenOOD v1.5 openood/postprocessors/"

register(
    Detector(
        name="mds",
        score=_score_mds,
        fit=_fit_mds,
        fit_splits=("train",),
        stats_type=MDSStats,
        needs=_FEATURE,
        reference=f"Lee et al. 2018; {_OPENOOD}mds_postprocessor.py, mds.yml (no APS). "
        "Needs Inputs.extras['labels'] on the train split.",
    )
)
register(
    Detector(
        name="rmds",
        score=_score_rmds,
        fit=_fit_rmds,
        fit_splits=("train",),
        stats_type=RMDSStats,
        needs=_FEATURE,
        reference=f"Ren et al. 2021; {_OPENOOD}rmds_postprocessor.py, rmds.yml (no APS). "
        "Needs Inputs.extras['labels'] on the train split.",
    )
)
register(
    Detector(
        name="vim",
        score=_score_vim,
        fit=_fit_vim,
        fit_splits=("train",),
        hparams={
            # Static: it fixes the residual basis' shape.
            "dim": HParam(256, sweep=(256, 1000), role="fit", static=True,
                          check=validate.check_nonnegative_int,
                          doc="principal-subspace dimension (must be < D)"),
        },
        stats_type=VimStats,
        needs=_FEATURE_LOGITS,
        dim_grid=vim_dim_grid,
        reference=f"Wang et al. 2022; {_OPENOOD}vim_postprocessor.py, vim.yml "
        "(dim 256, dim_list [256, 1000]; dim must be < D). Models with D <= 256: the "
        "D-relative grid (D/4, D/2) (our choice; recorded in the results).",
    )
)
register(
    Detector(
        name="dice",
        score=_score_dice,
        fit=_fit_dice,
        fit_splits=("train",),
        hparams={
            "p": HParam(90, check=validate.check_percentile,
                        doc="sparsity: percentile of the contributions W * mean_act"),
        },
        stats_type=DiceStats,
        needs=_FEATURE,
        reference=f"Sun & Li 2022; {_OPENOOD}dice_postprocessor.py, dice.yml (p 90, no APS).",
    )
)
register(
    Detector(
        name="fdbd",
        score=_score_fdbd,
        fit=_fit_fdbd,
        fit_splits=("train",),
        hparams={
            "distance_as_normalizer": HParam(
                True, sweep=(True, False), static=True,
                doc="divide by ||f - mean_train|| (True) or ||f|| (False)",
            ),
        },
        stats_type=FDBDStats,
        needs=_FEATURE_LOGITS,
        reference=f"Liu & Qin 2024; {_OPENOOD}fdbd_postprocessor.py, fdbd.yml.",
    )
)
