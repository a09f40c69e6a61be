"""Issue 21 item 6: the default batch size of a fitted detector comes from the memory per image
XLA reports for its compiled scoring program, under one per-device budget; it is saved and
kept on load. The expected choices are computed here from XLA's memory analysis of the
detector's program built directly (``jax.jit(scoring.image_body(...))``), not through
``jaxood.fitted.batching``."""

import contextlib
import json
import os
import types

import jax
import jax.monitoring
import numpy as np
import pytest

import jaxood
from jaxood import scoring
from jaxood.fitted import batching, fitting, io, loading
from jaxood.fitted.standalone import field_digests
from tests.detectors import tiny_net

MIB = 2.0**20


def _world(size: int):
    model = tiny_net.jax_model(width=64)
    model = type(model)(**{**model.__dict__, "input_shape": (size, size, 3)})
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, size, size, 3)).astype(np.float32)
    return (model, tiny_net.make_weights(seed=1, width=64)), {"val": x}


def _xla_bytes(fitted, batch: int) -> int:
    """Arguments + outputs + temporaries - aliased bytes of the detector's program at
    ``batch`` rows, compiled here from the program body."""
    point = fitted.point
    body = scoring.image_body(fitted.detector, fitted.model.model, point.image_static)
    x = jax.ShapeDtypeStruct((batch, *fitted.input_shape), np.float32)
    stats = fitted.model.variables, fitted.stats
    m = jax.jit(body).lower(*stats, x, point.traced).compile().memory_analysis()
    return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            - m.alias_size_in_bytes)


def _mib_per_image(fitted) -> float:
    return (_xla_bytes(fitted, 16) - _xla_bytes(fitted, 8)) / 8 / MIB


def _largest_power_of_two(limit: float) -> int:
    b = 1
    while b * 2 <= min(limit, 256):
        b *= 2
    return b


def test_auto_batch_follows_the_memory_per_image_under_the_budget():
    small_model, small_data = _world(8)
    big_model, big_data = _world(16)  # 4x the pixels: 4x the activations per image
    given = jaxood.fit("msp", small_model, small_data, batch_size=16)
    per_small = _mib_per_image(given)
    budget = 48 * per_small  # 32 images fit, 64 do not
    small = jaxood.fit("msp", small_model, small_data, memory_mb=budget)
    big = jaxood.fit("msp", big_model, big_data, memory_mb=budget)
    per_big = _mib_per_image(big)
    assert per_big > 3 * per_small
    assert small.batch_size == _largest_power_of_two(budget / per_small) == 32
    assert big.batch_size == _largest_power_of_two(budget / per_big) < small.batch_size
    for fitted, per in ((small, per_small), (big, per_big)):
        info = fitted.batch_info
        assert info["rule"] == "auto" and info["budget_mb"] == budget
        assert info["mb_per_image"] == pytest.approx(per, rel=1e-3)
        # What the chosen program holds beyond the fixed part fits the budget.
        fixed = _xla_bytes(fitted, 8) / MIB - 8 * per
        assert _xla_bytes(fitted, fitted.batch_size) / MIB - fixed <= budget
    np.testing.assert_allclose(small(small_data["val"][:5]), given(small_data["val"][:5]),
                               rtol=1e-6)


def test_default_budget_is_the_one_constant_and_caps_at_256(monkeypatch):
    model, data = _world(8)
    fitted = jaxood.fit("msp", model, data)
    assert fitted.batch_size == 256 and fitted.batch_info["budget_mb"] == batching.SCORE_MEMORY_MB
    per = fitted.batch_info["mb_per_image"]
    monkeypatch.setattr(batching, "SCORE_MEMORY_MB", 5 * per)
    fitted = jaxood.fit("msp", model, data)
    assert fitted.batch_size == 4 and fitted.batch_info["budget_mb"] == 5 * per
    huge = jaxood.fit("msp", model, data, memory_mb=1e9)
    assert huge.batch_size == 256


def test_one_image_over_the_budget_takes_the_smallest_batch():
    model, data = _world(8)
    fitted = jaxood.fit("msp", model, data, memory_mb=1e-6)
    assert fitted.batch_size == 1 and fitted.batch_info["fits_budget"] is False


def test_the_fit_extracts_with_the_auto_batch(monkeypatch):
    model, data = _world(8)
    seen = []
    real = fitting.ex.extract_arrays

    def spy(*args, batch_size, **kw):
        seen.append(batch_size)
        return real(*args, batch_size=batch_size, **kw)

    monkeypatch.setattr(fitting.ex, "extract_arrays", spy)
    features = jax.jit(scoring.features_fn(model[0], ("logits", "feature")))

    def nbytes(b):
        x = jax.ShapeDtypeStruct((b, 8, 8, 3), np.float32)
        m = features.lower(model[1], x).compile().memory_analysis()
        return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes

    per_image = (nbytes(16) - nbytes(8)) / 8 / MIB
    jaxood.fit("react", model, data, memory_mb=20 * per_image)  # extracts features only
    assert seen == [16]


def test_given_batch_size_is_kept_and_checked(monkeypatch):
    model, data = _world(8)

    def no_probe(*args, **kw):
        raise AssertionError("a given batch size must not be probed")

    monkeypatch.setattr(batching, "choose", no_probe)
    fitted = jaxood.fit("msp", model, data, batch_size=24)
    assert fitted.batch_size == 24 and fitted.batch_info == {"rule": "given"}
    for bad in (0, -1, 2.5, "16", True):
        with pytest.raises(ValueError, match="batch_size"):
            jaxood.fit("msp", model, data, batch_size=bad)
    for bad in (0, -1.0, float("nan"), float("inf"), "2", True):
        with pytest.raises(ValueError, match="memory_mb"):
            jaxood.fit("msp", model, data, memory_mb=bad)
    with pytest.raises(ValueError, match="not both"):
        jaxood.fit("msp", model, data, batch_size=8, memory_mb=100)


