"""``jaxood train --distributed`` through the CLI, two processes over loopback (gloo): when one
process is killed mid-training, the survivor prints one line with the resume command and
exits with status 1 promptly, instead of hanging in JAX's shutdown barrier."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.train.test_multihost import _free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]
TIMEOUT = 240


def _digits_npz(path: pathlib.Path) -> str:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.clip(d.images * 16, 0, 255).astype(np.uint8)
    np.savez(path, x_train=x[:256], y_train=d.target[:256], x_val=x[256:320],
             y_val=d.target[256:320])
    return str(path)


def _steps_logged(metrics: pathlib.Path) -> int:
    if not metrics.exists():
        return 0
    return sum(1 for line in metrics.read_text().splitlines()
               if line.strip() and "loss" in json.loads(line))


@pytest.mark.slow
def test_survivor_of_a_killed_peer_exits_promptly_with_the_resume_command(tmp_path):
    npz, workdir, port = _digits_npz(tmp_path / "d.npz"), tmp_path / "run", _free_port()
    argv = [sys.executable, "-m", "jaxood.cli", "train", "--dataset", f"npz:{npz}",
            "--arch", "wrn", "--arch-kwargs", '{"depth": 10, "widen_factor": 1}',
            "--epochs", "500", "--batch-size", "32", "--log-every", "1", "--no-progress",
            "--workdir", str(workdir), "--distributed", "--coordinator-address",
            f"127.0.0.1:{port}", "--num-processes", "2"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    logs = [tmp_path / f"p{i}.log" for i in range(2)]
    procs = []
    for i in range(2):
        with open(logs[i], "w") as f:  # a file, not a pipe: no pipe-buffer deadlock
            procs.append(subprocess.Popen(argv + ["--process-id", str(i)], cwd=ROOT, env=env,
                                          stdout=f, stderr=subprocess.STDOUT))
    try:
        deadline = time.monotonic() + TIMEOUT
        while _steps_logged(workdir / "metrics.jsonl") < 3:  # training is under way
            assert time.monotonic() < deadline and procs[0].poll() is None, logs[0].read_text()
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        code = procs[0].wait(timeout=TIMEOUT)
        seconds = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    out = logs[0].read_text()
    assert code == 1, out[-3000:]
    assert seconds < 45, seconds  # no ~60 s shutdown barrier
    [line] = [ln for ln in out.splitlines() if "a peer process was lost" in ln]
    assert line.startswith("jaxood: process 0 of 2:")
    assert "Resume every process with:" in line and line.endswith("--process-id 0 --resume")
    assert "Traceback" not in out
