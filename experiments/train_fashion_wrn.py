"""Real run: a small Wide ResNet trained from scratch on Fashion-MNIST (28x28x1) on this CPU.

Uses the library's training API (same code path as ``jaxood train``): the OpenOOD-style
SGD/Nesterov/cosine recipe, the 1,000-image val carved from the test split (best-val model
selection) and test accuracy on the remaining 9,000 test images. Prints and saves
``experiments/results/train_fashion_wrn.json`` with the command, wall time, throughput
(compile excluded), accuracies, and the harness's record of the machine (CPU model and ISA,
threads, load average before/after, XLA sgemm before/after, ``loaded`` verdict; it waits for
a quiet machine first). Results merge into ``--out`` under ``wrn<depth>_<widen>/<precision>``
(``@label`` appended with ``--label``).

  python experiments/train_fashion_wrn.py --depth 10 --widen 1 --epochs 10 --crop-padding 0
  python experiments/train_fashion_wrn.py --depth 10 --widen 1 --epochs 10 --crop-padding 0 \
      --precision bf16 --out experiments/results/train_fashion_wrn_bf16.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import time

import harness

from jaxood.train import TrainConfig, train


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--depth", type=int, default=10)
    p.add_argument("--widen", type=int, default=1)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--crop-padding", type=int, default=0)
    p.add_argument("--workdir", default="experiments/runs/fashion_wrn")
    p.add_argument("--data-dir", help="folder holding fashion_mnist.npz (default: shared/data)")
    p.add_argument("--precision", default="f32", choices=["f32", "bf16"],
                   help="training compute precision (evaluation is float32)")
    p.add_argument("--max-steps", type=int, default=None, help="stop early (for a quick check)")
    p.add_argument("--label", default="", help="free text stored in the JSON and its key")
    p.add_argument("--out", default="experiments/results/train_fashion_wrn.json")
    harness.add_arguments(p)
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
        precision=args.precision,
        max_steps=args.max_steps,
    )
    run = harness.Run.from_args(args, frameworks=("xla",))
    t0 = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - t0
    out = {
        "arch": f"WRN-{args.depth}-{args.widen}",
        "precision": args.precision,
        "config": cfg.to_dict(),
        "wall_time_s": round(wall, 1),
        "train_images_per_s": None
        if result.images_per_s is None
        else round(result.images_per_s, 1),
        "best_val_acc": result.best_val_acc,
        "test_acc": result.test_acc,
        "test_split": "Fashion-MNIST test minus the 1,000 val images (9,000)",
        "history": result.history,
    }
    key = harness.record_key(f"wrn{args.depth}_{args.widen}/{args.precision}", args.label)
    record = run.record(out)
    print(json.dumps({k: v for k, v in record.items() if k not in ("history", "config")},
                     indent=2))
    return harness.finish(args, args.out, {key: record})


if __name__ == "__main__":
    raise SystemExit(main())
