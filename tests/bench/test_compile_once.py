"""Compile once: APS over ODIN's whole grid (temperature x noise, traced) on ID-val and
OOD-val traces ODIN's network program once per static setting (``std``), not once per grid
point and split. Traces are counted in the score function, as
``tests/fitted/test_fitted.py::test_batch_sizes_never_recompile`` does."""

import json

import numpy as np

from jaxood import detectors, models, parallel
from jaxood.bench.detector_run import DetectorRun
from jaxood.data import benchmarks
from jaxood.detectors import logits
from jaxood.features.cache import FeatureCache
from jaxood.features.store import DataStore
from jaxood.types import Detector
from tests.bench import tiny_model


def test_odin_aps_traces_once_per_static_setting(tmp_path):
    odin = detectors.get("odin")
    traces = []

    def score(model, variables, stats, inputs, *, temperature, noise, std):
        traces.append(std)
        return logits.odin(model, variables, inputs.x, temperature=temperature, noise=noise,
                           std=std)

    det = Detector("odin_counting", score, hparams=odin.hparams, needs=odin.needs)
    tiny_model.register_toy_arrays()
    model_dir = tiny_model.save_tiny(str(tmp_path / "m"), 3, input_shape=(8, 8, 3))
    loaded = models.load(model_dir)
    opened = benchmarks.open_benchmark("toy-arrays", None, loaded.preprocess, need_train=False)
    store = DataStore(opened, loaded, FeatureCache(tmp_path / "c"), batch_size=16,
                      mesh=parallel.data_mesh(), progress=False)
    grid_size = len(odin.sweep["temperature"]) * len(odin.sweep["noise"])
    for std in [(0.25, 0.25, 0.25), (0.5, 0.25, 0.25)]:
        found = DetectorRun(det, store, {"std": std}).search(True)
        assert len(found.table) == grid_size  # every point scored on both splits
        assert np.isfinite([a for _, a in found.table]).all()
    assert traces == [(0.25, 0.25, 0.25), (0.5, 0.25, 0.25)], traces
    # Every (std, point, split) was its own network pass, each through that one program.
    kinds = [json.loads((d / "key.json").read_text())["kind"] for d in (tmp_path / "c").iterdir()]
    assert kinds.count("netscore") == 2 * grid_size * 2
