"""Where a jaxood training step spends its time: per-HLO-op wall time from a JAX profile.

    python experiments/profile_train_step.py --models wrn16_4 densenet_bc_100
    python experiments/profile_train_step.py --conv-grad xla      # XLA's own conv gradients

Builds the library's jitted ``train_step`` (batch 128, 32x32x3, float32), runs ``--steps``
steps under ``jax.profiler.trace`` and sums the XLA:CPU thunk events of each HLO instruction
of the optimised module. Each op is put in a class: ``transpose`` (layout copies, mostly the
operands of weight-gradient convolutions), ``conv`` (convolutions XLA runs as a separate
thunk), ``fusion`` (elementwise/BatchNorm loops) and ``other``; the step's wall time and the
part no event covers (library convolutions run inside their thunks) are printed beside
them. ``--conv-grad xla`` swaps the hand-written convolution gradients
(``jaxood.models.conv.conv2d``) for XLA's, to show what they change. Per-op times are only
meaningful on a quiet machine: the harness's load check labels the run.
Writes ``experiments/results/profile_train_step.json`` (merged by key).
"""

from __future__ import annotations

import argparse
import collections
import functools
import glob
import gzip
import json
import re
import tempfile
import time

import harness
import jax
import jax.numpy as jnp
import numpy as np

from jaxood import models
from jaxood.models import conv, layers
from jaxood.train import TrainConfig
from jaxood.train.steps import StepConfig, create_train_state, train_step

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
OUT = harness.ROOT / "experiments" / "results" / "profile_train_step.json"


def compiled_step(arch: str, batch: int):
    """(compiled step, state, x, y) of the library's float32 training step."""
    cfg = TrainConfig(arch=arch, batch_size=batch, mean=MEAN, std=STD, crop_padding=0, hflip=False)
    module = models.create(arch, 10)
    variables = jax.jit(lambda k: models.init_variables(module, k, (32, 32, 3)))(
        jax.random.PRNGKey(0)
    )
    state = create_train_state(cfg, module, variables, 39100)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 255, (batch, 32, 32, 3), dtype=np.uint8))
    y = jnp.asarray(rng.integers(0, 10, batch))
    step = jax.jit(functools.partial(train_step, hp=StepConfig.from_config(cfg, MEAN, STD)))
    return step.lower(state, x, y).compile(), state, x, y


def op_classes(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> class, from the optimised module's text."""
    classes = {}
    for m in re.finditer(r"^\s*(?:ROOT )?%(\S+) = \S+ (\w[\w-]*)\(", hlo_text, re.M):
        name, opcode = m.groups()
        if "transpose" in name or opcode in ("transpose", "copy"):
            classes[name] = "transpose"
        elif opcode == "convolution" or name.startswith(("conv", "convolution")):
            classes[name] = "conv"
        elif opcode == "fusion":
            classes[name] = "fusion"
        else:
            classes[name] = "other"
    return classes


def profile(arch: str, batch: int, steps: int) -> dict:
    compiled, state, x, y = compiled_step(arch, batch)
    for _ in range(2):
        state, m = compiled(state, x, y)
    jax.block_until_ready(m)
    classes = op_classes(compiled.as_text())
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for _ in range(steps):
                state, m = compiled(state, x, y)
                jax.block_until_ready(m)
        wall = (time.perf_counter() - t0) / steps
        with gzip.open(glob.glob(f"{d}/**/*.trace.json.gz", recursive=True)[0]) as f:
            events = json.load(f)["traceEvents"]
    per_op = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e["name"] in classes:
            per_op[e["name"]] += e["dur"] / 1e6 / steps
    by_class = collections.Counter()
    for name, s in per_op.items():
        by_class[classes[name]] += s
    return {
        "step_s": wall,
        "by_class_s": dict(by_class),
        "not_in_op_events_s": wall - sum(by_class.values()),
        "top_ops_s": dict(per_op.most_common(25)),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", nargs="+", default=["wrn16_4", "resnet18_32x32", "densenet_bc_100"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--conv-grad", choices=("jaxood", "xla"), default="jaxood")
    p.add_argument("--out", default=str(OUT))
    harness.add_arguments(p)
    args = p.parse_args()
    if args.conv_grad == "xla":
        layers.conv2d = conv.lax_conv  # the model's convs with XLA's own gradients
    run = harness.Run.from_args(args, frameworks=("xla",))
    records = {}
    for arch in args.models:
        r = profile(arch, args.batch, args.steps)
        print(f"{arch} ({args.conv_grad} conv gradients): step {r['step_s']:.3f} s; "
              + ", ".join(f"{k} {v:.3f} s" for k, v in sorted(r["by_class_s"].items()))
              + f"; outside op events {r['not_in_op_events_s']:.3f} s", flush=True)
        run.checkpoint()
        records[harness.record_key(arch, args.conv_grad)] = run.record(
            {"model": arch, "conv_grad": args.conv_grad, "batch": args.batch, **r}
        )
    return harness.finish(args, args.out, records)


if __name__ == "__main__":
    raise SystemExit(main())
