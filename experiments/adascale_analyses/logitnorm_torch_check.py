"""Does LogitNorm (tau 0.04) converge in one epoch on fashion-openset? A PyTorch reference.

    python experiments/adascale_analyses/logitnorm_torch_check.py

The training-method table's one-epoch LogitNorm model reached 32 % ID-test accuracy with
`jaxood train`. This script trains OpenOOD's WRN-16-4 (the torch reference net of
``tests/models/test_cifar_models.py``, OpenOOD's init) with the same recipe in PyTorch:
LogitNorm, SGD-Nesterov lr 0.1 with a per-step cosine over 282 steps (one epoch), wd 5e-4,
batch 128, pad-2 crop + flip, on the npz written by ``train_methods.py``; it logs the train
loss/accuracy per 50 steps beside `jaxood train`'s ``metrics.jsonl`` of that run, so the two
trajectories can be compared. Writes ``logitnorm_torch_check.json`` (merged per loss/seed).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(ROOT, "experiments", "results", "adascale_analyses")
RUNS = os.path.join(ROOT, "experiments", "runs", "train_methods")
TOTAL_STEPS = 282  # one epoch of 36,000 images at batch 128


def torch_net():
    sys.path.insert(0, os.path.join(ROOT, "tests", "models"))
    import test_cifar_models as tm

    return tm.openood_wrn_init(tm.TWRN(16, 4, 6, in_ch=1))


BLACK = (0.0 - 0.2787) / 0.3504  # a zero pixel after normalisation


def crop_flip(xb, rng):
    """torchvision ``RandomCrop(28, padding=2)`` + ``RandomHorizontalFlip`` per image, as
    `jaxood train`: black (zero-pixel) padding, an offset and a coin per image."""
    import torch

    padded = torch.nn.functional.pad(xb, (2, 2, 2, 2), value=BLACK)
    out = torch.stack([padded[n, :, i:i + 28, j:j + 28] for n, (i, j) in
                       enumerate(rng.integers(0, 5, (len(xb), 2)))])
    flip = rng.random(len(xb)) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def train_log(loss_name: str, seed: int, steps: int) -> list[dict]:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    d = np.load(os.path.join(RUNS, "fashion_openset_id.npz"))
    x = torch.from_numpy(((d["x_train"] / 255.0 - 0.2787) / 0.3504).astype(np.float32))
    x, y = x.reshape(-1, 1, 28, 28), torch.from_numpy(d["y_train"].astype(np.int64))
    net = torch_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4,
                          nesterov=True)
    floor = 1e-6 / 0.1
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: floor + (1 - floor) * 0.5 * (1 + math.cos(s / TOTAL_STEPS * math.pi)))

    def loss_fn(z, t):
        if loss_name == "logitnorm":
            z = z / (torch.linalg.norm(z, dim=-1, keepdim=True) + 1e-7) / 0.04
        return F.cross_entropy(z, t)

    perm, log, acc, losses, t0 = rng.permutation(len(x)), [], [], [], time.perf_counter()
    for s in range(steps):
        idx = torch.from_numpy(perm[s * 128:(s + 1) * 128])
        xb = crop_flip(x[idx], rng)
        z = net(xb)[0]
        loss = loss_fn(z, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        acc.append((z.argmax(1) == y[idx]).float().mean().item())
        losses.append(loss.item())
        if (s + 1) % 50 == 0:
            log.append({"step": s + 1, "loss": float(np.mean(losses)),
                        "train_acc": float(np.mean(acc)), "wall_s": time.perf_counter() - t0})
            print(json.dumps(log[-1]), flush=True)
            acc, losses = [], []
    return log


def jaxood_logs(method: str) -> dict[str, list[dict]]:
    """The train loss/accuracy windows of every one-epoch `jaxood train` run of ``method``
    (``wrn16_4_<method>_e1`` from train_methods.py, ``..._e1_s<seed>`` for other seeds)."""
    out = {}
    for workdir in sorted(glob.glob(os.path.join(RUNS, f"wrn16_4_{method}_e1*"))):
        path = os.path.join(workdir, "metrics.jsonl")
        if os.path.isfile(path):
            recs = [json.loads(line) for line in open(path)]
            out[os.path.basename(workdir)] = [
                {"step": r["step"], "loss": r["loss"], "train_acc": r["train_acc"]}
                for r in recs if "event" not in r]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--loss", choices=("logitnorm", "ce"), default="logitnorm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=TOTAL_STEPS)
    args = p.parse_args()
    rec = {"torch": train_log(args.loss, args.seed, args.steps),
           "jaxood_train_same_recipe": jaxood_logs(args.loss), "steps": args.steps,
           "augmentation": "per image: black 2-pixel padding, random 28x28 crop, flip",
           "note": "train accuracy averaged over the 50 steps before each logged step"}
    path = os.path.join(RESULTS, "logitnorm_torch_check.json")
    old = json.load(open(path)) if os.path.isfile(path) else {}
    old[f"{args.loss}_seed{args.seed}_steps{args.steps}"] = rec
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(old, f, indent=1)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
