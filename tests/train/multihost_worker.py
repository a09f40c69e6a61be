"""One process of the multi-host training test (run by ``test_multihost.py``, not by pytest).

``python multihost_worker.py OUT_JSON WORKDIR NUM_PROCESSES PROCESS_ID PORT``

With ``NUM_PROCESSES > 1`` the process joins a loopback JAX cluster (gloo CPU collectives,
one CPU device per process) exactly as ``jaxood train --distributed`` would after
``jax.distributed.initialize()``, then calls the public ``train`` API on the same global
data; every process reads the full arrays and ``train`` feeds only its slice of each batch.
Writes ``OUT_JSON`` with this process's view of the result and the per-step losses.
"""

from __future__ import annotations

import json
import os
import sys


def digits(n_train: int = 250, n_val: int = 64):
    """Real 8x8 grayscale digits (sklearn's bundled copy), 0..16 scaled to uint8."""
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.clip(d.images * 16, 0, 255).astype(np.uint8)
    y = d.target.astype(np.int32)
    return (x[:n_train], y[:n_train]), (x[n_train : n_train + n_val], y[n_train : n_train + n_val])


def main(out_json: str, workdir: str, num_processes: int, process_id: int, port: int) -> None:
    import jax

    if num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            f"127.0.0.1:{port}",
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=120,
        )
    import numpy as np

    from jaxood import models
    from jaxood.train import TrainConfig, train

    train_data, val_data = digits()
    cfg = TrainConfig(
        arch="wrn",
        arch_kwargs={"depth": 10, "widen_factor": 1},
        num_classes=10,
        epochs=1,  # 250 images / 32 = 7 full steps + a short last batch of 26
        batch_size=32,
        eval_batch_size=16,
        lr=0.05,
        mean=(0.3,),
        std=(0.4,),
        seed=0,
        workdir=workdir,
        progress=False,
        log_every=1,
        checkpoint_every=4,  # a collective orbax save mid-epoch, and one at the end
    )
    result = train(cfg, train_data=train_data, val_data=val_data)
    losses = []
    metrics = os.path.join(workdir, "metrics.jsonl")
    if jax.process_index() == 0:  # only process 0 writes the log
        with open(metrics) as f:
            records = [json.loads(line) for line in f]
        losses = [r["loss"] for r in records if "event" not in r]
    loaded = models.load(result.model_dir)
    leaves = jax.tree_util.tree_leaves_with_path(loaded.variables)
    np.savez(
        out_json + ".npz",
        **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves},
    )
    out = {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "global_devices": jax.device_count(),
        "final_step": result.final_step,
        "best_val_acc": result.best_val_acc,
        "train_acc": [h["train_acc"] for h in result.history],
        "losses": losses,
    }
    with open(out_json, "w") as f:
        json.dump(out, f)
    if num_processes > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], int(a[2]), int(a[3]), int(a[4]))
