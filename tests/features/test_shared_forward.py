"""One pass for a split's features and AdaSCALE's extract (``DataStore.share_forward``): the
arrays and cache entries are those of the two separate passes, bit for bit, and a cache
holding one of the two makes the store compute only the other."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxood import detectors, models
from jaxood.data import benchmarks
from jaxood.features.cache import FeatureCache
from jaxood.features.store import DataStore
from jaxood.types import Features, PreprocessSpec
from tests.bench import tiny_model

DET = detectors.get("adascale_a")
HP = {k: DET.defaults[k] for k in DET.names("extract")}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tiny_model.register_toy_arrays()
    root = tmp_path_factory.mktemp("shared_forward")
    return tiny_model.save_tiny(str(root / "m"), 3, input_shape=(8, 8, 3), width=8)


def _store(model_dir, cache_dir, *, joint: bool) -> DataStore:
    loaded = models.load(model_dir)
    opened = benchmarks.open_benchmark("toy-arrays", None, loaded.preprocess, need_train=False)
    store = DataStore(opened, loaded, FeatureCache(cache_dir), batch_size=16, mesh=None,
                      progress=False)
    if joint:
        store.share_forward(DET, HP, list(store.sources))
    return store


def _read_all(store) -> dict:
    """Every split's features, then its extras (the order the runner reads them in)."""
    return {s: {**store.base(s), **store.extras(DET, s, HP)} for s in store.sources}


def _entries(cache_dir) -> dict[str, dict]:
    """``{entry dir: {"key": key.json, "arrays": {name: bytes of the .npy}}}``."""
    out = {}
    for name in sorted(os.listdir(cache_dir)):
        d = os.path.join(cache_dir, name)
        with open(os.path.join(d, "key.json")) as f:
            key = json.load(f)
        arrays = {n: open(os.path.join(d, n), "rb").read()
                  for n in sorted(os.listdir(d)) if n.endswith(".npy")}
        out[name] = {"key": key, "arrays": arrays}
    return out


def _stage_items(store, suffix="decode") -> dict[str, int]:
    return {k[: -len(suffix) - 1]: v["items"] for k, v in store.timer.to_dict().items()
            if k.endswith("/" + suffix)}


def test_one_pass_writes_the_two_passes_arrays_and_entries_bit_for_bit(model_dir, tmp_path):
    two = _store(model_dir, tmp_path / "two", joint=False)
    a = _read_all(two)
    one = _store(model_dir, tmp_path / "one", joint=True)
    b = _read_all(one)
    for split in a:
        assert sorted(a[split]) == sorted(b[split]) == ["feature", "feature_perturbed", "logits"]
        for k in a[split]:
            assert a[split][k].dtype == b[split][k].dtype == np.float32
            np.testing.assert_array_equal(np.asarray(a[split][k]), np.asarray(b[split][k]))
    assert _entries(tmp_path / "two") == _entries(tmp_path / "one")  # same keys, same bytes
    n_all = sum(len(src) for src in one.sources.values())
    assert _stage_items(two) == {"features": n_all, "extract/adascale_a": n_all}
    assert _stage_items(one) == {"features+extract/adascale_a": n_all}  # one decode per image
    assert (two.network_passes, one.network_passes) == (2 * len(a), len(a))


def test_a_cache_written_by_separate_passes_is_read_without_a_pass(model_dir, tmp_path):
    a = _read_all(_store(model_dir, tmp_path / "c", joint=False))
    again = _store(model_dir, tmp_path / "c", joint=True)
    b = _read_all(again)
    assert again.network_passes == 0 and _stage_items(again) == {}
    for split in a:
        for k in a[split]:
            np.testing.assert_array_equal(np.asarray(a[split][k]), np.asarray(b[split][k]))


@pytest.mark.parametrize("drop, computed", [("extract", "extract/adascale_a"),
                                            ("features", "features")])
def test_only_the_missing_half_is_computed(model_dir, tmp_path, drop, computed):
    cache = tmp_path / "c"
    a = _read_all(_store(model_dir, cache, joint=True))
    before = _entries(cache)
    for entry in before.values():
        if entry["key"]["kind"] == drop:
            FeatureCache(cache).entry(entry["key"]).clear()
    again = _store(model_dir, cache, joint=True)
    b = _read_all(again)
    assert _stage_items(again) == {computed: sum(len(s) for s in again.sources.values())}
    for split in a:
        for k in a[split]:
            np.testing.assert_array_equal(np.asarray(a[split][k]), np.asarray(b[split][k]))
    assert _entries(cache) == before  # the recomputed entries: same keys, same bytes


class SqrtNet(tiny_model.TinyNet):
    """TinyNet with ``h / sqrt(v)`` after conv1 (``v`` a parameter): XLA rounds it differently
    in a plain forward (``h * rsqrt(v)``) than inside a gradient (``h * (1 / sqrt(v))``)."""

    def setup(self):
        super().setup()
        self.var = self.param("var", lambda key: jnp.linspace(0.3, 3.0, 8))

    def __call__(self, x, train: bool = False) -> Features:
        h = nn.relu(self.conv1(x)) / jnp.sqrt(self.var + 1e-5)
        fmap = nn.relu(self.conv2(h))
        feature = jnp.mean(fmap, axis=(1, 2))
        return Features(logits=self.fc(feature), feature=feature, feature_map=fmap)


def test_a_model_whose_bits_differ_in_one_pass_gets_two_passes(tmp_path):
    if "features_test_sqrt" not in models.model_names():
        models.register_model("features_test_sqrt", SqrtNet)
    tiny_model.register_toy_arrays()
    module = SqrtNet(num_classes=3, width=8)
    spec = PreprocessSpec(None, None, "bilinear", (0.5,) * 3, (0.25,) * 3, 3)
    model_dir = models.save(
        str(tmp_path / "m"), arch="features_test_sqrt", num_classes=3, arch_kwargs={"width": 8},
        variables=models.init_variables(module, jax.random.PRNGKey(0), (8, 8, 3)),
        input_shape=(8, 8, 3), preprocess=spec)
    two = _store(model_dir, tmp_path / "two", joint=False)
    a = _read_all(two)
    one = _store(model_dir, tmp_path / "one", joint=True)
    with pytest.warns(UserWarning, match="differ in the last bits"):
        b = _read_all(one)
    n_all = sum(len(src) for src in one.sources.values())
    assert _stage_items(one) == {"features": n_all, "extract/adascale_a": n_all}
    for split in a:
        for k in a[split]:
            np.testing.assert_array_equal(np.asarray(a[split][k]), np.asarray(b[split][k]))
    assert _entries(tmp_path / "two") == _entries(tmp_path / "one")
