"""The training loop: API contract, kill -9 + resume equality, bad input, 8 devices."""

from __future__ import annotations

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxood import models
from jaxood.train import CheckpointError, TrainConfig, TrainingDiverged, train

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARCH = {"arch": "wrn", "arch_kwargs": {"depth": 10, "widen_factor": 1}}


def toy_data(n=120, seed=0, k=3):
    """Learnable 8x8 grayscale classes (brightness per class + noise)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = np.clip(rng.normal(60 + 70 * y[:, None, None], 30, (n, 8, 8)), 0, 255).astype(np.uint8)
    return x, y


def cfg_for(workdir, **kw):
    base = dict(
        **ARCH,
        num_classes=3,
        epochs=2,
        batch_size=16,
        lr=0.05,
        mean=(0.5,),
        std=(0.25,),
        seed=0,
        workdir=str(workdir),
        progress=False,
        log_every=1,
        checkpoint_every=3,
    )
    base.update(kw)
    return TrainConfig(**base)


def final_params(workdir):
    d = pathlib.Path(workdir) / "checkpoints"
    step = max(int(p.name) for p in d.iterdir() if p.name.isdigit())
    mngr = ocp.CheckpointManager(d, item_names=("state", "meta"))
    state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    mngr.close()
    return step, jax.tree.map(
        np.asarray, {"params": state["params"], "batch_stats": state["batch_stats"]}
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """An uninterrupted run (shared by several tests)."""
    wd = tmp_path_factory.mktemp("full")
    x, y = toy_data()
    xv, yv = toy_data(30, seed=1)
    result = train(
        cfg_for(wd), train_data=(x[:96], y[:96]), val_data=(xv, yv), test_data=(x[96:], y[96:])
    )
    return wd, result, (xv, yv)


def test_api_result_and_saved_model_agree_with_training(finished_run):
    wd, result, (xv, yv) = finished_run
    assert result.final_step == 12  # 96 / 16 = 6 steps per epoch, 2 epochs
    assert (
        len(result.history) == 2 and 0 <= result.best_val_acc <= 1 and result.test_acc is not None
    )
    loaded = models.load(result.model_dir)
    assert loaded.preprocess.mean == (0.5,) and loaded.preprocess.channels == 1
    assert loaded.manifest["feature_dim"] == 64 and loaded.model.input_shape == (8, 8, 1)
    xn = (xv[..., None] / 255.0 - 0.5) / 0.25
    out = jax.jit(loaded.model.features)(loaded.variables, xn.astype(np.float32))
    # The reloaded model reproduces the val accuracy the trainer measured for the best step.
    assert np.mean(np.argmax(out.logits, -1) == yv) == pytest.approx(result.best_val_acc)
    np.testing.assert_allclose(out.feature, out.feature_map.mean((1, 2)), rtol=1e-5, atol=1e-6)
    records = [json.loads(line) for line in open(wd / "metrics.jsonl")]
    assert sum(1 for r in records if r.get("event") == "epoch") == 2
    assert TrainConfig.load(wd / "config.json").num_classes == 3


_KILLED_RUN = textwrap.dedent(
    """
    import sys, time, numpy as np
    sys.path.insert(0, {root!r}); sys.path.insert(0, {here!r})
    import jaxood.train.trainer as T
    from test_trainer import cfg_for, toy_data
    real = T.prefetch
    def slow(make, steps, size=2):  # slow the loop down so the kill lands mid-run
        for item in real(make, steps, size):
            time.sleep(0.15)
            yield item
    T.prefetch = slow
    x, y = toy_data(); xv, yv = toy_data(30, seed=1)
    T.train(cfg_for({wd!r}), train_data=(x[:96], y[:96]), val_data=(xv, yv))
    """
)


def test_kill9_then_resume_gives_identical_final_weights(finished_run, tmp_path):
    wd_full, result, _ = finished_run
    wd = tmp_path / "killed"
    code = _KILLED_RUN.format(root=str(ROOT), here=str(pathlib.Path(__file__).parent), wd=str(wd))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE)
    ckdir = wd / "checkpoints"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if ckdir.is_dir() and any(p.name.isdigit() for p in ckdir.iterdir()):
            break
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.6))  # somewhere after the first checkpoint
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    step_killed, _ = final_params(wd)
    assert step_killed < 12
    x, y = toy_data()
    xv, yv = toy_data(30, seed=1)
    resumed = train(cfg_for(wd), train_data=(x[:96], y[:96]), val_data=(xv, yv), resume=True)
    assert resumed.final_step == 12
    _, a = final_params(wd)
    _, b = final_params(wd_full)
    for (path, u), v in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(u, v, err_msg=jax.tree_util.keystr(path))
    assert resumed.best_val_acc == result.best_val_acc


def test_existing_checkpoints_wrong_model_and_corruption_are_clear_errors(finished_run, tmp_path):
    wd, _, _ = finished_run
    x, y = toy_data()
    with pytest.raises(FileExistsError, match="resume"):
        train(cfg_for(wd), train_data=(x, y))
    with pytest.raises(CheckpointError, match="num_classes"):
        train(cfg_for(wd, num_classes=4), train_data=(x, y), resume=True)
    with pytest.raises(CheckpointError, match="arch_kwargs"):
        train(
            cfg_for(wd, arch_kwargs={"depth": 10, "widen_factor": 2}),
            train_data=(x, y),
            resume=True,
        )
    # Corrupt a copy of the run's newest checkpoint.
    import shutil

    bad = tmp_path / "corrupt"
    shutil.copytree(wd, bad, symlinks=True)
    latest = max(int(p.name) for p in (bad / "checkpoints").iterdir() if p.name.isdigit())
    for f in (bad / "checkpoints" / str(latest) / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    before = sorted(p.name for p in (bad / "checkpoints").iterdir())
    with pytest.raises(CheckpointError, match="corrupt"):
        train(cfg_for(bad), train_data=(x[:96], y[:96]), resume=True)
    assert sorted(p.name for p in (bad / "checkpoints").iterdir()) == before


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    x, y = toy_data()
    cfg = cfg_for(tmp_path / "nan", lr=1e12, checkpoint_every=1, epochs=3)
    with pytest.raises(TrainingDiverged, match=r"step \d+") as info:
        train(cfg, train_data=(x, y))
    ck = tmp_path / "nan" / "checkpoints"
    steps = sorted(int(p.name) for p in ck.iterdir() if p.name.isdigit())
    for s in steps:  # every checkpoint on disk is finite
        mngr = ocp.CheckpointManager(ck, item_names=("state", "meta"))
        st = mngr.restore(s, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
        mngr.close()
        assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(st["params"]))
    assert "last good checkpoint" in str(info.value) or "nothing was saved" in str(info.value)


def test_bad_names_and_data(tmp_path):
    x, y = toy_data()
    with pytest.raises(ValueError, match="resnet18_32x32"):
        train(cfg_for(tmp_path / "a", arch="wrn99", arch_kwargs={}), train_data=(x, y))
    with pytest.raises(ValueError, match="cifar10"):
        train(cfg_for(tmp_path / "b", dataset="mnist-m"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(cfg_for(tmp_path / "c", dataset="fashion_mnist", data_dir=str(tmp_path / "nope")))
    with pytest.raises(ValueError, match="uint8"):
        train(cfg_for(tmp_path / "d"), train_data=(x.astype(np.float32), y))
    with pytest.raises(ValueError, match="loss"):
        train(cfg_for(tmp_path / "e", loss="focal"), train_data=(x, y))
    with pytest.raises(ValueError, match="ISH"):
        train(cfg_for(tmp_path / "f", loss="logitnorm", ish=True), train_data=(x, y))


def test_elogitnorm_and_ish_finetune_runs(finished_run, tmp_path):
    _, result, _ = finished_run
    x, y = toy_data()
    r1 = train(cfg_for(tmp_path / "eln", loss="elogitnorm", max_steps=2), train_data=(x, y))
    assert r1.final_step == 2
    r2 = train(
        cfg_for(tmp_path / "ish", ish=True, init_from=result.model_dir, lr=0.003, max_steps=2),
        train_data=(x, y),
    )
    assert r2.final_step == 2
    # The ISH run's saved config states the classifier weight decay it used (implied 5e-5).
    assert TrainConfig.load(tmp_path / "ish" / "config.json").fc_weight_decay == 5e-5
    before, after = models.load(result.model_dir).variables, models.load(r2.model_dir).variables
    assert not np.allclose(before["params"]["fc"]["kernel"], after["params"]["fc"]["kernel"])


def test_bf16_precision_trains_and_exports_a_float32_model(tmp_path):
    """--precision bf16: conv/matmul in bf16 (checked in the compiled step), parameters and
    optimizer state f32, the loss falls, and the exported model loads and scores."""
    import functools

    from jaxood.train.steps import StepConfig, create_train_state, train_step

    x, y = toy_data()
    xv, yv = toy_data(30, seed=1)
    cfg = cfg_for(tmp_path / "bf16", precision="bf16", epochs=3, lr=0.02)
    result = train(cfg, train_data=(x[:96], y[:96]), val_data=(xv, yv))
    losses = [
        r["loss"] for r in map(json.loads, open(tmp_path / "bf16" / "metrics.jsonl")) if "loss" in r
    ]
    assert len(losses) == 18 and np.mean(losses[-4:]) < 0.7 * np.mean(losses[:4])
    _, stored = final_params(tmp_path / "bf16")
    assert {v.dtype for v in jax.tree.leaves(stored)} == {np.dtype(np.float32)}
    loaded = models.load(result.model_dir)
    assert {v.dtype for v in jax.tree.leaves(loaded.variables)} == {np.dtype(np.float32)}
    xn = ((xv[..., None] / 255.0 - 0.5) / 0.25).astype(np.float32)
    logits = jax.jit(loaded.model.features)(loaded.variables, xn).logits
    assert np.mean(np.argmax(logits, -1) == yv) == pytest.approx(result.best_val_acc)
    assert result.best_val_acc > 0.6  # 3 brightness classes: chance is 1/3

    module = models.create("wrn", 3, depth=10, widen_factor=1)
    v = models.init_variables(module, jax.random.PRNGKey(0), (8, 8, 1))
    state = create_train_state(cfg, module, v, 10)
    step = functools.partial(train_step, hp=StepConfig.from_config(cfg, (0.5,), (0.25,)))
    xb, yb = x[:16, ..., None], y[:16]
    hlo = jax.jit(step).lower(state, xb, yb).as_text()
    convs = [line for line in hlo.splitlines() if "stablehlo.convolution" in line]
    assert convs and all("bf16" in line for line in convs)
    new_state = jax.eval_shape(step, state, xb, yb)[0]
    leaves = jax.tree.leaves((new_state.params, new_state.opt_state))
    floats = {v.dtype for v in leaves if jnp.issubdtype(v.dtype, jnp.floating)}
    assert floats == {np.dtype(np.float32)}


def test_non_finite_hyperparameters_are_refused(tmp_path):
    x, y = toy_data()
    for field in ("lr", "weight_decay", "momentum"):
        with pytest.raises(ValueError, match=f"{field} must be a finite number"):
            train(cfg_for(tmp_path / field, **{field: float("nan")}), train_data=(x, y))
    with pytest.raises(ValueError, match="precision"):
        train(cfg_for(tmp_path / "p", precision="fp16"), train_data=(x, y))


_MULTI = textwrap.dedent(
    """
    import json, sys, numpy as np, jax
    sys.path.insert(0, {root!r}); sys.path.insert(0, {here!r})
    assert jax.device_count() == 8, jax.devices()
    from jaxood.train import train
    from test_trainer import cfg_for, toy_data
    x, y = toy_data(64)
    out = {{}}
    for n in (1, 8):
        wd = {tmp!r} + f"/dev{{n}}"
        train(cfg_for(wd, num_devices=n, max_steps=4, batch_size=16), train_data=(x, y))
        out[n] = [r["loss"] for r in map(json.loads, open(wd + "/metrics.jsonl")) if "loss" in r]
    try:
        train(cfg_for({tmp!r} + "/bad", batch_size=12), train_data=(x, y))
        out["err"] = None
    except ValueError as e:
        out["err"] = str(e)
    print("RESULT" + json.dumps(out))
    """
)


@pytest.mark.multidevice
def test_eight_devices_match_one_device(tmp_path):
    code = _MULTI.format(root=str(ROOT), here=str(pathlib.Path(__file__).parent), tmp=str(tmp_path))
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT")[-1])
    assert len(out["1"]) == 4
    np.testing.assert_allclose(out["8"], out["1"], rtol=2e-5, atol=2e-6)
    assert "not divisible" in out["err"]
