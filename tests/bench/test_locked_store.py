"""Issue 21, data loss: two runs into one results folder keep both runs' detectors; every
store write is locked and merged into the file as it is at write time."""

import json
import threading
import time

import pytest

from jaxood import fsutil
from jaxood.bench.store import ResultStore

MODELS = [{"dir": "m", "fingerprint": {"weights": "aa"}}]


def _put(store, det):
    store.put(det, 0, row={"x": {"AUROC": 1.0}}, aps={"chosen": {}}, settings={"s": det},
              seconds=0.1)


def test_two_runs_opened_together_keep_both_detectors(tmp_path):
    # Both open the (empty) folder before either writes, as two `jaxood bench` processes do.
    a = ResultStore(str(tmp_path), "b", MODELS)
    b = ResultStore(str(tmp_path), "b", MODELS)
    _put(a, "msp")
    _put(b, "knn")
    on_disk = json.load(open(tmp_path / "store.json"))
    assert set(on_disk["detectors"]) == {"msp", "knn"}
    assert set(b.per_run()) == {"msp", "knn"}
    a.reload()
    assert set(a.per_run()) == {"msp", "knn"}


def test_a_write_waits_for_the_lock(tmp_path):
    path = str(tmp_path / "t.json")
    fsutil.atomic_write_json(path, {"n": 0})
    order = []

    def writer():
        fsutil.merge_json(path, lambda old: {"n": old["n"] + 1})
        order.append("merged")

    with fsutil.locked(path):
        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.3)
        order.append("released")
    t.join(5)
    assert order == ["released", "merged"]
    assert json.load(open(path)) == {"n": 1}


def test_concurrent_merges_lose_no_update(tmp_path):
    path = str(tmp_path / "c.json")

    def add(i):
        fsutil.merge_json(path, lambda old: {**(old or {}), str(i): i})

    threads = [threading.Thread(target=add, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert json.load(open(path)) == {str(i): i for i in range(16)}


def test_an_edited_store_is_refused_by_name(tmp_path):
    _put(ResultStore(str(tmp_path), "b", MODELS), "msp")
    (tmp_path / "store.json").write_text(json.dumps({"detectors": []}))
    with pytest.raises(ValueError, match=r"store.json is not a jaxood-results/1 result store"):
        ResultStore(str(tmp_path), "b", MODELS)


def test_a_failed_merge_leaves_the_file_as_it_was(tmp_path):
    path = str(tmp_path / "k.json")
    fsutil.atomic_write_json(path, {"keep": 1})

    def refuse(old):
        raise ValueError("no")

    with pytest.raises(ValueError):
        fsutil.merge_json(path, refuse)
    assert json.load(open(path)) == {"keep": 1}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
