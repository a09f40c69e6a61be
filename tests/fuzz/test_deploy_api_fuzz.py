"""Bad inputs on the deploy surfaces (issue 21): the fitted detector, its saved state, the
exported artifact, the result store and the file-safety helpers, classified as in
``test_api_fuzz``: ``raises(ExcType, regex)``, ``warns(regex, check=None)`` or
``result(check)``. None may pass silently."""

import json
import math
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from scipy import stats as sps

import jaxood
from jaxood import fsutil
from jaxood.bench.store import ResultStore
from jaxood.data import imglist, inputs
from jaxood.detectors import adascale
from jaxood.fitted import export, standalone
from jaxood.types import PreprocessSpec
from tests.fuzz import test_api_fuzz as api
from tests.fuzz.test_api_fuzz import raises, result, warns

pytest.importorskip("flatbuffers")

MODELS = [{"dir": "m", "fingerprint": {"weights": "aa"}}]


def _model(w):
    return w["loaded"].model, w["loaded"].variables


def _copy(w, src, name):
    dst = w["root"] / "deploy_fuzz" / name
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return str(dst)


def _edited_detector(w, name, edit, keep_checksums=True):
    """A copy of the saved KNN whose detector.json went through ``edit(manifest)``."""
    d = _copy(w, w["det"], name)
    path = os.path.join(d, "detector.json")
    manifest = json.load(open(path))
    if not keep_checksums:
        manifest.pop("fields_sha256")
    edit(manifest)
    with open(path, "w") as f:
        f.write(json.dumps(manifest, allow_nan=True))  # NaN/Infinity as a hand edit writes
    return d


def _load(w, directory):
    return jaxood.load_detector(directory, w["model"])


def _artifact(w):
    if "artifact" not in w:
        w["artifact"] = w["knn"].export(str(w["root"] / "deploy_fuzz" / "knn.jaxexport"),
                                        batch_size=32)
    return w["artifact"]


def _scorer(w, directory=None):
    directory = directory or _artifact(w)
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"art_{abs(hash(directory))}",
                                                  os.path.join(directory, "score.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.load(directory)


def _edited_artifact(w, name, edit, rechecksum=False):
    d = _copy(w, _artifact(w), name)
    edit(d)
    if rechecksum:  # a careful editor also rewrites checksums.json: the schema still holds
        export.write_checksums(d)
    return d


def _edit_meta(**fields):
    def edit(d):
        path = os.path.join(d, "metadata.json")
        meta = {**json.load(open(path)), **fields}
        with open(path, "w") as f:
            f.write(json.dumps(meta, allow_nan=True))
    return edit


def _edit_args(d):
    path = os.path.join(d, "args.npz")
    with np.load(path) as f:
        arrays = dict(f)
    arrays["a1"] = arrays["a1"] * 1.01
    np.savez(path, **arrays)


def _remove(name):
    return lambda d: os.unlink(os.path.join(d, name))


def _write(name, text):
    def edit(d):
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    return edit


def _aps(w, name, table):
    path = w["root"] / "deploy_fuzz" / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(table))
    return str(path)


def _aps_run(weights):
    return [{"run": 0, "model": "other/model", "model_fingerprint": {"weights": weights},
             "chosen": {"K": 7}}]


def _fit(w, det, hp=None, **kw):
    needs_train = "train" in jaxood.detectors.get(det).fit_splits
    data = kw.pop("data", None) or (w["id_data"] if needs_train else {"val": w["keys"]["x_val"]})
    return jaxood.fit(det, w["loaded"], data, hp, **kw)


def _store_dir(w, name, content=None):
    d = w["root"] / "deploy_fuzz" / "stores" / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    if content is not None:
        (d / "store.json").write_text(content)
    return str(d)


def _store_json(benchmark="b", weights="aa", detectors=None):
    return json.dumps({"format": "jaxood-results/1", "benchmark": benchmark,
                       "models": [{"dir": "m", "fingerprint": {"weights": weights}}],
                       "detectors": {} if detectors is None else detectors})


def _put(store, det):
    store.put(det, 0, row={}, aps={}, settings={}, seconds=0.0)
    return store


def _two_stores(w):
    d = _store_dir(w, "two")
    a, b = ResultStore(d, "b", MODELS), ResultStore(d, "b", MODELS)
    _put(a, "msp")
    _put(b, "knn")
    return json.load(open(os.path.join(d, "store.json")))


