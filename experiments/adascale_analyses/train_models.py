"""Train the models of the recorded AdaSCALE-analyses run: fashion-openset's six ID classes.

    python experiments/adascale_analyses/train_models.py --seeds 0 1 2

WRN-16-4 (D = 256, so AdaSCALE's k1 = 1 % of D is one activation) on the 28x28x1
Fashion-MNIST ID classes, with the training module's OpenOOD recipe (SGD-Nesterov, cosine lr,
crop + flip). Each seed trains in its own workdir and resumes after an interruption
(``resume=True``). Writes ``experiments/results/adascale_analyses/training.json`` (accuracy and
wall time per seed, merged with what earlier invocations recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
RESULTS = os.path.join(ROOT, "experiments", "results", "adascale_analyses")


def train_seed(seed: int, args) -> dict:
    import numpy as np

    from jaxood.data.openset import fashion_openset
    from jaxood.train import TrainConfig, train

    data = fashion_openset(args.data_root)
    x, y = data["train"]
    workdir = os.path.join(args.work, f"wrn{args.depth}_{args.widen}_e{args.epochs}_s{seed}")
    cfg = TrainConfig(
        arch="wrn",
        arch_kwargs={"depth": args.depth, "widen_factor": args.widen},
        num_classes=6,
        epochs=args.epochs,
        batch_size=128,
        lr=0.1,
        input_shape=(28, 28, 1),
        mean=(float(np.mean(x / 255.0)),),
        std=(float(np.std(x / 255.0)),),
        crop_padding=2,
        hflip=True,
        seed=seed,
        workdir=workdir,
        log_every=50,
        progress=False,
    )
    t0 = time.perf_counter()
    res = train(cfg, train_data=(x, y), val_data=data["val"], test_data=data["test"], resume=True)
    return {
        "seed": seed,
        "model_dir": os.path.relpath(res.model_dir, ROOT),
        "arch": {"name": "wrn", "depth": args.depth, "widen_factor": args.widen},
        "epochs": args.epochs,
        "best_val_acc": res.best_val_acc,
        "id_test_acc": res.test_acc,
        "images_per_s": res.images_per_s,
        "wall_s_this_invocation": time.perf_counter() - t0,
        "history": res.history,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--depth", type=int, default=16)
    p.add_argument("--widen", type=int, default=4)
    p.add_argument("--data-root", default=os.path.join(ROOT, "..", "shared", "data"))
    p.add_argument("--work", default=os.path.join(ROOT, "experiments", "runs", "openset_models"))
    args = p.parse_args()
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "training.json")
    for seed in args.seeds:
        rec = train_seed(seed, args)
        old = json.load(open(path)) if os.path.isfile(path) else {}
        key = f"wrn{args.depth}_{args.widen}_e{args.epochs}_s{seed}"
        if key in old and "wall_s_this_invocation" in old[key]:
            rec["wall_s_earlier_invocations"] = old[key].get("wall_s_total", 0.0)
        rec["wall_s_total"] = rec.get("wall_s_earlier_invocations", 0.0) + rec[
            "wall_s_this_invocation"
        ]
        old[key] = rec
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(old, f, indent=1)
        os.replace(tmp, path)
        print(json.dumps({k: v for k, v in rec.items() if k != "history"}), flush=True)


if __name__ == "__main__":
    main()
