"""The fitted-detector lifecycle over the whole registry: fit -> score -> save -> load."""

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

import jaxood
from jaxood import detectors
from jaxood.types import Detector, HParam
from tests.fitted.conftest import OVERRIDES


def _fit(world, name, **kw):
    model, weights, id_data, _ = world
    return jaxood.fit(name, (model, weights), id_data, OVERRIDES.get(name), batch_size=16, **kw)


@pytest.mark.parametrize("name", detectors.names())
def test_save_load_score_is_bit_identical(tiny_world, name, tmp_path):
    model, weights, _, x_test = tiny_world
    fitted = _fit(tiny_world, name)
    first = fitted(x_test[:10])  # stream detectors: state after this call is saved too
    path = fitted.save(str(tmp_path / name))
    loaded = jaxood.load_detector(path, (model, weights))
    assert loaded.hparams == fitted.hparams
    assert loaded.threshold_value == fitted.threshold_value
    np.testing.assert_array_equal(loaded.calibration, fitted.calibration)
    rest_mem, rest_disk = fitted(x_test[10:]), loaded(x_test[10:])
    np.testing.assert_array_equal(rest_disk, rest_mem)
    assert np.all(np.isfinite(first)) and np.all(np.isfinite(rest_mem))
    # predict = score < threshold (fresh loads: a stream detector's state is the saved one)
    is_ood = jaxood.load_detector(path, (model, weights)).predict(x_test)
    again = jaxood.load_detector(path, (model, weights))(x_test)
    np.testing.assert_array_equal(is_ood, again < fitted.threshold_value)


def test_default_threshold_keeps_95_percent_of_calibration(tiny_world):
    fitted = _fit(tiny_world, "msp")
    assert fitted.calibration_info["n"] == 32
    assert np.mean(fitted.calibration < fitted.threshold_value) <= 0.05


def test_batch_sizes_never_recompile(tiny_world):
    model, weights, id_data, x_test = tiny_world
    traces = []

    def score(model, variables, stats, inputs, *, temperature):
        traces.append(inputs.features.logits.shape)
        return jnp.max(inputs.features.logits, -1) / temperature

    det = Detector(name="test_counting", score=score,
                   hparams={"temperature": HParam(1.0, sweep=(1.0, 2.0))})
    with detectors.temporary_register(det):
        fitted = jaxood.fit("test_counting", (model, weights), id_data, batch_size=16)
        n0 = len(traces)
        sizes = (1, 5, 16, 17, 24, 3, 7, 2)
        for n in sizes:
            assert fitted(x_test[:n]).shape == (n,)
        after_first = len(traces)
        for n in sizes:  # every bucket compiled already
            assert fitted(x_test[:n]).shape == (n,)
        fitted.hparams = det.resolve({"temperature": 2.0})  # traced: same executable
        fitted(x_test)
    # Issue 21 item 6: padded to the next power of two (<= batch_size), one program per
    # bucket, never recompiled: a 1-row call computes 1 row, not 16.
    assert n0 == 1 and len(traces) == after_first, traces
    assert sorted(s[0] for s in traces) == [1, 2, 4, 8, 16], traces
    assert "test_counting" not in detectors.names()  # temporary_register cleaned up


def test_undeclared_static_hyperparameter_is_a_clear_error(tiny_world):
    model, weights, id_data, _ = tiny_world

    def score(model, variables, stats, inputs, *, k):
        return inputs.features.feature[:, :k].sum(-1)  # k used as a shape

    det = Detector(name="test_not_static", score=score, hparams={"k": HParam(3)})
    with detectors.temporary_register(det):
        with pytest.raises(ValueError, match=r"declare .*static=True"):
            jaxood.fit("test_not_static", (model, weights), id_data)


def test_wrong_model_is_refused_naming_the_difference(tiny_world, tmp_path):
    model, weights, _, _ = tiny_world
    fitted = _fit(tiny_world, "knn")
    path = fitted.save(str(tmp_path / "knn"))
    other = {k: v * 1.01 for k, v in weights.items()}
    with pytest.raises(ValueError, match="fitted on another model.*weights"):
        jaxood.load_detector(path, (model, other))


