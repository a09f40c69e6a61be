"""Thresholds that turn scores (higher = more in-distribution) into "flag as OOD".

An input is flagged when ``score < threshold``. All functions are NumPy-only.

* :func:`at_tpr`: keep a fraction ``tpr`` of ID inputs, from ID calibration scores; with
  ``confidence``, a finite-sample guarantee (split-conformal / binomial order statistic):
  over the draw of the ``n`` calibration scores, with probability at least ``confidence``
  the true rate of ID inputs flagged is at most ``1 - tpr`` (for exchangeable ID data).
* :func:`at_fpr`: let through a fraction ``fpr`` of a held-out OOD set. Without
  ``confidence`` this is a point estimate (the in-sample rate is at most ``fpr``; the rate
  on fresh OOD inputs of the same kind scatters around it, above it about half the time);
  with ``confidence``, the same finite-sample guarantee as ``at_tpr``: with probability at
  least ``confidence`` over the draw of the OOD set, the true pass rate of that OOD
  distribution is at most ``fpr``. Neither bounds OOD inputs of other kinds.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats as sps


def _sorted_scores(scores, name: str) -> np.ndarray:
    s = np.asarray(scores, np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D array of scores, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"`{name}` contains NaN/Inf scores")
    return np.sort(s)


def _check_rate(value: float, name: str) -> float:
    value = float(value)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"`{name}` must be in (0, 1], got {value}")
    return value


def order_statistic(n: int, alpha: float, confidence: float,
                    what: str = "calibration scores", rate: str = "ID flag rate") -> int:
    """Largest 0-based index ``j`` with ``P(Binomial(n, alpha) >= j + 1) >= confidence``.

    The ``(j+1)``-th smallest of ``n`` i.i.d. scores has true lower-tail mass
    ``U ~ Beta(j+1, n-j)`` (continuous scores), and ``P(U <= alpha) = P(Bin(n, alpha) >= j+1)``.

    Raises:
      ValueError: ``n`` too small for any order statistic to give the guarantee.
    """
    j = np.arange(n)
    ok = sps.binom.sf(j, n, alpha) >= confidence  # sf(j) = P(Bin >= j + 1)
    if not ok[0]:
        need = math.ceil(math.log1p(-confidence) / math.log1p(-alpha))
        raise ValueError(
            f"{n} {what} cannot give a {confidence:.0%}-confidence bound on a "
            f"{alpha:.2%} {rate}; at least {need} are needed"
        )
    return int(np.flatnonzero(ok)[-1])


def at_tpr(calibration, tpr: float = 0.95, confidence: float | None = None) -> tuple[float, dict]:
    """Threshold keeping ``tpr`` of ID inputs (flag ``score < t``).

    Args:
      calibration: ``[n]`` ID scores.
      tpr: fraction of ID inputs to keep (accept as ID).
      confidence: ``None`` for the empirical rule (at most ``floor((1 - tpr) n)`` calibration
        scores flagged); else the probability of the finite-sample guarantee.

    Returns:
      ``(threshold, info)`` with the rule and the calibration flag rate in ``info``.
    """
    s = _sorted_scores(calibration, "calibration")
    tpr = _check_rate(tpr, "tpr")
    n, alpha = len(s), 1.0 - tpr
    if confidence is None:
        j = min(n - 1, int(math.floor(alpha * n + 1e-9)))
        if j == 0 and alpha > 0:
            warnings.warn(
                f"only {n} calibration score(s): the threshold is their minimum, so no "
                f"calibration input is flagged; a {tpr:.2%} keep rate needs at least "
                f"{math.ceil(1 / alpha)} ID calibration inputs",
                UserWarning,
                stacklevel=3,
            )
    else:
        confidence = _check_confidence(confidence)
        if alpha == 0.0:
            raise ValueError("tpr = 1 has no finite-sample guarantee; use tpr < 1")
        j = order_statistic(n, alpha, confidence)
    t = float(s[j])
    info = {
        "rule": "tpr",
        "tpr": tpr,
        "confidence": confidence,
        "n_calibration": n,
        "order_statistic": j + 1,
        "calibration_flag_rate": float(np.mean(s < t)),
    }
    return t, info


def _check_confidence(confidence) -> float:
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:  # False for NaN too
        raise ValueError(f"`confidence` must be in (0, 1), got {confidence}")
    return confidence


def at_fpr(ood_scores, fpr: float = 0.05, calibration=None,
           confidence: float | None = None) -> tuple[float, dict]:
    """Threshold letting through ``fpr`` of the OOD distribution ``ood_scores`` was drawn
    from (accepted: ``score >= t``).

    Args:
      ood_scores: ``[M]`` scores of held-out OOD inputs.
      fpr: OOD pass rate.
      calibration: optional ``[n]`` ID scores, to report the ID keep rate at ``t``.
      confidence: ``None``: point estimate (at most ``floor(fpr M)`` of ``ood_scores``
        pass); else with this probability over the draw of the ``M`` OOD scores the true
        pass rate is at most ``fpr`` (exchangeable OOD data; binomial order statistic).

    Returns ``(threshold, info)``; ``info`` has the ID keep rate on ``calibration`` if given.
    """
    o = _sorted_scores(ood_scores, "ood_scores")[::-1]
    fpr = float(fpr)
    if not 0.0 <= fpr < 1.0:
        raise ValueError(f"`fpr` must be in [0, 1), got {fpr}")
    if confidence is None:
        k = int(math.floor(fpr * len(o) + 1e-9))
    else:
        confidence = _check_confidence(confidence)
        if fpr == 0.0:
            raise ValueError("fpr = 0 has no finite-sample guarantee; use fpr > 0")
        k = order_statistic(len(o), fpr, confidence, "OOD scores", "OOD pass rate")
    # Just above the (k+1)-th largest OOD score, in float32 (the dtype of jaxood scores), so
    # the comparison gives the same answer in float32 and float64.
    t = float(np.nextafter(np.float32(o[k]), np.float32(np.inf)))
    info = {"rule": "fpr", "fpr": fpr, "confidence": confidence, "n_ood": len(o),
            "ood_accept_rate": float(np.mean(o >= t)),
            "guarantee": "point estimate" if confidence is None else
            f"true OOD pass rate <= {fpr} with probability >= {confidence}"}
    if calibration is not None:
        info["calibration_keep_rate"] = float(np.mean(_sorted_scores(calibration, "cal") >= t))
    return t, info
