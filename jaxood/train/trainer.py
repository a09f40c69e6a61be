"""The training loop: data-parallel SGD under ``jax.jit``, resumable, best-on-val export.

Parallelism: a 1-D ``data`` mesh over the devices; the global batch is sharded along it and
the train state is replicated (``NamedSharding``). Under ``jax.jit`` the BatchNorm batch
mean/variance are reductions over the *global* batch axis, so statistics are synchronised
across devices (equivalent to PyTorch SyncBN) and the loss trajectory matches one device
with the same global batch up to float summation order. Multi-host: call
``jax.distributed.initialize()`` first (the CLI's ``--distributed``); each process then
feeds its slice of every global batch (``jax.make_array_from_process_local_data``).

Determinism: every random number is a function of (seed, step): the data order of an epoch
(``epoch_permutation(seed, epoch)``), augmentation and dropout keys
(``fold_in(PRNGKey(seed), step)``). A run resumed from any checkpoint therefore ends with
the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxood import models, parallel
from jaxood.data import augment
from jaxood.data.pipeline import TrainBatches, eval_batches, prefetch
from jaxood.train import losses
from jaxood.train.checkpointing import Checkpointer, CheckpointError
from jaxood.train.config import TrainConfig
from jaxood.train.ish import ish_kernel_grad
from jaxood.types import PreprocessSpec

Array = jax.Array


class TrainingDiverged(ValueError):
    """The loss became NaN/inf; nothing was saved over the last good checkpoint."""


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
      images_per_s: mean training throughput of this invocation (compile time excluded).
    """

    model_dir: str
    best_val_acc: float | None
    test_acc: float | None
    history: list[dict]
    workdir: str
    checkpoint_dir: str
    final_step: int
    images_per_s: float | None = None


def cosine_schedule(lr: float, min_lr: float, total_steps: int) -> optax.Schedule:
    """OpenOOD's per-iteration cosine: ``min_lr + (lr - min_lr) * (1 + cos(pi t / T)) / 2``."""

    def schedule(count):
        t = jnp.minimum(count, total_steps) / max(total_steps, 1)
        return min_lr + (lr - min_lr) * 0.5 * (1.0 + jnp.cos(jnp.pi * t))

    return schedule


def make_optimizer(cfg: TrainConfig, total_steps: int, params: Any) -> optax.GradientTransformation:
    """PyTorch-equivalent SGD: coupled L2 -> Nesterov momentum -> ``-lr_t``.

    ``add_decayed_weights`` before ``sgd`` adds ``wd * p`` to the gradient like
    ``torch.optim.SGD(weight_decay=...)``; ``optax.sgd(nesterov=True)`` is PyTorch's
    Nesterov form (dampening 0). ``fc_weight_decay`` gives the classifier its own L2.
    """
    schedule = cosine_schedule(cfg.lr, cfg.min_lr, total_steps)
    sgd = optax.sgd(
        schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov and cfg.momentum > 0
    )
    if cfg.fc_weight_decay is None:
        return optax.chain(optax.add_decayed_weights(cfg.weight_decay), sgd)
    if "fc" not in params:
        raise ValueError(
            f"fc_weight_decay needs an 'fc' head; {cfg.arch} params have {list(params)}"
        )
    is_fc = {k: jax.tree.map(lambda _, fc=(k == "fc"): fc, v) for k, v in params.items()}
    not_fc = jax.tree.map(lambda b: not b, is_fc)
    return optax.chain(
        optax.add_decayed_weights(cfg.weight_decay, mask=not_fc),
        optax.add_decayed_weights(cfg.fc_weight_decay, mask=is_fc),
        sgd,
    )


