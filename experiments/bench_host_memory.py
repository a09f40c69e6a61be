"""What ``jaxood.hostmem.reuse_host_memory`` (on in the ``jaxood`` commands) saves per call.

    python experiments/bench_host_memory.py --workloads train/densenet_bc_100 grad/resnet50

The setting is process-wide, so each round runs every workload in two fresh child processes,
one with XLA:CPU's defaults (a fresh temporary buffer mapped and page-faulted per execution)
and one with the reuse, alternating which goes first. A child compiles the workload, runs it
twice untimed and reports the median wall time, kernel CPU time and minor page faults of
``--calls`` more. Workloads: the library's training step at batch 128 (``train/<model>``,
the nets of ``bench_train.py``) and the forward + AdaSCALE input gradient of a torchvision
architecture at batch 16, 224x224, random weights (``grad/<arch>``). Results merge into
``experiments/results/bench_host_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import harness

OUT = harness.ROOT / "experiments" / "results" / "bench_host_memory.json"
WORKLOADS = ("train/densenet_bc_100", "train/wrn16_4", "grad/resnet50", "grad/vit_b_16")

CHILD = r"""
import json, resource, statistics, sys, time
mode, workload, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "reuse":
    from jaxood.hostmem import reuse_host_memory
    reason = reuse_host_memory()
    assert reason is None, reason
import jax, jax.numpy as jnp
kind, name = workload.split("/")
if kind == "train":
    sys.path.insert(0, sys.argv[4])
    import bench_train as bt
    from jaxood import models
    arch, kw, _ = bt.ARCHS[name]
    jx = bt.JaxContender(arch, kw, models.create(arch, 10, **kw), bt.make_data(512), 128, False)
    call = lambda: jx.run(1)
else:
    from jaxood import models
    m = models.create(name, 1000)
    v = jax.jit(lambda k: models.init_variables(m, k, (224, 224, 3)))(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (16, 224, 224, 3))
    def grad(v, x):
        logits, vjp = jax.vjp(lambda x: m.apply(v, x, train=False).logits, x)
        return vjp(jax.nn.one_hot(jnp.argmax(logits, -1), logits.shape[-1]))[0]
    compiled = jax.jit(grad).lower(v, x).compile()
    call = lambda: jax.block_until_ready(compiled(v, x))
call(); call()
wall, system, faults = [], [], []
for _ in range(calls):
    r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    call()
    wall.append(time.perf_counter() - t)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    system.append(r1.ru_stime - r0.ru_stime)
    faults.append(r1.ru_minflt - r0.ru_minflt)
print(json.dumps({"wall_s": statistics.median(wall), "system_cpu_s": statistics.median(system),
                  "minor_faults": statistics.median(faults), "wall_s_calls": wall}))
"""


def child(mode: str, workload: str, calls: int) -> dict:
    """One fresh process's medians for ``workload`` under ``mode``."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, workload, str(calls), str(harness.ROOT / "experiments")],
        capture_output=True, text=True, env=env, timeout=3600,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{workload} ({mode}) failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench(workload: str, args) -> dict:
    run = harness.Run.from_args(args, frameworks=("xla",))
    per = {"default": [], "reuse": []}
    for r in range(args.rounds):
        for mode in harness.round_order(["default", "reuse"], r):
            run.checkpoint()
            per[mode].append(child(mode, workload, args.calls))
            print(f"[host memory] {workload} round {r} {mode}: {per[mode][-1]['wall_s']:.3f} s, "
                  f"{per[mode][-1]['minor_faults']:.0f} faults", file=sys.stderr, flush=True)
    med = {mode: {k: statistics.median(c[k] for c in children)
                  for k in ("wall_s", "system_cpu_s", "minor_faults")}
           for mode, children in per.items()}
    fields = {
        "workload": workload, "rounds": args.rounds, "calls_per_child": args.calls,
        "default": med["default"], "reuse": med["reuse"],
        "speedup_reuse_over_default": round(med["default"]["wall_s"] / med["reuse"]["wall_s"], 3),
        "children": per,
    }
    print(json.dumps({workload: fields["speedup_reuse_over_default"]}), flush=True)
    return {harness.record_key(workload, args.label): run.record(fields)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=3, help="timed calls per child process")
    p.add_argument("--label", default="", help="free text stored in the JSON and its keys")
    p.add_argument("--out", default=str(OUT))
    harness.add_arguments(p)
    args = p.parse_args()
    return harness.collect(args, args.out, args.workloads, lambda w: bench(w, args))


if __name__ == "__main__":
    sys.exit(main())
