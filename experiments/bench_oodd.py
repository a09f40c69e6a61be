"""OODD per-chunk update cost vs chunk size (this CPU).

One jitted :func:`jaxood.detectors.oodd.oodd_step` (insert the chunk into the queue, then
score it: S_in against the ID dictionary, S_out against the queue) for CIFAR-like sizes:
ID dictionary ``--n-bank`` (25,000 = alpha 0.5 of CIFAR train) x ``--dim`` (512), queue
``--queue`` (128 = CIFAR-10 default; 2048 = ImageNet), k_in = 5, k_out = 5. Random
features. Median of ``--repeats`` steps after a warm-up (compile excluded); also the time
of a whole 40,000-sample stream through ``oodd_stream`` (``lax.scan``) at chunk 512.

Timing through ``experiments/harness.py``: every (queue, chunk) setting is a contender in
the same alternating rounds (quiet wait, compile excluded, per-round XLA sgemm, loaded
verdict).

Usage: python experiments/bench_oodd.py [--chunks 64,128,256,512,1024,2048]
Results merge into experiments/results/bench_oodd.json under ``bank<N>_dim<D>``
(``@label`` with ``--label``).
"""

from __future__ import annotations

import argparse
import os

import harness
import jax
import numpy as np

from jaxood.detectors import oodd
from jaxood.detectors.knn import chunk_bank, l2_normalize


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-bank", type=int, default=25_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queues", default="128,2048")
    p.add_argument("--chunks", default="64,128,256,512,1024,2048")
    p.add_argument("--n-stream", type=int, default=40_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "results", "bench_oodd.json")
    )
    p.add_argument("--label", default="", help="free text stored in the JSON and its key")
    harness.add_arguments(p)
    args = p.parse_args()

    rng = np.random.default_rng(0)
    bank = l2_normalize(
        np.maximum(rng.normal(0.2, 1, (args.n_bank, args.dim)), 0).astype(np.float32)
    )
    id_bank = chunk_bank(bank, 8192)
    stream = np.maximum(rng.normal(0.2, 1, (args.n_stream, args.dim)), 0).astype(np.float32)
    run = harness.Run.from_args(args, frameworks=("xla",))
    settings, steps = [], {}
    for q in map(int, args.queues.split(",")):
        for c in map(int, args.chunks.split(",")):
            step = jax.jit(lambda s, x: oodd.oodd_step(s, x, id_bank=id_bank, k_in=5, k_out=5))
            # a full queue, as in steady state
            state = oodd.seeded_state(stream[:q], id_bank, queue_size=q, k_in=5)
            x = stream[c : 2 * c]
            settings.append((q, c))
            steps[f"q{q}_c{c}"] = lambda step=step, state=state, x=x: step(state, x)
    med = harness.medians(run.alternate(steps, args.repeats, label="oodd_step"))
    rows = []
    for (q, c), sec in zip(settings, med.values()):
        rows.append({"queue": q, "chunk": c, "step_ms": round(1e3 * sec, 3),
                     "us_per_sample": round(1e6 * sec / c, 2)})
        print(f"queue {q:5d} chunk {c:5d}: {1e3 * sec:9.2f} ms/step  "
              f"{1e6 * sec / c:8.2f} us/sample")
    queues = list(map(int, args.queues.split(",")))
    runs = {
        f"q{q}": lambda q=q: oodd.oodd_stream(
            id_bank, stream, queue_size=q, k_in=5, k_out=5, chunk_size=512
        )[0]
        for q in queues
    }
    med = harness.medians(run.alternate(runs, max(1, args.repeats // 2), label="oodd_stream"))
    streams = []
    for q, sec in zip(queues, med.values()):
        streams.append({"queue": q, "chunk": 512, "n": args.n_stream, "seconds": round(sec, 3),
                        "samples_per_s": round(args.n_stream / sec, 1)})
        print(f"stream of {args.n_stream} (queue {q}, chunk 512): {sec:.3f} s")
    result = {
        "setting": {
            "n_bank": args.n_bank,
            "dim": args.dim,
            "k_in": 5,
            "k_out": 5,
            "repeats": args.repeats,
        },
        "per_step": rows,
        "stream": streams,
    }
    key = harness.record_key(f"bank{args.n_bank}_dim{args.dim}", args.label)
    return harness.finish(args, args.out, {key: run.record(result)})


if __name__ == "__main__":
    raise SystemExit(main())