def test_corrupt_truncated_and_missing_files(tiny_world, tmp_path):
    model, weights, _, _ = tiny_world
    path = _fit(tiny_world, "mds").save(str(tmp_path / "mds"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        jaxood.load_detector(str(tmp_path / "nothing"), (model, weights))
    broken = str(tmp_path / "broken")
    shutil.copytree(path, broken)
    with open(os.path.join(broken, "detector.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        jaxood.load_detector(broken, (model, weights))
    shutil.rmtree(broken)
    shutil.copytree(path, broken)
    for root, _, files in os.walk(os.path.join(broken, "arrays")):
        for f in files:
            p = os.path.join(root, f)
            if os.path.getsize(p) > 64:
                with open(p, "r+b") as fh:
                    fh.truncate(os.path.getsize(p) // 2)
    with pytest.raises(ValueError, match="corrupt|unreadable|checksum"):
        jaxood.load_detector(broken, (model, weights))
    shutil.rmtree(broken)
    shutil.copytree(path, broken)
    shutil.rmtree(os.path.join(broken, "arrays"))
    with pytest.raises(FileNotFoundError, match="missing arrays"):
        jaxood.load_detector(broken, (model, weights))


def test_save_is_atomic_and_refuses_to_overwrite(tiny_world, tmp_path):
    fitted = _fit(tiny_world, "ebo")
    path = fitted.save(str(tmp_path / "ebo"))
    with pytest.raises(FileExistsError):
        fitted.save(path)
    fitted.save(path, overwrite=True)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]
    meta = json.load(open(os.path.join(path, "detector.json")))
    assert meta["detector"] == "ebo" and meta["threshold"]["tpr"] == 0.95


def test_unregistered_detector_says_to_import_it(tiny_world, tmp_path):
    model, weights, id_data, _ = tiny_world

    def score(model, variables, stats, inputs):
        return inputs.features.logits[:, 0]

    with detectors.temporary_register(Detector(name="test_plugin_only", score=score)):
        path = jaxood.fit("test_plugin_only", (model, weights), id_data).save(str(tmp_path / "p"))
    with pytest.raises(ValueError, match="not registered.*--import"):
        jaxood.load_detector(path, (model, weights))


def test_confidence_on_fit_data_warns(tiny_world):
    fitted = _fit(tiny_world, "react")  # ReAct fits on ID-val, which is also the calibration
    with pytest.warns(UserWarning, match="held-out"):
        fitted.threshold(0.8, confidence=0.9)


def test_confidence_threshold_and_fpr_threshold(tiny_world):
    _, _, _, x_test = tiny_world
    fitted = _fit(tiny_world, "msp")
    t_conf = fitted.threshold(0.8, confidence=0.9)
    t_emp = fitted.threshold(0.8)
    assert t_conf <= t_emp  # the guarantee can only flag fewer ID inputs
    t = fitted.threshold(fpr=0.1, ood=x_test[12:])
    assert np.mean(fitted(x_test[12:]) >= t) <= 0.1
    assert fitted.threshold_info["rule"] == "fpr"


@pytest.mark.parametrize(
    "x,match",
    [
        (np.zeros((2, 3, 8, 8), np.float32), "NCHW"),
        (np.zeros((2, 16, 16, 3), np.float32), r"expected \[N, H, W, C\] = \[N, 8, 8, 3\]"),
        (np.zeros((2, 8, 8, 3), np.uint8), "uint8"),
        (np.zeros((8, 8, 3), np.float32), "x\\[None\\]"),
        (np.full((2, 8, 8, 3), np.nan, np.float32), "NaN"),
        (np.zeros((0, 8, 8, 3), np.float32), "empty"),
    ],
)
def test_model_boundary_checks(tiny_world, x, match):
    fitted = _fit(tiny_world, "msp")
    with pytest.raises(ValueError, match=match):
        fitted(x)


def test_half_precision_inputs_are_scored_as_float32(tiny_world):
    _, _, _, x_test = tiny_world
    fitted = _fit(tiny_world, "ebo")
    x16 = x_test.astype(np.float16)
    np.testing.assert_array_equal(fitted(x16), fitted(x16.astype(np.float32)))
    xb = jnp.asarray(x_test, jnp.bfloat16)
    np.testing.assert_array_equal(fitted(xb), fitted(np.asarray(xb.astype(jnp.float32))))


def test_unnormalised_pixels_warn(tiny_world):
    fitted = _fit(tiny_world, "msp")
    with pytest.warns(UserWarning, match="unnormalised"):
        fitted(np.full((2, 8, 8, 3), 200.0, np.float32))
