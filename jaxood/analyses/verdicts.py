"""Noise-aware verdicts on the paper's claims: paired per-run differences with a confidence
interval and three outcomes.

A claim is decided on every run (seed) available. Each rule turns per-run values into a
difference ``d`` whose sign says which way the evidence goes (``d > 0`` = the claim's side),
takes the Student-t interval of its mean over runs (level :data:`LEVEL`) and says

* **holds**: the whole interval is on the claim's side;
* **does not hold**: the whole interval is on the other side;
* **inconclusive**: the interval straddles the boundary, or there is one run only (no noise
  estimate, so no interval);
* **n/a**: the claim cannot be checked here (e.g. a model below the accuracy floor).

Where the paper names the metric of a claim (``decide``), that metric alone decides; otherwise
every metric given must agree (``holds`` on all, or ``does not hold`` on all), else the
verdict is inconclusive. The interval of every metric is kept in the record.

Why Student t and not a bootstrap: with the usual three seeds a bootstrap of the mean has ten
distinct resamples and its interval is the range of the values, too narrow; the t interval
(df = n - 1) widens honestly with few runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats as sps

HOLDS, FAILS, INCONCLUSIVE, NA = "holds", "does not hold", "inconclusive", "n/a"
OUTCOMES = (HOLDS, FAILS, INCONCLUSIVE, NA)
#: Confidence level of every interval.
LEVEL = 0.95
#: Two-sided significance of the trend test (Table 11).
TREND_ALPHA = 0.05
#: Models whose ID-test accuracy (percent) is below this are not judged (option
#: ``accuracy_floor``); 50 % is far above chance for every benchmark here (1/6 ... 1/1000) and
#: below every model the paper's claims are about.
ACCURACY_FLOOR = 50.0
#: ``metric -> higher is better``.
HIGHER_BETTER = {"AUROC": True, "FPR@95": False, "ratio": True}


def higher_better(metric: str) -> bool:
    """Direction of a metric name such as ``near_FPR@95`` or ``val_AUROC``."""
    for suffix, up in HIGHER_BETTER.items():
        if metric.endswith(suffix):
            return up
    raise ValueError(f"unknown direction of metric {metric!r}; name it with a suffix of "
                     f"{list(HIGHER_BETTER)}")


def interval(values, level: float = LEVEL) -> tuple[float, float, float]:
    """``(mean, low, high)``: the Student-t interval of the mean of ``values`` (NaN bounds
    for fewer than two finite values)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan
    half = float(sps.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, mean - half, mean + half


def side(diffs, margin: float = 0.0, level: float = LEVEL) -> dict:
    """The evidence that ``diffs > margin``: outcome, mean, interval and the values."""
    mean, lo, hi = interval(diffs, level)
    if not math.isfinite(lo):
        outcome = INCONCLUSIVE
    elif lo > margin:
        outcome = HOLDS
    elif hi < margin:
        outcome = FAILS
    else:
        outcome = INCONCLUSIVE
    return {"outcome": outcome, "mean": mean, "ci": [lo, hi], "level": level,
            "n": int(np.isfinite(np.asarray(diffs, np.float64)).sum()),
            "values": [float(x) for x in np.asarray(diffs, np.float64)]}


def combine(per_metric: Mapping[str, dict], decide: str | None) -> str:
    """The outcome: the deciding metric's, or the common outcome of every metric."""
    if decide is not None:
        return per_metric[decide]["outcome"]
    outcomes = {m["outcome"] for m in per_metric.values()}
    return outcomes.pop() if len(outcomes) == 1 else INCONCLUSIVE


def _fmt(x: float, digits: int = 2) -> str:
    return f"{x:+.{digits}f}" if math.isfinite(x) else "n/a"


def ci_text(ev: dict, digits: int = 2) -> str:
    """``+0.41 [-2.27, +3.09] (n = 3)`` or ``+0.41 (1 run: no interval)``."""
    if not math.isfinite(ev["ci"][0]):
        return f"{_fmt(ev['mean'], digits)} ({ev['n']} run: no interval)"
    lo, hi = ev["ci"]
    return f"{_fmt(ev['mean'], digits)} [{_fmt(lo, digits)}, {_fmt(hi, digits)}] (n = {ev['n']})"


def make(claim: str, paper: str, here: str, per_metric: Mapping[str, dict],
         decide: str | None = None, outcome: str | None = None, rule: str = "") -> dict:
    """A verdict record (JSON-plain)."""
    outcome = outcome or combine(per_metric, decide)
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    shown = [m for m in ([decide] if decide is not None else per_metric)
             if "ci" in per_metric[m]]
    return {"claim": claim, "paper": paper, "here": here, "outcome": outcome,
            "decided_by": decide or ("every metric agrees" if len(per_metric) > 1 else
                                     next(iter(per_metric), None)),
            "interval": "; ".join(f"{m}: {ci_text(per_metric[m])}" for m in shown),
            "metrics": dict(per_metric), "rule": rule}


def better(claim: str, paper: str, a: Mapping[str, Sequence[float]],
           b: Mapping[str, Sequence[float]], *, decide: str | None = None,
           names: tuple[str, str] = ("A", "B"), level: float = LEVEL) -> dict:
    """Claim "A is better than B": per metric, the per-run paired difference oriented so that
    positive = A better (``{metric: [runs]}`` for each; runs in the same order)."""
    per = {}
    for metric, va in a.items():
        d = np.asarray(va, np.float64) - np.asarray(b[metric], np.float64)
        per[metric] = side(d if higher_better(metric) else -d, level=level)
    here = "; ".join(f"{m} {names[0]} {np.nanmean(a[m]):.2f} vs {names[1]} "
                     f"{np.nanmean(b[m]):.2f}" for m in a)
    return make(claim, paper, here, per, decide,
                rule=f"paired per-run difference {names[0]} - {names[1]} (sign: + = "
                     f"{names[0]} better), t interval")


def best(claim: str, paper: str, candidates: Mapping[str, Mapping[str, Sequence[float]]],
         claimed: Sequence[str], *, decide: str | None = None, level: float = LEVEL) -> dict:
    """Claim "one of ``claimed`` is the best of ``candidates``" (``{label: {metric: [runs]}}``).

    Per metric: the claimed candidate with the best mean against the best other candidate by
    mean (the runner-up when a claimed one leads): holds when the claimed one is better on
    every run beyond noise, does not hold when the other is. The other is picked by its mean on
    the same runs, so "holds" is conservative and "does not hold" slightly optimistic.
    """
    metrics = list(next(iter(candidates.values())))
    inside = [c for c in candidates if c in claimed]
    outside = [c for c in candidates if c not in claimed]
    if not inside or not outside:
        raise ValueError(f"claimed {list(claimed)} must split the candidates {list(candidates)}")
    per, parts = {}, []
    for m in metrics:
        sign = 1.0 if higher_better(m) else -1.0
        key = {c: sign * float(np.nanmean(candidates[c][m])) for c in candidates}
        mine = max(inside, key=key.get)
        other = max(outside, key=key.get)
        d = sign * (np.asarray(candidates[mine][m], np.float64) -
                    np.asarray(candidates[other][m], np.float64))
        per[m] = side(d, level=level)
        per[m]["pair"] = [mine, other]
        lead = max(candidates, key=key.get)
        parts.append(f"{m}: best {lead} ({sign * key[lead]:.2f}); {mine} vs {other}")
    return make(claim, paper, "; ".join(parts), per, decide,
                rule="best claimed vs best other by mean, paired per-run difference, t interval")


def within(claim: str, paper: str, a: Mapping[str, Sequence[float]],
           b: Mapping[str, Sequence[float]], margin: float, *, decide: str | None = None,
           level: float = LEVEL) -> dict:
    """Claim "A is within ``margin`` of B" (equivalence): holds when the interval of the
    paired difference lies inside ``(-margin, margin)``, does not hold when it lies wholly
    outside it, inconclusive otherwise."""
    per = {}
    for m, va in a.items():
        d = np.asarray(va, np.float64) - np.asarray(b[m], np.float64)
        ev = side(d, level=level)
        lo, hi = ev["ci"]
        if not math.isfinite(lo):
            ev["outcome"] = INCONCLUSIVE
        elif -margin < lo and hi < margin:
            ev["outcome"] = HOLDS
        elif lo >= margin or hi <= -margin:
            ev["outcome"] = FAILS
        else:
            ev["outcome"] = INCONCLUSIVE
        per[m] = ev
    here = "; ".join(f"{m} {np.nanmean(a[m]):.2f} vs {np.nanmean(b[m]):.2f}" for m in a)
    return make(claim, paper, here, per, decide,
                rule=f"equivalence: t interval of the paired difference inside ±{margin:g}")


def above(claim: str, paper: str, values: Sequence[float], threshold: float, *,
          up: bool = True, metric: str = "value", digits: int = 3,
          level: float = LEVEL) -> dict:
    """Claim "the value is above (``up``) / below ``threshold``" from per-run values."""
    v = np.asarray(values, np.float64)
    ev = side((v - threshold) if up else (threshold - v), level=level)
    mean, lo, hi = interval(v, level)
    bounds = f" [{lo:.{digits}f}, {hi:.{digits}f}]" if math.isfinite(lo) else ""
    here = f"{metric} = {mean:.{digits}f}{bounds} (n = {ev['n']})"
    name = f"{metric} - {threshold:g}" if up else f"{threshold:g} - {metric}"
    return make(claim, paper, here, {name: ev}, name,
                rule=f"t interval of the per-run {metric} vs {threshold:g}")


def trend(claim: str, paper: str, x: Sequence[float], y: Sequence[float], *,
          decreasing: bool = True, alpha: float = TREND_ALPHA, metric: str = "ratio") -> dict:
    """Claim "y falls (``decreasing``) / rises with x": Kendall's tau (exact p-value for small
    n). Holds when tau has the claimed sign at two-sided p < ``alpha``, does not hold when it
    has the opposite sign at p < ``alpha``, inconclusive otherwise (e.g. a step)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    res = sps.kendalltau(x, y)
    tau, p = float(res.statistic), float(res.pvalue)
    claimed = -tau if decreasing else tau
    if not (math.isfinite(tau) and math.isfinite(p)) or p >= alpha:
        outcome = INCONCLUSIVE
    else:
        outcome = HOLDS if claimed > 0 else FAILS
    ev = {"outcome": outcome, "tau": tau, "p": p, "alpha": alpha, "n": int(len(x)),
          "values": [float(v) for v in y], "x": [float(v) for v in x]}
    here = ", ".join(f"{a:g}: {b:.2f}" for a, b in zip(x, y))
    verdict = make(claim, paper, here, {metric: ev}, metric,
                   rule=f"Kendall tau trend test, two-sided p < {alpha:g}")
    verdict["interval"] = f"tau = {tau:+.2f}, p = {p:.3f} (n = {len(x)})"
    return verdict


def exact(claim: str, paper: str, here: str, ok: bool) -> dict:
    """A claim that is true or false by computation, with no noise (e.g. eps = 0 gives Q = 0)."""
    ev = {"outcome": HOLDS if ok else FAILS, "n": 1}
    verdict = make(claim, paper, here, {"exact": ev}, "exact", rule="exact (no noise)")
    verdict["interval"] = "exact"
    return verdict


def not_applicable(claim: str, paper: str, here: str) -> dict:
    """A claim that cannot be judged here (``here`` says why)."""
    return make(claim, paper, here, {}, None, outcome=NA, rule="not judged")


def below_floor(claim: str, paper: str, accuracy: float, floor: float) -> dict | None:
    """An n/a verdict when ``accuracy`` (percent) is below ``floor``; ``None`` otherwise."""
    if math.isfinite(accuracy) and accuracy >= floor:
        return None
    return not_applicable(claim, paper, f"ID-test accuracy {accuracy:.2f} % is below the "
                                        f"{floor:g} % floor: the model is not judged")
