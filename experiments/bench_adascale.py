"""AdaSCALE scoring cost on this CPU (issue: core library, performance section).

Measures, in one process and interleaved so machine noise hits all of them alike:
  * MSP: one jitted forward pass (logits -> max softmax) on a WRN batch;
  * AdaSCALE-A end to end: forward with a vjp to the input + forward of the perturbed input
    + post-feature arithmetic (target <= 3.0x MSP), next to the floor (forward + input
    gradient) + forward measured the same way;
  * the post-feature arithmetic alone (Q', eCDF, percentile, scaling, head): target < 2% of
    AdaSCALE's time;
  * re-scoring all 36 APS percentile pairs for 10,000 cached samples: target < 1 s, with
    the vectorised grid path and with a plain loop over the jitted per-pair score.

Timing through ``experiments/harness.py`` (quiet wait, alternating rounds, compile excluded,
per-round XLA sgemm, loaded verdict).

Usage: python experiments/bench_adascale.py [--depth 16 --width 4 --batch 128 --repeats 7]
Results merge into experiments/results/bench_adascale.json under
``wrn<depth>_<width>_batch<batch>`` (``@label`` with ``--label``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import harness
import jax
import jax.numpy as jnp
import numpy as np

from jaxood import models
from jaxood.detectors import adascale
from jaxood.detectors.logits import msp


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--width", type=int, default=4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--cached", type=int, default=10_000, help="samples for the APS re-score")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--label", default="", help="free text stored in the JSON and its key")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                   "bench_adascale.json"))
    harness.add_arguments(ap)
    args = ap.parse_args()
    run = harness.Run.from_args(args, frameworks=("xla",))

    module = models.create("wrn", 10, depth=args.depth, widen_factor=args.width)
    variables = models.init_variables(module, jax.random.PRNGKey(0), (32, 32, 3))
    model = models.flax_model(module)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(args.batch, 32, 32, 3)), jnp.float32)
    stats = adascale.fit_batch(model, variables, x)  # eCDF on one batch (cost not measured)

    f_msp = jax.jit(lambda v, x: msp(model.features(v, x).logits))
    f_ada = jax.jit(lambda v, s, x: adascale.score_batch(model, v, s, x, percentile=(60, 90)))
    feats, ft = jax.jit(lambda v, x: adascale.perturbed_features(model, v, x))(variables, x)

    def forward_and_input_grad(v, x):
        # The unavoidable part of AdaSCALE: forward + backward to the input (vjp).
        def fn(x):
            feats = model.features(v, x)
            return feats.logits, feats

        logits, vjp_fn, _ = jax.vjp(fn, x, has_aux=True)
        return vjp_fn(jax.nn.one_hot(jnp.argmax(logits, -1), logits.shape[-1]))[0]

    f_grad = jax.jit(forward_and_input_grad)
    f_post = jax.jit(
        lambda v, s, f, ft: adascale.score_from_features(model, v, s, f, ft, percentile=(60, 90))
    )

    times = run.alternate({
        "msp": lambda: f_msp(variables, x),
        "adascale": lambda: f_ada(variables, stats, x),
        "post": lambda: f_post(variables, stats, feats.feature, ft),
        "forward_plus_input_grad": lambda: f_grad(variables, x),
    }, args.repeats, label="adascale")
    med = harness.medians(times)

    # APS re-scoring from cached features of N samples (features drawn like real ones:
    # we tile the batch's features with noise to reach N distinct rows).
    reps = -(-args.cached // args.batch)
    noise = jnp.asarray(rng.uniform(0.9, 1.1, size=(reps * args.batch, feats.feature.shape[1])),
                        jnp.float32)
    f_cached = (jnp.tile(feats.feature, (reps, 1)) * noise)[: args.cached]
    ft_cached = (jnp.tile(ft, (reps, 1)) * noise)[: args.cached]
    grid = jnp.asarray(adascale.PERCENTILE_GRID, jnp.float32)

    f_grid = jax.jit(lambda v, s, f, ft: adascale.grid_scores(
        s, adascale.grid_cache(model, v, s, f, ft), grid, variant="a"))
    per_pair = jax.jit(
        lambda v, s, f, ft, p: adascale.score_from_features(model, v, s, f, ft, percentile=p)
    )
    aps = run.alternate({
        "grid": lambda: f_grid(variables, stats, f_cached, ft_cached),
        "loop": lambda: [per_pair(variables, stats, f_cached, ft_cached, p) for p in grid],
    }, max(2, args.repeats // 2), label="aps")

    result = {
        "script": "experiments/bench_adascale.py",
        "model": f"WRN-{args.depth}-{args.width}, 32x32x3, random init",
        "batch": args.batch,
        "median_seconds": med,
        "rounds_seconds": times,
        "adascale_over_msp": med["adascale"] / med["msp"],
        # Floor = (forward + backward-to-input) + forward of the perturbed input.
        "floor_over_msp": (med["forward_plus_input_grad"] + med["msp"]) / med["msp"],
        "post_feature_fraction_of_adascale": med["post"] / med["adascale"],
        "aps_36_pairs": {
            "samples": args.cached,
            "grid_path_seconds": harness.medians(aps)["grid"],
            "loop_path_seconds": harness.medians(aps)["loop"],
        },
        "targets": {"adascale_over_msp": 3.0, "post_feature_fraction": 0.02, "aps_seconds": 1.0},
    }
    key = harness.record_key(f"wrn{args.depth}_{args.width}_batch{args.batch}", args.label)
    record = run.record(result)
    print(json.dumps({k: v for k, v in result.items() if k != "rounds_seconds"}, indent=2),
          file=sys.stderr)
    return harness.finish(args, args.out, {key: record})


if __name__ == "__main__":
    raise SystemExit(main())
