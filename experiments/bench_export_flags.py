"""How much do exported AdaSCALE scores depend on the XLA flags of the process running them?

    python experiments/bench_export_flags.py [--model DIR --benchmark B --data-root R]

Fits AdaSCALE-A (and MSP as a gradient-free control) on a benchmark's ID-val, exports it, and
scores ID-test + the first near-OOD set with the artifact's own ``score.py`` in fresh
subprocesses that cannot import jaxood, under (a) the XLA flags recorded in the artifact
(jaxood's, see the README) and (b) no XLA flags (XLA's defaults). Reports, per detector and
setting: bit-identical or not vs the in-process fitted detector, the fraction of samples
whose score moves, the largest move, and how many ``is_ood`` decisions flip; (b) is repeated
because jaxlib 0.10's default CPU fusions sometimes crash (recorded). Default model: the
`jaxood demo` WRN-10-2 on 8x8 digits (trained if missing). Writes
experiments/results/bench_export_flags.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CHILD = """
import sys
for name in ("jaxood", "flax", "optax", "orbax"):
    sys.modules[name] = None
sys.path.insert(0, sys.argv[1])
from score import load
import numpy as np
fn = load(sys.argv[1])
np.save(sys.argv[3], fn(np.load(sys.argv[2]))[0])
"""


def run_artifact(path: str, x_path: str, flags: str | None) -> tuple[int, object]:
    """Scores with the artifact in a subprocess; ``flags=None`` keeps the recorded ones."""
    import numpy as np

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    out = os.path.join(tempfile.mkdtemp(), "s.npy")
    code = CHILD
    if flags is not None:  # jax started before score.py's load(): its flags are not applied
        code = f"import os; os.environ['XLA_FLAGS'] = {flags!r}; import jax\n" + CHILD
    r = subprocess.run([sys.executable, "-c", code, path, x_path, out], env=env, cwd="/",
                       capture_output=True, text=True, timeout=900)
    return r.returncode, (np.load(out) if r.returncode == 0 else r.stderr[-500:])


def compare(ref, got, threshold) -> dict:
    import numpy as np

    moved = np.abs(got - ref) > 0
    return {
        "bit_identical": bool(np.array_equal(got, ref)),
        "fraction_moved": float(moved.mean()),
        "fraction_moved_more_than_1e-5_rel": float(
            (np.abs(got - ref) > 1e-5 * np.maximum(1.0, np.abs(ref))).mean()),
        "max_abs_move": float(np.abs(got - ref).max()),
        "score_range": [float(ref.min()), float(ref.max())],
        "decisions_flipped": int(((got < threshold) != (ref < threshold)).sum()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default=None)
    p.add_argument("--benchmark", default="demo")
    p.add_argument("--data-root", default=os.path.join(ROOT, "..", "shared", "data"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", default=os.path.join(ROOT, "experiments", "runs", "export_flags"))
    p.add_argument("--out", default=os.path.join(ROOT, "experiments", "results",
                                                 "bench_export_flags.json"))
    args = p.parse_args()

    import numpy as np

    import jaxood
    from jaxood.bench.demo import train_demo_model
    from jaxood.data import benchmarks
    from jaxood.fitted import bind_model

    model_dir = args.model or train_demo_model(args.work, epochs=10, progress=False)
    loaded = bind_model(model_dir)
    opened = benchmarks.open_benchmark(args.benchmark, args.data_root, loaded.preprocess,
                                       need_train=False)
    near = next(iter(opened.near.values()))
    x = np.concatenate([opened.id_test.batch(0, len(opened.id_test)), near.batch(0, len(near))])
    x_path = os.path.join(args.work, "x.npy")
    os.makedirs(args.work, exist_ok=True)
    np.save(x_path, x)
    results = {}
    for name in ("adascale_a", "msp"):
        fitted = jaxood.fit(name, loaded, {"val": opened.id_val}, batch_size=64)
        ref = fitted(x)
        path = fitted.export(os.path.join(args.work, f"{name}.jaxexport"), overwrite=True)
        rows = {}
        rc, got = run_artifact(path, x_path, None)
        rows["recorded_flags"] = compare(ref, got, fitted.threshold_value) if rc == 0 else {
            "exit_code": rc, "stderr": got}
        runs = []
        for _ in range(args.repeats):
            rc, got = run_artifact(path, x_path, "")
            runs.append(compare(ref, got, fitted.threshold_value) if rc == 0 else {
                "exit_code": rc, "stderr": got})
        rows["no_flags"] = runs
        results[name] = rows
        print(name, json.dumps(rows, indent=1), flush=True)
    record = {
        "what": "exported detector scored without jaxood, under the recorded vs default XLA "
                "flags, against the in-process fitted detector",
        "model": model_dir, "benchmark": args.benchmark, "samples": int(len(x)),
        "recorded_flags": os.environ.get("XLA_FLAGS", ""),
        "results": results, "command": " ".join(["python", *sys.argv]),
    }
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
