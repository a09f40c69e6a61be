"""Issue 21, items 1 and 4: defaults that work at any feature dimension D (adapted and
recorded, impossible settings refused before any network pass), and a held-out calibration
part when the fit reads ID-val."""

import warnings

import numpy as np
import pytest

import jaxood
from jaxood.detectors import adascale
from jaxood.features import extract as ex


def test_adascale_defaults_adapt_to_a_narrow_model(fuzz_world, tmp_path):
    w = fuzz_world  # D = 16: k1 = 1 % and k2 = 5 % round down to 0 elements
    assert int(16 * adascale.HPARAMS["k2"].default / 100) == 0
    fitted = jaxood.fit("adascale_a", w["loaded"], {"val": w["keys"]["x_val"]})
    assert fitted.adapted == {k: {"published": p, "used": 6.25, "feature_dim": 16}
                              for k, p in (("k1", 1.0), ("k2", 5.0))}
    assert fitted.hparams["k1"] == 6.25 and int(16 * 6.25 / 100) == 1
    assert fitted.stats.k1 == 6.25  # the fit used the adapted value
    back = jaxood.load_detector(fitted.save(str(tmp_path / "a")), w["model"])
    assert back.adapted == fitted.adapted
    np.testing.assert_array_equal(back(w["x_val"][:8]), fitted(w["x_val"][:8]))


def test_impossible_given_values_fail_before_any_network_pass(fuzz_world, monkeypatch):
    def no_pass(*a, **k):
        raise AssertionError("a network pass ran before the settings were checked")

    monkeypatch.setattr(ex, "extract_arrays", no_pass)
    with pytest.raises(ValueError, match=r"`k1`=1.0% of feature dimension 16 rounds down to 0 "
                                         r"elements; use at least 6.25% \(or leave it unset"):
        jaxood.fit("adascale_a", fuzz_world["loaded"], fuzz_world["id_data"], {"k1": 1.0})
    with pytest.raises(ValueError, match=r"`percentile`=99 keeps 0 of the model's D = 16"):
        jaxood.fit("scale", fuzz_world["loaded"], fuzz_world["id_data"], {"percentile": 99})


def test_val_fitting_detectors_calibrate_on_a_held_out_part(fuzz_world):
    w = fuzz_world
    fitted = jaxood.fit("react", w["loaded"], w["id_data"])  # fits on ID-val (100 images)
    info = fitted.calibration_info
    assert info["n"] == 20 and info["fit_rows"] == 80 and not info["used_by_fit"]
    assert info["held_out_from"] == "id_data['val']"
    rng_rows = np.sort(np.random.default_rng(0).permutation(100)[:20])  # the recorded rule
    np.testing.assert_array_equal(fitted.calibration,
                                  np.sort(fitted.score_images(w["keys"]["x_val"][rng_rows])))
    # The ReAct threshold is the 90th percentile of the fit part's features only.
    fit_rows = np.setdiff1d(np.arange(100), rng_rows)
    feats = np.asarray(w["feats"].feature)[fit_rows]
    np.testing.assert_allclose(float(fitted.stats.threshold), np.percentile(feats.ravel(), 90),
                               rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # held out: no "calibration reused" warning
        fitted.threshold(0.9, confidence=0.5)


def test_train_fitting_detectors_calibrate_on_all_of_val(fuzz_world):
    fitted = fuzz_world["knn"]  # fits on train: ID-val is already held out
    assert fitted.calibration_info == {"n": 100, "used_by_fit": False}
