"""Every experiment run once per session on the ``demo`` benchmark with two tiny random
models (cheap: no training), small grids; the records are shared by the tests."""

import pytest

from jaxood import analyses
from tests.bench.tiny_model import save_tiny

#: Small grids so the whole suite stays fast; the real run uses the paper's.
OPTIONS = {
    "k1": [1.0, 2.0], "k2": [5.0, 10.0], "lmbda": [0.0, 10.0], "draws": 3,
    "n_val": [10, 1000], "values": [80, 90, 95],
    "regions": [["trivial", 0.05], ["significant", 0.05], ["random", 0.05], ["all", 1.0]],
    "eps": [0.0, 0.5], "trials": 20, "rounds": 2, "batch": [1], "classes": 10,
    "csid_size": 60, "kinds": ["scaling"], "fs_detectors": ["msp", "scale", "adascale_a"],
    "method_detectors": ["ebo", "scale", "adascale_a"],
}


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyses")
    # D = 128, so k1 = 1 % keeps one activation (as the demo WRN-10-2).
    m0 = save_tiny(str(root / "m0"), num_classes=5, input_shape=(8, 8, 1), seed=0, width=128)
    m1 = save_tiny(str(root / "m1"), num_classes=5, input_shape=(8, 8, 1), seed=1, width=128)
    return {"root": root, "models": [m0, m1]}


def make_context(world, **kw) -> analyses.Context:
    root = world["root"]
    base = dict(
        benchmark="demo", models=world["models"], out_dir=str(root / "out"),
        cache_dir=str(root / "cache"), progress=False, options=OPTIONS,
        method_models={"ce": world["models"][0], "ln": world["models"][1]},
    )
    return analyses.Context(**{**base, **kw})


@pytest.fixture(scope="session")
def records(world):
    ctx = make_context(world)
    return {name: analyses.run_experiment(name, ctx) for name in analyses.names()}
