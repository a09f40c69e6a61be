"""`jaxood score` on a folder of PNGs vs the in-memory jitted path on the same images.

    python experiments/bench_score.py [--images 2000] [--rounds 3] [--detectors msp adascale_a]

Writes 2,000 Fashion-MNIST test images as PNGs (git-ignored, experiments/runs/), saves a
WRN-16-4 (random weights: speed does not depend on them) for 28x28x1, fits each detector,
then alternates rounds of

* in-memory: ``fitted(x)`` on the already-decoded, normalised array (one compiled program,
  fixed padded batch);
* files: exactly what ``jaxood score`` does per batch (decode + preprocess in background
  threads, the same compiled program, rows streamed to a CSV);

compile time excluded (one warm-up call each), medians over rounds. Also times one complete
``jaxood score`` invocation (load, compile, score, CSV). Target: files >= 0.8x in-memory.
Writes experiments/results/bench_score.json.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def write_pngs(folder: str, n: int, data_root: str) -> list[str]:
    import numpy as np
    from PIL import Image

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
    import jax

    from jaxood import models
    from jaxood.types import PreprocessSpec

    if os.path.isfile(os.path.join(directory, "manifest.json")):
        return directory
    module = models.create("wrn", 6, depth=16, widen_factor=4)
    variables = models.init_variables(module, jax.random.PRNGKey(0), (28, 28, 1))
    spec = PreprocessSpec(None, None, "bilinear", (0.286,), (0.353,), 1)
    return models.save(directory, arch="wrn", num_classes=6, variables=variables,
                       arch_kwargs={"depth": 16, "widen_factor": 4}, input_shape=(28, 28, 1),
                       preprocess=spec)


def time_files(fitted, folder: str) -> float:
    from jaxood.data.inputs import list_images, open_input

    src = open_input(folder, fitted.model.preprocess, fitted.input_shape)
    assert len(src) == len(list_images(folder))
    buf = io.StringIO()
    w = csv.writer(buf)
    t0 = time.perf_counter()
    for start, ok, res in fitted.iter_detect(src, strict=False):
        for i in range(len(ok)):
            w.writerow([src.names[start + i], res["score"][i], res["is_ood"][i]])
    return time.perf_counter() - t0


def time_memory(fitted, x) -> float:
    t0 = time.perf_counter()
    fitted(x)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--detectors", nargs="+", default=["msp", "adascale_a"])
    p.add_argument("--data-root", default=os.path.join(ROOT, "..", "shared", "data"))
    p.add_argument("--work", default=os.path.join(ROOT, "experiments", "runs", "bench_score"))
    p.add_argument("--out", default=os.path.join(ROOT, "experiments", "results", "bench_score.json"))
    args = p.parse_args()

    import numpy as np

    import jaxood
    from jaxood import cli
    from jaxood.data.inputs import open_input
    from jaxood.fitted import bind_model

    folder = os.path.join(args.work, "pngs")
    write_pngs(folder, args.images, args.data_root)
    model_dir = save_model(os.path.join(args.work, "wrn16_4"))
    results = {}
    for name in args.detectors:
        loaded = bind_model(model_dir)
        src = open_input(folder, loaded.preprocess, (28, 28, 1))
        x = src.batch(0, len(src))
        fitted = jaxood.fit(name, loaded, {"val": x[:256]}, batch_size=args.batch_size)
        time_memory(fitted, x[: args.batch_size])  # warm-up: compile
        mem, files = [], []
        for _ in range(args.rounds):  # alternating rounds
            mem.append(time_memory(fitted, x))
            files.append(time_files(fitted, folder))
        det_dir = fitted.save(os.path.join(args.work, f"det_{name}"), overwrite=True)
        t0 = time.perf_counter()
        rc = cli.main(["score", det_dir, folder, "-o", os.path.join(args.work, f"{name}.csv"),
                       "--quiet"])
        cli_wall = time.perf_counter() - t0
        assert rc == 0
        n = len(x)
        results[name] = {
            "in_memory_images_per_s": n / float(np.median(mem)),
            "files_images_per_s": n / float(np.median(files)),
            "ratio_files_over_memory": float(np.median(mem) / np.median(files)),
            "cli_invocation_s": cli_wall,
            "cli_images_per_s_including_load_and_compile": n / cli_wall,
            "rounds_s": {"in_memory": mem, "files": files},
        }
        print(name, json.dumps({k: v for k, v in results[name].items() if k != "rounds_s"}),
              flush=True)
    record = {
        "what": "jaxood score (PNG folder) vs in-memory fitted(x), WRN-16-4 28x28x1",
        "images": args.images,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "target": "files >= 0.8x in-memory images/s",
        "results": results,
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "command": " ".join(["python", *sys.argv]),
    }
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
