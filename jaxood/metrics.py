"""OOD metrics with OpenOOD v1.5's exact conventions (``openood/evaluators/metrics.py``).

Scores are "confidences": higher = more in-distribution. Following OpenOOD v1.5:

* OOD is the **positive** class and the ranking score is ``-conf``.
* ``auroc``: area under the ROC curve (trapezoid over sklearn-style ROC points).
* ``fpr_at_95``: OpenOOD's definition, the fraction of **ID** samples flagged as OOD at the
  first ROC point where >= 95% of OOD samples are detected (ROC points with sklearn's
  ``drop_intermediate=True``, as OpenOOD calls ``roc_curve`` with defaults).
* ``fpr_at_95_classic``: the ODIN/Energy/LogitNorm convention, the fraction of **OOD**
  samples accepted when 95% of ID samples are accepted (ID positive, ``conf`` as score).
* ``aupr_in`` / ``aupr_out``: trapezoidal area under the precision-recall curve
  (``sklearn.metrics.auc(recall, precision)``), **not** average precision; ID (resp. OOD)
  positive.
* ``accuracy``: top-1 accuracy over ID samples.

All metric values are fractions in [0, 1]; :func:`compute_all_metrics` multiplies by 100 as
OpenOOD does. Everything here is NumPy float64 on the host: metrics are cheap and need to
be exact, not fast.

The curves (:func:`roc_curve`, :func:`precision_recall_curve`, :func:`trapezoid_auc`) are
scikit-learn's algorithms, written out: ``tests/test_metrics.py`` checks them point for point
against ``sklearn.metrics`` (``roc_curve``, ``precision_recall_curve``, ``auc``,
``roc_auc_score``) on random and tie-heavy scores. They are kept instead of calling
scikit-learn because APS computes an AUROC per grid point, and scikit-learn's functions
re-validate their inputs (target type, lengths, finiteness) on every call, which here are
already checked once by :func:`_as_scores`; an informal check on small arrays did not show
scikit-learn as fast.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxood.validate import is_float_dtype

RECALL_LEVEL = 0.95


class OODMetrics(NamedTuple):
    """OpenOOD's result row, in percent: FPR@95, AUROC, AUPR-In, AUPR-Out, ACC."""

    fpr95: float
    auroc: float
    aupr_in: float
    aupr_out: float
    acc: float


def _as_scores(scores, name: str) -> np.ndarray:
    """``[N]`` finite real scores as float64; anything else is a ``ValueError`` naming ``name``."""
    if scores is None:
        raise ValueError(f"`{name}` is None; pass a 1-D array of scores (one per sample)")
    try:
        raw = np.asarray(scores)
    except ValueError:  # ragged nested sequences
        raise ValueError(
            f"`{name}` is ragged (a list of arrays of different lengths?); pass one 1-D array "
            "of scores (np.concatenate the parts)"
        ) from None
    if raw.dtype == bool or not (np.issubdtype(raw.dtype, np.integer)
                                 or is_float_dtype(raw.dtype)):
        what = "booleans (OOD flags?)" if raw.dtype == bool else f"values of dtype {raw.dtype}"
        raise ValueError(
            f"`{name}` must be real-valued scores (higher = more in-distribution), got {what}"
        )
    if raw.ndim != 1:
        hint = " (logits? reduce them to one score per sample with a detector)" if raw.ndim == 2 \
            and raw.shape[1] > 1 else " (use .ravel() if it holds one score per sample)"
        raise ValueError(f"`{name}` must be 1-D [N], one score per sample, got shape "
                         f"{raw.shape}{hint}")
    arr = raw.astype(np.float64)
    if arr.size == 0:
        raise ValueError(f"`{name}` is empty; metrics need at least one ID and one OOD score")
    if not np.all(np.isfinite(arr)):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(
            f"`{name}` contains {bad} NaN/Inf score(s); a detector produced invalid values"
        )
    return arr


