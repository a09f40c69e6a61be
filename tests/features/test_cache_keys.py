"""Feature-cache keys: a cache written before stays valid as long as the key is derived the
same way. The key of every kind of entry the DataStore writes is recomputed here from its
definition (model arch + arch kwargs + a SHA-256 over the weights, the data fingerprint and
count, what was extracted), independently of the library's hashing code."""

import hashlib
import json

import numpy as np

from jaxood import detectors, models
from jaxood.data import benchmarks
from jaxood.features.cache import FeatureCache
from jaxood.features.model import bind_model, model_identity
from jaxood.features.store import DataStore, extract_id
from tests.bench import tiny_model


def _weights_sha256(variables) -> str:
    # The definition: for each leaf in flattening order, its key path, dtype + shape, bytes.
    import jax

    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables):
        arr = np.ascontiguousarray(np.asarray(leaf))
        h.update("".join(f"[{k.key!r}]" for k in path).encode())
        h.update(f"{arr.dtype}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _dir_name(key: dict) -> str:
    blob = json.dumps(key, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _store(tmp_path):
    tiny_model.register_toy_arrays()
    model_dir = tiny_model.save_tiny(str(tmp_path / "m"), 3, input_shape=(8, 8, 3), width=8)
    loaded = models.load(model_dir)
    opened = benchmarks.open_benchmark("toy-arrays", None, loaded.preprocess, need_train=False)
    cache = FeatureCache(tmp_path / "cache")
    store = DataStore(opened, loaded, cache, batch_size=16, mesh=None, progress=False)
    return loaded, opened, store


def test_feature_and_extract_keys_follow_their_definition(tmp_path):
    loaded, opened, store = _store(tmp_path)
    model = {"arch": "bench_tiny", "arch_kwargs": {"width": 8},
             "weights": _weights_sha256(loaded.variables)}
    src = opened.id_val
    feature_key = {"model": model, "data": src.fingerprint(), "n": len(src),
                   "kind": "features", "field": "logits"}
    assert store.cache.entry(store._key("id_val", {"kind": "features", "field": "logits"})).dir \
        .endswith(_dir_name(feature_key))
    store.base("id_val")  # the extraction writes exactly that entry
    assert (tmp_path / "cache" / _dir_name(feature_key) / "done.json").is_file()

    det = detectors.get("adascale_a")
    hp = {k: det.defaults[k] for k in det.names("extract")}
    store.extras(det, "id_val", hp)
    extract_key = {"model": model, "data": src.fingerprint(), "n": len(src), "kind": "extract",
                   "fn": extract_id(det),
                   "hparams": {k: list(v) if isinstance(v, tuple) else v
                               for k, v in sorted(hp.items())}}
    assert (tmp_path / "cache" / _dir_name(extract_key) / "done.json").is_file()


def test_the_cache_identity_is_part_of_the_one_model_identity(tmp_path):
    loaded, _, store = _store(tmp_path)
    identity = model_identity(bind_model(loaded))
    assert identity["weights"] == _weights_sha256(loaded.variables)
    assert store.model_fp == {k: identity[k] for k in ("arch", "arch_kwargs", "weights")}
