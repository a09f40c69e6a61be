"""The README's ImageNet reproduction path, end to end, on a synthetic image-list tree.

    python experiments/adascale_analyses/imagenet_path_check.py            # 4 images per list

1. Builds ``imagenet-adascale``'s lists (ID train/val/test, OOD val, the paper's near and far
   sets; not the covariate-shifted ID sets) of synthetic JPEGs in OpenOOD v1.5's layout
   (``experiments/dryrun_imagenet.py``'s generator).
2. Saves torchvision ``resnet50(weights=None)`` as a ``.pth`` and runs the README's
   ``jaxood convert ... --arch resnet50 --out ...``.
3. Runs the README's ``jaxood experiment all --benchmark imagenet-adascale ...`` (small grids
   through ``--option`` so that it fits a CPU) and checks that every experiment but
   ``table3_fsood`` (data absent: skipped with its reason) and ``table4_training`` (no method
   models) wrote its record, and that ``REPORT.md`` says so.
Writes ``experiments/results/adascale_analyses/imagenet_path_check.json``; the tree and the
outputs stay under ``--work`` (git-ignored by default).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "experiments"))
sys.path.insert(0, ROOT)
RESULTS = os.path.join(ROOT, "experiments", "results", "adascale_analyses",
                       "imagenet_path_check.json")
#: Small grids: the path is what is checked, not the numbers (random weights).
OPTIONS = {"k1": [1.0], "k2": [5.0, 10.0], "lmbda": [0.0, 10.0], "draws": 2, "n_val": [2],
           "values": [85, 95], "regions": [["trivial", 0.05], ["random", 0.05]],
           "eps": [0.0, 0.5], "dims": [128, 2048], "trials": 20, "rounds": 2, "batch": [1],
           "kinds": ["scaling"],
           # KNN, MDS and OODD need more training images per class than a synthetic tree has.
           "detectors": ["msp", "ebo", "react", "scale", "adascale_a", "adascale_l"]}


def jaxood(*args: str) -> list[str]:
    """The command line of ``jaxood ARGS`` run from this checkout."""
    return [sys.executable, "-m", "jaxood.cli", *args]


def run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": ROOT}
    r = subprocess.run(cmd, env=env, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}")
    return time.perf_counter() - t0


def main() -> None:
    import dryrun_imagenet

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=4, help="images per list")
    ap.add_argument("--work", default=os.path.join(ROOT, "experiments", "runs",
                                                   "imagenet_path_check"))
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args()
    root = os.path.join(args.work, "data")
    sizes = {k: args.size for k in dryrun_imagenet.benchmark_refs("imagenet-adascale", True)}
    dryrun_imagenet.make_layout(root, sizes, "imagenet-adascale", train=True)
    import torch
    import torchvision

    pth, model = os.path.join(args.work, "resnet50_random.pth"), os.path.join(args.work,
                                                                              "resnet50")
    if not os.path.isdir(model):
        torch.manual_seed(0)
        torch.save(torchvision.models.resnet50(weights=None).state_dict(), pth)
    commands = [
        jaxood("convert", pth, "--arch", "resnet50", "--out", model),
        jaxood("experiment", "all", "--benchmark", "imagenet-adascale", "--model", model,
               "--data-root", root, "--out", os.path.join(args.work, "analyses"),
               "--subset", str(args.size), "--batch-size", str(args.size), "--quiet",
               *[a for k, v in OPTIONS.items() for a in ("--option", f"{k}={json.dumps(v)}")]),
    ]
    walls = [0.0 if i == 0 and os.path.isdir(model) else run(c) for i, c in enumerate(commands)]
    out = os.path.join(args.work, "analyses")
    report = open(os.path.join(out, "REPORT.md")).read()
    from jaxood import analyses

    recorded = [n for n in analyses.names() if os.path.isfile(os.path.join(out, f"{n}.json"))]
    expected = [n for n in analyses.names() if n not in ("table3_fsood", "table4_training")]
    checks = {"every other experiment recorded": recorded == expected,
              "table3_fsood skipped with its reason": "skipped `table3_fsood`: covariate-shifted "
              "ID lists absent" in report,
              "table4_training skipped with its reason": "skipped `table4_training`" in report}
    record = {"script": "experiments/adascale_analyses/imagenet_path_check.py",
              "commands": ["jaxood " + " ".join(c[3:]) for c in commands],
              "images_per_list": args.size, "wall_s": walls, "recorded": recorded,
              "checks": checks, "ok": all(checks.values())}
    from jaxood.fsutil import atomic_write_json

    atomic_write_json(args.out, record)
    print(json.dumps(record, indent=1))
    if not record["ok"]:
        raise SystemExit("imagenet path check failed: " + ", ".join(
            k for k, v in checks.items() if not v))


if __name__ == "__main__":
    main()
