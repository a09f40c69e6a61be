"""The training loop: data-parallel SGD under ``jax.jit``, resumable, best-on-val export.

Read :func:`train` top to bottom: prepare the data and the model, restore or initialise the
state, then for every step run the jitted :func:`~jaxood.train.steps.train_step`, flush the
metrics window every ``log_every`` steps, evaluate/export at epoch ends and checkpoint.

Parallelism: a 1-D ``data`` mesh over the devices; the global batch is sharded along it and
the train state is replicated (``NamedSharding``). Under ``jax.jit`` the BatchNorm batch
statistics are reductions over the *global* batch axis, so they are synchronised across
devices (PyTorch's SyncBN) and the loss trajectory matches one device with the same global
batch up to float summation order. Multi-host: call ``jax.distributed.initialize()`` first
(the CLI's ``--distributed``); each process then feeds its slice of every global batch
(``jax.make_array_from_process_local_data``) and process 0 alone logs and exports.

Determinism: every random number is a function of (seed, step): the data order of an epoch
(``epoch_permutation(seed, epoch)``), augmentation and dropout keys
(``fold_in(PRNGKey(seed), step)``). A run resumed from any checkpoint therefore ends with
the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
import time

import jax

from jaxood import models, parallel
from jaxood.data.pipeline import TrainBatches, eval_batches, prefetch
from jaxood.train.checkpointing import (
    Checkpointer,
    Progress,
    checkpoint_meta,
    restore_or_init,
    run_identity,
)
from jaxood.train.config import TrainConfig
from jaxood.train.data import Split, TrainData, prepare_data
from jaxood.train.export import BEST, export_best
from jaxood.train.metrics import MetricsLog, MetricsWindow, TrainingDiverged
from jaxood.train.optim import learning_rate_schedule
from jaxood.train.steps import StepConfig, TrainState, all_finite, eval_step, train_step


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
      model_dir: saved-model directory (``jaxood.models.load``) of the best-val checkpoint
        (the final weights when there is no val data); ``<workdir>/best`` is a symlink to it.
      best_val_acc: best ID-val accuracy in [0, 1] (``None`` without val data).
      test_acc: accuracy of the best model on the test data (``None`` without test data).
      history: one dict per epoch (epoch, step, train_loss, train_acc, val_acc, lr, time).
      workdir: the run directory; ``checkpoint_dir``: its orbax checkpoints.
      final_step: number of optimizer steps done.
      images_per_s: mean training throughput of this invocation (compile, evaluation and
        checkpointing excluded).
    """

    model_dir: str
    best_val_acc: float | None
    test_acc: float | None
    history: list[dict]
    workdir: str
    checkpoint_dir: str
    final_step: int
    images_per_s: float | None = None


@dataclasses.dataclass(frozen=True)
class Run:
    """The static facts about a run that the loop's helpers share."""

    cfg: TrainConfig  # resolved: num_classes, mean, std, input_shape, fc_weight_decay set
    workdir: str
    data_name: str
    data_notes: dict  # where val came from, the class subset (saved in the manifest)
    steps_per_epoch: int
    end_step: int
    identity: dict  # what a checkpoint must match to be resumed by this run
    is_main: bool