def _edited_between(w):
    d = _store_dir(w, "edited_between")
    s = ResultStore(d, "b", MODELS)
    with open(os.path.join(d, "store.json"), "w") as f:
        f.write("{truncated")
    return _put(s, "msp")


def _refused_merge(w):
    d = _store_dir(w, "refused", _store_json())
    path = os.path.join(d, "store.json")

    def refuse(old):
        raise ValueError("refused")

    try:
        fsutil.merge_json(path, refuse)
    except ValueError:
        pass
    return open(path).read()


def _png16(w):
    path = w["root"] / "deploy_fuzz" / "sixteen.png"
    path.parent.mkdir(exist_ok=True)
    Image.fromarray((np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)).save(path)
    return imglist.load_image(str(path), w["loaded"].preprocess)


def _stale_temps(w):
    d = w["root"] / "deploy_fuzz" / "temps"
    d.mkdir(parents=True, exist_ok=True)
    dead, live = d / ".tmp-999999999-abc.csv", d / f".tmp-{os.getpid()}-def.csv"
    dead.write_text("partial")
    live.write_text("being written")
    fsutil.clean_stale_temps(str(d))
    return sorted(p.name for p in d.iterdir())


def _symlink_to(w, target, name):
    link = w["root"] / "deploy_fuzz" / name
    link.parent.mkdir(exist_ok=True)
    if not link.exists():
        link.symlink_to(target)
    return str(link)


def _expected_fpr_threshold(ood, fpr, confidence):
    """Independent reference: the largest j with P(Bin(m, fpr) >= j + 1) >= confidence, and
    the threshold just above the (j+1)-th largest score (float32)."""
    m = len(ood)
    j = max(i for i in range(m) if sps.binom.sf(i, m, fpr) >= confidence)
    return float(np.nextafter(np.float32(np.sort(ood)[::-1][j]), np.float32(np.inf)))


def _check_fpr_threshold(w, t):
    ood = np.random.default_rng(7).normal(size=300)
    assert t == _expected_fpr_threshold(ood, 0.1, 0.9)
    assert w["knn"].threshold_info["confidence"] == 0.9
    w["knn"].threshold(0.95)  # restore the shared detector's default threshold


def _fpr_with_confidence(w):
    ood = np.random.default_rng(7).normal(size=300)
    return w["knn"].threshold(fpr=0.1, ood=ood, confidence=0.9)


def _other_weights(w):
    import jax

    m, v = _model(w)
    return m, jax.tree.map(lambda a: np.asarray(a) * 1.001, v)


def _assert_same_scores(w, fitted):
    np.testing.assert_array_equal(fitted(w["x_val"][:16]), w["knn"](w["x_val"][:16]))


def _check_adapted(w, fitted):
    assert fitted.adapted == {k: {"published": p, "used": 6.25, "feature_dim": 16}
                              for k, p in (("k1", 1.0), ("k2", 5.0))}


def _check_min_percent(w, d):
    p = adascale.min_percent(d)
    assert int(d * p / 100) == 1 and abs(p - 100.0 / d) < 1e-12


