"""OpenOOD's Automatic Parameter Search.

APS (``openood/evaluation_api/evaluator.py::hyperparam_search``): for every point of the
detector's sweep grid (Cartesian product in key order), fit if needed, score ID-val and
OOD-val, compute AUROC; the **first strictly greater** AUROC wins (initial maximum 0).

The scores come from :class:`jaxood.features.scorer.Scorer` (compile-once programs of
:mod:`jaxood.scoring`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any


@dataclasses.dataclass
class APSResult:
    """Outcome of a search.

    Attributes:
      best: the chosen full hyperparameter dict.
      best_auroc: its AUROC on ID-val vs OOD-val (fraction).
      table: every grid point with its AUROC, in grid order.
    """

    best: dict[str, Any]
    best_auroc: float
    table: list[tuple[dict[str, Any], float]]


def search(
    grid: Iterable[Mapping[str, Any]],
    evaluate: Callable[[dict], float],
    *,
    skip_invalid: bool = True,
) -> APSResult:
    """Evaluates every grid point and keeps the first strictly greater AUROC (initial 0).

    Args:
      grid: full hyperparameter points in OpenOOD order (``jaxood.detectors.sweep_grid``;
        the runner passes each as an :class:`~jaxood.types.HParamPoint`, handed to
        ``evaluate`` and returned unchanged).
      evaluate: ``hparams -> AUROC`` on ID-val vs OOD-val.
      skip_invalid: points whose evaluation raises ValueError get AUROC NaN and are skipped.

    Returns:
      An :class:`APSResult`; when no point beats 0 (e.g. all AUROC 0) the first point.
    """
    best, best_auroc, table = None, 0.0, []
    first, errors = None, []
    for point in grid:
        try:
            value = float(evaluate(point))
        except ValueError as e:
            if not skip_invalid:
                raise
            # A grid point that does not fit this model/data (e.g. KNN's K larger than the
            # bank, ViM's dim >= D): recorded as NaN and skipped, not fatal.
            errors.append(str(e).splitlines()[0])
            table.append((point, float("nan")))
            continue
        if first is None:
            first = point
        table.append((point, value))
        if value > best_auroc:
            best, best_auroc = point, value
    if first is None:
        reason = f" (every point was invalid; first error: {errors[0]})" if errors else ""
        raise ValueError(f"APS grid is empty{reason}")
    if best is None:
        best = first
    return APSResult(best=best, best_auroc=best_auroc, table=table)
