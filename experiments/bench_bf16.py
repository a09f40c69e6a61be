"""Training step in ``--precision bf16`` vs float32, jaxood against itself (issue 18, item 5).

The same network and batch as ``bench_train.py`` (batch 128 at 32x32x3, SGD Nesterov,
cosine lr, cross-entropy; the step alone on a batch in memory), once with ``precision="bf16"``
(convolutions and matmuls in bfloat16, parameters / optimizer / BatchNorm statistics / loss
in float32; see ``jaxood.train.steps``) and once in float32, timed side by side through
``experiments/harness.py`` (alternating rounds, compile excluded, per-round XLA sgemm,
loaded verdict). Whether bf16 pays depends on the CPU (AVX512_BF16 / AMX: the harness
records the ISA with every figure). The accuracy side is ``train_fashion_wrn.py
--precision bf16``.

  python experiments/bench_bf16.py --models wrn16_4 resnet18_32x32 --rounds 5 --steps 2

Results merge into ``experiments/results/bench_bf16.json`` under ``<model>`` (``@label``).
"""

from __future__ import annotations

import argparse
import json
import sys

import bench_train
import harness

from jaxood import models


def bench_model(name: str, args) -> dict:
    arch, kwargs, _ = bench_train.ARCHS[name]
    module = models.create(arch, 10, **kwargs)
    data = bench_train.make_data(max(args.batch_size, 256))
    run = harness.Run.from_args(args, frameworks=("xla",))
    jx = {p: bench_train.JaxContender(arch, kwargs, module, data, args.batch_size, False, p)
          for p in ("bf16", "f32")}
    contenders = {p: (lambda c=c: c.run(args.steps)) for p, c in jx.items()}
    times = run.alternate(contenders, args.rounds, label=name)
    fields = {"arch": arch, "arch_kwargs": kwargs, "label": args.label,
              "batch_size": args.batch_size, "rounds": args.rounds,
              "steps_per_round": args.steps,
              **harness.compare(times, args.steps * args.batch_size, "images"),
              "compile_s": {p: round(c.compile_s, 1) for p, c in jx.items()},
              "xla_gflop_per_image": {p: round(c.flops / args.batch_size / 1e9, 3)
                                      for p, c in jx.items()}}
    print(json.dumps({name: fields["ratio_bf16_over_f32"]}), file=sys.stderr, flush=True)
    return {harness.record_key(name, args.label): run.record(fields)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["wrn16_4", "resnet18_32x32"],
                   choices=sorted(bench_train.ARCHS))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=2, help="steps per contender per round")
    p.add_argument("--label", default="", help="free text stored in the JSON and its keys")
    p.add_argument("--out", default="experiments/results/bench_bf16.json")
    harness.add_arguments(p)
    args = p.parse_args()
    return harness.collect(args, args.out, args.models, lambda m: bench_model(m, args))


if __name__ == "__main__":
    raise SystemExit(main())
