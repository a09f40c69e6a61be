"""Bad inputs to the Python API, as a careless user gives them: each case must end in a
user-facing error whose message names the argument (or file) and says what was expected, a
warning, or a result checked here to be the right one. None may pass silently.

Cases are ``(id, call(world), expectation)`` with expectation one of
``raises(ExcType, regex)``, ``warns(regex, check=None)`` or ``result(check)``.
"""

import dataclasses
import math
import re
import warnings
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
import pytest

import jaxood
from jaxood import detectors as R
from jaxood import metrics
from jaxood.detectors import adascale
from jaxood.types import Features, Inputs


@dataclasses.dataclass
class Expect:
    kind: str  # "raises" | "warns" | "result"
    exc: type = ValueError
    match: str = ""
    check: Callable | None = None


def raises(exc, match):
    return Expect("raises", exc, match)


def warns(match, check=None):
    return Expect("warns", match=match, check=check)


def result(check):
    return Expect("result", check=check)


def _model(w):
    return w["loaded"].model, w["loaded"].variables


def _prep(w, x, name="msp"):
    m, v = _model(w)
    return R.prepare_inputs(R.get(name), m, v, x)


def _score(w, name, stats, inputs, **hp):
    m, v = _model(w)
    return R.score(R.get(name), m, v, stats, inputs, **hp)


def _fit(w, name, data, **hp):
    m, v = _model(w)
    return R.fit(R.get(name), m, v, data, **hp)


def _feats(w, n=None, feature=None):
    f = w["feats"]
    feature = np.asarray(f.feature if feature is None else feature)[:n]
    return Features(logits=np.asarray(f.logits)[: len(feature)], feature=feature)


def _same_rows(w, n=64):
    f = w["feats"]
    return Features(logits=np.repeat(np.asarray(f.logits)[:1], n, 0),
                    feature=np.repeat(np.asarray(f.feature)[:1], n, 0))


def _labels(w, n=None):
    return np.asarray(w["keys"]["y_val"])[:n]


def _pixels(w):
    return w["keys"]["x_val"][..., None].astype(np.float32)  # 0..255, not normalised


def _fit_api(w, det, data=None, hp=None, **kw):
    return jaxood.fit(det, w["loaded"], w["id_data"] if data is None else data, hp, **kw)


def _close_to_float32(x_cast):
    def check(w, out):
        want = _prep(w, np.asarray(x_cast, np.float32))
        np.testing.assert_allclose(np.asarray(out.features.logits),
                                   np.asarray(want.features.logits), rtol=1e-6, atol=1e-6)
    return check


def _bf16(w):
    return jnp.asarray(w["x_val"], jnp.bfloat16)


def _plugin(w, score_fn, fitted=False):
    """A user's detector whose score has the wrong shape or values, through the registry
    (or jaxood.fit and a FittedDetector)."""
    from jaxood.types import Detector

    def score(model, variables, stats, inputs):
        return score_fn(inputs.features.logits)

    det = Detector(name="fuzz_plugin", score=score, needs=frozenset({"logits"}))
    with R.temporary_register(det):
        if fitted:
            return _fit_api(w, "fuzz_plugin", data={"val": w["keys"]["x_val"]})(w["x_val"])
        return _score(w, "fuzz_plugin", None, Inputs(w["feats"]))


def _bench(w, **kw):
    from jaxood.bench import runner

    cfg = {"benchmark": "npz:" + w["npz"], "models": [w["model"]], "detectors": ["msp"],
           "out_dir": str(w["root"] / "bench_api"), "progress": False, "plots": False, **kw}
    return runner.run(runner.BenchConfig(**cfg))


def _assert_unknown_acc(m):
    assert np.isnan(m.acc)  # None = accuracy unknown, reported as NaN
    assert m.auroc == pytest.approx(100 * metrics.auroc(IDS, OODS))


def _assert_equal(a, b):
    assert a == b


IDS = np.random.default_rng(0).normal(1, 1, 50)
OODS = np.random.default_rng(1).normal(0, 1, 40)

