"""Results are never lost: merged runs, history, resume after kill -9, folders per model."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from jaxood import cli
from jaxood.bench import runner
from jaxood.bench.store import ResultStore

from . import tiny_model
from .test_runner import NUM_CLASSES, setup  # noqa: F401 - the shared module fixture


def _cfg(root, model_dir, out, detectors, **kw):
    return runner.BenchConfig(
        "toy-imglist", [model_dir], detectors=detectors, data_root=str(root / "data"),
        out_dir=str(out), cache_dir=str(root / "cache"), progress=False, plots=False,
        strict=True, **kw,
    )


def test_a_subset_run_merges_instead_of_replacing(setup, tmp_path):  # noqa: F811
    root, model_dir = setup
    first = runner.run(_cfg(root, model_dir, tmp_path, ["msp", "react"]))
    react_aps = json.load(open(os.path.join(first.out_dir, "aps.json")))["react"]
    second = runner.run(_cfg(root, model_dir, tmp_path, ["scale", "msp"], rerun=True))
    assert second.out_dir == first.out_dir
    assert set(second.table) == {"msp", "react", "scale"}
    assert second.table["react"] == first.table["react"]
    aps = json.load(open(os.path.join(second.out_dir, "aps.json")))
    assert aps["react"] == react_aps  # the tuned settings of a detector not re-run are kept
    assert "| react |" in open(os.path.join(second.out_dir, "results.md")).read()
    history = [json.loads(x) for x in open(os.path.join(second.out_dir, "runs.jsonl"))]
    assert [h["detectors"] for h in history] == [["msp", "react"], ["msp", "scale"]]
    assert all(h["jaxood_version"] and h["time"] for h in history)
    # Same settings again: nothing recomputed, nothing lost.
    third = runner.run(_cfg(root, model_dir, tmp_path, ["msp"]))
    assert third.info["computed"] == [] and third.info["skipped"] == ["msp"]
    assert third.table == second.table


def test_two_models_with_the_same_name_never_share_a_folder(setup, tmp_path):  # noqa: F811
    root, model_dir = setup
    other = tiny_model.save_tiny(str(tmp_path / "m2" / "best"), NUM_CLASSES, (8, 8, 3), seed=7)
    a = runner.run(_cfg(root, model_dir, tmp_path, ["msp"], model_name="best"))
    b = runner.run(_cfg(root, other, tmp_path, ["msp"], model_name="best"))
    assert a.out_dir != b.out_dir
    assert os.path.basename(a.out_dir).startswith("best-")
    assert a.table["msp"] != b.table["msp"]


def test_refuses_to_merge_another_models_results(tmp_path):
    ResultStore(str(tmp_path), "b", [{"dir": "m", "fingerprint": {"weights": "aa"}}]).put(
        "msp", 0, row={}, aps={}, settings={}, seconds=0.0)
    with pytest.raises(ValueError, match="refusing to merge"):
        ResultStore(str(tmp_path), "b", [{"dir": "m", "fingerprint": {"weights": "bb"}}])


def test_train_workdir_resolves_to_its_best_model(setup, tmp_path, capsys):  # noqa: F811
    root, model_dir = setup
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "config.json").write_text("{}")
    os.symlink(model_dir, workdir / "best")
    cfg = _cfg(root, str(workdir), tmp_path / "o", ["mls"])
    res = runner.run(runner.BenchConfig(**{**cfg.__dict__, "progress": True}))
    assert "training workdir; using its best model" in capsys.readouterr().out
    assert res.info["runs"] == [os.path.realpath(model_dir)]


def test_every_detector_failing_exits_nonzero_with_a_summary(setup, tmp_path, capsys):  # noqa: F811
    root, model_dir = setup
    argv = ["bench", "--benchmark", "toy-imglist", "--model", model_dir, "--data-root",
            str(root / "data"), "--out", str(tmp_path), "--quiet", "--no-plots",
            "--detectors", "knn", "--hparams", '{"knn": {"K": 100000}}', "--no-aps"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and "knn" in err and "no detector succeeded" in err


KILLER = textwrap.dedent('''
    import os, signal, sys
    sys.path.insert(0, {root!r})
    import tests.bench.tiny_model  # registers the 'bench_tiny' architecture
    import jax.numpy as jnp
    from jaxood import detectors
    from jaxood.types import Detector

    def score(model, variables, stats, inputs):
        if os.environ.get("KILL_ME"):
            os.kill(os.getpid(), signal.SIGKILL)
        return jnp.max(inputs.features.logits, -1)

    detectors.register(Detector(name="test_killer", score=score), overwrite=True)
''')


def test_killed_run_keeps_finished_detectors_and_resumes(setup, tmp_path):  # noqa: F811
    root, model_dir = setup
    plugin = tmp_path / "killer.py"
    plugin.write_text(KILLER.format(root=os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))))
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "jaxood.cli", "bench", "--import", str(plugin), "--benchmark",
            "npz:" + _npz_benchmark(tmp_path), "--model", model_dir, "--out", str(out), "--quiet",
            "--no-plots", "--detectors", "msp", "test_killer", "ebo"]
    env = {**os.environ, "KILL_ME": "1"}
    killed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    [folder] = os.listdir(out / "npz-toy")
    store = json.load(open(out / "npz-toy" / folder / "store.json"))
    assert list(store["detectors"]) == ["msp"]  # finished before the kill, kept
    finished = store["detectors"]["msp"]["0"]["finished"]
    env.pop("KILL_ME")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    store = json.load(open(out / "npz-toy" / folder / "store.json"))
    assert set(store["detectors"]) == {"msp", "test_killer", "ebo"}
    assert store["detectors"]["msp"]["0"]["finished"] == finished  # resumed, not recomputed
    assert "kept from earlier runs" in done.stdout


def _npz_benchmark(tmp_path) -> str:
    import numpy as np

    data = tiny_model.toy_arrays(NUM_CLASSES)
    path = str(tmp_path / "toy.npz")
    np.savez(path, x_train=data["train"][0], y_train=data["train"][1], x_val=data["val"][0],
             y_val=data["val"][1], x_test=data["test"][0], y_test=data["test"][1],
             x_ood_val=data["ood_val"][0], x_near_a=data["near"]["near_a"][0],
             x_far_noise=data["far"]["noise"][0], num_classes=NUM_CLASSES)
    return path


def test_vim_uses_a_recorded_d_relative_grid_on_narrow_models(setup, tmp_path):  # noqa: F811
    root, model_dir = setup  # TinyNet: D = 16, below OpenOOD's dim grid (256, 1000)
    res = runner.run(_cfg(root, model_dir, tmp_path, ["vim"]))
    [entry] = res.aps["vim"]
    assert entry["adapted_grid"] == {"feature_dim": 16, "published": {"dim": [256, 1000]},
                                     "used": {"dim": [4, 8]}}
    assert [p["hparams"]["dim"] for p in entry["grid"]] == [4, 8]
    assert entry["chosen"]["dim"] in (4, 8)


def test_stream_detectors_include_covariate_shifted_id_in_full_spectrum(setup, tmp_path):  # noqa: F811
    root, model_dir = setup
    res = runner.run(_cfg(root, model_dir, tmp_path, ["oodd", "msp"], fsood=True,
                          hparams={"oodd": {"k_in": 5, "k_out": 5, "queue_size": 8}}))
    n_id = 37 + 37  # toy ID-test + its covariate-shifted copy
    assert len(res.scores["msp"]["id"]) == n_id
    assert len(res.scores["oodd"]["id"]) == n_id


def test_two_runs_into_one_folder_keep_both_runs_detectors(setup, tmp_path, monkeypatch):  # noqa: F811
    """Issue 21: run B starts and finishes while run A (opened earlier) is still computing;
    before, A's write replaced the store with its own view and B's detector was lost."""
    root, model_dir = setup
    real_put = ResultStore.put
    state = {"b": None}

    def put_after_b(self, det, run, **kw):
        if det == "msp" and state["b"] is None:  # A's first write: let B run to the end first
            state["b"] = runner.run(_cfg(root, model_dir, tmp_path, ["ebo"]))
        return real_put(self, det, run, **kw)

    monkeypatch.setattr(ResultStore, "put", put_after_b)
    a = runner.run(_cfg(root, model_dir, tmp_path, ["msp"]))
    assert set(state["b"].table) == {"ebo"}
    assert set(a.table) == {"msp", "ebo"}
    store = json.load(open(os.path.join(a.out_dir, "store.json")))
    assert set(store["detectors"]) == {"msp", "ebo"}
    md = open(os.path.join(a.out_dir, "results.md")).read()
    assert "| msp |" in md and "| ebo |" in md
    history = [json.loads(x) for x in open(os.path.join(a.out_dir, "runs.jsonl"))]
    assert sorted(h["detectors"] for h in history) == [["ebo"], ["msp"]]


def test_adascale_defaults_run_on_a_narrow_model(setup, tmp_path):  # noqa: F811
    """Issue 21 item 1: at D = 16, k1 = 1 % and k2 = 5 % of D round down to 0 elements; the
    library's main detector used to FAIL at its defaults. Now they adapt (recorded)."""
    root, model_dir = setup
    res = runner.run(_cfg(root, model_dir, tmp_path, ["adascale_a"]))
    assert res.info["failed"] == {} and "adascale_a" in res.table
    entry = res.aps["adascale_a"][0]
    assert entry["adapted_grid"]["used"]["k1"] == [6.25] or entry["adapted_grid"]["used"][
        "k1"] == (6.25,)
    assert entry["chosen"]["k1"] == 6.25 and entry["chosen"]["k2"] == 6.25
