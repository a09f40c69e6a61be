"""Cost of the activation-shaping detectors on cached features (this CPU).

For each detector in ``jaxood.detectors.shaping``: the fit time on N_train ID features
(ReAct fits on "val", BFAct/OptFS on "train") and the jitted score time for N cached
samples, compile excluded (one warm-up call), median of ``--repeats``. Random non-negative
features and a random affine head of ImageNet-like (D=2048, K=1000) and CIFAR-like
(D=640, K=10) sizes.

Timing through ``experiments/harness.py``: the detectors' score functions are contenders in
the same alternating rounds (quiet wait, compile excluded, per-round XLA sgemm, loaded
verdict).

Usage: python experiments/bench_shaping.py [--n 10000 --n-train 20000 --repeats 5]
Results merge into experiments/results/bench_shaping.json under ``n<N>_train<M>``
(``@label`` with ``--label``).
"""

from __future__ import annotations

import argparse
import os
import time

import harness
import jax
import jax.numpy as jnp
import numpy as np

from jaxood import detectors
from jaxood.types import Features, Inputs, Model

NAMES = ("react", "ash", "ash_s", "ash_p", "scale", "bfact", "lts", "optfs", "optfs_energy")


def _head(variables, f):
    return f @ variables["w"] + variables["b"]


def _inputs(f, variables):
    return Inputs(features=Features(logits=_head(variables, f), feature=f))


def run_setting(run: harness.Run, d: int, k: int, n: int, n_train: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    variables = {
        "w": jnp.asarray(rng.normal(0, 0.05, (d, k)).astype(np.float32)),
        "b": jnp.asarray(rng.normal(0, 0.1, k).astype(np.float32)),
    }
    model = Model(features=None, head=_head, name=f"affine{d}x{k}")
    feats = lambda m: jnp.asarray(np.maximum(rng.normal(0.3, 1, (m, d)), 0).astype(np.float32))
    test, train = _inputs(feats(n), variables), _inputs(feats(n_train), variables)
    out, scores = {}, {}
    for name in NAMES:
        det = detectors.get(name)
        t0 = time.perf_counter()
        stats = detectors.fit(det, model, variables, {s: train for s in det.fit_splits})
        jax.block_until_ready(stats)
        out[name] = {"fit_s": round(time.perf_counter() - t0, 4) if det.fit is not None else 0.0}
        _, _, hp = det.split_hparams({})
        static = {key: hp.pop(key) for key in det.static_names if key in hp}
        score = jax.jit(
            lambda inputs, hp, det=det, stats=stats, static=static: det.score(
                model, variables, stats, inputs, **static, **hp
            )
        )
        scores[name] = lambda score=score, hp=hp: score(test, hp)
    med = harness.medians(run.alternate(scores, repeats, label=f"D={d} K={k}"))
    for name, secs in med.items():
        out[name].update(score_s=round(secs, 5), us_per_sample=round(1e6 * secs / n, 3))
        print(
            f"D={d:5d} K={k:5d} {name:13s} fit {out[name]['fit_s']:7.3f} s   score {n} samples "
            f"{secs * 1e3:8.2f} ms ({1e6 * secs / n:.2f} us/sample)"
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="cached samples scored")
    ap.add_argument("--n-train", type=int, default=20_000, help="ID samples for fit")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--label", default="", help="free text stored in the JSON and its key")
    ap.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "results", "bench_shaping.json")
    )
    harness.add_arguments(ap)
    args = ap.parse_args()
    run = harness.Run.from_args(args, frameworks=("xla",))
    results = {
        "args": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "imagenet_like": run_setting(run, 2048, 1000, args.n, args.n_train, args.repeats),
        "cifar_like": run_setting(run, 640, 10, args.n, args.n_train, args.repeats),
    }
    key = harness.record_key(f"n{args.n}_train{args.n_train}", args.label)
    return harness.finish(args, args.out, {key: run.record(results)})


if __name__ == "__main__":
    raise SystemExit(main())