def train(
    cfg: TrainConfig,
    train_data: Split | None = None,
    val_data: Split | None = None,
    test_data: Split | None = None,
    *,
    resume: bool = False,
) -> TrainResult:
    """Trains ``cfg.arch`` from scratch (or from ``cfg.init_from``) and exports the best model.

    Args:
      cfg: the settings (``TrainConfig``); saved to ``<workdir>/config.json``.
      train_data, val_data, test_data: ``(x uint8 [N, H, W] or [N, H, W, C], y int [N])``;
        when ``train_data`` is None the splits come from ``cfg.dataset``.
      resume: continue from the newest checkpoint in ``<workdir>/checkpoints`` (start fresh
        if there is none). Without it, a workdir that already holds checkpoints is an error.

    Returns:
      A :class:`TrainResult`; ``result.model_dir`` loads with ``jaxood.models.load``.

    Raises:
      ValueError: bad settings/data, an unknown model or dataset, a batch size not divisible
        by the device count, a checkpoint from another model (``CheckpointError``), or a NaN
        loss (``TrainingDiverged``; the step is in the message).
      FileNotFoundError: missing data.  FileExistsError: checkpoints exist and not ``resume``.
    """
    cfg.validate()
    data = prepare_data(cfg, train_data, val_data, test_data)
    module = models.create(cfg.arch, data.num_classes, **cfg.arch_kwargs)
    mesh = device_mesh(cfg)
    repl, batch_sh = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    batches = TrainBatches(
        *data.train,
        cfg.batch_size,
        cfg.seed,
        drop_last=cfg.drop_last,
        multiple_of=mesh.devices.size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    run = make_run(cfg, data, batches.steps_per_epoch)
    os.makedirs(run.workdir, exist_ok=True)
    ckpt = Checkpointer(os.path.join(run.workdir, "checkpoints"), keep=cfg.keep_checkpoints)
    total_steps = cfg.epochs * run.steps_per_epoch
    state, progress = restore_or_init(
        run.cfg, module, ckpt, run.identity, resume=resume, total_steps=total_steps, sharding=repl
    )
    if run.is_main:  # only after restore_or_init's checks: a refused resume keeps the config
        run.cfg.save(os.path.join(run.workdir, "config.json"))
    log = MetricsLog(os.path.join(run.workdir, "metrics.jsonl"), run.is_main)
    announce_data(run, data, log)
    start_step = int(jax.device_get(state.step))
    if ckpt.latest_step() is not None:
        log.write({"event": "resume", "step": start_step})

    p_train_step, evaluate = compile_steps(run.cfg, data, mesh)
    lr_at = learning_rate_schedule(run.cfg, total_steps)
    window, seen_shapes = MetricsWindow(), set()
    bar = progress_bar(cfg, run, start_step)
    make_batch = lambda s: tuple(
        jax.make_array_from_process_local_data(batch_sh, a) for a in batches.batch(s)
    )
    try:
        for step, (images, labels) in prefetch(make_batch, range(start_step, run.end_step)):
            if images.shape not in seen_shapes:  # this window compiles a new program
                seen_shapes.add(images.shape)
                window.exclude()
            state, metrics = p_train_step(state, images, labels)
            window.add(step, metrics, images.shape[0])
            done = step + 1
            epoch_end = done % run.steps_per_epoch == 0 or done == run.end_step
            save_now = epoch_end or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0)
            if bar is not None:
                bar.update(1)
            if len(window) >= cfg.log_every or save_now:
                log_window(window.flush(ckpt.latest_step()), done, run, lr_at, log, bar)
            if epoch_end:
                check_finite(state, done, ckpt)  # never evaluate or export a diverged model
                record = epoch_record(window, done, run, lr_at, evaluate(state, data.val))
                end_of_epoch(run, state, record, progress, log, bar)
            if save_now:
                check_finite(state, done, ckpt)
                ckpt.save(done, state.checkpoint(), checkpoint_meta(run.identity, progress, done))
                window.restart_clock()
    finally:
        if bar is not None:
            bar.close()
        ckpt.close()
    return finish(run, state, progress, evaluate, data.test, log, ckpt, repl, window.images_per_s)


def compile_steps(cfg: TrainConfig, data: TrainData, mesh):
    """The jitted train step (state donated) and ``evaluate(state, split) -> accuracy``."""
    repl, batch_sh = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    hp = StepConfig.from_config(cfg, data.mean, data.std)
    p_train_step = jax.jit(
        functools.partial(train_step, hp=hp),
        donate_argnums=0,
        in_shardings=(repl, batch_sh, batch_sh),
        out_shardings=(repl, repl),
    )
    p_eval_step = jax.jit(
        functools.partial(eval_step, hp=hp),
        out_shardings=repl,
        in_shardings=(repl, batch_sh, batch_sh, batch_sh),
    )
    evaluate = functools.partial(
        accuracy,
        p_eval_step,
        sharding=batch_sh,
        batch_size=math.ceil(cfg.eval_batch_size / mesh.devices.size) * mesh.devices.size,
    )
    return p_train_step, evaluate