CASES = [
    # ---------------------------------------------------- model boundary: registry path
    ("prep/uint8", lambda w: _prep(w, w["keys"]["x_val"][..., None]),
     raises(ValueError, r"`x` is uint8 \(raw images\)")),
    ("prep/nchw", lambda w: _prep(w, np.zeros((4, 1, 8, 8), np.float32)),
     raises(ValueError, r"`x`: expected \[N, H, W, C\] = \[N, 8, 8, 1\].*NCHW\? use "
                        r"x\.transpose\(0, 2, 3, 1\)")),
    ("prep/wrong_hw", lambda w: _prep(w, np.zeros((4, 32, 32, 1), np.float32)),
     raises(ValueError, r"`x`: expected \[N, H, W, C\] = \[N, 8, 8, 1\], got \[4, 32, 32, 1\]")),
    ("prep/wrong_channels", lambda w: _prep(w, np.zeros((4, 8, 8, 3), np.float32)),
     raises(ValueError, r"`x`: .*with 1 channel")),
    ("prep/one_image", lambda w: _prep(w, w["x_val"][0]),
     raises(ValueError, r"`x` must be a batch .*one image \(8, 8, 1\): use x\[None\]")),
    ("prep/empty", lambda w: _prep(w, w["x_val"][:0]), raises(ValueError, "`x` is an empty")),
    ("prep/nan", lambda w: _prep(w, np.full_like(w["x_val"], np.nan)),
     raises(ValueError, r"`x` contains \d+ NaN/Inf")),
    ("prep/inf", lambda w: _prep(w, np.where(w["x_val"] > 1, np.inf, w["x_val"])),
     raises(ValueError, r"`x` contains \d+ NaN/Inf")),
    ("prep/int32", lambda w: _prep(w, w["x_val"].astype(np.int32)),
     raises(ValueError, r"`x` must hold normalised floating-point images .*int32")),
    ("prep/bool", lambda w: _prep(w, w["x_val"] > 0),
     raises(ValueError, r"`x` must hold normalised floating-point .*bool")),
    ("prep/none", lambda w: _prep(w, None), raises(ValueError, "`x` is required")),
    ("prep/unknown_hparam", lambda w: R.prepare_inputs(R.get("msp"), *_model(w), w["x_val"],
                                                       foo=1),
     raises(ValueError, r"unknown hyperparameter\(s\) \['foo'\]")),
    ("prep/pixels_0_255", lambda w: _prep(w, _pixels(w)),
     warns(r"`x` ranges over \[0, 255\]: it looks like unnormalised")),
    ("prep/bfloat16", lambda w: _prep(w, _bf16(w)),
     result(lambda w, out: _close_to_float32(np.asarray(_bf16(w), np.float32))(w, out))),
    ("prep/float16", lambda w: _prep(w, w["x_val"].astype(np.float16)),
     result(lambda w, out: _close_to_float32(w["x_val"].astype(np.float16))(w, out))),
    ("prep/nested_list", lambda w: _prep(w, w["x_val"][:3].tolist()),
     result(lambda w, out: _close_to_float32(w["x_val"][:3])(w, out))),
    # ---------------------------------------------------- AdaSCALE's functional API
    ("ada/score_uint8", lambda w: adascale.score_batch(*_model(w), None,
                                                       w["keys"]["x_val"][..., None]),
     raises(ValueError, r"`x` is uint8")),
    ("ada/fit_nchw", lambda w: adascale.fit_batch(*_model(w), np.zeros((8, 1, 8, 8), np.float32),
                                                  k1=10.0, k2=20.0),
     raises(ValueError, r"`x_val`: expected .*NCHW\? use x_val\.transpose")),
    ("ada/fit_wrong_hw", lambda w: adascale.fit_batch(
        *_model(w), np.zeros((8, 16, 16, 1), np.float32), k1=10.0, k2=20.0),
     raises(ValueError, r"`x_val`: expected \[N, H, W, C\] = \[N, 8, 8, 1\]")),
    ("ada/fit_pixels", lambda w: adascale.fit_batch(*_model(w), _pixels(w), k1=10.0, k2=20.0),
     warns(r"`x_val` ranges over")),
    ("ada/fit_bfloat16", lambda w: adascale.fit_batch(*_model(w), _bf16(w), k1=10.0, k2=20.0),
     result(lambda w, st: np.testing.assert_allclose(
         st.sorted_q, adascale.fit_batch(*_model(w), np.asarray(_bf16(w), np.float32),
                                         k1=10.0, k2=20.0).sorted_q, rtol=1e-5))),
    ("ada/fit_batch_size_0", lambda w: adascale.fit_batch(*_model(w), w["x_val"], batch_size=0),
     raises(ValueError, r"`batch_size` must be an integer >= 1")),
    ("ada/fit_eps_nan", lambda w: adascale.fit_batch(*_model(w), w["x_val"], eps=math.nan),
     raises(ValueError, r"`eps` must be a finite number")),
    ("ada/fit_eps_negative", lambda w: adascale.fit_batch(*_model(w), w["x_val"], eps=-1.0),
     raises(ValueError, r"`eps` must be in \[0")),
    ("ada/fit_lmbda_nan", lambda w: adascale.fit_batch(*_model(w), w["x_val"], lmbda=math.nan),
     raises(ValueError, r"`lmbda` must be a finite number")),
    ("ada/fit_one_sample", lambda w: adascale.fit_batch(*_model(w), w["x_val"][:1], k1=10.0,
                                                        k2=20.0),
     raises(ValueError, "at least 2 ID samples")),
    ("ada/score_not_fitted", lambda w: adascale.score_batch(*_model(w), None, w["x_val"]),
     raises(ValueError, "fit first")),
    ("ada/percentile_scalar", lambda w: adascale.score_from_features(
        *_model(w), adascale.fit_ecdf(np.arange(10.0), k1=10.0, k2=20.0),
        np.abs(w["feats"].feature), np.abs(w["feats"].feature), percentile=90),
     raises(ValueError, r"`percentile` must be a pair \(p_min, p_max\)")),
    ("ada/percentile_triple", lambda w: adascale.score_from_features(
        *_model(w), adascale.fit_ecdf(np.arange(10.0), k1=10.0, k2=20.0),
        np.abs(w["feats"].feature), np.abs(w["feats"].feature), percentile=(70, 80, 90)),
     raises(ValueError, r"`percentile` must be a pair")),
    ("ada/hparam_percentile_scalar", lambda w: R.get("adascale_a").resolve({"percentile": 90}),
     raises(ValueError, r"`percentile` must be a sequence of 2")),
    ("ada/D_mismatch", lambda w: adascale.score_from_features(
        *_model(w), adascale.fit_ecdf(np.arange(10.0), feature_dim=16),
        np.ones((3, 6), np.float32), np.ones((3, 6), np.float32)),
     raises(ValueError, r"fitted on features of D = 16, got D = 6")),
    # ---------------------------------------------------- registry fit / score
    ("score/not_fitted", lambda w: _score(w, "knn", None, Inputs(_feats(w))),
     raises(ValueError, "must be fitted first")),
    ("score/wrong_stats", lambda w: _score(w, "knn", {"bank": 1}, Inputs(_feats(w))),
     raises(ValueError, r"`stats` for detector 'knn' must be a KNNStats")),
    ("score/D_mismatch", lambda w: _score(
        w, "knn", _fit(w, "knn", {"train": Inputs(_feats(w))}),
        Inputs(_feats(w, feature=np.ones((10, 6), np.float32)))),
     raises(ValueError, r"fitted on D = 16 features, got D = 6")),
    ("score/fit_hparam", lambda w: _score(w, "knn", _fit(w, "knn", {"train": Inputs(_feats(w))}),
                                          Inputs(_feats(w)), bank_chunk=3),
     raises(ValueError, r"\{'bank_chunk': 'fit'\} are not score hyperparameters")),
    ("score/logits_1d", lambda w: _score(w, "msp", None, Inputs(Features(
        np.ones(5, np.float32), np.ones((5, 3), np.float32)))),
     raises(ValueError, r"`features.logits` must have rank 2")),
    ("score/logits_nan", lambda w: _score(w, "msp", None, Inputs(Features(
        np.full((5, 5), np.nan, np.float32), np.ones((5, 3), np.float32)))),
     raises(ValueError, r"`features.logits` contains 25 NaN")),
    ("score/features_bfloat16", lambda w: _score(w, "msp", None, Inputs(Features(
        jnp.asarray(w["feats"].logits, jnp.bfloat16), w["feats"].feature))),
     result(lambda w, s: np.testing.assert_allclose(np.asarray(s, np.float32), np.asarray(
         _score(w, "msp", None, Inputs(w["feats"])), np.float32), atol=1e-2))),
    ("fit/missing_split", lambda w: _fit(w, "knn", {"val": Inputs(_feats(w))}),
     raises(ValueError, r"fits on ID split\(s\) \['train'\]; missing \['train'\]")),
    ("fit/no_labels", lambda w: _fit(w, "mds", {"train": Inputs(_feats(w))}),
     raises(ValueError, r"needs the ID-train class labels")),
    ("fit/labels_out_of_range", lambda w: _fit(w, "mds", {"train": Inputs(
        _feats(w), extras={"labels": _labels(w) + 3})}),
     raises(ValueError, r"ID-train labels must be class ids in \[0, 5\).*got 5, 6, 7")),
    ("fit/labels_float", lambda w: _fit(w, "mds", {"train": Inputs(
        _feats(w), extras={"labels": _labels(w).astype(float)})}),
     raises(ValueError, "labels must be a 1-D int array")),
    ("fit/labels_count", lambda w: _fit(w, "mds", {"train": Inputs(
        _feats(w), extras={"labels": _labels(w, 10)})}),
     raises(ValueError, "10 labels for 100 feature rows")),
    ("hparam/K_zero", lambda w: R.get("knn").resolve({"K": 0}),
     raises(ValueError, r"`K` must be an integer >= 1")),
    ("hparam/K_float", lambda w: R.get("knn").resolve({"K": 5.5}),
     raises(ValueError, r"`K` must be an integer")),
    ("hparam/K_string", lambda w: R.get("knn").resolve({"K": "5"}),
     raises(ValueError, r"`K` must be a finite number, got '5'")),
    ("hparam/react_percentile_100", lambda w: R.get("react").resolve({"percentile": 100}),
     raises(ValueError, r"`percentile` must be in the open interval \(0, 100\)")),
    ("hparam/temperature_inf", lambda w: R.get("ebo").resolve({"temperature": math.inf}),
     raises(ValueError, r"`temperature` must be a finite number")),
    ("hparam/M_bool", lambda w: R.get("gen").resolve({"M": True}),
     raises(ValueError, r"`M` must be a finite number, got True")),
    ("hparam/unknown_detector", lambda w: R.get("adascale"),
     raises(ValueError, r"unknown detector 'adascale'; valid names: adascale_a")),
    # ---------------------------------------------------- degenerate fits
    ("degenerate/mds_identical", lambda w: _fit(w, "mds", {"train": Inputs(
        _same_rows(w), extras={"labels": np.arange(64) % 5})}),
     raises(ValueError, r"MDS: the within-class covariance .* is 0")),
    ("degenerate/rmds_identical", lambda w: _fit(w, "rmds", {"train": Inputs(
        _same_rows(w), extras={"labels": np.arange(64) % 5})}),
     raises(ValueError, r"RMDS: the within-class covariance .* is 0")),
    ("degenerate/mds_one_per_class", lambda w: _fit(w, "mds", {"train": Inputs(
        _feats(w, 5), extras={"labels": np.arange(5)})}),
     raises(ValueError, r"MDS: the within-class covariance of the 5 training features is 0")),
    ("degenerate/mds_few_samples", lambda w: _fit(w, "mds", {"train": Inputs(
        _feats(w, 8), extras={"labels": np.arange(8) % 5})}),
     warns(r"MDS: 8 training features give the within-class covariance at most 3 degrees of "
           r"freedom for D = 16 .*at least 21")),
    ("degenerate/vim_one_sample", lambda w: _fit(w, "vim", {"train": Inputs(_feats(w, 1))},
                                                 dim=4),
     raises(ValueError, r"ViM `dim`=4 needs more than 4 training features, got N = 1")),
    ("degenerate/vim_identical", lambda w: _fit(w, "vim", {"train": Inputs(_same_rows(w))},
                                                dim=4),
     raises(ValueError, r"ViM: the 64 training features have no component outside")),
    ("degenerate/vim_dim_ge_D", lambda w: _fit(w, "vim", {"train": Inputs(_feats(w))}, dim=16),
     raises(ValueError, r"ViM `dim`=16 must be an int in \[0, feature dim 16\)")),
    ("degenerate/knn_K_above_bank", lambda w: _score(
        w, "knn", _fit(w, "knn", {"train": Inputs(_feats(w, 10))}), Inputs(_feats(w))),
     raises(ValueError, r"`K`=50 must be in \[1, bank size 10\].*use K <= 10")),
    ("degenerate/knn_zero_features", lambda w: _fit(w, "knn", {"train": Inputs(
        _feats(w, feature=np.zeros((100, 16), np.float32)))}),
     raises(ValueError, r"KNN: all 100 training features are zero vectors")),
    ("degenerate/dice_zero_features", lambda w: _fit(w, "dice", {"train": Inputs(
        _feats(w, feature=np.zeros((100, 16), np.float32)))}),
     raises(ValueError, r"DICE: the mean ID-train feature is 0")),
    ("degenerate/react_zero_features", lambda w: _fit(w, "react", {"val": Inputs(
        _feats(w, feature=np.zeros((100, 16), np.float32)))}),
     raises(ValueError, r"ReAct threshold .* is 0")),
    ("degenerate/nap_r_zero_features", lambda w: _fit(w, "nap_r", {"val": Inputs(
        _feats(w, feature=np.zeros((100, 16), np.float32)))}),
     raises(ValueError, r"ReAct threshold")),
    ("degenerate/bfact_sparse", lambda w: _fit(w, "bfact", {"train": Inputs(
        _feats(w, feature=np.zeros((100, 16), np.float32)))}),
     raises(ValueError, r"BFAct threshold .* is 0")),
    ("degenerate/optfs_constant", lambda w: _fit(w, "optfs", {"train": Inputs(
        _feats(w, feature=np.zeros((100, 16), np.float32)))}),
     raises(ValueError, r"OptFS: .* equal")),
    ("degenerate/oodd_alpha", lambda w: _fit(w, "oodd", {"train": Inputs(
        _feats(w), extras={"labels": _labels(w)})}, alpha=0.001),
     raises(ValueError, r"`alpha`=0.001 of 100 training samples keeps nothing")),
    ("degenerate/oodd_k_in", lambda w: _score(w, "oodd", _fit(w, "oodd", {"train": Inputs(
        _feats(w, 6), extras={"labels": _labels(w, 6)})}), Inputs(_feats(w))),
     raises(ValueError, r"`k_in`=5 must be in \[1, bank size 3\]")),
    ("degenerate/adascale_equal_q", lambda w: adascale.fit_ecdf(np.ones(20), k1=10.0, k2=20.0),
     warns(r"all 20 ID-val Q' values are equal")),
    # ---------------------------------------------------- metrics
    ("metrics/scores_2d", lambda w: metrics.auroc(np.stack([IDS, IDS], 1), OODS),
     raises(ValueError, r"`id_scores` must be 1-D \[N\].*logits\?")),
    ("metrics/scores_column", lambda w: metrics.compute_all_metrics(IDS, OODS[:, None]),
     raises(ValueError, r"`ood_scores` must be 1-D.*\.ravel\(\)")),
    ("metrics/scores_scalar", lambda w: metrics.auroc(1.0, OODS),
     raises(ValueError, r"`id_scores` must be 1-D")),
    ("metrics/scores_none", lambda w: metrics.auroc(None, OODS),
     raises(ValueError, r"`id_scores` is None")),
    ("metrics/scores_empty", lambda w: metrics.auroc(IDS, []),
     raises(ValueError, r"`ood_scores` is empty")),
    ("metrics/scores_nan", lambda w: metrics.auroc(np.r_[IDS, np.nan], OODS),
     raises(ValueError, r"`id_scores` contains 1 NaN/Inf")),
    ("metrics/scores_strings", lambda w: metrics.auroc(["a", "b"], OODS),
     raises(ValueError, r"`id_scores` must be real-valued scores")),
    ("metrics/scores_bool", lambda w: metrics.auroc(IDS > 1, OODS),
     raises(ValueError, r"`id_scores` must be real-valued scores .*booleans")),
    ("metrics/scores_ragged", lambda w: metrics.auroc([IDS, IDS[:3]], OODS),
     raises(ValueError, r"`id_scores` is ragged")),
    ("metrics/acc_percent", lambda w: metrics.compute_all_metrics(IDS, OODS, 95.0),
     raises(ValueError, r"`acc` must be a fraction in \[0, 1\].*got 95.0")),
    ("metrics/acc_negative", lambda w: metrics.compute_all_metrics(IDS, OODS, -0.1),
     raises(ValueError, r"`acc` must be a fraction")),
    ("metrics/acc_string", lambda w: metrics.compute_all_metrics(IDS, OODS, "0.9"),
     raises(ValueError, r"`acc` must be a fraction in \[0, 1\] or None")),
    ("metrics/acc_none", lambda w: metrics.compute_all_metrics(IDS, OODS, None),
     result(lambda w, m: _assert_unknown_acc(m))),
    ("metrics/recall_percent", lambda w: metrics.fpr_at_recall(IDS, OODS, 95),
     raises(ValueError, r"`recall` must be a fraction in \(0, 1\]")),
    ("metrics/accuracy_logits", lambda w: metrics.accuracy(np.ones((10, 5)), np.arange(10) % 5),
     raises(ValueError, r"`predictions` must be \[N\] class ids.*argmax")),
    ("metrics/accuracy_float_labels", lambda w: metrics.accuracy(np.zeros(10), np.full(10, .5)),
     raises(ValueError, r"`labels` must be integer class ids")),
    ("metrics/accuracy_length", lambda w: metrics.accuracy(np.zeros(10), np.zeros(9)),
     raises(ValueError, r"predictions \(10,\) and labels \(9,\) differ")),
    ("metrics/jax_bfloat16", lambda w: metrics.auroc(jnp.asarray(IDS, jnp.bfloat16), OODS),
     result(lambda w, a: _assert_equal(a, metrics.auroc(
         np.asarray(jnp.asarray(IDS, jnp.bfloat16), np.float64), OODS)))),
    # ---------------------------------------------------- jaxood.fit
    ("jfit/unknown_detector", lambda w: _fit_api(w, "foo"),
     raises(ValueError, r"unknown detector 'foo'")),
    ("jfit/detector_type", lambda w: _fit_api(w, 42),
     raises(ValueError, r"`detector` must be a registered name .* got int")),
    ("jfit/model_missing", lambda w: jaxood.fit("msp", "/nonexistent/model", w["id_data"]),
     raises(FileNotFoundError, r"model directory '/nonexistent/model' does not exist")),
    ("jfit/model_tuple", lambda w: jaxood.fit("msp", (w["loaded"].model,), w["id_data"]),
     raises(ValueError, r"`model` must be a saved-model directory")),
    ("jfit/id_data_list", lambda w: _fit_api(w, "msp", data=[w["keys"]["x_val"]]),
     raises(ValueError, r"`id_data` must map split names to data, e.g. \{'val': images\}, "
                        r"got list")),
    ("jfit/no_val", lambda w: _fit_api(w, "msp", data={"train": w["id_data"]["train"]}),
     raises(ValueError, r"missing \['val'\]")),
    ("jfit/key_test", lambda w: _fit_api(w, "msp", data={**w["id_data"], "test": 1}),
     raises(ValueError, r"`id_data` keys must be 'train' and/or 'val', got \['test'\]")),
    ("jfit/hparams_missing_file", lambda w: _fit_api(w, "knn", hp="/nonexistent/aps.json"),
     raises(FileNotFoundError, r"hyperparameter file '/nonexistent/aps.json'")),
    ("jfit/hparams_list", lambda w: _fit_api(w, "knn", hp=[1, 2]),
     raises(ValueError, r"`hparams` must be a dict, an aps.json file .* got list")),
    ("jfit/hparams_nan", lambda w: _fit_api(w, "react", hp={"percentile": math.nan}),
     raises(ValueError, r"`percentile` must be a finite number")),
    ("jfit/tpr_percent", lambda w: _fit_api(w, "msp", tpr=95),
     raises(ValueError, r"`tpr` must be in \(0, 1\], got 95")),
    ("jfit/batch_size_0", lambda w: _fit_api(w, "msp", batch_size=0),
     raises(ValueError, r"`batch_size` must be an integer >= 1, got 0")),
    ("jfit/labels_count", lambda w: _fit_api(w, "mds", data={
        "train": (w["keys"]["x_train"], w["keys"]["y_train"][:10]), "val": w["keys"]["x_val"]}),
     raises(ValueError, r"id_data\['train'\]: 300 images but 10 labels")),
    ("jfit/labels_out_of_range", lambda w: _fit_api(w, "mds", data={
        "train": (w["keys"]["x_train"], w["keys"]["y_train"] + 7), "val": w["keys"]["x_val"]}),
     raises(ValueError, r"ID-train labels must be class ids in \[0, 5\)")),
    ("jfit/float_nchw", lambda w: _fit_api(w, "msp", data={"val": np.zeros((9, 1, 8, 8),
                                                                            np.float32)}),
     raises(ValueError, r"`id_data\['val'\]`: expected .*NCHW")),
    ("jfit/float_wrong_hw", lambda w: _fit_api(w, "msp", data={"val": np.zeros((9, 16, 16, 1),
                                                                                np.float32)}),
     raises(ValueError, r"`id_data\['val'\]`: expected \[N, H, W, C\] = \[N, 8, 8, 1\]")),
    ("jfit/uint8_wrong_size", lambda w: _fit_api(w, "msp", data={"val": np.zeros((9, 16, 16),
                                                                                  np.uint8)}),
     raises(ValueError, r"`id_data\['val'\]`: uint8 images .* the model takes \(8, 8, 1\)")),
    ("jfit/uint8_nchw", lambda w: _fit_api(w, "msp", data={"val": np.zeros((9, 1, 8, 8),
                                                                            np.uint8)}),
     raises(ValueError, r"`id_data\['val'\]`: uint8 images must be .*NCHW\? use")),
    ("jfit/float_nan", lambda w: _fit_api(w, "msp", data={"val": np.full((9, 8, 8, 1), np.nan,
                                                                          np.float32)}),
     raises(ValueError, r"`id_data\['val'\]\[0:9\]` contains \d+ NaN")),
    ("jfit/empty", lambda w: _fit_api(w, "msp", data={"val": np.zeros((0, 8, 8, 1),
                                                                       np.float32)}),
     raises(ValueError, r"`id_data\['val'\]` is an empty batch")),
    ("jfit/pixels_float", lambda w: _fit_api(w, "msp", data={"val": _pixels(w)}),
     warns(r"`id_data\['val'\]` ranges over \[0, 255\]")),
    ("jfit/one_calibration_image", lambda w: _fit_api(w, "msp", data={
        "val": w["keys"]["x_val"][:1]}),
     warns(r"only 1 calibration score\(s\).*at least 20")),
    ("jfit/npz_missing_key", lambda w: _fit_api(w, "msp", data={"val": w["npz"] + ":x_nope"}),
     raises(ValueError, r"digits.npz' has no array 'x_nope'; it has \['x_train'")),
    ("jfit/npz_corrupt", lambda w: _fit_api(w, "msp", data={"val": w["files"]["corrupt"]}),
     raises(ValueError, r"corrupt.npz' is not a readable .npz file")),
    ("jfit/npz_bad_member", lambda w: _fit_api(w, "msp", data={
        "val": w["files"]["bad_member"] + ":x_train"}),
     raises(ValueError, r"bad_member.npz: array 'x_train' is unreadable")),
    ("jfit/npy_file", lambda w: _fit_api(w, "msp", data={"val": w["inputs"]["npy"]}),
     result(lambda w, fitted: _assert_equal(fitted.calibration_info["n"], 30))),
    ("jfit/binary_not_a_list", lambda w: _fit_api(w, "msp", data={
        "val": str(w["loaded"].directory) + "/manifest.json.bin"}),
     raises(FileNotFoundError, r"manifest.json.bin' does not exist")),
    ("jfit/binary_file", lambda w: _fit_api(w, "msp", data={"val": w["files"]["bad_member"]
                                                             .replace(".npz", ".bin")}),
     raises(ValueError, r"is not a text image list \(it is binary\)")),
    ("jfit/vim_one_train_image", lambda w: _fit_api(w, "vim", data={
        "train": w["keys"]["x_train"][:1], "val": w["keys"]["x_val"]}, hp={"dim": 4}),
     raises(ValueError, r"ViM `dim`=4 needs more than 4 training features")),
    ("jfit/empty_folder", lambda w: _fit_api(w, "msp", data={"val": str(w["root"])}),
     raises(ValueError, r"holds no images")),
    # ---------------------------------------------------- FittedDetector
    ("fitted/uint8", lambda w: w["knn"](w["keys"]["x_val"][..., None]),
     raises(ValueError, r"`x` is uint8")),
    ("fitted/nchw", lambda w: w["knn"](np.zeros((3, 1, 8, 8), np.float32)),
     raises(ValueError, r"NCHW\? use x.transpose")),
    ("fitted/threshold_percent", lambda w: w["knn"].threshold(tpr=95),
     raises(ValueError, r"`tpr` must be in \(0, 1\], got 95")),
    ("fitted/threshold_nan", lambda w: w["knn"].threshold(tpr=math.nan),
     raises(ValueError, r"`tpr` must be in \(0, 1\]")),
    ("fitted/threshold_fpr_no_ood", lambda w: w["knn"].threshold(fpr=0.05),
     raises(ValueError, r"needs `ood`")),
    ("fitted/threshold_ood_2d", lambda w: w["knn"].threshold(fpr=0.05, ood=np.zeros((3, 2))),
     raises(ValueError, r"`ood` must be OOD scores \[M\] or normalised OOD images")),
    ("fitted/score_images_float_nchw", lambda w: w["knn"].score_images(
        np.zeros((3, 1, 8, 8), np.float32)),
     raises(ValueError, r"NCHW")),
    ("fitted/score_images_uint8_big", lambda w: w["knn"].score_images(
        np.zeros((3, 16, 16), np.uint8)),
     raises(ValueError, r"uint8 images of shape \(16, 16\) .* the model takes \(8, 8, 1\)")),
    ("fitted/score_images_missing_file", lambda w: w["knn"].score_images(["/nonexistent.png"]),
     raises(ValueError, r"could not read '/nonexistent.png'")),
    ("fitted/calibrate_empty", lambda w: w["knn"].calibrate(np.zeros((0, 8, 8, 1), np.float32)),
     raises(ValueError, r"`calibration` is an empty batch")),
    ("fitted/save_exists", lambda w: w["knn"].save(w["det"]),
     raises(FileExistsError, r"det_knn exists; pass overwrite=True")),
    ("fitted/save_unwritable", lambda w: w["knn"].save(w["unwritable"]),
     raises(PermissionError, r"cannot write .*a_file/sub")),
    ("fitted/export_unwritable", lambda w: w["knn"].export(w["unwritable"]),
     raises(PermissionError, r"cannot write .*a_file/sub")),
    ("fitted/export_batch_0", lambda w: w["knn"].export(str(w["root"] / "e0"), batch_size=0),
     raises(ValueError, r"`batch_size` must be an integer >= 1, got 0")),
    ("fitted/export_platform", lambda w: w["knn"].export(str(w["root"] / "e1"),
                                                         platforms=("gpu9",)),
     raises(ValueError, r"`platforms` must be some of \['cpu', 'cuda', 'rocm', 'tpu'\]")),
    ("fitted/load_missing", lambda w: jaxood.load_detector("/nonexistent/det", w["model"]),
     raises(FileNotFoundError, r"saved detector '/nonexistent/det' does not exist")),
    ("fitted/load_batch_0", lambda w: jaxood.load_detector(w["det"], w["model"], batch_size=0),
     raises(ValueError, r"`batch_size` must be an integer >= 1, got 0")),
    # ---------------------------------------------------- second campaign (beyond the issue)
    ("more/torch_nchw", lambda w: _fit_api(w, "msp", data={"val": __import__("torch").zeros(
        30, 1, 8, 8)}),
     raises(ValueError, r"`id_data\['val'\]`: expected .*NCHW")),
    ("more/torch_nhwc", lambda w: _fit_api(w, "msp", data={"val": __import__("torch").tensor(
        w["x_val"])}),
     result(lambda w, fitted: np.testing.assert_allclose(
         fitted.calibration, _fit_api(w, "msp", data={"val": w["x_val"]}).calibration))),
    ("more/tuple_of_3", lambda w: _fit_api(w, "msp", data={"val": (w["x_val"],) * 3}),
     raises(ValueError, r"`id_data\['val'\]` is a tuple of 3 arrays")),
    ("more/ragged_list", lambda w: _fit_api(w, "msp", data={"val": [w["x_val"][0],
                                                                     w["x_val"][1][:4]]}),
     raises(ValueError, r"`id_data\['val'\]` is ragged .*images must share one shape")),
    ("more/dict_input", lambda w: _fit_api(w, "msp", data={"val": {"x": w["x_val"]}}),
     raises(ValueError, r"`id_data\['val'\]` must be images .*got a dict with keys \['x'\]")),
    ("more/scalar_input", lambda w: _fit_api(w, "msp", data={"val": 5}),
     raises(ValueError, r"`id_data\['val'\]` must be a batch of images .*got shape \(\)")),
    ("more/unused_split", lambda w: _fit_api(w, "msp"),
     warns(r"id_data \['train'\] not used: 'msp' fits on \[\]")),
    ("more/features_wrong_batch", lambda w: R.prepare_inputs(
        R.get("msp"), *_model(w), w["x_val"], features=_feats(w, 5)),
     raises(ValueError, r"`features` must be model.features\(variables, x\) for the same 100")),
    ("more/score_features_not_inputs", lambda w: _score(w, "msp", None, w["feats"]),
     raises(ValueError, r"`inputs` must be a jaxood.Inputs .*got Features")),
    ("more/fit_inputs_not_dict", lambda w: _fit(w, "knn", Inputs(_feats(w))),
     raises(ValueError, r"`data` must map ID split names \['train'\] to jaxood.Inputs")),
    ("more/fit_dict_of_arrays", lambda w: _fit(w, "knn", {"train": w["feats"].feature}),
     raises(ValueError, r"got \{'train': ArrayImpl\}")),
    ("more/plugin_2d_scores", lambda w: _plugin(w, lambda lg: lg),
     raises(ValueError, r"detector 'fuzz_plugin': score returned shape \(100, 5\) for a batch "
                        r"of 100; it must return \[B\]")),
    ("more/plugin_scalar_score", lambda w: _plugin(w, lambda lg: lg.sum()),
     raises(ValueError, r"score returned shape \(\) for a batch of 100")),
    ("more/plugin_2d_fitted", lambda w: _plugin(w, lambda lg: lg, fitted=True),
     raises(ValueError, r"detector 'fuzz_plugin': score returned shape \(\d+, 5\)")),
    ("more/plugin_nan_fitted", lambda w: _plugin(w, lambda lg: lg[:, 0] * jnp.nan, fitted=True),
     raises(ValueError, r"detector 'fuzz_plugin' gave 100 NaN/Inf score\(s\) on the 100 "
                        r"calibration inputs")),
    ("more/names_with_commas", lambda w: R.get("msp,ebo"),
     raises(ValueError, r"separate them with spaces, not commas")),
    ("more/name_upper_case", lambda w: R.get("MSP"),
     raises(ValueError, r"names are lower case: 'msp'")),
    ("more/odin_std_length", lambda w: R.score(R.get("odin"), *_model(w), None, _prep(
        w, w["x_val"], "odin"), std=(0.5, 0.5, 0.5)),
     raises(ValueError, r"ODIN `std` has 3 value\(s\) but the images have 1 channel")),
    ("more/save_over_a_model", lambda w: w["knn"].save(w["model"], overwrite=True),
     raises(FileExistsError, r"refusing to replace .*model: it is a folder without "
                             r"detector.json")),
    ("more/export_over_a_file", lambda w: w["knn"].export(w["npz"], overwrite=True),
     raises(FileExistsError, r"refusing to replace .*digits.npz: it is a file without "
                             r"metadata.json")),
    ("more/bench_models_string", lambda w: _bench(w, models=w["model"]),
     raises(ValueError, r"`models` must be a list, got the string")),
    ("more/bench_detectors_string", lambda w: _bench(w, detectors="msp"),
     raises(ValueError, r"`detectors` must be a list, got the string 'msp'; use \['msp'\]")),
    ("more/bench_hparams_not_dict", lambda w: _bench(w, hparams={"react": 90}),
     raises(ValueError, r"hparams\['react'\] must be a dict of hyperparameters")),
    ("more/bench_same_model_twice", lambda w: _bench(w, models=[w["model"], w["model"]]),
     raises(ValueError, r"given more than once")),
    ("more/bench_plot_typo", lambda w: _bench(w, plot_detectors=["mps"]),
     raises(ValueError, r"unknown detector 'mps'")),
    ("more/bench_cache_is_a_file", lambda w: _bench(w, cache_dir=w["npz"]),
     raises(ValueError, r"digits.npz' is not writable")),
    ("more/bench_batch_size", lambda w: _bench(w, batch_size=0),
     raises(ValueError, r"`batch_size` must be an integer >= 1, got 0")),
    ("fitted/bfloat16", lambda w: w["knn"](_bf16(w)),
     result(lambda w, s: np.testing.assert_allclose(
         s, w["knn"](np.asarray(_bf16(w), np.float32)), rtol=1e-6))),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(fuzz_world, case):
    _, call, expect = case
    w = fuzz_world
    if expect.kind == "raises":
        with pytest.raises(expect.exc, match=expect.match):
            call(w)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = call(w)
    messages = [str(c.message) for c in caught if issubclass(c.category, UserWarning)]
    if expect.kind == "warns":
        assert any(re.search(expect.match, m) for m in messages), messages
    else:
        assert not messages, f"a correct result must not warn: {messages}"
    if expect.check is not None:
        expect.check(w, out)


def test_cases_cover_the_issue_list():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)
