"""KNN scoring throughput and peak memory: jaxood's exact chunked search vs NumPy / sklearn.

Bank: ``--n-bank`` (200,000) x ``--dim`` (512) random non-negative float32 features
(L2-normalised), ``--n-query`` queries, K = ``--k``. Every method is exact; the script checks
they agree. Each method runs in its own subprocess so its peak RSS (``ru_maxrss``) is
measured in isolation: ``rss_before_mb`` after building the bank, ``peak_rss_mb`` after
scoring, ``score_peak_extra_mb`` = the difference (memory the search itself needed).
Time: median of ``--repeats`` runs after one warm-up (compile excluded).

Methods:
  jaxood_device_c{chunk}: bank on device, ``lax.scan`` over bank chunks with a running top-K.
  jaxood_host: NumPy bank on the host, chunks streamed to the device.
  numpy_blocked: plain NumPy, 256 queries at a time, full ``[256, N]`` similarity + partition.
  sklearn_brute: ``NearestNeighbors(algorithm="brute").kneighbors`` (chunked internally).

The parent process goes through ``experiments/harness.py``: it waits for a quiet machine,
times an XLA and a NumPy sgemm before each method's subprocess, and labels the figures
``loaded`` when the load average or the sgemm moved (the workers time themselves: median of
``--repeats`` after a warm-up).

Usage: python experiments/bench_knn.py [--n-bank 200000 --dim 512 --n-query 2048 --k 50]
Results merge into experiments/results/bench_knn.json under ``bank<N>_dim<D>_q<Q>_k<K>``
(``@label`` with ``--label``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

METHODS = (
    "jaxood_device_c4096",
    "jaxood_device_c16384",
    "jaxood_host",
    "numpy_blocked",
    "sklearn_brute",
)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _data(n_bank: int, dim: int, n_query: int):
    # Filled in 10k-row pieces so no float64 temporary of the whole bank sets the RSS peak.
    rng = np.random.default_rng(0)
    bank = np.empty((n_bank, dim), np.float32)
    for s in range(0, n_bank, 10_000):
        part = rng.normal(0.2, 1.0, (min(10_000, n_bank - s), dim))
        bank[s : s + part.shape[0]] = np.maximum(part, 0)
    queries = np.maximum(rng.normal(0.2, 1.0, (n_query, dim)), 0).astype(np.float32)
    return bank, queries


def _normalize(x):
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-10)


def _worker(method: str, args) -> dict:
    bank, queries = _data(args.n_bank, args.dim, args.n_query)
    k = args.k
    if method.startswith("jaxood"):
        import jax

        from jaxood.detectors import knn

        if method == "jaxood_host":
            stats = knn.knn_bank(bank, on_host=True, chunk=16384)
        else:
            stats = knn.knn_bank(bank, chunk=int(method.split("_c")[-1]))
            jax.block_until_ready(stats.bank)
        del bank
        run = lambda: np.asarray(jax.block_until_ready(knn.knn_score(queries, stats, k)))
    elif method == "numpy_blocked":
        nb = _normalize(bank)
        del bank
        half_sq = 0.5 * np.einsum("nd,nd->n", nb, nb)

        def run():
            q = _normalize(queries)
            out = np.empty(len(q), np.float32)
            for s in range(0, len(q), 256):
                sims = q[s : s + 256] @ nb.T - half_sq  # [256, N]
                kth = -np.partition(-sims, k - 1, axis=1)[:, k - 1]
                out[s : s + 256] = -np.maximum((q[s : s + 256] ** 2).sum(1) - 2 * kth, 0)
            return out
    elif method == "sklearn_brute":
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(_normalize(bank))
        del bank
        run = lambda: -(nn.kneighbors(_normalize(queries))[0][:, -1] ** 2)
    else:
        raise ValueError(method)
    rss_before = _rss_mb()
    result = run()  # warm-up / compile
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    return {
        "method": method,
        "median_s": round(sec, 4),
        "queries_per_s": round(args.n_query / sec, 1),
        "rss_before_mb": round(rss_before, 1),
        "peak_rss_mb": round(_rss_mb(), 1),
        "score_peak_extra_mb": round(_rss_mb() - rss_before, 1),
        "scores_head": [float(v) for v in np.asarray(result)[:64]],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-bank", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--n-query", type=int, default=2048)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--label", default="", help="free text stored in the JSON and its key")
    p.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "results", "bench_knn.json")
    )
    if "--worker" in sys.argv:
        args = p.parse_args()
        print(json.dumps(_worker(args.worker, args)))
        return 0
    # Deferred: the harness imports jax, which must not weigh on the NumPy / sklearn
    # workers' peak RSS (they run this same file with --worker, which returned above).
    import harness

    harness.add_arguments(p)
    args = p.parse_args()
    run = harness.Run.from_args(args, frameworks=("xla", "numpy"))
    rows = []
    for m in args.methods.split(","):
        run.checkpoint()
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            m,
            "--n-bank",
            str(args.n_bank),
            "--dim",
            str(args.dim),
            "--n-query",
            str(args.n_query),
            "--k",
            str(args.k),
            "--repeats",
            str(args.repeats),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{m:22s} {row['median_s']:8.3f} s  {row['queries_per_s']:9.1f} q/s  "
            f"peak RSS {row['peak_rss_mb']:8.1f} MB (+{row['score_peak_extra_mb']:.1f} MB scoring)"
        )
    ref = np.asarray(rows[0]["scores_head"])
    for row in rows:
        row["max_abs_diff_vs_first"] = float(
            np.max(np.abs(np.asarray(row.pop("scores_head")) - ref))
        )
    result = {
        "setting": {
            "n_bank": args.n_bank,
            "dim": args.dim,
            "n_query": args.n_query,
            "k": args.k,
            "repeats": args.repeats,
        },
        "results": rows,
    }
    key = harness.record_key(f"bank{args.n_bank}_dim{args.dim}_q{args.n_query}_k{args.k}",
                             args.label)
    return harness.finish(args, args.out, {key: run.record(result)})


if __name__ == "__main__":
    raise SystemExit(main())