def log_window(record: dict, done: int, run: Run, lr_at, log: MetricsLog, bar) -> None:
    """Writes a flushed metrics window (loss, accuracy, images/s) to the log and the bar."""
    log.write(
        {"step": done, "epoch": done / run.steps_per_epoch, **record, "lr": float(lr_at(done))}
    )
    if bar is not None:
        rate = record["images_per_s"]
        bar.set_postfix(
            loss=f"{record['loss']:.4f}",
            acc=f"{record['train_acc']:.3f}",
            img_s=f"{rate:.0f}" if rate else "-",
        )


def epoch_record(window: MetricsWindow, done: int, run: Run, lr_at, val_acc) -> dict:
    train_loss, train_acc = window.end_epoch()
    return {
        "epoch": done / run.steps_per_epoch,
        "step": done,
        "train_loss": train_loss,
        "train_acc": train_acc,
        "val_acc": val_acc,
        "lr": float(lr_at(done)),
        "time": time.time(),
    }


def device_mesh(cfg: TrainConfig) -> jax.sharding.Mesh:
    """The 1-D data mesh over the first ``cfg.num_devices`` devices (all by default)."""
    devices = jax.devices()[: cfg.num_devices] if cfg.num_devices else jax.devices()
    if cfg.num_devices and len(devices) < cfg.num_devices:
        raise ValueError(f"num_devices={cfg.num_devices} but only {len(devices)} devices exist")
    mesh = parallel.data_mesh(devices)
    parallel.check_divisible(cfg.batch_size, mesh)
    return mesh


def make_run(cfg: TrainConfig, data: TrainData, steps_per_epoch: int) -> Run:
    total = cfg.epochs * steps_per_epoch
    resolved = dataclasses.replace(
        cfg,
        num_classes=data.num_classes,
        mean=data.mean,
        std=data.std,
        input_shape=data.input_shape,
        fc_weight_decay=cfg.classifier_weight_decay(),
    )
    return Run(
        cfg=resolved,
        workdir=os.path.abspath(cfg.workdir),
        data_name=data.name,
        data_notes=data_notes(data),
        steps_per_epoch=steps_per_epoch,
        end_step=min(total, cfg.max_steps) if cfg.max_steps else total,
        identity=run_identity(cfg, data.input_shape, data.num_classes, steps_per_epoch),
        is_main=jax.process_index() == 0,
    )


def announce_data(run: Run, data: TrainData, log: MetricsLog) -> None:
    """One line naming the source of val (so a user sees when it is not the test split)."""
    log.write({"event": "data", "dataset": data.name, **run.data_notes})
    if run.is_main:
        print(f"jaxood train: val = {data.val_source}", file=sys.stderr, flush=True)


def data_notes(data: TrainData) -> dict:
    """What a user of the model needs to know about its data: the source of val and, with a
    class subset, which original class each output is (``class_map[i]`` = original id)."""
    notes = {"val_source": data.val_source}
    if data.classes is not None:
        notes["class_map"] = {str(i): c for i, c in enumerate(data.classes)}
    return notes


