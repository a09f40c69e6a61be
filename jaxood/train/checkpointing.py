"""Training checkpoints with orbax ``CheckpointManager``: keep-last-N, atomic, verified.

A checkpoint at step ``t`` holds the full train state (params, batch stats, optimizer state
incl. its step count, the step) and a JSON ``meta`` item (architecture, class count, data
position ``(epoch, index)``, best-val bookkeeping, history, the seed — every random number
of the run is derived from (seed, step), so this is the whole RNG state).

Atomicity: orbax writes ``<t>.orbax-checkpoint-tmp-*`` and renames it when complete; a run
killed mid-save (even ``kill -9``) leaves only a temp directory, which is ignored and
cleaned up, so the newest *complete* checkpoint is what ``--resume`` finds. The best model
is exported separately (``jaxood.models.save`` format) by the trainer.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxood import models
from jaxood.train.steps import create_train_state


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (corrupt, or from another model)."""


class Checkpointer:
    """Thin wrapper over ``ocp.CheckpointManager`` with clear errors.

    Args:
      directory: ``<workdir>/checkpoints``.
      keep: number of most recent checkpoints kept.
    """

    def __init__(self, directory: str, keep: int = 3):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            enable_async_checkpointing=False,  # a returned save() is on disk
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Saves ``state`` and ``meta`` as step ``step`` (overwrites nothing)."""
        self.manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self.manager.wait_until_finished()

    def restore_meta(self, step: int) -> dict:
        try:
            out = self.manager.restore(
                int(step), args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            )
            return dict(out["meta"])
        except Exception as e:
            raise CheckpointError(
                f"checkpoint {self.directory}/{step} is corrupt or incomplete (cannot read its "
                f"metadata: {type(e).__name__}: {e}); delete that step directory to resume from "
                f"an earlier one (available: {self.all_steps()})"
            ) from e

    def restore_state(self, step: int, target: Any) -> Any:
        """Restores the state into the structure/shardings of ``target`` (a state pytree)."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        try:
            out = self.manager.restore(
                int(step), args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            )
        except Exception as e:
            raise CheckpointError(
                f"checkpoint {self.directory}/{step} could not be restored into this model "
                f"({type(e).__name__}: {str(e)[:500]}); it is corrupt or was written for another "
                "architecture/class count. Delete it to resume from an earlier one "
                f"(available: {self.all_steps()}) or use a new workdir"
            ) from e
        state = out["state"]
        bad = [
            jax.tree_util.keystr(k)
            for k, v in jax.tree_util.tree_leaves_with_path(state)
            if np.issubdtype(np.asarray(v).dtype, np.floating) and not np.all(np.isfinite(v))
        ]
        if bad:
            raise CheckpointError(
                f"checkpoint {self.directory}/{step} holds non-finite values in {bad[:3]}"
            )
        return state

    def close(self) -> None:
        self.manager.close()


# ------------------------------------------------------------------ restore or initialise

# A checkpoint is resumable only by a run with the same values of these keys.
MODEL_KEYS = ("arch", "arch_kwargs", "num_classes", "input_shape", "classes")
ORDER_KEYS = ("seed", "batch_size", "steps_per_epoch")  # else the run would not be reproduced


@dataclasses.dataclass
class Progress:
    """Best-on-val bookkeeping and per-epoch history; travels in every checkpoint's meta."""

    best_val_acc: float = -1.0  # -1: no val accuracy yet
    best_step: int | None = None
    history: list[dict] = dataclasses.field(default_factory=list)


def run_identity(cfg, input_shape, num_classes: int, steps_per_epoch: int) -> dict:
    """What a checkpoint records about the run that wrote it (compared on resume)."""
    return {
        "arch": cfg.arch,
        "arch_kwargs": dict(cfg.arch_kwargs),
        "num_classes": int(num_classes),
        "input_shape": list(input_shape),
        "classes": None if cfg.classes is None else [int(c) for c in cfg.classes],
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "steps_per_epoch": int(steps_per_epoch),
    }


def checkpoint_meta(identity: dict, progress: Progress, step: int) -> dict:
    spe = identity["steps_per_epoch"]
    return {
        **identity,
        "step": int(step),
        "epoch": step // spe,
        "index_in_epoch": step % spe,
        **dataclasses.asdict(progress),
    }


def _check_resumable(ckpt: Checkpointer, step: int, identity: dict) -> dict:
    meta = ckpt.restore_meta(step)
    for keys, why in (
        (MODEL_KEYS, "use a new workdir"),
        (ORDER_KEYS, "resuming would not reproduce the run"),
    ):
        for key in keys:
            if meta.get(key) != identity[key]:
                raise CheckpointError(
                    f"checkpoint {ckpt.directory}/{step} was written with {key}="
                    f"{meta.get(key)!r}, this run has {key}={identity[key]!r}; {why}"
                )
    return meta


def initial_variables(cfg, module, input_shape, num_classes: int) -> dict:
    """``cfg.init_from``'s saved model (checked against the architecture) or a fresh init."""
    if not cfg.init_from:
        key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), -1 & 0x7FFFFFFF)
        return jax.jit(lambda k: models.init_variables(module, k, input_shape))(key)
    loaded = models.load(cfg.init_from, expected_num_classes=num_classes)
    manifest = loaded.manifest
    if manifest["arch"] != cfg.arch or dict(manifest.get("arch_kwargs", {})) != dict(
        cfg.arch_kwargs
    ):
        raise ValueError(
            f"init_from {cfg.init_from} is a {manifest['arch']} "
            f"{manifest.get('arch_kwargs', {})}, not {cfg.arch} {cfg.arch_kwargs}"
        )
    models.check_variables(module, loaded.variables, input_shape, where=cfg.init_from)
    return loaded.variables


def restore_or_init(
    cfg, module, ckpt: Checkpointer, identity: dict, *, resume: bool, total_steps: int, sharding
) -> tuple[Any, Progress]:
    """The run's starting ``TrainState`` (replicated with ``sharding``) and ``Progress``.

    The newest complete checkpoint when there is one and ``resume`` (after checking that it
    was written by this model with this data order), else a fresh state from
    :func:`initial_variables`.

    Raises:
      FileExistsError: checkpoints exist and not ``resume``.
      CheckpointError: the checkpoint is corrupt or from another model / data order.
    """
    latest = ckpt.latest_step()
    if latest is not None and not resume:
        raise FileExistsError(
            f"{os.path.dirname(ckpt.directory)} already holds checkpoints (latest step "
            f"{latest}); pass resume=True (CLI: --resume) to continue, or choose a new workdir"
        )
    meta = None if latest is None else _check_resumable(ckpt, latest, identity)
    variables = initial_variables(
        cfg, module, tuple(identity["input_shape"]), identity["num_classes"]
    )
    state = create_train_state(cfg, module, variables, total_steps)
    state = jax.device_put(state, sharding)
    if meta is None:
        return state, Progress()
    state = state.restored(ckpt.restore_state(latest, state.checkpoint()))
    if jax.process_index() == 0:
        epoch = latest // identity["steps_per_epoch"]
        print(f"resumed from {ckpt.directory}/{latest} (epoch {epoch})", file=sys.stderr)
    return state, Progress(meta["best_val_acc"], meta["best_step"], list(meta["history"]))
