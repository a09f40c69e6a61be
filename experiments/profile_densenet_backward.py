"""Where DenseNet-BC-100's training step loses to PyTorch: forward vs gradient cost in jaxood.

    python experiments/profile_densenet_backward.py

``bench_train.py`` measures jaxood's DenseNet-BC-100 step at about half PyTorch's speed. This
times, on one batch of 128 x 32x32x3 (jitted, compile excluded, median of ``--rounds``):
the train-mode forward + loss alone, the gradient of the loss w.r.t. the parameters and
w.r.t. the input images, with jaxood's BatchNorm, with ``flax.linen.BatchNorm`` swapped in,
and (timing only) with no BatchNorm at all. A gradient normally costs
about 3x a forward; the ratio printed says how far from that the backward pass is.
Writes ``experiments/results/profile_densenet_backward.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time

import flax.linen as nn
import jax
import numpy as np
import optax

import jaxood.models.densenet as densenet
from jaxood import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "experiments", "results", "profile_densenet_backward.json")


class Identity(nn.Module):
    """Stands in for BatchNorm (same constructor arguments) to time the net without it."""

    use_running_average: bool = False

    @nn.compact
    def __call__(self, x):
        return x


def median_seconds(f, args, rounds: int) -> float:
    jax.block_until_ready(f(*args))  # compile
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timings(rounds: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, 128)
    m = models.create("densenet_bc_100", 10)
    v = m.init(jax.random.PRNGKey(0), x[:1], train=False)

    bs = v.get("batch_stats", {})

    def loss(p, images):
        out, _ = m.apply({"params": p, "batch_stats": bs}, images, train=True,
                         mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(out.logits, y).mean()

    args = (v["params"], x)
    fwd = median_seconds(jax.jit(loss), args, rounds)
    grad = median_seconds(jax.jit(jax.grad(loss)), args, rounds)
    grad_x = median_seconds(jax.jit(jax.grad(loss, argnums=1)), args, rounds)
    return {"forward_s": fwd, "gradient_s": grad, "gradient_over_forward": grad / fwd,
            "input_gradient_s": grad_x, "input_gradient_over_forward": grad_x / fwd}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    rec = {"batch": 128, "rounds": args.rounds, "loadavg_before": os.getloadavg()}
    rec["jaxood_batchnorm"] = timings(args.rounds)
    print("jaxood BatchNorm", rec["jaxood_batchnorm"], flush=True)
    own = densenet._BatchNorm
    densenet._BatchNorm = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)
    try:
        rec["flax_batchnorm"] = timings(args.rounds)
    finally:
        densenet._BatchNorm = own
    print("flax BatchNorm", rec["flax_batchnorm"], flush=True)
    densenet._BatchNorm = Identity  # timing only: is the rest of the backward pass slow too?
    try:
        rec["no_batchnorm_timing_only"] = timings(args.rounds)
    finally:
        densenet._BatchNorm = own
    print("no BatchNorm", rec["no_batchnorm_timing_only"], flush=True)
    with open(OUT + ".tmp", "w") as f:
        json.dump(rec, f, indent=1)
    os.replace(OUT + ".tmp", OUT)


if __name__ == "__main__":
    main()
