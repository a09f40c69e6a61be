"""`jaxood bench --distributed` with two processes over loopback (gloo, one CPU device each).

The network passes (features, AdaSCALE's perturbed features, ODIN's gradient passes) are
shared out shard by shard over the processes into one cache on "shared storage" (tmp_path);
process 0 then fits, tunes and writes the tables. The tables must equal a one-process run:
every shard is computed with the same padded batches on one device either way.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from . import tiny_model

ROOT = pathlib.Path(__file__).resolve().parents[2]
DETECTORS = ["msp", "react", "knn", "mds", "odin", "adascale_a"]
TIMEOUT = 300


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _npz(tmp_path) -> str:
    data = tiny_model.toy_arrays(3)
    path = str(tmp_path / "toy.npz")
    np.savez(path, x_train=data["train"][0], y_train=data["train"][1], x_val=data["val"][0],
             y_val=data["val"][1], x_test=data["test"][0], y_test=data["test"][1],
             x_ood_val=data["ood_val"][0], x_near_a=data["near"]["near_a"][0],
             x_near_b=data["near"]["near_b"][0], x_far_noise=data["far"]["noise"][0],
             num_classes=3)
    return path


def _argv(npz, model, out, extra=()):
    return [sys.executable, "-m", "jaxood.cli", "bench", "--import", "tests.bench.multihost_plugin",
            "--benchmark", f"npz:{npz}", "--model", model, "--out", str(out), "--quiet",
            "--no-plots", "--batch-size", "4", "--detectors", *DETECTORS,
            "--hparams", json.dumps({"knn": {"K": 5}, "adascale_a": {"k1": 10.0, "k2": 25.0}}),
            *extra]


def _launch(argv, log, env_extra=None):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT), **(env_extra or {})}
    f = open(log, "w")  # a file, not a pipe: no pipe-buffer deadlock
    p = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    f.close()
    return p


def _cluster(argv, tmp_path, tag, env=({}, {})):
    port = _free_port()
    procs = []
    for i in range(2):
        flags = ["--distributed", "--coordinator-address", f"127.0.0.1:{port}",
                 "--num-processes", "2", "--process-id", str(i)]
        procs.append(_launch(argv + flags, tmp_path / f"{tag}{i}.log", env[i]))
    t0 = time.monotonic()
    for p in procs:
        try:
            p.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    return [p.returncode for p in procs], time.monotonic() - t0


def _table(out):
    [folder] = os.listdir(out / "npz-toy")
    store = json.load(open(out / "npz-toy" / folder / "store.json"))
    return {d: r["0"]["row"] for d, r in store["detectors"].items()}, out / "npz-toy" / folder


def _log(path) -> str:
    return pathlib.Path(path).read_text()[-3000:]


@pytest.mark.slow
def test_two_processes_give_the_one_process_table_and_resume_after_a_peer_dies(tmp_path):
    npz = _npz(tmp_path)
    model = tiny_model.save_tiny(str(tmp_path / "model"), 3, input_shape=(8, 8, 3))
    single = _launch(_argv(npz, model, tmp_path / "single"), tmp_path / "single.log")
    assert single.wait(timeout=TIMEOUT) == 0, _log(tmp_path / "single.log")
    ref, _ = _table(tmp_path / "single")

    # 1) Process 1 is killed after writing 3 shards: process 0 exits promptly with a clear line.
    shards = [tmp_path / "shards_a0.txt", tmp_path / "shards_a1.txt"]
    env = ({"JAXOOD_TEST_SHARD_LOG": str(shards[0])},
           {"JAXOOD_TEST_SHARD_LOG": str(shards[1]), "JAXOOD_TEST_KILL_AFTER": "3"})
    codes, seconds = _cluster(_argv(npz, model, tmp_path / "multi"), tmp_path, "killed", env)
    assert codes[1] == -9
    assert codes[0] == 1, _log(tmp_path / "killed0.log")
    survivor = _log(tmp_path / "killed0.log")
    assert "a peer process was lost" in survivor and "Resume every process with:" in survivor
    assert "--process-id 0" in survivor
    assert seconds < 60, seconds  # no ~60 s shutdown barrier, no C++ abort
    killed_shards = set(shards[1].read_text().split())
    assert len(killed_shards) == 3

    # 2) Resume: the killed process's finished shards are reused, nothing computed twice.
    shards_b = [tmp_path / "shards_b0.txt", tmp_path / "shards_b1.txt"]
    env = ({"JAXOOD_TEST_SHARD_LOG": str(shards_b[0])}, {"JAXOOD_TEST_SHARD_LOG": str(shards_b[1])})
    codes, _ = _cluster(_argv(npz, model, tmp_path / "multi"), tmp_path, "resumed", env)
    assert codes == [0, 0], _log(tmp_path / "resumed0.log") + _log(tmp_path / "resumed1.log")
    rewritten = set(shards_b[0].read_text().split()) | set(shards_b[1].read_text().split())
    assert not killed_shards & rewritten
    assert "process 0 writes the results" in _log(tmp_path / "resumed1.log")

    got, folder = _table(tmp_path / "multi")
    assert got == ref  # identical table, every detector
    assert sorted(got) == sorted(DETECTORS)
    assert (folder / "fitted" / "adascale_a" / "run0" / "detector.json").is_file()
    mode = os.stat(folder / "fitted" / "adascale_a" / "run0").st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o777 & ~umask  # readable by other users/hosts on shared storage
