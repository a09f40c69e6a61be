"""Tune with the benchmark runner, then fit from its aps.json: same settings, same statistics,
same scores as the runner (the runner scores cached features; a fitted detector runs one
fused program, so scores agree to float rounding, not bit for bit)."""

import jax
import numpy as np
import pytest

import jaxood
from jaxood import models
from jaxood.bench import runner
from jaxood.data import benchmarks
from tests.bench.test_runner import setup  # noqa: F401 - the shared toy image-list benchmark


@pytest.mark.parametrize("name", ["react", "knn", "adascale_a"])
def test_fit_from_aps_json_matches_the_runner(setup, name, tmp_path):  # noqa: F811
    root, model_dir = setup
    hp = {"knn": {"K": 5}, "adascale_a": {"k1": 10.0, "k2": 25.0}}.get(name, {})  # D = 16
    res = runner.run(runner.BenchConfig(
        "toy-imglist", [model_dir], detectors=[name], data_root=str(root / "data"),
        out_dir=str(tmp_path), progress=False, plots=False, strict=True,
        hparams={name: hp} if hp else {},
    ))
    loaded = models.load(model_dir)
    opened = benchmarks.open_benchmark("toy-imglist", str(root / "data"), loaded.preprocess,
                                       need_train=True)
    # All of ID-val for the fit, as the runner: with its calibration set given, jaxood.fit
    # holds nothing out of it.
    fitted = jaxood.fit(name, model_dir, {"train": opened.id_train, "val": opened.id_val},
                        hparams=res.out_dir, calibration=opened.id_val)
    assert fitted.hparams == fitted.detector.resolve(res.aps[name][0]["chosen"])
    saved = jaxood.load_detector(f"{res.out_dir}/fitted/{name}/run0", model_dir)
    for a, b in zip(jax.tree.leaves(fitted.stats), jax.tree.leaves(saved.stats), strict=True):
        np.testing.assert_array_equal(a, b)  # same features, same fit
    x_test = opened.id_test.batch(0, len(opened.id_test))
    np.testing.assert_allclose(fitted(x_test), res.scores[name]["id"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(fitted(x_test), saved(x_test))