def test_saved_batch_size_and_its_record_survive_load(tmp_path):
    model, data = _world(8)
    fitted = jaxood.fit("knn", model, {"train": data["val"], **data}, {"K": 3}, memory_mb=1.0)
    assert fitted.batch_size < 256
    path = fitted.save(str(tmp_path / "det"))
    back = jaxood.load_detector(path, model)
    assert back.batch_size == fitted.batch_size and back.batch_info == fitted.batch_info
    other = jaxood.load_detector(path, model, batch_size=8)
    assert other.batch_size == 8 and other.batch_info == {"rule": "given"}
    again = str(tmp_path / "again")
    other.save(again)
    assert jaxood.load_detector(again, model).batch_size == 8


def _rewrite(path, edit):
    file = os.path.join(path, io.MANIFEST)
    with open(file) as f:
        manifest = json.load(f)
    edit(manifest)
    with open(file, "w") as f:
        json.dump(manifest, f)


def test_a_detector_saved_before_the_record_still_loads(tmp_path):
    model, data = _world(8)
    path = jaxood.fit("msp", model, data, batch_size=16).save(str(tmp_path / "old"))

    def as_old(m):  # the file as an older jaxood wrote it: no field, no checksum of it
        del m["batch"], m["fields_sha256"]
        m["fields_sha256"] = field_digests(m)

    _rewrite(path, as_old)
    back = jaxood.load_detector(path, model)
    assert back.batch_size == 16 and back.batch_info == loading.UNRECORDED
    x = data["val"][:3]
    np.testing.assert_array_equal(back(x), jaxood.fit("msp", model, data, batch_size=16)(x))


def test_an_edited_batch_record_is_refused(tmp_path):
    model, data = _world(8)
    path = jaxood.fit("msp", model, data).save(str(tmp_path / "det"))
    _rewrite(path, lambda m: m["batch"].update(budget_mb=1.0))
    with pytest.raises(ValueError, match=r"edited.*'batch'"):
        jaxood.load_detector(path, model)


@contextlib.contextmanager
def _count_compiles():
    seen = []

    def listener(name, seconds, **kw):
        if name == "/jax/core/compile/backend_compile_duration":
            seen.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.mark.parametrize("name", ["adascale_a", "oodd"])
def test_the_probe_compiles_the_programs_scoring_runs(tiny_world, name):
    from tests.fitted.conftest import OVERRIDES

    model, weights, id_data, x_test = tiny_world
    fitted = jaxood.fit(name, (model, weights), id_data, OVERRIDES.get(name))
    assert fitted.batch_info["probe"] == [8, 16]
    fitted.reset_stream()
    with _count_compiles() as compiles:
        for n in (16, 8, 5, 12):
            fitted(x_test[:n])
    assert compiles == []


def test_choose_without_memory_analysis_falls_back_and_rounds_to_devices():
    def lower_with(memory):
        compiled = types.SimpleNamespace(memory_analysis=lambda: memory)
        return lambda b: types.SimpleNamespace(compile=lambda: compiled)

    three = types.SimpleNamespace(devices=np.empty(3))
    size, info = batching.choose(lower_with(None), three)
    assert size == batching.MAX_BATCH_SIZE and info["rule"] == "fallback"
    assert "memory analysis" in info["reason"]

    def lower(b):  # 10 MiB fixed + 3 MiB per image, as XLA would report it
        stats = types.SimpleNamespace(argument_size_in_bytes=int((10 + 1 * b) * MIB),
                                      output_size_in_bytes=0, alias_size_in_bytes=0,
                                      temp_size_in_bytes=int(2 * b * MIB))
        return types.SimpleNamespace(compile=lambda: types.SimpleNamespace(
            memory_analysis=lambda: stats))

    size, info = batching.choose(lower, three, memory_mb=100)
    # Multiples of 3 devices: 3, 6, 9, 18, 33, 66, ... (powers of two rounded up); 33 * 3 <= 100.
    assert (size, info["probe"], info["mb_per_image"], info["fixed_mb"]) == (33, [9, 18], 3, 10)


_TWO_DEVICES = """
import os, sys, json
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
sys.path.insert(0, {root!r})
import jax, numpy as np, jaxood
from tests.fitted.test_batch_size import _world
model, data = _world(16)
f = jaxood.fit("msp", model, data, memory_mb={budget!r})
print(json.dumps({{"devices": jax.device_count(), "batch": f.batch_size, "info": f.batch_info,
                  "scores": f(data["val"][:7]).tolist()}}))
"""


def test_two_devices_budget_per_device_and_batch_a_multiple_of_them(tmp_path):
    import subprocess
    import sys

    model, data = _world(16)
    one = jaxood.fit("msp", model, data, batch_size=16)
    per_image = _mib_per_image(one)  # one device holds every image
    budget = 6 * per_image  # one device: 4 images; two devices hold half of each batch: 8
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = _TWO_DEVICES.format(root=root, budget=budget)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600, cwd=root)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["devices"] == 2 and got["info"]["probe"] == [8, 16]
    assert got["info"]["mb_per_image"] == pytest.approx(per_image / 2, rel=0.05)
    assert got["batch"] == 8 and jaxood.fit("msp", model, data, memory_mb=budget).batch_size == 4
    np.testing.assert_allclose(got["scores"], one(data["val"][:7]), rtol=1e-5, atol=1e-6)
