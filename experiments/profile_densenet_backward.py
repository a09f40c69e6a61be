"""Where DenseNet-BC-100's training step loses to PyTorch: forward vs gradient cost in jaxood.

    python experiments/profile_densenet_backward.py

``bench_train.py`` measures jaxood's DenseNet-BC-100 step at about half PyTorch's speed. This
times, on one batch of 128 x 32x32x3 (jitted, compile excluded, median of ``--rounds``):
the train-mode forward + loss alone, the gradient of the loss w.r.t. the parameters and
w.r.t. the input images, with jaxood's BatchNorm, with ``flax.linen.BatchNorm`` swapped in,
and (timing only) with no BatchNorm at all. A gradient normally costs
about 3x a forward; the ratio printed says how far from that the backward pass is. Timing
through ``experiments/harness.py`` (quiet wait, the three programs alternating per round,
per-round XLA sgemm, loaded verdict). Results merge into
``experiments/results/profile_densenet_backward.json`` under ``densenet_bc_<depth>_batch<B>``.
"""

from __future__ import annotations

import argparse
import functools
import os

import flax.linen as nn
import harness
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


def timings(run: harness.Run, args, label: str) -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, args.batch)
    m = models.create("densenet_bc", 10, depth=args.depth)
    v = m.init(jax.random.PRNGKey(0), x[:1], train=False)

    bs = v.get("batch_stats", {})

    def loss(p, images):
        out, _ = m.apply({"params": p, "batch_stats": bs}, images, train=True,
                         mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(out.logits, y).mean()

    fns = {"forward": jax.jit(loss), "gradient": jax.jit(jax.grad(loss)),
           "input_gradient": jax.jit(jax.grad(loss, argnums=1))}
    med = harness.medians(run.alternate(
        {k: (lambda f=f: f(v["params"], x)) for k, f in fns.items()}, args.rounds, label=label))
    fwd, grad, grad_x = med["forward"], med["gradient"], med["input_gradient"]
    return {"forward_s": fwd, "gradient_s": grad, "gradient_over_forward": grad / fwd,
            "input_gradient_s": grad_x, "input_gradient_over_forward": grad_x / fwd}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--depth", type=int, default=100, help="DenseNet-BC depth (growth 12)")
    p.add_argument("--out", default=OUT)
    harness.add_arguments(p)
    args = p.parse_args()
    run = harness.Run.from_args(args, frameworks=("xla",))
    rec = {"batch": args.batch, "depth": args.depth, "rounds": args.rounds}
    rec["jaxood_batchnorm"] = timings(run, args, "jaxood BatchNorm")
    print("jaxood BatchNorm", rec["jaxood_batchnorm"], flush=True)
    own = densenet._BatchNorm
    densenet._BatchNorm = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)
    try:
        rec["flax_batchnorm"] = timings(run, args, "flax BatchNorm")
    finally:
        densenet._BatchNorm = own
    print("flax BatchNorm", rec["flax_batchnorm"], flush=True)
    densenet._BatchNorm = Identity  # timing only: is the rest of the backward pass slow too?
    try:
        rec["no_batchnorm_timing_only"] = timings(run, args, "no BatchNorm")
    finally:
        densenet._BatchNorm = own
    print("no BatchNorm", rec["no_batchnorm_timing_only"], flush=True)
    key = f"densenet_bc_{args.depth}_batch{args.batch}"
    return harness.finish(args, args.out, {key: run.record(rec)})


if __name__ == "__main__":
    raise SystemExit(main())