def _loss_fn(cfg: TrainConfig, module, params, batch_stats, x, y, dropout_key):
    out, mutated = module.apply(
        {"params": params, "batch_stats": batch_stats},
        x,
        train=True,
        mutable=["batch_stats"],
        rngs={"dropout": dropout_key},
    )
    kernel = params["fc"]["kernel"] if cfg.loss == "elogitnorm" else None
    loss = losses.compute_loss(cfg.loss, out.logits, y, kernel=kernel, tau=cfg.logitnorm_tau)
    return loss, (out, mutated.get("batch_stats", {}))


def make_train_step(cfg: TrainConfig, module, tx, mean, std):
    """``step(state, x_uint8 [B,H,W,C], y [B]) -> (state, metrics)`` (pure; jit it)."""
    base_key = jax.random.PRNGKey(cfg.seed)

    def step(state, x_u8, y):
        key = jax.random.fold_in(base_key, state["step"])
        aug_key, dropout_key = jax.random.split(key)
        x = augment.random_crop_flip(aug_key, x_u8, cfg.crop_padding, cfg.hflip)
        x = augment.normalize(x, mean, std)
        grad_fn = jax.value_and_grad(
            lambda p: _loss_fn(cfg, module, p, state["batch_stats"], x, y, dropout_key),
            has_aux=True,
        )
        (loss, (out, batch_stats)), grads = grad_fn(state["params"])
        if cfg.ish:
            # dL/dz for the (mean) CE loss; the fc kernel gradient becomes h~^T dL/dz.
            delta = jax.grad(lambda z: losses.cross_entropy(z, y))(out.logits)
            grads = {
                **grads,
                "fc": {
                    **grads["fc"],
                    "kernel": ish_kernel_grad(out.feature, delta, cfg.ish_percentile),
                },
            }
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        correct = jnp.sum(jnp.argmax(out.logits, -1) == y)
        new_state = {
            "params": params,
            "batch_stats": batch_stats,
            "opt_state": opt_state,
            "step": state["step"] + 1,
        }
        return new_state, {"loss": loss, "correct": correct, "count": jnp.asarray(y.shape[0])}

    return step


def make_eval_step(module, mean, std):
    """``eval(variables, x_uint8, y, mask) -> number of correct real samples``."""

    def step(variables, x_u8, y, mask):
        out = module.apply(variables, augment.normalize(x_u8, mean, std), train=False)
        return jnp.sum((jnp.argmax(out.logits, -1) == y) & mask)

    return step


def _resolve_data(cfg: TrainConfig, train_data, val_data, test_data):
    """Returns (train, val, test, num_classes, mean, std, dataset name)."""
    from jaxood.data.sources import as_nhwc_uint8, check_labels, load_dataset

    if train_data is None:
        if not cfg.dataset:
            raise ValueError("no training data: pass train_data=(x, y) or set TrainConfig.dataset")
        splits = load_dataset(cfg.dataset, cfg.data_dir, val_size=cfg.val_size)
        train_data, val_data, test_data = splits.train, splits.val, splits.test
        num_classes = cfg.num_classes or splits.num_classes
        mean, std, name = cfg.mean or splits.mean, cfg.std or splits.std, splits.name
    else:
        name = cfg.dataset or "arrays"
        ys = [d[1] for d in (train_data, val_data, test_data) if d is not None]
        num_classes = cfg.num_classes or int(max(np.max(y) for y in ys)) + 1
        mean, std = cfg.mean, cfg.std
    out = []
    for split, data in (("train", train_data), ("val", val_data), ("test", test_data)):
        if data is None:
            out.append(None)
            continue
        x = as_nhwc_uint8(data[0], f"{split} images")
        out.append((x, check_labels(data[1], len(x), f"{split} labels", num_classes)))
    train, val, test = out
    if len(train[0]) == 0:
        raise ValueError("the training set is empty")
    if mean is None:  # statistics of the training images
        scaled = train[0].reshape(-1, train[0].shape[-1]).astype(np.float64) / 255.0
        mean, std = tuple(scaled.mean(0)), tuple(scaled.std(0))
    channels = train[0].shape[-1]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"mean/std have {len(mean)}/{len(std)} entries but the images have {channels} channels"
        )
    for split, d in (("val", val), ("test", test)):
        if d is not None and d[0].shape[1:] != train[0].shape[1:]:
            raise ValueError(
                f"{split} images {d[0].shape[1:]} differ from train images {train[0].shape[1:]}"
            )
    return train, val, test, num_classes, tuple(map(float, mean)), tuple(map(float, std)), name


