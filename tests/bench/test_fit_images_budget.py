"""The runner gives OODD-C-Out the train images at any split size: above the in-memory
budget (here 0 MB) as the lazily batched benchmark source, with the same results."""

import numpy as np

from jaxood.bench import runner
from jaxood.detectors import oodd
from tests.bench import tiny_model


def test_oodd_cout_streams_train_images_above_the_budget(tmp_path, monkeypatch):
    tiny_model.register_toy_arrays()
    model_dir = tiny_model.save_tiny(str(tmp_path / "m"), 3, input_shape=(8, 8, 3))
    hp = {"oodd_cout": {"cout_queue": 6, "cout_bank": 4, "k_in": 3, "k_out": 2,
                        "queue_size": 8}}

    def run(out, mb):
        return runner.run(runner.BenchConfig(
            "toy-arrays", [model_dir], detectors=["oodd_cout"], out_dir=str(tmp_path / out),
            progress=False, plots=False, strict=True, save_detectors=False, hparams=hp,
            fit_images_mb=mb))

    seen = []
    original = oodd.image_batches

    def spy(x, *a, **k):
        seen.append(type(x).__name__)
        return original(x, *a, **k)

    monkeypatch.setattr(oodd, "image_batches", spy)
    in_memory = run("a", 64.0)
    assert seen and set(seen) == {"ndarray"}
    seen.clear()
    streamed = run("b", 0.0)
    assert seen and set(seen) == {"ArraySource"}  # the source, decoded batch by batch
    a, b = in_memory.per_run["oodd_cout"][0], streamed.per_run["oodd_cout"][0]
    assert a.keys() == b.keys()
    for name in a:
        for metric, value in a[name].items():
            np.testing.assert_equal(value, b[name][metric])
