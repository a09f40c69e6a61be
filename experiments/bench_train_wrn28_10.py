"""Training throughput of WRN-28-10 (36.5M parameters) at batch 128 on 32x32x3, this machine.

Times the library's real train step (on-device crop/flip + normalise, forward, backward,
SGD-Nesterov update, BN statistics) with ``jax.jit``: compile once (reported separately),
``block_until_ready``, then a few timed steps (one per harness round: quiet wait, per-round
XLA sgemm, loaded verdict; see ``experiments/harness.py``). Also reports XLA's FLOP count per
step so the number transfers to other hardware (images/s ~= achieved FLOP/s / FLOPs per
image). Results merge into ``--out`` under ``<arch>_batch<B>``.

  python experiments/bench_train_wrn28_10.py --steps 3
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import harness
import jax
import jax.numpy as jnp
import numpy as np

from jaxood import models
from jaxood.train import TrainConfig
from jaxood.train.steps import StepConfig, create_train_state, train_step


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="wrn28_10")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", default="experiments/results/bench_train_wrn28_10.json")
    harness.add_arguments(p)
    args = p.parse_args()
    run = harness.Run.from_args(args, frameworks=("xla",))
    cfg = TrainConfig(arch=args.arch, batch_size=args.batch_size)
    module = models.create(args.arch, 10)
    variables = jax.jit(lambda k: models.init_variables(module, k, (32, 32, 3)))(
        jax.random.PRNGKey(0)
    )
    state = create_train_state(cfg, module, variables, 39100)
    hp = StepConfig.from_config(cfg, (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616))
    step = jax.jit(functools.partial(train_step, hp=hp), donate_argnums=0)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 256, (args.batch_size, 32, 32, 3), dtype=np.uint8))
    y = jnp.asarray(rng.integers(0, 10, args.batch_size).astype(np.int32))
    t0 = time.perf_counter()
    compiled = step.lower(state, x, y).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    box = {"state": state}

    def step_once():
        box["state"], box["metrics"] = compiled(box["state"], x, y)
        return box["metrics"]

    times = run.alternate({"step": step_once}, args.steps, label=args.arch)["step"]
    per_step = float(np.median(times))
    out = {
        "arch": args.arch,
        "params": int(sum(v.size for v in jax.tree.leaves(box["state"].params))),
        "batch_size": args.batch_size,
        "compile_s": round(compile_s, 1),
        "step_times_s": [round(t, 2) for t in times],
        "median_step_s": round(per_step, 2),
        "train_images_per_s": round(args.batch_size / per_step, 2),
        "xla_flops_per_step": flops,
        "xla_flops_per_image": flops / args.batch_size,
        "achieved_gflops_per_s": round(flops / per_step / 1e9, 2),
        "loss_finite": bool(np.isfinite(float(box["metrics"]["loss"]))),
        "device": str(jax.devices()[0]),
    }
    print(json.dumps(out, indent=2))
    key = f"{args.arch}_batch{args.batch_size}"
    return harness.finish(args, args.out, {key: run.record(out)})


if __name__ == "__main__":
    raise SystemExit(main())
