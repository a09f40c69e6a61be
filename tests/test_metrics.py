"""jaxood.metrics against OpenOOD's `auc_and_fpr_recall`, reproduced here with sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from jaxood import metrics


def openood_reference(id_scores, ood_scores, recall=0.95):
    """OpenOOD v1.5 openood/evaluators/metrics.py::auc_and_fpr_recall (label -1 = OOD)."""
    conf = np.concatenate([id_scores, ood_scores]).astype(np.float64)
    label = np.concatenate([np.zeros(len(id_scores)), -np.ones(len(ood_scores))])
    ood_indicator = np.zeros_like(label)
    ood_indicator[label == -1] = 1
    fpr_list, tpr_list, _ = skm.roc_curve(ood_indicator, -conf)
    fpr = fpr_list[np.argmax(tpr_list >= recall)]
    precision_in, recall_in, _ = skm.precision_recall_curve(1 - ood_indicator, conf)
    precision_out, recall_out, _ = skm.precision_recall_curve(ood_indicator, -conf)
    auroc = skm.auc(fpr_list, tpr_list)
    aupr_in = skm.auc(recall_in, precision_in)
    aupr_out = skm.auc(recall_out, precision_out)
    return auroc, aupr_in, aupr_out, fpr


def classic_reference(id_scores, ood_scores):
    conf = np.concatenate([id_scores, ood_scores])
    is_id = np.concatenate([np.ones(len(id_scores)), np.zeros(len(ood_scores))])
    fpr, tpr, _ = skm.roc_curve(is_id, conf)
    return fpr[np.argmax(tpr >= 0.95)]


def ours(id_scores, ood_scores):
    return (
        metrics.auroc(id_scores, ood_scores),
        metrics.aupr_in(id_scores, ood_scores),
        metrics.aupr_out(id_scores, ood_scores),
        metrics.fpr_at_95(id_scores, ood_scores),
    )


CASES = {
    "random": lambda r: (r.normal(1, 1, 300), r.normal(0, 1, 500)),
    "heavily_tied": lambda r: (np.round(r.normal(1, 1, 300)), np.round(r.normal(0, 1, 200))),
    "all_equal": lambda r: (np.zeros(40), np.zeros(60)),
    "perfect": lambda r: (r.uniform(2, 3, 50), r.uniform(0, 1, 70)),
    "inverted": lambda r: (r.uniform(0, 1, 50), r.uniform(2, 3, 70)),
    "single_id": lambda r: (np.array([0.3]), r.normal(0, 1, 30)),
    "single_each": lambda r: (np.array([1.0]), np.array([0.0])),
    "two_value_blocks": lambda r: (np.repeat([0.0, 1.0], [30, 70]), np.repeat([0.0, 1.0], [60, 40])),
    "float32_scores": lambda r: (r.normal(1, 1, 200).astype(np.float32),
                                 r.normal(0, 1, 100).astype(np.float32)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_openood_reference(case):
    id_s, ood_s = CASES[case](np.random.default_rng(0))
    np.testing.assert_allclose(ours(id_s, ood_s), openood_reference(id_s, ood_s), rtol=0,
                               atol=1e-9)
    assert metrics.fpr_at_95_classic(id_s, ood_s) == pytest.approx(
        classic_reference(id_s, ood_s), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-5, 5), min_size=1, max_size=40),
    st.lists(st.integers(-5, 5), min_size=1, max_size=40),
)
def test_matches_reference_on_small_tied_sets(id_ints, ood_ints):
    id_s, ood_s = np.asarray(id_ints, float) / 2, np.asarray(ood_ints, float) / 2
    np.testing.assert_allclose(ours(id_s, ood_s), openood_reference(id_s, ood_s), atol=1e-9)
    assert metrics.fpr_at_95_classic(id_s, ood_s) == pytest.approx(
        classic_reference(id_s, ood_s), abs=1e-9)


def test_drop_intermediate_matters_and_is_reproduced():
    # A staircase of tied (ID, OOD) pairs makes the ROC a diagonal; sklearn's default
    # drop_intermediate removes its inner points, which moves OpenOOD's FPR@95.
    id_s = np.arange(100, dtype=float)
    ood_s = np.arange(100, dtype=float)
    assert metrics.fpr_at_95(id_s, ood_s) == openood_reference(id_s, ood_s)[3] == 1.0


def test_compute_all_metrics_is_percent():
    r = np.random.default_rng(1)
    id_s, ood_s = r.normal(1, 1, 100), r.normal(0, 1, 100)
    row = metrics.compute_all_metrics(id_s, ood_s, acc=0.9)
    ref = openood_reference(id_s, ood_s)
    assert row.auroc == pytest.approx(100 * ref[0])
    assert row.fpr95 == pytest.approx(100 * ref[3])
    assert row.acc == pytest.approx(90.0)


def test_accuracy_ignores_ood_labels():
    assert metrics.accuracy([1, 2, 3, 0], [1, 2, 0, -1]) == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "id_s, ood_s, match",
    [
        ([], [1.0], "empty"),
        ([1.0], [], "empty"),
        ([1.0, np.nan], [0.0], "NaN"),
        ([1.0], [np.inf], "NaN/Inf"),
    ],
)
def test_bad_inputs(id_s, ood_s, match):
    with pytest.raises(ValueError, match=match):
        metrics.auroc(id_s, ood_s)
    with pytest.raises(ValueError, match=match):
        metrics.compute_all_metrics(id_s, ood_s)


def test_accuracy_errors():
    with pytest.raises(ValueError, match="at least one ID"):
        metrics.accuracy([0, 1], [-1, -1])
    with pytest.raises(ValueError, match="differ in length"):
        metrics.accuracy([0, 1, 2], [0, 1])


# ------------------------------------------------- the curves themselves against scikit-learn

CURVE_CASES = {
    "random": lambda r: (r.integers(0, 2, 2000), r.normal(0, 1, 2000)),
    "tie_heavy": lambda r: (r.integers(0, 2, 2000), np.round(r.normal(0, 1, 2000), 1)),
    "few_values": lambda r: (r.integers(0, 2, 500), r.integers(0, 4, 500).astype(float)),
    "float32": lambda r: (r.integers(0, 2, 700), r.normal(0, 1, 700).astype(np.float32)),
}


@pytest.mark.parametrize("case", sorted(CURVE_CASES))
@pytest.mark.parametrize("drop", [True, False])
def test_roc_curve_is_sklearns(case, drop):
    y, s = CURVE_CASES[case](np.random.default_rng(2))
    fpr, tpr = metrics.roc_curve(y.astype(float), s.astype(np.float64), drop_intermediate=drop)
    ref_fpr, ref_tpr, _ = skm.roc_curve(y, s, drop_intermediate=drop)
    np.testing.assert_array_equal(fpr, ref_fpr)
    np.testing.assert_array_equal(tpr, ref_tpr)


@pytest.mark.parametrize("case", sorted(CURVE_CASES))
def test_precision_recall_curve_is_sklearns(case):
    y, s = CURVE_CASES[case](np.random.default_rng(3))
    precision, recall = metrics.precision_recall_curve(y.astype(float), s.astype(np.float64))
    ref_p, ref_r, _ = skm.precision_recall_curve(y, s)
    np.testing.assert_allclose(precision, ref_p, rtol=0, atol=1e-15)
    np.testing.assert_allclose(recall, ref_r, rtol=0, atol=1e-15)


@pytest.mark.parametrize("case", sorted(CURVE_CASES))
def test_auc_and_auroc_are_sklearns(case):
    y, s = CURVE_CASES[case](np.random.default_rng(4))
    ref_fpr, ref_tpr, _ = skm.roc_curve(y, s)
    assert metrics.trapezoid_auc(ref_fpr, ref_tpr) == pytest.approx(
        skm.auc(ref_fpr, ref_tpr), abs=1e-12)
    ref_p, ref_r, _ = skm.precision_recall_curve(y, s)
    assert metrics.trapezoid_auc(ref_r, ref_p) == pytest.approx(skm.auc(ref_r, ref_p), abs=1e-12)
    # auroc: OOD (y = 1) positive with score -conf, i.e. conf = -s.
    conf = -s.astype(np.float64)
    got = metrics.auroc(conf[y == 0], conf[y == 1])
    assert got == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)


def test_trapezoid_auc_rejects_non_monotonic_x_as_sklearn_does():
    x, y = np.array([0.0, 0.5, 0.2, 1.0]), np.array([0.0, 1.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="monotonic"):
        metrics.trapezoid_auc(x, y)
    with pytest.raises(ValueError, match="neither increasing nor decreasing"):
        skm.auc(x, y)
