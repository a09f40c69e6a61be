"""A real two-process (multi-host) run of ``jaxood.train`` against one ordinary process.

Two subprocesses form a loopback JAX cluster (``jax.distributed.initialize`` with gloo CPU
collectives, one CPU device each, so 2 global devices), each calling the public ``train``
API on the same real data (sklearn digits, 8x8x1) with the same global batch of 32; every
process feeds only its half of each batch (``make_array_from_process_local_data``), the
checkpoints are collective orbax saves into one shared run directory, and process 0 alone
logs and exports the best model. A third, ordinary process trains the same config on a
2-device mesh (``--xla_force_host_platform_device_count=2``).

Tolerance: the reference has the same mesh and the same batch partition, so the programs
are the same and the only possible difference is how the cross-device all-reduce adds two
partial sums (gloo vs the in-process CPU collective); a sum of two float32 partials is
exact up to order, so we expect bit-equality (observed) and allow ``rtol=1e-6`` for that
one rounding. A one-device reference is NOT used: with this near-random net (lr 0.05,
BatchNorm on 16-sample shards) a 1e-7 summation-order change grows ~10x per step (observed
1.6e-3 relative loss difference by step 8), which would force a tolerance too loose to
catch a wrong batch slice; one device vs many devices is covered in test_trainer.py.
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

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORKER = HERE / "multihost_worker.py"
TIMEOUT = 240  # seconds per subprocess; each normally finishes in well under a minute


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: pathlib.Path, workdir: pathlib.Path, n: int, pid: int, port: int, devices: int):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    cmd = [sys.executable, str(WORKER), str(out), str(workdir), str(n), str(pid), str(port)]
    log = open(str(out) + ".log", "w")  # a file, not a pipe: no pipe-buffer deadlock
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc, str(out) + ".log"


def _wait_all(procs) -> None:
    """Polls until all exit; kills everything on the first failure or after TIMEOUT s."""
    deadline = time.monotonic() + TIMEOUT
    try:
        while any(p.poll() is None for p, _ in procs):
            failed = [log for p, log in procs if p.returncode not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in procs:
        if p.returncode != 0:
            tail = pathlib.Path(log).read_text()[-4000:]
            pytest.fail(f"{log}: exit {p.returncode} (timeout {TIMEOUT} s)\n{tail}")


def _load(out: pathlib.Path):
    with open(out) as f:
        info = json.load(f)
    with np.load(str(out) + ".npz") as z:
        params = dict(z)
    return info, params


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    port = _free_port()
    shared = tmp_path / "multi"  # one run directory, as on a shared filesystem
    outs = [tmp_path / f"proc{i}.json" for i in range(2)]
    single_out = tmp_path / "single.json"
    procs = [_launch(outs[i], shared, 2, i, port, devices=1) for i in range(2)]
    procs.append(_launch(single_out, tmp_path / "single", 1, 0, 0, devices=2))
    _wait_all(procs)

    ref, ref_params = _load(single_out)
    p0, params0 = _load(outs[0])
    p1, params1 = _load(outs[1])
    assert ref["global_devices"] == 2 and ref["process_count"] == 1
    for i, p in enumerate((p0, p1)):
        assert (p["process_index"], p["process_count"], p["global_devices"]) == (i, 2, 2)
        assert p["final_step"] == ref["final_step"] == 8  # 7 full batches + a short one
        # Val accuracy is a collective over both processes' slices: identical everywhere.
        assert p["best_val_acc"] == pytest.approx(ref["best_val_acc"], abs=1e-9)
        np.testing.assert_allclose(p["train_acc"], ref["train_acc"], atol=1e-9)

    assert len(ref["losses"]) == 8 and p1["losses"] == []  # only process 0 logs
    np.testing.assert_allclose(p0["losses"], ref["losses"], rtol=1e-6)

    assert sorted(params0) == sorted(params1) == sorted(ref_params)
    for k in ref_params:
        # Both processes load the same exported model.
        np.testing.assert_array_equal(params0[k], params1[k], err_msg=k)
        np.testing.assert_allclose(params0[k], ref_params[k], rtol=1e-6, atol=1e-7, err_msg=k)
