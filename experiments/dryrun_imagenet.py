"""A full-pipeline dry run of the ``imagenet`` benchmark on synthetic JPEGs (issue 13 §5).

1. Generates synthetic ImageNet-sized JPEGs (``bench_decode.generate``: random crops/resizes of
   the sklearn sample photos, JPEG quality 70-95) for every list the ``imagenet`` benchmark
   opens, in OpenOOD v1.5's layout under ``--work`` (git-ignored)::

       benchmark_imglist/imagenet/{val,test}_imagenet.txt, val_openimage_o.txt,
           test_{ssb_hard,ninco,inaturalist,textures,openimage_o}.txt
       images_largescale/<set>/<split>/images/c<k>/<i>.jpg  (textures: images_classic/)

   ID lines carry class ids, OOD lines ``-1``. Only the sizes are small (``--sizes``).
2. Saves torchvision ``resnet50(weights=None)`` as a ``.pth`` and converts it with
   ``jaxood.convert.torchvision.convert`` (the ``jaxood convert`` path; OpenOOD's 256/224
   preprocessing, as for the IMAGENET1K_V1 weights).
3. Times one decode-only pass over every list (``ImageListSource``, as extraction reads).
4. Runs ``jaxood bench`` (runner API; the equivalent CLI command is recorded) with MSP, SCALE
   and AdaSCALE-A, APS on, and records the runner's per-stage timings (``jaxood.features.timing``:
   decode waits, first batch incl. compile, network passes, cache writes, APS, evaluation,
   fitted-detector and result writing).

Usage::

    python experiments/dryrun_imagenet.py --sizes 8 --out /tmp/dryrun_smoke.json   # smoke test
    python experiments/dryrun_imagenet.py                                          # recorded

Timed through ``experiments/harness.py`` from the decode pass on (quiet wait, XLA sgemm
before the decode pass and before the benchmark, loaded verdict). Results merge into
``experiments/results/dryrun_imagenet.json`` under ``images<N>_batch<B>``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

import bench_decode  # experiments/bench_decode.py: the synthetic JPEG generator
import harness

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, "runs", "dryrun_imagenet")
RESULTS = os.path.join(HERE, "results", "dryrun_imagenet.json")
DETECTORS = ("msp", "scale", "adascale_a")

#: Images per list of the recorded run (OpenOOD v1.5's sizes in the benchmark definition).
SIZES = {
    "id_val": 300, "id_test": 300, "ood_val": 150,
    "near/ssb_hard": 150, "near/ninco": 100,
    "far/inaturalist": 150, "far/textures": 100, "far/openimage_o": 150,
}  # fmt: skip
#: Image folders under images_largescale/ (or images_classic/): OpenImage-O's val and test
#: images are distinct sets, so they get distinct folders.
FOLDERS = {"id_train": "imagenet_1k/train", "id_val": "imagenet_1k/val",
           "id_test": "imagenet_1k/test", "ood_val": "openimage_o/val"}


def benchmark_refs(benchmark: str = "imagenet", train: bool = False):
    """``{role: SetRef}`` of every list an ImageNet benchmark opens (ID-train with ``train``;
    never the covariate-shifted ID sets)."""
    from jaxood.data import benchmarks

    b = benchmarks.get(benchmark)
    refs = {"id_train": b.id_train} if train else {}
    refs.update({"id_val": b.id_val, "id_test": b.id_test, "ood_val": b.ood_val})
    refs.update({f"near/{r.name}": r for r in b.near})
    refs.update({f"far/{r.name}": r for r in b.far})
    return refs


def make_layout(root: str, sizes: dict[str, int], benchmark: str = "imagenet",
                train: bool = False) -> dict:
    """Writes the images and lists (idempotent per set); returns per-set image statistics."""
    stats = {}
    for seed, (role, ref) in enumerate(benchmark_refs(benchmark, train).items()):
        folder = FOLDERS.get(role, f"{ref.name}/test")
        set_dir = os.path.join(root, ref.data_dir, folder)
        inner = bench_decode.generate(set_dir, sizes[role], seed=seed)
        ood = role not in ("id_train", "id_val", "id_test")
        lines = []
        with open(inner) as f:
            for line in f:
                rel, label = line.split()
                lines.append(f"{folder}/images/{rel} {-1 if ood else int(label)}\n")
        list_path = os.path.join(root, ref.imglist)
        os.makedirs(os.path.dirname(list_path), exist_ok=True)
        with open(list_path + ".tmp", "w") as f:
            f.writelines(lines)
        os.replace(list_path + ".tmp", list_path)
        stats[role] = {"list": ref.imglist, "images_dir": f"{ref.data_dir}{folder}/images",
                       **bench_decode.dataset_stats(set_dir, inner)}
    return stats


def convert_random_resnet50(work: str) -> str:
    """torchvision ResNet-50 with random weights -> .pth -> jaxood model directory."""
    import torch
    import torchvision

    from jaxood.convert.torchvision import convert

    out = os.path.join(work, "resnet50_random")
    if os.path.isdir(out):
        return out
    torch.manual_seed(0)
    pth = os.path.join(work, "resnet50_random.pth")
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), pth)
    return convert(pth, "resnet50", out, num_classes=1000)


def decode_pass(root: str, spec, batch: int) -> dict:
    """One decode-only pass over every list, in extraction-sized batches: images/s."""
    from jaxood.data import imglist as il

    n, t0 = 0, time.perf_counter()
    for ref in benchmark_refs().values():
        lst = il.read_imglist(os.path.join(root, ref.imglist), os.path.join(root, ref.data_dir))
        src = il.ImageListSource(lst, spec)
        for i in range(0, len(src), batch):
            n += len(src.batch(i, min(len(src), i + batch)))
        src.close()
    seconds = time.perf_counter() - t0
    return {"images": n, "seconds": round(seconds, 3), "images_per_s": round(n / seconds, 2),
            "threads": il.default_workers()}


def summarise(stages: dict, write_report_s: float) -> dict:
    """Groups the runner's stages into the dry run's stage table (seconds, images/s)."""
    def pick(*prefixes):
        rows = [v for k, v in stages.items() if k.startswith(prefixes)]
        s = sum(r["seconds"] for r in rows)
        n = sum(r["items"] for r in rows)
        return {"seconds": round(s, 3), "items": n,
                **({"items_per_s": round(n / s, 3)} if n and s > 0 else {})}

    out = {
        "open (load model, verify lists)": pick("open"),
        "decode wait, features pass": pick("features/decode"),
        "compile + first batch, features pass": pick("features/first_batch"),
        "forward (logits + features)": pick("features/network"),
        "decode wait, AdaSCALE pass": pick("extract/adascale_a/decode"),
        "compile + first batch, AdaSCALE pass": pick("extract/adascale_a/first_batch"),
        "AdaSCALE extra passes (grad + perturbed forward)": pick("extract/adascale_a/network"),
        # Since the features come from the AdaSCALE pass (one pass per split, one decode):
        "decode wait, features + AdaSCALE pass": pick("features+extract/adascale_a/decode"),
        "compile + first batch, features + AdaSCALE pass":
            pick("features+extract/adascale_a/first_batch"),
        "features + AdaSCALE pass (clean forward in the gradient, perturbed forward)":
            pick("features+extract/adascale_a/network"),
        "bit check of the one pass (one batch, both programs)":
            pick("check/features+extract/adascale_a"),
        "feature cache writes": pick("features/cache_write", "extract/adascale_a/cache_write",
                                     "features+extract/adascale_a/cache_write"),
    }
    for det in DETECTORS:
        out[f"APS {det} (fit + grid scoring)"] = pick(f"aps/{det}")
        out[f"evaluate {det} (test scores)"] = pick(f"evaluate/{det}")
        out[f"metrics {det}"] = pick(f"metrics/{det}")
    out["write fitted detectors"] = pick("save_fitted/")
    out["write results store"] = pick("write_results")
    out["write report (tables, plots)"] = {"seconds": round(write_report_s, 3), "items": 0}
    return out


def run_bench(root: str, model_dir: str, out_dir: str, batch: int, progress: bool):
    from jaxood.bench import runner

    cfg = runner.BenchConfig(
        "imagenet", [model_dir], detectors=list(DETECTORS), data_root=root, out_dir=out_dir,
        batch_size=batch, progress=progress, strict=True,
    )  # fmt: skip
    t0 = time.perf_counter()
    result = runner.run(cfg)
    wall = time.perf_counter() - t0
    with open(os.path.join(result.out_dir, "runs.jsonl")) as f:
        log = [json.loads(line) for line in f][-1]
    return result, log, wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, default=None,
                    help="images per list (default: the recorded SIZES)")
    ap.add_argument("--work", default=WORK, help="data root + model + bench output")
    ap.add_argument("--batch", type=int, default=25,
                    help="extraction batch (the recorded sizes are multiples of 25: no padding)")
    ap.add_argument("--out", default=RESULTS)
    ap.add_argument("--fresh", action="store_true", help="delete earlier bench output + cache")
    ap.add_argument("--quiet", action="store_true")
    harness.add_arguments(ap)
    args = ap.parse_args()
    sizes = dict(SIZES) if args.sizes is None else {k: args.sizes for k in SIZES}
    root = os.path.join(args.work, f"data_{sum(sizes.values())}")
    bench_out = os.path.join(args.work, f"bench_{sum(sizes.values())}")
    if args.fresh:  # a resumed run would skip the cached passes: time from scratch
        shutil.rmtree(bench_out, ignore_errors=True)
    os.makedirs(args.work, exist_ok=True)

    t0 = time.perf_counter()
    data_stats = make_layout(root, sizes)
    generate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model_dir = convert_random_resnet50(args.work)
    convert_s = time.perf_counter() - t0

    from jaxood import models

    spec = models.load(model_dir).preprocess
    run = harness.Run.from_args(args, frameworks=("xla",))  # the timed part starts here
    run.checkpoint()
    decode = decode_pass(root, spec, args.batch)
    print(f"decode-only: {decode}", flush=True)
    run.checkpoint()
    result, log, wall = run_bench(root, model_dir, bench_out, args.batch, not args.quiet)
    stages = result.info["timings"][0]["stages"]
    record = {
        "script": "experiments/dryrun_imagenet.py",
        "equivalent_cli": (
            f"jaxood bench --benchmark imagenet --model {model_dir} --data-root {root} "
            f"--detectors {' '.join(DETECTORS)} --batch-size {args.batch} --out {bench_out}"
        ),
        "sizes": sizes,
        "images_total": sum(sizes.values()),
        "data": data_stats,
        "model": {"arch": "resnet50", "weights": "random (torch.manual_seed(0))",
                  "dir": model_dir, "preprocess": spec.to_dict()},
        "batch_size": args.batch,
        # Extraction pads each list's last batch: rates count real images only, so padded
        # rows (computed, then dropped) would lower them; the recorded sizes are multiples
        # of the batch.
        "padded_rows": sum(-n % args.batch for n in sizes.values()),
        "setup_seconds": {"generate_jpegs": round(generate_s, 2), "convert": round(convert_s, 2)},
        "decode_only_pass": decode,
        "bench_wall_s": round(wall, 2),
        "bench_total_s_runner": result.info["total_s"],
        "stage_summary": summarise(stages, log["write_report_s"]),
        "stages_raw": stages,
        "aps_grid_points": {d: len(result.aps[d][0]["grid"]) for d in DETECTORS},
        "network_passes": result.info["network_passes"],
        "auroc_random_weights": {d: {g: result.table[d][f"{g}ood"]["AUROC"][0]
                                     for g in ("near", "far")} for d in DETECTORS},
    }
    print(json.dumps(record["stage_summary"], indent=1))
    key = f"images{sum(sizes.values())}_batch{args.batch}"
    return harness.finish(args, args.out, {key: run.record(record)})


if __name__ == "__main__":
    raise SystemExit(main())