def accuracy(p_eval_step, state: TrainState, split: Split | None, *, sharding, batch_size: int):
    """Top-1 accuracy of ``state`` on ``split``; every process feeds its slice of each batch."""
    if split is None or len(split[0]) == 0:
        return None
    pid, pc = jax.process_index(), jax.process_count()
    local = slice(pid * batch_size // pc, (pid + 1) * batch_size // pc)
    correct = 0
    for batch in eval_batches(*split, batch_size):
        arrays = [jax.make_array_from_process_local_data(sharding, a[local]) for a in batch]
        correct += int(jax.device_get(p_eval_step(state, *arrays)))
    return correct / len(split[0])


def check_finite(state: TrainState, step: int, ckpt: Checkpointer) -> None:
    if not bool(jax.device_get(all_finite(state.params))):
        raise TrainingDiverged(
            f"parameters became non-finite by step {step}; nothing was saved after the last "
            f"good checkpoint (step {ckpt.latest_step()})"
        )


def end_of_epoch(run: Run, state: TrainState, record: dict, progress: Progress, log, bar):
    """Records the epoch, and exports the model when val accuracy improved (or, without
    val data, at the last step)."""
    val_acc, done = record["val_acc"], record["step"]
    improved = val_acc is not None and val_acc > progress.best_val_acc
    if improved or (val_acc is None and done == run.end_step):
        progress.best_val_acc = val_acc if val_acc is not None else progress.best_val_acc
        progress.best_step = done
        if run.is_main:
            export(run, state, done, val_acc)
    record["best_val_acc"] = progress.best_val_acc if progress.best_val_acc >= 0 else None
    progress.history.append(record)
    log.write({"event": "epoch", **record})
    if bar is not None:
        val = (
            "" if val_acc is None else f", val acc {val_acc:.4f} (best {progress.best_val_acc:.4f})"
        )
        bar.write(
            f"epoch {record['epoch']:.2f} step {done}: train loss "
            f"{record['train_loss']:.4f} acc {record['train_acc']:.4f}{val}"
        )


def export(run: Run, state: TrainState, step: int, val_acc: float | None) -> None:
    """Exports ``state``'s weights as the run's best model (``<workdir>/best``)."""
    export_best(
        run.workdir,
        state.variables,
        run_cfg=run.cfg,
        step=step,
        val_acc=val_acc,
        data_name=run.data_name,
        data_notes=run.data_notes,
        steps_per_epoch=run.steps_per_epoch,
    )


def finish(run: Run, state, progress, evaluate, test, log, ckpt, repl, images_per_s) -> TrainResult:
    """Exports the final weights if nothing was exported, tests the best model, summarises."""
    final_step = int(jax.device_get(state.step))
    best_dir = os.path.join(run.workdir, BEST)
    if run.is_main and not os.path.exists(best_dir):  # e.g. resumed after the last epoch
        export(run, state, final_step, None)
    test_acc = None
    if test is not None and len(test[0]):
        best = models.load(best_dir)
        best_state = state.replace(**jax.device_put(best.variables, repl))
        test_acc = evaluate(best_state, test)
        log.write(
            {
                "event": "test",
                "step": final_step,
                "test_acc": test_acc,
                "best_step": progress.best_step,
            }
        )
    result = TrainResult(
        model_dir=os.path.realpath(best_dir),
        best_val_acc=progress.best_val_acc if progress.best_val_acc >= 0 else None,
        test_acc=test_acc,
        history=progress.history,
        workdir=run.workdir,
        checkpoint_dir=ckpt.directory,
        final_step=final_step,
        images_per_s=images_per_s,
    )
    if run.is_main and run.cfg.progress:
        print(summary(result), file=sys.stderr)
    return result


def progress_bar(cfg: TrainConfig, run: Run, start_step: int):
    if not (cfg.progress and run.is_main and start_step < run.end_step):
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=run.end_step,
        initial=start_step,
        desc=f"train {cfg.arch}",
        unit="step",
        dynamic_ncols=True,
        file=sys.stderr,
    )


def summary(result: TrainResult) -> str:
    """A short human-readable end-of-run summary."""
    fmt = lambda a: "n/a" if a is None else f"{100 * a:.2f}%"
    rate = "n/a" if result.images_per_s is None else f"{result.images_per_s:.0f} images/s"
    lines = [
        "training finished",
        f"  steps:          {result.final_step}",
        f"  best val acc:   {fmt(result.best_val_acc)}",
        f"  test acc:       {fmt(result.test_acc)} (best-val model)",
        f"  throughput:     {rate}",
        f"  best model:     {result.model_dir}  (jaxood.models.load)",
        f"  checkpoints:    {result.checkpoint_dir}",
        f"  metrics log:    {os.path.join(result.workdir, 'metrics.jsonl')}",
    ]
    return "\n".join(lines)