def _binary_inputs(id_scores, ood_scores) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated ``conf`` and OOD indicator (1 = OOD), both non-empty."""
    s_id = _as_scores(id_scores, "id_scores")
    s_ood = _as_scores(ood_scores, "ood_scores")
    conf = np.concatenate([s_id, s_ood])
    is_ood = np.concatenate([np.zeros(s_id.size), np.ones(s_ood.size)])
    return conf, is_ood


def _clf_curve(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative false/true positive counts at each distinct threshold, descending score.

    Same ordering and tie handling as sklearn's ``confusion_matrix_at_thresholds``: a stable
    sort of the scores, reversed, so that tied scores form one threshold.
    """
    order = np.argsort(y_score, kind="mergesort")[::-1]
    y_score = y_score[order]
    y_true = y_true[order]
    distinct = np.where(np.diff(y_score))[0]
    threshold_idxs = np.r_[distinct, y_true.size - 1]
    tps = np.cumsum(y_true)[threshold_idxs]
    fps = 1 + threshold_idxs - tps
    return fps, tps


def roc_curve(y_true: np.ndarray, y_score: np.ndarray, drop_intermediate: bool = True):
    """(fpr, tpr) points as ``sklearn.metrics.roc_curve`` returns them (without thresholds)."""
    fps, tps = _clf_curve(y_true, y_score)
    if drop_intermediate and fps.size > 2:
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        fps, tps = fps[keep], tps[keep]
    fps = np.r_[0.0, fps]
    tps = np.r_[0.0, tps]
    return fps / fps[-1], tps / tps[-1]


def precision_recall_curve(y_true: np.ndarray, y_score: np.ndarray):
    """(precision, recall) as ``sklearn.metrics.precision_recall_curve`` (recall decreasing,
    ending at the point (recall 0, precision 1))."""
    fps, tps = _clf_curve(y_true, y_score)
    ps = tps + fps
    precision = np.where(ps != 0, tps / np.where(ps != 0, ps, 1), 0.0)
    recall = tps / tps[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0]


def trapezoid_auc(x: np.ndarray, y: np.ndarray) -> float:
    """``sklearn.metrics.auc``: trapezoid area for monotonic ``x`` (either direction)."""
    dx = np.diff(x)
    direction = 1.0
    if np.any(dx < 0):
        if np.all(dx <= 0):
            direction = -1.0
        else:
            raise ValueError("x must be monotonic to compute an area under a curve")
    return float(direction * np.trapezoid(y, x))


def auroc(id_scores, ood_scores) -> float:
    """Area under the ROC curve (OOD positive, score = -conf); in [0, 1]."""
    conf, is_ood = _binary_inputs(id_scores, ood_scores)
    fpr, tpr = roc_curve(is_ood, -conf)
    return trapezoid_auc(fpr, tpr)


def fpr_at_recall(id_scores, ood_scores, recall: float = RECALL_LEVEL) -> float:
    """OpenOOD FPR@recall: fraction of ID samples flagged OOD when ``recall`` (a fraction in
    (0, 1]) of OOD is caught."""
    _check_fraction(recall, "recall", "e.g. 0.95 for 95%")
    conf, is_ood = _binary_inputs(id_scores, ood_scores)
    fpr, tpr = roc_curve(is_ood, -conf)
    return float(fpr[np.argmax(tpr >= recall)])


def fpr_at_95(id_scores, ood_scores) -> float:
    """OpenOOD v1.5 FPR@95 (ID false-alarm rate at 95% OOD recall), in [0, 1]."""
    return fpr_at_recall(id_scores, ood_scores, RECALL_LEVEL)


def fpr_at_95_classic(id_scores, ood_scores) -> float:
    """Classic FPR@95TPR (ODIN/Energy/LogitNorm): fraction of OOD samples accepted as ID at the
    first ROC point where >= 95% of ID samples are accepted (ID positive), in [0, 1]."""
    conf, is_ood = _binary_inputs(id_scores, ood_scores)
    fpr, tpr = roc_curve(1.0 - is_ood, conf)
    return float(fpr[np.argmax(tpr >= RECALL_LEVEL)])


