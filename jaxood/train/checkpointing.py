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

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


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
