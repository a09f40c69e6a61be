"""`jaxood score` on a folder of PNGs vs the in-memory jitted path on the same images.

    python experiments/bench_score.py [--images 2000] [--rounds 3] [--detectors msp adascale_a]

Writes 2,000 Fashion-MNIST test images as PNGs (git-ignored, experiments/runs/), saves a
WRN-16-4 (random weights: speed does not depend on them) for 28x28x1, fits each detector,
then alternates rounds of

* in-memory: ``fitted(x)`` on the already-decoded, normalised array (one compiled program,
  fixed padded batch);
* files: exactly what ``jaxood score`` does per batch (decode + preprocess in background
  threads, the same compiled program, rows streamed to a CSV);

compile time excluded (one warm-up call each), medians over rounds, through
``experiments/harness.py`` (quiet wait, per-round XLA sgemm, loaded verdict; one figure per
detector). Also times one complete ``jaxood score`` invocation (load, compile, score, CSV).
Target: files >= 0.8x in-memory. Results merge into experiments/results/bench_score.json
under ``<detector>`` (``@label`` with ``--label``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import time

import harness
import jax
import numpy as np
from PIL import Image

import jaxood
from jaxood import cli, models
from jaxood.data.inputs import list_images, open_input
from jaxood.fitted import bind_model
from jaxood.types import PreprocessSpec

ROOT = str(harness.ROOT)


def write_pngs(folder: str, n: int, data_root: str) -> list[str]:
    x = np.load(os.path.join(data_root, "fashion_mnist.npz"))["x_test"][:n]
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, img in enumerate(x):
        p = os.path.join(folder, f"{i:05d}.png")
        if not os.path.exists(p):
            Image.fromarray(img, "L").save(p)
        paths.append(p)
    return paths


def save_model(directory: str) -> str:
    if os.path.isfile(os.path.join(directory, "manifest.json")):
        return directory
    module = models.create("wrn", 6, depth=16, widen_factor=4)
    variables = models.init_variables(module, jax.random.PRNGKey(0), (28, 28, 1))
    spec = PreprocessSpec(None, None, "bilinear", (0.286,), (0.353,), 1)
    return models.save(directory, arch="wrn", num_classes=6, variables=variables,
                       arch_kwargs={"depth": 16, "widen_factor": 4}, input_shape=(28, 28, 1),
                       preprocess=spec)


def score_files(fitted, folder: str) -> None:
    """What ``jaxood score`` does per batch: decode + preprocess, score, rows to a CSV."""
    src = open_input(folder, fitted.model.preprocess, fitted.input_shape)
    assert len(src) == len(list_images(folder))
    buf = io.StringIO()
    w = csv.writer(buf)
    for start, ok, res in fitted.iter_detect(src, strict=False):
        for i in range(len(ok)):
            w.writerow([src.names[start + i], res["score"][i], res["is_ood"][i]])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--detectors", nargs="+", default=["msp", "adascale_a"])
    p.add_argument("--data-root", default=os.path.join(ROOT, "..", "shared", "data"))
    p.add_argument("--work", default=os.path.join(ROOT, "experiments", "runs", "bench_score"))
    p.add_argument("--out", default=os.path.join(ROOT, "experiments", "results", "bench_score.json"))
    p.add_argument("--label", default="", help="free text stored in the JSON and its keys")
    harness.add_arguments(p)
    args = p.parse_args()

    folder = os.path.join(args.work, "pngs")
    write_pngs(folder, args.images, args.data_root)
    model_dir = save_model(os.path.join(args.work, "wrn16_4"))
    return harness.collect(args, args.out, args.detectors, lambda d: {
        harness.record_key(d, args.label): bench_detector(d, model_dir, folder, args)})


def bench_detector(name: str, model_dir: str, folder: str, args) -> dict:
    """One figure: files vs in-memory for detector ``name``, and one CLI invocation."""
    run = harness.Run.from_args(args, frameworks=("xla",))
    loaded = bind_model(model_dir)
    src = open_input(folder, loaded.preprocess, (28, 28, 1))
    x = src.batch(0, len(src))
    fitted = jaxood.fit(name, loaded, {"val": x[:256]}, batch_size=args.batch_size)
    fitted(x[: args.batch_size])  # compile
    times = run.alternate({"files": lambda: score_files(fitted, folder),
                           "in_memory": lambda: fitted(x)}, args.rounds, label=name)
    det_dir = fitted.save(os.path.join(args.work, f"det_{name}"), overwrite=True)
    t0 = time.perf_counter()
    rc = cli.main(["score", det_dir, folder, "-o", os.path.join(args.work, f"{name}.csv"),
                   "--quiet"])
    cli_wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"error: `jaxood score` exited with {rc} for {name}")
    n = len(x)
    fields = {
        "what": "jaxood score (PNG folder) vs in-memory fitted(x), WRN-16-4 28x28x1",
        "detector": name,
        "images": args.images,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "target": "files >= 0.8x in-memory images/s",
        **harness.compare(times, n, "images"),
        "cli_invocation_s": cli_wall,
        "cli_images_per_s_including_load_and_compile": n / cli_wall,
    }
    print(name, json.dumps({"ratio_files_over_in_memory": fields["ratio_files_over_in_memory"],
                            "cli_invocation_s": cli_wall}), flush=True)
    return run.record(fields)


if __name__ == "__main__":
    raise SystemExit(main())
