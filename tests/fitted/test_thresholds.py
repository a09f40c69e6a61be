"""Thresholds: the empirical rule, the finite-sample guarantee (by simulation) and fpr."""

import numpy as np
import pytest
from scipy import stats as sps

from jaxood.fitted import thresholds


def test_empirical_tpr_flags_at_most_the_allowed_count():
    rng = np.random.default_rng(0)
    for n in (1, 7, 20, 100, 1001):
        s = rng.normal(size=n)
        for tpr in (0.5, 0.9, 0.95, 0.99, 1.0):
            t, info = thresholds.at_tpr(s, tpr)
            flagged = int(np.sum(s < t))
            assert flagged <= np.floor((1 - tpr) * n + 1e-9)
            # and it is the largest such threshold among the scores: the next score up
            # would flag more than allowed (unless t is the maximum)
            higher = np.sort(s)[np.sort(s) > t]
            if higher.size:
                assert np.sum(s < higher[0]) > np.floor((1 - tpr) * n + 1e-9)
            assert info["calibration_flag_rate"] == flagged / n


def test_ties_never_flag_more_than_allowed():
    s = np.array([1.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0, 4.0])
    t, _ = thresholds.at_tpr(s, 0.8)  # allowed: 2 flagged
    assert np.sum(s < t) <= 2


@pytest.mark.parametrize("n,tpr,confidence", [(200, 0.95, 0.9), (500, 0.9, 0.95), (60, 0.95, 0.9)])
def test_confidence_bound_holds_over_calibration_draws(n, tpr, confidence):
    """With probability >= confidence over the draw, the true ID flag rate is <= 1 - tpr."""
    rng = np.random.default_rng(1)
    draws = 4000
    ok = 0
    for _ in range(draws):
        s = rng.normal(size=n)
        t, _ = thresholds.at_tpr(s, tpr, confidence=confidence)
        ok += sps.norm.cdf(t) <= 1 - tpr  # true flag rate of N(0, 1) ID scores
    coverage = ok / draws
    margin = 4 * np.sqrt(confidence * (1 - confidence) / draws)
    assert coverage >= confidence - margin
    # Not trivially conservative: the largest valid order statistic is used, so coverage
    # stays within the binomial step of the target.
    j = thresholds.order_statistic(n, 1 - tpr, confidence)
    exact = sps.binom.sf(j, n, 1 - tpr)  # exact coverage of order statistic j + 1
    assert abs(coverage - exact) < margin
    assert exact < confidence + sps.binom.pmf(j + 1, n, 1 - tpr) + 1e-12


def test_confidence_needs_enough_samples():
    with pytest.raises(ValueError, match="at least 45 are needed"):
        thresholds.at_tpr(np.arange(10.0), 0.95, confidence=0.9)


def test_fpr_threshold_lets_through_at_most_fpr_of_ood():
    rng = np.random.default_rng(2)
    ood = rng.normal(-2, 1, 333)
    cal = rng.normal(0, 1, 100)
    for fpr in (0.0, 0.01, 0.05, 0.2):
        t, info = thresholds.at_fpr(ood, fpr, calibration=cal)
        accepted = np.mean(ood >= t)
        assert accepted <= fpr + 1e-12
        assert info["ood_accept_rate"] == accepted
        assert info["calibration_keep_rate"] == np.mean(cal >= t)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"calibration": [], "tpr": 0.9}, "non-empty"),
        ({"calibration": [1.0, np.nan], "tpr": 0.9}, "NaN"),
        ({"calibration": [1.0, 2.0], "tpr": 0.0}, "tpr"),
        ({"calibration": [1.0, 2.0], "tpr": 1.5}, "tpr"),
        ({"calibration": np.ones((2, 2)), "tpr": 0.9}, "1-D"),
        ({"calibration": np.ones(100), "tpr": 0.9, "confidence": 1.0}, "confidence"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        thresholds.at_tpr(**kwargs)


@pytest.mark.parametrize("m,fpr,confidence", [(300, 0.05, 0.9), (120, 0.1, 0.95)])
def test_fpr_confidence_bound_holds_over_ood_draws(m, fpr, confidence):
    """Issue 21 item 4: with probability >= confidence over the OOD draw, the true OOD pass
    rate (of N(0, 1) OOD scores: 1 - Phi(t)) is <= fpr; the point estimate is not a bound."""
    rng = np.random.default_rng(3)
    draws = 3000
    ok = ok_point = 0
    for _ in range(draws):
        o = rng.normal(size=m)
        t, info = thresholds.at_fpr(o, fpr, confidence=confidence)
        ok += sps.norm.sf(t) <= fpr
        ok_point += sps.norm.sf(thresholds.at_fpr(o, fpr)[0]) <= fpr
    coverage = ok / draws
    margin = 4 * np.sqrt(confidence * (1 - confidence) / draws)
    assert coverage >= confidence - margin
    j = thresholds.order_statistic(m, fpr, confidence)
    assert abs(coverage - sps.binom.sf(j, m, fpr)) < margin  # not trivially conservative
    assert ok_point / draws < 0.75  # the in-sample quantile fails often: a point estimate
    assert info["guarantee"].startswith(f"true OOD pass rate <= {fpr}")


def test_fpr_confidence_needs_enough_ood_scores():
    with pytest.raises(ValueError, match=r"10 OOD scores cannot give a 90%-confidence bound "
                                         r"on a 5.00% OOD pass rate; at least 45"):
        thresholds.at_fpr(np.arange(10.0), 0.05, confidence=0.9)
