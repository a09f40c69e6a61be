"""Noise-aware verdicts on synthetic per-run records: every outcome of every rule, the interval
against an independent computation, and the Markdown of the report."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from jaxood.analyses import verdicts as V
from jaxood.analyses.output import mean_of_groups, per_run
from jaxood.analyses.report import verdict_table


def t_interval_by_hand(x, level=0.95):
    """Mean ± t_{(1+level)/2, n-1} s / sqrt(n), from the definition."""
    x = np.asarray(x, np.float64)
    n = len(x)
    s = math.sqrt(((x - x.mean()) ** 2).sum() / (n - 1))
    half = sps.t.ppf((1 + level) / 2, n - 1) * s / math.sqrt(n)
    return x.mean() - half, x.mean() + half


def test_interval_matches_the_definition_and_scipy():
    x = [-0.74, 1.37, 0.61]
    mean, lo, hi = V.interval(x)
    assert mean == pytest.approx(np.mean(x))
    assert (lo, hi) == pytest.approx(t_interval_by_hand(x))
    ref = sps.t.interval(0.95, 2, loc=np.mean(x), scale=sps.sem(x))
    assert (lo, hi) == pytest.approx(ref)
    assert math.isnan(V.interval([1.0])[1]) and math.isnan(V.interval([])[0])


def test_issue_headline_differences_are_inconclusive():
    # The recorded far-OOD AUROC differences AdaSCALE-A - SCALE per seed (issue 20): +0.41 in
    # the mean, which a strict ">" called "holds".
    a = {"far_AUROC": [96.0, 97.37, 96.61]}
    b = {"far_AUROC": [96.74, 96.0, 96.0]}
    v = V.better("A beats SCALE", "yes", a, b)
    assert v["outcome"] == V.INCONCLUSIVE
    lo, hi = v["metrics"]["far_AUROC"]["ci"]
    assert lo < 0 < hi and "[" in v["interval"] and "n = 3" in v["interval"]


@pytest.mark.parametrize("shift, outcome", [(2.0, V.HOLDS), (-2.0, V.FAILS), (0.0, V.INCONCLUSIVE)])
def test_better_three_outcomes_auroc(shift, outcome):
    base = np.array([70.0, 72.0, 71.0, 69.5])
    noise = np.array([0.1, -0.1, 0.05, -0.05])
    v = V.better("c", "p", {"near_AUROC": base + shift + noise}, {"near_AUROC": base})
    assert v["outcome"] == outcome


def test_fpr_lower_is_better_and_the_paper_metric_decides():
    # A has the lower FPR@95 (better) on every run but the lower AUROC too.
    a = {"near_FPR@95": [70.0, 71.0, 72.0], "near_AUROC": [70.0, 71.0, 72.0]}
    b = {"near_FPR@95": [75.0, 76.2, 76.9], "near_AUROC": [72.0, 73.1, 74.2]}
    decided = V.better("c", "p", a, b, decide="near_FPR@95")
    assert decided["outcome"] == V.HOLDS and decided["decided_by"] == "near_FPR@95"
    assert decided["metrics"]["near_AUROC"]["outcome"] == V.FAILS
    both = V.better("c", "p", a, b)  # no stated metric: they disagree -> inconclusive
    assert both["outcome"] == V.INCONCLUSIVE and both["decided_by"] == "every metric agrees"


def test_one_run_is_inconclusive_without_interval():
    v = V.better("c", "p", {"near_AUROC": [80.0]}, {"near_AUROC": [70.0]})
    assert v["outcome"] == V.INCONCLUSIVE and "no interval" in v["interval"]


def test_best_outcomes():
    runs = {"x": {"mean_AUROC": [80.0, 81.0, 80.5]}, "y": {"mean_AUROC": [70.0, 71.2, 70.4]},
            "z": {"mean_AUROC": [60.0, 61.0, 60.0]}}
    assert V.best("c", "p", runs, ["x"])["outcome"] == V.HOLDS
    lost = V.best("c", "p", runs, ["z"])
    assert lost["outcome"] == V.FAILS and lost["metrics"]["mean_AUROC"]["pair"] == ["z", "x"]
    tied = {"x": {"mean_AUROC": [80.0, 79.0, 81.0]}, "y": {"mean_AUROC": [79.5, 80.5, 80.2]}}
    assert V.best("c", "p", tied, ["x"])["outcome"] == V.INCONCLUSIVE
    with pytest.raises(ValueError, match="must split"):
        V.best("c", "p", runs, ["x", "y", "z"])


def test_within_outcomes():
    ref = {"near_AUROC": [80.0, 81.0, 82.0]}
    close = {"near_AUROC": [80.1, 80.9, 82.05]}
    far = {"near_AUROC": [85.0, 86.2, 86.9]}
    noisy = {"near_AUROC": [80.0, 83.0, 80.5]}
    assert V.within("c", "p", close, ref, 1.0)["outcome"] == V.HOLDS
    assert V.within("c", "p", far, ref, 1.0)["outcome"] == V.FAILS
    assert V.within("c", "p", noisy, ref, 1.0)["outcome"] == V.INCONCLUSIVE


def test_above_outcomes():
    assert V.above("c", "p", [1.2, 1.25, 1.22], 1.0)["outcome"] == V.HOLDS
    assert V.above("c", "p", [0.8, 0.82, 0.79], 1.0)["outcome"] == V.FAILS
    assert V.above("c", "p", [0.8, 1.2, 1.05], 1.0)["outcome"] == V.INCONCLUSIVE
    assert V.above("c", "p", [0.8, 0.82, 0.79], 1.0, up=False)["outcome"] == V.HOLDS


def test_trend_step_is_not_a_fall():
    dims = [128, 512, 1024, 2048, 3024]
    step = V.trend("falls", "p", dims, [9.05, 10.42, 2.50, 2.61, 2.95])  # issue 20's ratios
    assert step["outcome"] == V.INCONCLUSIVE
    tau, p = sps.kendalltau(dims, [9.05, 10.42, 2.50, 2.61, 2.95])
    assert step["metrics"]["ratio"]["tau"] == pytest.approx(tau) and step["metrics"]["ratio"][
        "p"] == pytest.approx(p)
    assert V.trend("falls", "p", dims, [5, 4, 3, 2, 1])["outcome"] == V.HOLDS
    assert V.trend("falls", "p", dims, [1, 2, 3, 4, 5])["outcome"] == V.FAILS


def test_accuracy_floor_and_exact():
    assert V.below_floor("c", "p", 31.81, 50.0)["outcome"] == V.NA
    assert V.below_floor("c", "p", 97.0, 50.0) is None
    assert V.exact("c", "p", "max Q = 0", True)["outcome"] == V.HOLDS
    assert V.exact("c", "p", "max Q = 1", False)["outcome"] == V.FAILS
    with pytest.raises(ValueError, match="outcome"):
        V.make("c", "p", "h", {}, outcome="maybe")


def test_per_run_rows_and_group_means():
    rows = [{"run": 1, "d": "a", "near_AUROC": 70.0, "far_AUROC": 90.0, "near_FPR@95": 50.0,
             "far_FPR@95": 10.0},
            {"run": 0, "d": "a", "near_AUROC": 60.0, "far_AUROC": 80.0, "near_FPR@95": 60.0,
             "far_FPR@95": 20.0},
            {"run": 0, "d": "a", "near_AUROC": 62.0, "far_AUROC": 80.0, "near_FPR@95": 60.0,
             "far_FPR@95": 20.0},
            {"run": 0, "d": "b", "near_AUROC": 1.0}]
    np.testing.assert_allclose(per_run(rows, "near_AUROC", d="a"), [61.0, 70.0])
    g = mean_of_groups(rows, d="a")
    np.testing.assert_allclose(g["mean_AUROC"], [70.5, 80.0])
    np.testing.assert_allclose(g["mean_FPR@95"], [40.0, 30.0])
    with pytest.raises(KeyError, match="no row"):
        per_run(rows, "near_AUROC", d="c")


def test_verdict_table_marks_and_old_records():
    new = V.above("c", "p", [1.2, 1.25, 1.22], 1.0)
    old = {"claim": "old", "paper": "p", "here": "h", "holds": False}
    md = verdict_table([new, old])
    assert "| holds |" in md and "| **does not hold** |" in md
    assert "old record" in md and "95 % interval" in md