def aupr_in(id_scores, ood_scores) -> float:
    """Trapezoidal area under the PR curve with ID as positive and ``conf`` as score."""
    conf, is_ood = _binary_inputs(id_scores, ood_scores)
    precision, recall = precision_recall_curve(1.0 - is_ood, conf)
    return trapezoid_auc(recall, precision)


def aupr_out(id_scores, ood_scores) -> float:
    """Trapezoidal area under the PR curve with OOD as positive and ``-conf`` as score."""
    conf, is_ood = _binary_inputs(id_scores, ood_scores)
    precision, recall = precision_recall_curve(is_ood, -conf)
    return trapezoid_auc(recall, precision)


def accuracy(predictions, labels) -> float:
    """Top-1 accuracy over samples whose label is not -1 (OpenOOD's OOD label).

    Args:
      predictions: ``[N]`` predicted class ids (``argmax`` of the logits).
      labels: ``[N]`` integer class ids, ``-1`` for samples to ignore.
    """
    if np.ndim(predictions) == 2:
        raise ValueError(f"`predictions` must be [N] class ids, got shape "
                         f"{np.shape(predictions)} (logits? take np.argmax(logits, -1))")
    pred = _class_ids(predictions, "predictions")
    lab = _class_ids(labels, "labels")
    if pred.ndim != 1 or lab.ndim != 1:
        raise ValueError(f"`predictions` and `labels` must be 1-D [N], got shapes {pred.shape} "
                         f"and {lab.shape}")
    if pred.shape != lab.shape:
        raise ValueError(f"predictions {pred.shape} and labels {lab.shape} differ in length")
    if np.any(lab < -1):
        raise ValueError(f"`labels` must be class ids >= 0 (or -1 = ignore), got {lab.min()}")
    mask = lab != -1
    if not np.any(mask):
        raise ValueError("accuracy needs at least one ID sample (label != -1)")
    return float(np.mean(pred[mask] == lab[mask]))


def _check_fraction(value, name: str, hint: str, zero: bool = False) -> None:
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))
    ok = ok and np.isfinite(value) and (0.0 <= value <= 1.0 if zero else 0.0 < value <= 1.0)
    if not ok:
        interval = "[0, 1]" if zero else "(0, 1]"
        raise ValueError(f"`{name}` must be a fraction in {interval} ({hint}), got {value!r}")


def _class_ids(values, name: str) -> np.ndarray:
    if values is None:
        raise ValueError(f"`{name}` is None; pass [N] integer class ids")
    arr = np.asarray(values)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"`{name}` must be integer class ids, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"`{name}` must be integer class ids, got non-integer values")
        arr = arr.astype(np.int64)
    return arr


def compute_all_metrics(id_scores, ood_scores, acc: float | None = float("nan")) -> OODMetrics:
    """OpenOOD's ``compute_all_metrics`` row in percent: FPR@95, AUROC, AUPR-In, AUPR-Out, ACC.

    Args:
      id_scores: ``[N_id]`` scores of ID test samples (higher = more ID).
      ood_scores: ``[N_ood]`` scores of one OOD set.
      acc: ID accuracy as a fraction in [0, 1] (taken from the plain classifier, as OpenOOD
        does); ``None`` or NaN when unknown (reported as NaN). A percentage (e.g. 95.0) is
        an error, not silently 9,500 %.
    """
    if acc is None:
        acc = float("nan")
    if isinstance(acc, (bool, np.bool_)) or not isinstance(acc, (int, float, np.number)):
        raise ValueError(f"`acc` must be a fraction in [0, 1] or None, got {acc!r}")
    if not np.isnan(acc):
        _check_fraction(acc, "acc", "the accuracy as a fraction, e.g. 0.95, not 95", zero=True)
    return OODMetrics(
        fpr95=100.0 * fpr_at_95(id_scores, ood_scores),
        auroc=100.0 * auroc(id_scores, ood_scores),
        aupr_in=100.0 * aupr_in(id_scores, ood_scores),
        aupr_out=100.0 * aupr_out(id_scores, ood_scores),
        acc=100.0 * float(acc),
    )
