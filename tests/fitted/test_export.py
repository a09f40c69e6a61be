"""``jax.export`` artifacts run with only jax: scored in a subprocess that cannot import
jaxood (nor flax/optax/orbax), compared with the in-process fitted detector."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import jaxood
from tests.fitted.conftest import OVERRIDES

pytest.importorskip("flatbuffers")

# Runs the artifact's own score.py with jaxood and the model libraries made unimportable.
CHILD = """
import sys
for name in ("jaxood", "flax", "optax", "orbax", "tensorflow_datasets"):
    sys.modules[name] = None  # any import of them now fails
sys.path.insert(0, sys.argv[1])
from score import load
import numpy as np
fn = load(sys.argv[1])
x = np.load(sys.argv[2])
fixed = fn(x, normalised=True)
sym = fn(x, normalised=True, use_symbolic=True) if fn.metadata["symbolic_batch"] else fixed
np.savez(sys.argv[3], *fixed, *sym)
assert "jaxood" not in [m for m in sys.modules if sys.modules[m] is not None]
"""


@pytest.mark.parametrize("name", ["adascale_a", "knn", "mds"])
def test_exported_scores_match_in_process_without_jaxood(tiny_world, name, tmp_path):
    model, weights, id_data, x_test = tiny_world
    fitted = jaxood.fit(name, (model, weights), id_data, OVERRIDES.get(name), batch_size=16)
    path = fitted.export(str(tmp_path / f"{name}.jaxexport"))
    meta = json.load(open(os.path.join(path, "metadata.json")))
    assert meta["detector"] == name and meta["threshold"] == fitted.threshold_value
    assert meta["xla_flags"] == os.environ.get("XLA_FLAGS", "")
    np.save(tmp_path / "x.npy", x_test)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    out = tmp_path / "out.npz"
    r = subprocess.run(
        [sys.executable, "-c", CHILD, path, str(tmp_path / "x.npy"), str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    got = np.load(out)
    score, is_ood, pred, msp = (got[f"arr_{i}"] for i in range(4))
    expect = fitted.detect(x_test)
    np.testing.assert_array_equal(score, expect["score"])  # same program, same flags
    np.testing.assert_array_equal(is_ood, expect["is_ood"])
    np.testing.assert_array_equal(pred, expect["pred"])
    np.testing.assert_allclose(msp, expect["max_softmax"], rtol=1e-6)
    if meta["symbolic_batch"]:
        np.testing.assert_allclose(got["arr_4"], expect["score"], rtol=1e-6, atol=1e-6)


def test_stream_detectors_refuse_export(tiny_world, tmp_path):
    model, weights, id_data, _ = tiny_world
    fitted = jaxood.fit("oodd", (model, weights), id_data, batch_size=16)
    with pytest.raises(ValueError, match="stream detector"):
        fitted.export(str(tmp_path / "o"))


def test_multi_platform_export_lowers_here_and_runs_on_cpu(tiny_world, tmp_path):
    """Lowered for cpu, cuda and tpu on this CPU-only machine; the cpu variant runs here."""
    import importlib.util

    model, weights, id_data, x_test = tiny_world
    fitted = jaxood.fit("adascale_a", (model, weights), id_data, batch_size=16)
    path = fitted.export(str(tmp_path / "multi"), platforms=("cpu", "cuda", "tpu"))
    spec = importlib.util.spec_from_file_location("artifact_score", os.path.join(path, "score.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fn = mod.load(path)
    assert fn.metadata["platforms"] == ["cpu", "cuda", "tpu"]
    # A multi-platform module dispatches on the platform inside the program, which changes
    # XLA's fusion: equal to float rounding (the cpu-only export above is bit-identical).
    np.testing.assert_allclose(fn(x_test, normalised=True)[0], fitted(x_test), rtol=1e-6)


def test_float64_attribution_is_exported_and_recorded(tiny_world, tmp_path):
    model, weights, id_data, x_test = tiny_world
    hp = {**OVERRIDES.get("adascale_a", {}), "attribution_dtype": "float64"}
    fitted = jaxood.fit("adascale_a", (model, weights), id_data, hp, batch_size=16)
    path = fitted.export(str(tmp_path / "a64.jaxexport"))
    meta = json.load(open(os.path.join(path, "metadata.json")))
    assert meta["hparams"]["attribution_dtype"] == "float64"
    # The artifact's own loader, in this process (jax already up with jaxood's XLA flags).
    spec = importlib.util.spec_from_file_location("a64_score", os.path.join(path, "score.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    score = module.load(path)(x_test, normalised=True)[0]
    np.testing.assert_allclose(score, fitted.detect(x_test)["score"], rtol=1e-6, atol=1e-6)
    plain = jaxood.fit("adascale_a", (model, weights), id_data, OVERRIDES.get("adascale_a"),
                       batch_size=16)
    assert plain.hparams["attribution_dtype"] == "float32"