def _device_batch(sharding, arrays):
    return tuple(jax.make_array_from_process_local_data(sharding, a) for a in arrays)


def _all_finite(tree) -> bool:
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    return bool(jax.device_get(jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))))


class _Log:
    """Process-0 JSONL metrics log."""

    def __init__(self, path: str, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: Mapping[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(dict(record)) + "\n")


def train(
    cfg: TrainConfig,
    train_data: tuple[np.ndarray, np.ndarray] | None = None,
    val_data: tuple[np.ndarray, np.ndarray] | None = None,
    test_data: tuple[np.ndarray, np.ndarray] | None = None,
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
    train_set, val_set, test_set, num_classes, mean, std, data_name = _resolve_data(
        cfg, train_data, val_data, test_data
    )
    input_shape = tuple(int(s) for s in train_set[0].shape[1:])
    if cfg.input_shape is not None and tuple(cfg.input_shape) != input_shape:
        raise ValueError(
            f"input_shape {tuple(cfg.input_shape)} does not match the data {input_shape}"
        )
    module = models.create(cfg.arch, num_classes, **cfg.arch_kwargs)

    devices = jax.devices()[: cfg.num_devices] if cfg.num_devices else jax.devices()
    if cfg.num_devices and len(devices) < cfg.num_devices:
        raise ValueError(f"num_devices={cfg.num_devices} but only {len(devices)} devices exist")
    mesh = parallel.data_mesh(devices)
    n_dev = mesh.devices.size
    parallel.check_divisible(cfg.batch_size, mesh)
    repl, batch_sh = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    is_main = jax.process_index() == 0

    workdir = os.path.abspath(cfg.workdir)
    os.makedirs(workdir, exist_ok=True)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=cfg.keep_checkpoints)
    latest = ckpt.latest_step()
    if latest is not None and not resume:
        raise FileExistsError(
            f"{workdir} already holds checkpoints (latest step {latest}); pass resume=True "
            "(CLI: --resume) to continue, or choose a new workdir"
        )
    run_cfg = dataclasses.replace(
        cfg, num_classes=num_classes, mean=mean, std=std, input_shape=input_shape
    )
    log = _Log(os.path.join(workdir, "metrics.jsonl"), is_main)

    batches = TrainBatches(
        *train_set,
        cfg.batch_size,
        cfg.seed,
        drop_last=cfg.drop_last,
        multiple_of=n_dev,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    steps_per_epoch = batches.steps_per_epoch
    total_steps = cfg.epochs * steps_per_epoch
    end_step = min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps

    meta_static = {
        "arch": cfg.arch,
        "arch_kwargs": dict(cfg.arch_kwargs),
        "num_classes": num_classes,
        "input_shape": list(input_shape),
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "steps_per_epoch": steps_per_epoch,
    }
    best_val, best_step, history = -1.0, None, []
    if latest is not None:  # check the checkpoint matches before building anything
        meta = ckpt.restore_meta(latest)
        for key in ("arch", "arch_kwargs", "num_classes", "input_shape"):
            if meta.get(key) != meta_static[key]:
                raise CheckpointError(
                    f"checkpoint {ckpt.directory}/{latest} was written for {key}={meta.get(key)!r}, "
                    f"this run has {key}={meta_static[key]!r}; use a new workdir"
                )
        for key in ("seed", "batch_size", "steps_per_epoch"):
            if meta.get(key) != meta_static[key]:
                raise CheckpointError(
                    f"checkpoint {ckpt.directory}/{latest}: {key}={meta.get(key)!r} differs from this "
                    f"run's {meta_static[key]!r}; resuming would not reproduce the run"
                )
    if is_main:  # only after the checks, so a refused resume leaves the run's config alone
        run_cfg.save(os.path.join(workdir, "config.json"))

    # ---- initial state
    init_key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), -1 & 0x7FFFFFFF)
    if cfg.init_from:
        loaded = models.load(cfg.init_from, expected_num_classes=num_classes)
        if loaded.manifest["arch"] != cfg.arch or dict(
            loaded.manifest.get("arch_kwargs", {})
        ) != dict(cfg.arch_kwargs):
            raise ValueError(
                f"init_from {cfg.init_from} is a {loaded.manifest['arch']} "
                f"{loaded.manifest.get('arch_kwargs', {})}, not {cfg.arch} {cfg.arch_kwargs}"
            )
        models.check_variables(module, loaded.variables, input_shape, where=cfg.init_from)
        variables = loaded.variables
    else:
        variables = jax.jit(lambda k: models.init_variables(module, k, input_shape))(init_key)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    tx = make_optimizer(cfg, total_steps, params)
    state = {
        "params": params,
        "batch_stats": batch_stats,
        "opt_state": tx.init(params),
        "step": jnp.asarray(0, jnp.int32),
    }
    state = jax.device_put(state, repl)

    if latest is not None:
        state = ckpt.restore_state(latest, state)
        best_val, best_step, history = meta["best_val_acc"], meta["best_step"], meta["history"]
        log.write({"event": "resume", "step": latest, "time": time.time()})
        if is_main:
            print(
                f"resumed from {ckpt.directory}/{latest} (epoch {latest // steps_per_epoch})",
                file=sys.stderr,
            )
    start_step = int(jax.device_get(state["step"]))

    mean_a, std_a = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    train_step = jax.jit(
        make_train_step(cfg, module, tx, mean_a, std_a),
        in_shardings=(repl, batch_sh, batch_sh),
        out_shardings=(repl, repl),
        donate_argnums=0,
    )
    eval_step = jax.jit(
        make_eval_step(module, mean_a, std_a),
        in_shardings=(repl, batch_sh, batch_sh, batch_sh),
        out_shardings=repl,
    )
    eval_bs = math.ceil(cfg.eval_batch_size / n_dev) * n_dev

    def accuracy(variables, data) -> float:
        correct, n = 0, len(data[0])
        for xb, yb, mb in eval_batches(*data, eval_bs):
            pid, pc = jax.process_index(), jax.process_count()
            local = slice(pid * eval_bs // pc, (pid + 1) * eval_bs // pc)
            correct += int(
                jax.device_get(
                    eval_step(
                        variables, *_device_batch(batch_sh, (xb[local], yb[local], mb[local]))
                    )
                )
            )
        return correct / n

    best_dir = os.path.join(workdir, "best")
    preprocess = PreprocessSpec(
        resize_size=input_shape[0],
        crop_size=input_shape[0],
        interpolation="bilinear",
        mean=mean,
        std=std,
        channels=input_shape[-1],
    )

    def export_best(variables, step, val_acc):
        """Writes best-<step>/ then atomically repoints the ``best`` symlink to it."""
        if not is_main:
            return
        target = os.path.join(workdir, "best_models", f"step_{step}")
        extra = {
            "name": f"{cfg.arch}-{data_name}",
            "train": {
                "dataset": data_name,
                "step": step,
                "epoch": step / steps_per_epoch,
                "val_acc": val_acc,
                "config": run_cfg.to_dict(),
            },
            "has_feature_map": True,
        }
        models.save(
            target,
            arch=cfg.arch,
            num_classes=num_classes,
            variables=jax.device_get(variables),
            arch_kwargs=cfg.arch_kwargs,
            input_shape=input_shape,
            preprocess=preprocess,
            extra=extra,
            overwrite=True,
        )
        tmp_link = best_dir + ".tmp"
        if os.path.lexists(tmp_link):
            os.remove(tmp_link)
        os.symlink(os.path.relpath(target, workdir), tmp_link)
        os.replace(tmp_link, best_dir)
        for old in os.listdir(os.path.join(workdir, "best_models")):
            if old != f"step_{step}":
                shutil.rmtree(os.path.join(workdir, "best_models", old), ignore_errors=True)

    def save_checkpoint(step: int):
        if not _all_finite(state["params"]):
            raise TrainingDiverged(
                f"parameters became non-finite before step {step}; nothing was saved "
                f"(last good checkpoint: {ckpt.latest_step()})"
            )
        meta = {
            **meta_static,
            "step": step,
            "epoch": step // steps_per_epoch,
            "index_in_epoch": step % steps_per_epoch,
            "best_val_acc": best_val,
            "best_step": best_step,
            "history": history,
        }
        ckpt.save(step, state, meta)

    # ---- the loop
    pending: list[tuple[int, dict]] = []  # device metrics not yet checked on the host
    ep_loss = ep_correct = ep_count = 0.0
    # (After a mid-epoch resume the epoch's train loss/acc cover only the resumed part.)
    progress = None
    if cfg.progress and is_main and start_step < end_step:
        from tqdm.auto import tqdm

        progress = tqdm(
            total=end_step,
            initial=start_step,
            desc=f"train {cfg.arch}",
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
        )
    # Throughput windows run between metric flushes; a window that compiled a new batch
    # shape, or follows an evaluation/checkpoint, is left out of the average.
    t_images, t_seconds, t_mark, n_mark = 0, 0.0, None, 0
    seen_shapes: set = set()
    window_compiled = False
    schedule = cosine_schedule(cfg.lr, cfg.min_lr, total_steps)

    def flush(step_done: int):
        """Fetches pending metrics; raises on NaN with the first bad step."""
        nonlocal ep_loss, ep_correct, ep_count, t_images, t_seconds, t_mark, n_mark, window_compiled
        if not pending:
            return None
        fetched = jax.device_get([m for _, m in pending])
        for (s, _), m in zip(pending, fetched):
            if not np.isfinite(m["loss"]):
                raise TrainingDiverged(
                    f"loss is {m['loss']} at step {s} (epoch {s // steps_per_epoch}); stopping. "
                    f"Nothing was saved after the last good checkpoint (step {ckpt.latest_step()}). "
                    "Lower the learning rate or check the data."
                )
        loss = float(np.mean([m["loss"] for m in fetched]))
        correct = float(sum(m["correct"] for m in fetched))
        count = float(sum(m["count"] for m in fetched))
        ep_loss += loss * len(fetched)
        ep_correct += correct
        ep_count += count
        now = time.perf_counter()
        rate = None
        if t_mark is not None and not window_compiled:
            t_seconds += now - t_mark
            t_images += n_mark
            rate = n_mark / max(now - t_mark, 1e-9)
        t_mark, n_mark, window_compiled = now, 0, False
        pending.clear()
        record = {
            "step": step_done,
            "epoch": step_done / steps_per_epoch,
            "loss": loss,
            "train_acc": correct / max(count, 1),
            "lr": float(schedule(step_done)),
            "images_per_s": rate,
            "time": time.time(),
        }
        log.write(record)
        if progress is not None:
            progress.set_postfix(
                loss=f"{loss:.4f}",
                acc=f"{correct / max(count, 1):.3f}",
                img_s=f"{rate:.0f}" if rate else "-",
            )
        return record

    make = lambda s: _device_batch(batch_sh, batches.batch(s))
    ep_steps = 0
    try:
        for step, (xb, yb) in prefetch(make, range(start_step, end_step)):
            if xb.shape not in seen_shapes:
                seen_shapes.add(xb.shape)
                window_compiled = True
            state, metrics = train_step(state, xb, yb)
            pending.append((step, metrics))
            n_mark += xb.shape[0]
            ep_steps += 1
            done = step + 1
            epoch_end = done % steps_per_epoch == 0 or done == end_step
            if progress is not None:
                progress.update(1)
            if (
                len(pending) >= cfg.log_every
                or epoch_end
                or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0)
            ):
                flush(done)
            if epoch_end:
                if not _all_finite(state["params"]):  # never evaluate/export a diverged model
                    raise TrainingDiverged(
                        f"parameters became non-finite by step {done}; nothing was saved after "
                        f"the last good checkpoint (step {ckpt.latest_step()})"
                    )
                variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
                val_acc = (
                    accuracy(variables, val_set)
                    if val_set is not None and len(val_set[0])
                    else None
                )
                record = {
                    "epoch": done / steps_per_epoch,
                    "step": done,
                    "train_loss": ep_loss / max(ep_steps, 1),
                    "train_acc": ep_correct / max(ep_count, 1),
                    "val_acc": val_acc,
                    "lr": float(schedule(done)),
                    "time": time.time(),
                }
                improved = val_acc is not None and val_acc > best_val
                if improved or (val_acc is None and done == end_step):
                    best_val, best_step = (val_acc if val_acc is not None else best_val), done
                    export_best(variables, done, val_acc)
                record["best_val_acc"] = best_val if best_val >= 0 else None
                history.append(record)
                log.write({"event": "epoch", **record})
                if progress is not None:
                    progress.write(
                        f"epoch {done / steps_per_epoch:.2f} step {done}: train loss {record['train_loss']:.4f} "
                        f"acc {record['train_acc']:.4f}"
                        + (
                            f", val acc {val_acc:.4f} (best {best_val:.4f})"
                            if val_acc is not None
                            else ""
                        )
                    )
                ep_loss = ep_correct = ep_count = 0.0
                ep_steps = 0
            if epoch_end or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0):
                save_checkpoint(done)
                t_mark = time.perf_counter() if t_mark is not None else None
    finally:
        if progress is not None:
            progress.close()
        ckpt.close()

    final_step = int(jax.device_get(state["step"]))
    if not os.path.exists(best_dir):  # e.g. resumed after the last epoch, or no step ran
        export_best(
            {"params": state["params"], "batch_stats": state["batch_stats"]}, final_step, None
        )
    test_acc = None
    if test_set is not None and len(test_set[0]):
        best = models.load(best_dir)
        test_acc = accuracy(jax.device_put(best.variables, repl), test_set)
        log.write(
            {"event": "test", "step": final_step, "test_acc": test_acc, "best_step": best_step}
        )
    rate = t_images / t_seconds if t_seconds > 0 else None
    result = TrainResult(
        model_dir=os.path.realpath(best_dir),
        best_val_acc=best_val if best_val >= 0 else None,
        test_acc=test_acc,
        history=history,
        workdir=workdir,
        checkpoint_dir=ckpt.directory,
        final_step=final_step,
        images_per_s=rate,
    )
    if is_main and cfg.progress:
        print(summary(result), file=sys.stderr)
    return result


def summary(result: TrainResult) -> str:
    """A short human-readable end-of-run summary."""
    fmt = lambda a: "n/a" if a is None else f"{100 * a:.2f}%"
    lines = [
        "training finished",
        f"  steps:          {result.final_step}",
        f"  best val acc:   {fmt(result.best_val_acc)}",
        f"  test acc:       {fmt(result.test_acc)} (best-val model)",
        f"  throughput:     {'n/a' if result.images_per_s is None else f'{result.images_per_s:.0f} images/s'}",
        f"  best model:     {result.model_dir}  (jaxood.models.load)",
        f"  checkpoints:    {result.checkpoint_dir}",
        f"  metrics log:    {os.path.join(result.workdir, 'metrics.jsonl')}",
    ]
    return "\n".join(lines)