CASES = [
    # ---------------------------------------------------- thresholds
    ("fitted/fpr_confidence_few_ood", lambda w: w["knn"].threshold(
        fpr=0.05, ood=np.arange(10.0), confidence=0.9),
     raises(ValueError, r"10 OOD scores cannot give a 90%-confidence bound on a 5.00% OOD "
                        r"pass rate; at least 45 are needed")),
    ("fitted/fpr_confidence_nan", lambda w: w["knn"].threshold(
        fpr=0.05, ood=np.arange(100.0), confidence=math.nan),
     raises(ValueError, r"`confidence` must be in \(0, 1\), got nan")),
    ("fitted/fpr_confidence_one", lambda w: w["knn"].threshold(
        fpr=0.05, ood=np.arange(100.0), confidence=1.0),
     raises(ValueError, r"`confidence` must be in \(0, 1\), got 1.0")),
    ("fitted/fpr_zero_with_confidence", lambda w: w["knn"].threshold(
        fpr=0.0, ood=np.arange(100.0), confidence=0.9),
     raises(ValueError, r"fpr = 0 has no finite-sample guarantee")),
    ("fitted/fpr_negative", lambda w: w["knn"].threshold(fpr=-0.1, ood=np.arange(10.0)),
     raises(ValueError, r"`fpr` must be in \[0, 1\), got -0.1")),
    ("fitted/fpr_one", lambda w: w["knn"].threshold(fpr=1.0, ood=np.arange(10.0)),
     raises(ValueError, r"`fpr` must be in \[0, 1\), got 1.0")),
    ("fitted/fpr_ood_nan", lambda w: w["knn"].threshold(fpr=0.1, ood=np.r_[1.0, np.nan]),
     raises(ValueError, r"`ood_scores` contains NaN/Inf")),
    ("fitted/tpr_confidence_zero", lambda w: w["knn"].threshold(0.9, confidence=0.0),
     raises(ValueError, r"`confidence` must be in \(0, 1\), got 0.0")),
    ("fitted/fpr_confidence_value", _fpr_with_confidence,
     result(_check_fpr_threshold)),
    # ---------------------------------------------------- saved state taken on trust
    ("saved/threshold_nan", lambda w: _load(w, _edited_detector(
        w, "t_nan", lambda m: m["threshold"].update(value=math.nan))),
     raises(ValueError, r"detector.json was edited after it was saved \(fields "
                        r"\['threshold'\]\)")),
    ("saved/threshold_inf", lambda w: _load(w, _edited_detector(
        w, "t_inf", lambda m: m["threshold"].update(value=math.inf))),
     raises(ValueError, r"fields \['threshold'\]")),
    ("saved/threshold_string", lambda w: _load(w, _edited_detector(
        w, "t_str", lambda m: m["threshold"].update(value="0.5"))),
     raises(ValueError, r"fields \['threshold'\]")),
    ("saved/detector_renamed", lambda w: _load(w, _edited_detector(
        w, "d_name", lambda m: m.update(detector="msp"))),
     raises(ValueError, r"fields \['detector'\]")),
    ("saved/hparams_edited", lambda w: _load(w, _edited_detector(
        w, "hp", lambda m: m["hparams"].update(K=-1))),
     raises(ValueError, r"fields \['hparams'\]")),
    ("saved/field_removed", lambda w: _load(w, _edited_detector(
        w, "no_layout", lambda m: m.pop("layout"))),
     raises(ValueError, r"fields \['layout'\]")),
    ("saved/field_added", lambda w: _load(w, _edited_detector(
        w, "extra", lambda m: m.update(note="mine"))),
     raises(ValueError, r"fields \['note'\]")),
    ("saved/no_checksums_threshold_string", lambda w: _load(w, _edited_detector(
        w, "nc_t", lambda m: m["threshold"].update(value="abc"), keep_checksums=False)),
     raises(ValueError, r"threshold 'abc' must be a finite number or null")),
    ("saved/no_checksums_threshold_nan", lambda w: _load(w, _edited_detector(
        w, "nc_nan", lambda m: m["threshold"].update(value=math.nan), keep_checksums=False)),
     raises(ValueError, r"threshold nan must be a finite number or null")),
    ("saved/no_checksums_batch_size_0", lambda w: _load(w, _edited_detector(
        w, "nc_bs", lambda m: m.update(batch_size=0), keep_checksums=False)),
     raises(ValueError, r"batch_size must be >= 1, got 0")),
    ("saved/no_checksums_detector_int", lambda w: _load(w, _edited_detector(
        w, "nc_det", lambda m: m.update(detector=3), keep_checksums=False)),
     raises(ValueError, r"field 'detector' is missing or has the wrong type \(int\)")),
    ("saved/no_checksums_hparams_list", lambda w: _load(w, _edited_detector(
        w, "nc_hp", lambda m: m.update(hparams=[5]), keep_checksums=False)),
     raises(ValueError, r"field 'hparams' is missing or has the wrong type \(list\)")),
    ("saved/format_missing", lambda w: _load(w, _edited_detector(
        w, "as_list", lambda m: (m.clear(), m.update(x=1)), keep_checksums=False)),
     raises(ValueError, r"format None, expected 'jaxood-detector/1'")),
    ("saved/tuple_same_weights", lambda w: jaxood.load_detector(w["det"], _model(w)),
     result(_assert_same_scores)),
    ("saved/tuple_other_weights", lambda w: jaxood.load_detector(w["det"], _other_weights(w)),
     raises(ValueError, r"was fitted on another model \(weights: fitted on sha256")),
    # ---------------------------------------------------- --aps of another model
    ("aps/other_model", lambda w: _fit(w, "knn", _aps(w, "other", {"knn": _aps_run("ff")})),
     raises(ValueError, r"was tuned on other model\(s\) \['other/model'\], not on this "
                        r"model's weights")),
    ("aps/no_fingerprint", lambda w: _fit(w, "knn", _aps(w, "nofp", {"knn": [
        {"chosen": {"K": 7}}]})),
     raises(ValueError, r"was tuned on other model\(s\) \['None'\]")),
    ("aps/not_runs", lambda w: _fit(w, "knn", _aps(w, "flat", {"knn": {"K": 5}})),
     raises(ValueError, r"is not an aps.json written by `jaxood bench`")),
    ("aps/empty_runs", lambda w: _fit(w, "knn", _aps(w, "empty", {"knn": []})),
     raises(ValueError, r"is not an aps.json written by `jaxood bench`")),
    ("aps/run_without_chosen", lambda w: _fit(w, "knn", _aps(w, "nochosen", {"knn": [{}]})),
     raises(ValueError, r"is not an aps.json written by `jaxood bench`")),
    # ---------------------------------------------------- percent-of-D settings (D = 16)
    ("dim/adascale_k1_given", lambda w: _fit(w, "adascale_a", {"k1": 1.0},
                                             data={"val": w["keys"]["x_val"]}),
     raises(ValueError, r"`k1`=1.0% of feature dimension 16 rounds down to 0 elements; use "
                        r"at least 6.25%")),
    ("dim/adascale_k2_given", lambda w: _fit(w, "adascale_a", {"k1": 10.0, "k2": 5.0},
                                             data={"val": w["keys"]["x_val"]}),
     raises(ValueError, r"`k2`=5.0% of feature dimension 16 rounds down to 0 elements")),
    ("dim/adascale_pmax_given", lambda w: _fit(w, "adascale_a", {"percentile": (70, 99)},
                                               data={"val": w["keys"]["x_val"]}),
     raises(ValueError, r"percentile 99.0 keeps 0 of 16 activations")),
    ("dim/adascale_defaults", lambda w: _fit(w, "adascale_a", data={"val": w["keys"]["x_val"]}),
     result(_check_adapted)),
    ("dim/scale_99", lambda w: _fit(w, "scale", {"percentile": 99}),
     raises(ValueError, r"`percentile`=99 keeps 0 of the model's D = 16")),
    ("dim/ash_99", lambda w: _fit(w, "ash", {"percentile": 99}),
     raises(ValueError, r"`percentile`=99 keeps 0 of the model's D = 16")),
    ("dim/lts_98", lambda w: _fit(w, "lts", {"percentile": 98}),
     raises(ValueError, r"`percentile`=98 keeps 0 of the model's D = 16.*use percentile <= "
                        r"93.75")),
    ("dim/scale_default_fits", lambda w: _fit(w, "scale"),
     result(lambda w, f: _assert_equal(f.adapted, {}))),
    ("dim/min_percent_7", lambda w: 7, result(_check_min_percent)),
    ("dim/min_percent_3", lambda w: 3, result(_check_min_percent)),
    ("dim/adascale_grid_pairs", lambda w: adascale.dim_grid(40)["percentile"],
     result(lambda w, pairs: _assert_equal(
         (pairs[0], all(p[1] < 99 for p in pairs)), ((75, 85), True)))),
    # ---------------------------------------------------- held-out calibration
    ("cal/react_held_out", lambda w: _fit(w, "react"),
     result(lambda w, f: _assert_equal(
         (f.calibration_info["n"], f.calibration_info["fit_rows"],
          f.calibration_info["used_by_fit"]), (20, 80, False)))),
    ("cal/given_no_split", lambda w: _fit(w, "react", calibration=w["keys"]["x_val"]),
     result(lambda w, f: _assert_equal(
         (f.calibration_info["n"], "held_out_from" in f.calibration_info), (100, False)))),
    ("cal/too_small_to_split", lambda w: _fit(w, "react", data={
        "val": w["keys"]["x_val"][:30]}),
     result(lambda w, f: _assert_equal(f.calibration_info, {"n": 30, "used_by_fit": True}))),
    ("cal/reused_warns_at_confidence", lambda w: _fit(w, "react", data={
        "val": w["keys"]["x_val"][:30]}).threshold(0.5, confidence=0.5),
     warns(r"the calibration scores come from data the detector was also fitted on")),
    ("cal/holdout_split_39", lambda w: inputs.holdout_split(39),
     result(lambda w, s: _assert_equal(s, None))),
    ("cal/holdout_split_40", lambda w: inputs.holdout_split(40),
     result(lambda w, s: _assert_equal((len(s[0]), len(s[1]), len(set(s[0]) & set(s[1]))),
                                       (20, 20, 0)))),
    ("cal/subset_rows", lambda w: inputs.SubsetSource(
        inputs.open_input(w["x_val"], None, (8, 8, 1)), [1, 2, 3, 7, 50]).batch(0, 5),
     result(lambda w, x: np.testing.assert_array_equal(x, w["x_val"][[1, 2, 3, 7, 50]]))),
    # ---------------------------------------------------- bucketed padding
    ("bucket/three_rows", lambda w: w["knn"](w["x_val"][:3]),
     result(lambda w, s: np.testing.assert_allclose(s, w["knn"](w["x_val"])[:3], rtol=1e-6))),
    # ---------------------------------------------------- AdaSCALE functional API
    ("ada/score_batch_eps_negative", lambda w: adascale.score_batch(
        *_model(w), adascale.fit_ecdf(np.arange(10.0), k1=10.0, k2=20.0), w["x_val"],
        eps=-0.5),
     raises(ValueError, r"`eps` must be in \[0")),
    ("ada/perturbed_eps_nan", lambda w: adascale.perturbed_features(*_model(w), w["x_val"],
                                                                    eps=math.nan),
     raises(ValueError, r"`eps` must be a finite number")),
    ("ada/perturbed_o_above_one", lambda w: adascale.perturbed_features(*_model(w), w["x_val"],
                                                                        o=1.5),
     raises(ValueError, r"`o` must be in \[0.0, 1.0\], got 1.5")),
    ("ada/perturbed_region_typo", lambda w: adascale.perturbed_features(
        *_model(w), w["x_val"], region="trivia"),
     raises(ValueError, r"`region` must be one of \['trivial'")),
    ("ada/extract_eps_inf", lambda w: adascale.extract(*_model(w), w["x_val"], o=0.05,
                                                       eps=math.inf),
     raises(ValueError, r"`eps` must be a finite number")),
    ("ada/dim_check_k1", lambda w: adascale.dim_check(
        {"k1": 1.0, "k2": 50.0, "percentile": (75, 85)}, 64),
     raises(ValueError, r"`k1`=1.0% of feature dimension 64 rounds down to 0 elements; use "
                        r"at least 1.562%")),
    # ---------------------------------------------------- the exported artifact
    ("export/float_not_normalised", lambda w: _scorer(w)(w["x_val"][:4]),
     raises(ValueError, r"is float32: pass raw uint8 images .*normalised=True")),
    ("export/uint16", lambda w: _scorer(w)(w["keys"]["x_val"][:4].astype(np.uint16)),
     raises(ValueError, r"must be uint8 images .*got uint16")),
    ("export/int64_list", lambda w: _scorer(w)(w["keys"]["x_val"][:2].tolist()),
     raises(ValueError, r"must be uint8 images .*got int64")),
    ("export/bool", lambda w: _scorer(w)(w["keys"]["x_val"][:2] > 0),
     raises(ValueError, r"must be uint8 images .*got bool")),
    ("export/empty", lambda w: _scorer(w)(w["keys"]["x_val"][:0]),
     raises(ValueError, r"is empty \(shape \[0, 8, 8\]\)")),
    ("export/scalar", lambda w: _scorer(w)(np.uint8(3)),
     raises(ValueError, r"is empty \(shape \[\]\)")),
    ("export/nchw_uint8", lambda w: _scorer(w)(w["keys"]["x_val"][:4, None]),
     raises(ValueError, r"NCHW\? use x.transpose\(0, 2, 3, 1\)")),
    ("export/one_image", lambda w: _scorer(w)(w["keys"]["x_val"][0]),
     raises(ValueError, r"uint8 images must be \[N, H, W\] or \[N, H, W, C\]")),
    ("export/wrong_size", lambda w: _scorer(w)(np.zeros((2, 12, 12), np.uint8)),
     raises(ValueError, r"preprocess to \[12, 12, 1\] but the model takes \[8, 8, 1\]")),
    ("export/rgb_for_gray", lambda w: _scorer(w)(np.zeros((2, 8, 8, 3), np.uint8)),
     raises(ValueError, r"is RGB but the model takes 1-channel images")),
    ("export/normalised_uint8", lambda w: _scorer(w)(w["keys"]["x_val"][:2], normalised=True),
     raises(ValueError, r"normalised=True needs float images, got uint8")),
    ("export/normalised_nan", lambda w: _scorer(w)(np.full((2, 8, 8, 1), np.nan, np.float32),
                                                   normalised=True),
     raises(ValueError, r"contains 128 NaN/Inf values")),
    ("export/normalised_nhw", lambda w: _scorer(w)(w["x_val"][:2, ..., 0], normalised=True),
     raises(ValueError, r"expected \[N, H, W, C\] = \[N, 8, 8, 1\], got \[2, 8, 8\]")),
    ("export/uint8_scores", lambda w: _scorer(w)(w["keys"]["x_val"][:40])[0],
     result(lambda w, s: np.testing.assert_array_equal(
         s, w["knn"].score_images(w["keys"]["x_val"][:40])))),
    ("export/normalised_float64", lambda w: _scorer(w)(w["x_val"][:5].astype(np.float64),
                                                       normalised=True)[0],
     result(lambda w, s: np.testing.assert_array_equal(s, w["knn"](w["x_val"][:5])))),
    ("export/edited_args", lambda w: _scorer(w, _edited_artifact(w, "args", _edit_args)),
     raises(ValueError, r"args.npz does not match its checksum in checksums.json")),
    ("export/edited_threshold", lambda w: _scorer(w, _edited_artifact(
        w, "thr", _edit_meta(threshold=-1e9))),
     raises(ValueError, r"metadata.json does not match .*\(fields \['threshold'\]\)")),
    ("export/edited_preprocess", lambda w: _scorer(w, _edited_artifact(
        w, "pre", _edit_meta(preprocess=None))),
     raises(ValueError, r"\(fields \['preprocess'\]\)")),
    ("export/edited_score_py", lambda w: _scorer(w, _edited_artifact(
        w, "script", lambda d: open(os.path.join(d, "score.py"), "a").write("\n# x\n"))),
     raises(ValueError, r"score.py does not match its checksum")),
    ("export/missing_checksums", lambda w: _scorer(w, _edited_artifact(
        w, "nosums", _remove("checksums.json"))),
     raises(ValueError, r"checksums.json is missing; this is not a complete jaxood export")),
    ("export/missing_fixed", lambda w: _scorer(w, _edited_artifact(
        w, "nofixed", _remove("fixed.bin"))),
     raises(ValueError, r"fixed.bin is missing; re-export")),
    ("export/corrupt_metadata", lambda w: _scorer(w, _edited_artifact(
        w, "badmeta", _write("metadata.json", "{bad"))),
     raises(ValueError, r"metadata.json is corrupt")),
    ("export/corrupt_checksums", lambda w: _scorer(w, _edited_artifact(
        w, "badsums", _write("checksums.json", "[1, 2"))),
     raises(ValueError, r"checksums.json is corrupt")),
    ("export/schema_format", lambda w: _scorer(w, _edited_artifact(
        w, "fmt", _edit_meta(format="jaxood-export/9"), rechecksum=True)),
     raises(ValueError, r"format 'jaxood-export/9' is not 'jaxood-export/1'")),
    ("export/schema_threshold_nan", lambda w: _scorer(w, _edited_artifact(
        w, "tnan", _edit_meta(threshold=math.nan), rechecksum=True)),
     raises(ValueError, r"field 'threshold' must be a finite number or null")),
    ("export/schema_batch_string", lambda w: _scorer(w, _edited_artifact(
        w, "bstr", _edit_meta(batch_size="32"), rechecksum=True)),
     raises(ValueError, r"field 'batch_size' has the wrong type \(str\)")),
    ("export/schema_missing_field", lambda w: _scorer(w, _edited_artifact(
        w, "nofield", lambda d: _write("metadata.json", json.dumps({
            k: v for k, v in json.load(open(os.path.join(d, "metadata.json"))).items()
            if k != "num_args"}))(d), rechecksum=True)),
     raises(ValueError, r"lacks the field 'num_args'")),
    ("export/schema_input_shape", lambda w: _scorer(w, _edited_artifact(
        w, "shape", _edit_meta(input_shape=[8, 8]), rechecksum=True)),
     raises(ValueError, r"field 'input_shape' must be \[H, W, C\]")),
    ("export/read_metadata_verifies", lambda w: export.read_metadata(_edited_artifact(
        w, "rm", _edit_meta(detector="msp"))),
     raises(ValueError, r"\(fields \['detector'\]\)")),
    ("export/standalone_resize_float", lambda w: standalone.preprocess(
        np.zeros((2, 8, 8), np.float32), {"preprocess": PreprocessSpec(
            None, None).to_dict(), "input_shape": [8, 8, 3]}),
     result(lambda w, x: _assert_equal(x.shape, (2, 8, 8, 3)))),
    # ---------------------------------------------------- the result store
    ("store/corrupt", lambda w: ResultStore(_store_dir(w, "corrupt", "{bad"), "b", MODELS),
     raises(ValueError, r"store.json is corrupt .*move it away")),
    ("store/not_a_store", lambda w: ResultStore(_store_dir(w, "list", "[]"), "b", MODELS),
     raises(ValueError, r"store.json is not a jaxood-results/1 result store")),
    ("store/detectors_list", lambda w: ResultStore(_store_dir(
        w, "detlist", json.dumps({"format": "jaxood-results/1", "detectors": []})), "b",
        MODELS),
     raises(ValueError, r"is not a jaxood-results/1 result store")),
    ("store/other_benchmark", lambda w: ResultStore(_store_dir(
        w, "otherb", _store_json(benchmark="c")), "b", MODELS),
     raises(ValueError, r"holds results of benchmark 'c'.*refusing to merge")),
    ("store/other_weights", lambda w: ResultStore(_store_dir(
        w, "otherw", _store_json(weights="bb")), "b", MODELS),
     raises(ValueError, r"refusing to merge results of other models into it")),
    ("store/two_writers", _two_stores,
     result(lambda w, s: _assert_equal(sorted(s["detectors"]), ["knn", "msp"]))),
    ("store/edited_between_open_and_put", _edited_between,
     raises(ValueError, r"store.json is corrupt")),
    ("store/refused_merge_keeps_file", _refused_merge,
     result(lambda w, text: _assert_equal(json.loads(text)["benchmark"], "b"))),
    ("store/kept_on_reopen", lambda w: ResultStore(_store_dir(w, "keep", _store_json(
        detectors={"msp": {"0": {"row": {}, "aps": {}, "settings": {}}}})), "b",
        MODELS).per_run(),
     result(lambda w, rows: _assert_equal(list(rows), ["msp"]))),
    # ---------------------------------------------------- file safety helpers
    ("files/out_is_input", lambda w: fsutil.check_not_read(w["npz"], [w["npz"]]),
     raises(ValueError, r"-o '.*digits.npz' is one of the inputs")),
    ("files/out_is_symlinked_input", lambda w: fsutil.check_not_read(
        _symlink_to(w, w["npz"], "link.npz"), [w["npz"]]),
     raises(ValueError, r"link.npz' is one of the inputs")),
    ("files/out_inside_read_folder", lambda w: fsutil.check_not_read(
        os.path.join(w["det"], "detector.json"), [], [w["det"]]),
     raises(ValueError, r"lies inside .*det_knn, which this command reads")),
    ("files/out_elsewhere", lambda w: fsutil.check_not_read(
        str(w["root"] / "fresh.csv"), [w["npz"]], [w["det"]]),
     result(lambda w, r: _assert_equal(r, None))),
    ("files/stale_temps", _stale_temps,
     result(lambda w, names: _assert_equal(names, [f".tmp-{os.getpid()}-def.csv"]))),
    ("files/sixteen_bit_png", _png16,
     warns(r"16-bit images are scaled to 8 bits", check=lambda w, x: _assert_equal(
         len(np.unique(x)), 64))),
]


def _assert_equal(a, b):
    assert a == b, (a, b)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_deploy_input(fuzz_world, case):
    api.test_bad_input(fuzz_world, case)  # the same classification and checks


def test_deploy_cases_are_many_and_distinct():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)
