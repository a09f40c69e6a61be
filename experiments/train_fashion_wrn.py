"""Real run: a small Wide ResNet trained from scratch on Fashion-MNIST (28x28x1) on this CPU.

Uses the library's training API (same code path as ``jaxood train``): the OpenOOD-style
SGD/Nesterov/cosine recipe, the 1,000-image val carved from the test split (best-val model
selection) and test accuracy on the remaining 9,000 test images. Prints and saves
``experiments/results/train_fashion_wrn.json`` with the command, wall time, throughput
(compile excluded), accuracies and the machine load (the box is shared).

  python experiments/train_fashion_wrn.py --depth 10 --widen 1 --epochs 10 --crop-padding 0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

import jax

from jaxood.train import TrainConfig, train


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--depth", type=int, default=10)
    p.add_argument("--widen", type=int, default=1)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--crop-padding", type=int, default=0)
    p.add_argument("--workdir", default="experiments/runs/fashion_wrn")
    p.add_argument("--data-dir", help="folder holding fashion_mnist.npz (default: shared/data)")
    p.add_argument("--out", default="experiments/results/train_fashion_wrn.json")
    args = p.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    cfg = TrainConfig(
        arch="wrn",
        arch_kwargs={"depth": args.depth, "widen_factor": args.widen},
        dataset="fashion_mnist",
        data_dir=args.data_dir,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        crop_padding=args.crop_padding,
        workdir=args.workdir,
        log_every=50,
        seed=0,
    )
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - t0
    out = {
        "command": "python " + " ".join(sys.argv),
        "arch": f"WRN-{args.depth}-{args.widen}",
        "config": cfg.to_dict(),
        "wall_time_s": round(wall, 1),
        "train_images_per_s": None
        if result.images_per_s is None
        else round(result.images_per_s, 1),
        "best_val_acc": result.best_val_acc,
        "test_acc": result.test_acc,
        "test_split": "Fashion-MNIST test minus the 1,000 val images (9,000)",
        "history": result.history,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared with other jobs",
        "jax": jax.__version__,
        "jaxood_commit": _commit(),
        "devices": [str(d) for d in jax.devices()],
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".tmp", "w") as f:
        json.dump(out, f, indent=2)
    os.replace(args.out + ".tmp", args.out)
    print(json.dumps({k: v for k, v in out.items() if k not in ("history", "config")}, indent=2))


def _commit() -> str | None:
    cmd = [
        "git",
        "-C",
        os.path.dirname(os.path.abspath(__file__)),
        "describe",
        "--always",
        "--dirty",
        "--abbrev=40",
    ]
    try:
        return subprocess.check_output(cmd, text=True, stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return None


if __name__ == "__main__":
    main()
