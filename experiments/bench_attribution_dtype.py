"""What ``attribution_dtype="float64"`` costs: AdaSCALE-A scoring with the input gradient in
float64 vs float32, jaxood against itself (issue 20, item 6).

Each contender is ``adascale.score_batch`` jitted once (clean forward with a vjp to the input,
the gradient, the perturbed forward, the post-feature arithmetic), on the same random-weight
network and the same batch; each side is fitted on the same ID-val images with its own
dtype, as it would be deployed. Timed side by side through ``experiments/harness.py``
(alternating rounds, compile excluded, per-round XLA sgemm, loaded verdict). Besides the
cost the record holds how far the float32 scores are from the float64 ones (median and max
absolute difference, relative to the score range) on this batch.

  python experiments/bench_attribution_dtype.py --archs wrn16_4 resnet50 --rounds 2

Results merge into ``experiments/results/bench_attribution_dtype.json`` under ``<arch>``.
"""

from __future__ import annotations

import argparse
import json

import harness
import jax
import jax.numpy as jnp
import numpy as np

from jaxood import models
from jaxood.detectors import adascale

#: arch -> (input size, default batch, classes). Small batches: XLA:CPU's float64
#: convolutions are unoptimised (a WRN-16-4 float64 pass at batch 8 took ~20 s vs ~0.4 s).
ARCHS = {"wrn16_4": (32, 8, 10), "resnet50": (224, 2, 1000)}
RESULTS = "bench_attribution_dtype.json"
DTYPES = ("float64", "float32")  # first over second: the ratio is float64 speed / float32


def score_fn(model, dtype: str):
    return jax.jit(lambda v, s, x: adascale.score_batch(
        model, v, s, x, variant="a", percentile=(75, 85), attribution_dtype=dtype))


def bench(arch: str, args) -> dict:
    size, batch, classes = ARCHS[arch]
    batch = args.batch or batch
    module = models.create(arch, classes)
    variables = jax.jit(lambda k: models.init_variables(module, k, (size, size, 3)))(
        jax.random.PRNGKey(0))
    model = models.flax_model(module, input_shape=(size, size, 3))
    rng = np.random.default_rng(0)
    x_val = jnp.asarray(rng.standard_normal((batch, size, size, 3)), jnp.float32)
    x = jax.device_put(rng.standard_normal((batch, size, size, 3)).astype(np.float32))
    run = harness.Run.from_args(args, frameworks=("xla",))
    scores, contenders = {}, {}
    for dtype in DTYPES:
        stats = adascale.fit_batch(model, variables, x_val, batch_size=batch,
                                   attribution_dtype=dtype)
        fn = score_fn(model, dtype)
        scores[dtype] = np.asarray(fn(variables, stats, x))  # compiles; excluded from timing
        contenders[dtype] = lambda fn=fn, s=stats: fn(variables, s, x)
    times = run.alternate(contenders, args.rounds, label=arch)
    diff = np.abs(scores["float32"] - scores["float64"])
    spread = float(np.ptp(scores["float64"])) or 1.0
    fields = {"arch": arch, "input": [size, size, 3], "batch": batch, "rounds": args.rounds,
              **harness.compare(times, batch, "images"),
              "score_abs_diff_median": float(np.median(diff)),
              "score_abs_diff_max": float(diff.max()),
              "score_abs_diff_max_over_range": float(diff.max()) / spread}
    print(json.dumps({arch: fields["ratio_float64_over_float32"]}), flush=True)
    return {harness.record_key(arch, args.label): run.record(fields)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=0, help="images per call (0: the arch's)")
    p.add_argument("--label", default="", help="free text stored in the JSON and its keys")
    # Anchored at the checkout, whatever the working directory.
    p.add_argument("--out", default=str(harness.ROOT / "experiments" / "results" / RESULTS))
    harness.add_arguments(p)
    args = p.parse_args()
    return harness.collect(args, args.out, args.archs, lambda a: bench(a, args))


if __name__ == "__main__":
    raise SystemExit(main())
