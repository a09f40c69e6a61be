"""Projects the wall time of the AdaSCALE paper's ImageNet-1k table from the dry run's rates.

Reads the measured per-stage rates of ``experiments/dryrun_imagenet.py`` (a full-size run and,
optionally, a smaller one to split APS/evaluation time into a fixed and a per-image part),
the decode rate per core of ``results/bench_decode.json``, the set sizes of jaxood's
``imagenet-adascale`` benchmark and the FLOPs of the architectures (torchvision's weight
metadata), combines them with the published accelerator figures in :data:`PUBLISHED`, and
prints the markdown tables of ``results/SCALING.md`` (every assumption is a named constant
here; change one and re-run).

Usage::

    python experiments/scaling_estimate.py \\
        --dryrun experiments/results/dryrun_imagenet.json \\
        --small experiments/results/dryrun_imagenet_small.json
"""

from __future__ import annotations

import argparse
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))

#: The paper's eight ImageNet-1k architectures (Table 1) and the torchvision weights jaxood
#: converts by default (RegNet-Y-16GF: SWAG E2E at 384 px, as OpenOOD's eval script).
ARCHS = {
    "ResNet-50": ("resnet50", "ResNet50_Weights.IMAGENET1K_V1"),
    "ResNet-101": ("resnet101", "ResNet101_Weights.IMAGENET1K_V1"),
    "RegNet-Y-16GF": ("regnet_y_16gf", "RegNet_Y_16GF_Weights.IMAGENET1K_SWAG_E2E_V1"),
    "ResNeXt-50": ("resnext50_32x4d", "ResNeXt50_32X4D_Weights.IMAGENET1K_V1"),
    "DenseNet-201": ("densenet201", "DenseNet201_Weights.IMAGENET1K_V1"),
    "EfficientNetV2-L": ("efficientnet_v2_l", "EfficientNet_V2_L_Weights.IMAGENET1K_V1"),
    "ViT-B/16": ("vit_b_16", "ViT_B_16_Weights.IMAGENET1K_V1"),
    "Swin-B": ("swin_b", "Swin_B_Weights.IMAGENET1K_V1"),
}

#: Published accelerator figures (NVIDIA DeepLearningExamples,
#: PaddlePaddle/Classification/RN50v1.5/README.md, "Inference performance: NVIDIA DGX A100
#: (1x A100 80GB)" and "Training performance: NVIDIA DGX A100 (8x A100 80GB)").
PUBLISHED = {
    "a100_resnet50_tf32_inference_bs256": 3283.94,  # img/s, 1 GPU, framework (not TensorRT)
    "a100_resnet50_tf32_training_1gpu": 1024.0,  # img/s (forward + backward)
    "a100_resnet50_tf32_training_8gpu": 8013.0,  # img/s (7.83x of 1 GPU)
}
GPUS_PER_HOST = 8
#: Places (far-OOD in the paper) has no verified list size (spec §4.6): assumed.
PLACES_ASSUMED = 10_000
#: Decode threads: jaxood's ImageListSource uses min(8, CPUs) threads per process.
THREADS_ONE_PROCESS = 8
#: With one process per GPU (``jaxood bench --distributed``, 8 processes per host).
THREADS_PROCESS_PER_GPU = 8 * GPUS_PER_HOST
#: ILSVRC2012_img_val.tar: 6.3 GB for 50,000 JPEGs (storage read per decoded image).
JPEG_KB = 126


def flops(weights: str) -> float:
    """GFLOPs per image from torchvision's weight metadata (``meta["_ops"]``)."""
    from torchvision import models

    return float(models.get_weight(weights).meta["_ops"])


def crop(weights: str) -> int:
    from torchvision import models

    return int(models.get_weight(weights).transforms().crop_size[0])


def tv_archs() -> dict:
    from jaxood.convert.torchvision import ARCHS as CONVERTIBLE

    return CONVERTIBLE


def set_sizes() -> dict[str, int]:
    from jaxood.data import benchmarks

    b = benchmarks.get("imagenet-adascale")
    refs = {"id_val": b.id_val, "id_test": b.id_test, "ood_val": b.ood_val}
    refs.update({f"near/{r.name}": r for r in b.near})
    refs.update({f"far/{r.name}": r for r in b.far})
    return {k: r.count if r.count is not None else PLACES_ASSUMED for k, r in refs.items()}


def rates(run: dict) -> dict:
    """Per-image seconds and fixed seconds of the measured run."""
    st, n = run["stages_raw"], run["images_total"]
    if "features/network" not in st:
        raise SystemExit("this estimate models the two-pass runner (a features pass and an "
                         "AdaSCALE pass); the run given has one pass (features+extract/*): its "
                         "rates need a one-pass model here first")
    sizes = run["sizes"]
    n_fit = sizes["id_val"] + sizes["ood_val"]

    def s(name):
        return st.get(name, {}).get("seconds", 0.0)

    def rate(name):
        return st[name]["items"] / st[name]["seconds"]

    b = run["batch_size"]
    return {
        "n": n, "n_fit": n_fit, "n_eval": n - n_fit,
        "forward_img_s": rate("features/network"),
        "adascale_img_s": rate("extract/adascale_a/network"),
        "decode_wait_s_per_img_pass": (s("features/decode") + s("extract/adascale_a/decode"))
        / (2 * n),
        "cache_write_s_per_img": (s("features/cache_write") + s("extract/adascale_a/cache_write"))
        / n,
        # First batch of each compiled function minus one batch at the steady rate.
        "compile_s": s("features/first_batch") - b / rate("features/network")
        + s("extract/adascale_a/first_batch") - b / rate("extract/adascale_a/network"),
        "aps_s": s("aps/adascale_a"),
        "evaluate_s": s("evaluate/adascale_a") + s("metrics/adascale_a"),
        "fixed_s": s("open") + s("save_fitted/adascale_a") + s("write_results")
        + run["stage_summary"]["write report (tables, plots)"]["seconds"],
    }  # fmt: skip


def linear(big: dict, small: dict | None, key: str, n_key: str) -> tuple[float, float]:
    """``(fixed, per image)`` seconds of a stage from two runs; from one run, all of it is
    counted per image (an upper bound)."""
    if small is None or big[n_key] == small[n_key]:
        return 0.0, big[key] / big[n_key]
    per = max(0.0, (big[key] - small[key]) / (big[n_key] - small[n_key]))
    return max(0.0, big[key] - per * big[n_key]), per


def project(r: dict, small: dict | None, decode_core: float) -> dict:
    sizes = set_sizes()
    n = sum(sizes.values())
    n_fit = sizes["id_val"] + sizes["ood_val"]  # what APS scores
    aps = linear(r, small, "aps_s", "n_fit")
    ev = linear(r, small, "evaluate_s", "n_eval")
    # AdaSCALE-A and -L: the same extract (o, eps) -> one cached extra pass; APS and evaluation
    # run for each (assumed: L costs what A measured).
    scoring = 2 * (aps[0] + aps[1] * n_fit + ev[0] + ev[1] * (n - n_fit)) + 2 * r["fixed_s"]
    base = flops(ARCHS["ResNet-50"][1])
    ratio = r["adascale_img_s"] / r["forward_img_s"]
    gpu_fwd = PUBLISHED["a100_resnet50_tf32_inference_bs256"]
    rows = []
    for name, (arch, weights) in ARCHS.items():
        c = flops(weights) / base
        cpu = {
            "forward": n * c / r["forward_img_s"],
            "adascale": n * c / r["adascale_img_s"],
            "decode": 2 * n * r["decode_wait_s_per_img_pass"],
            "cache": n * r["cache_write_s_per_img"],
            "compile": r["compile_s"],
            "aps_eval_write": scoring,
        }
        hosts = {}
        for h in (1, 4):
            fwd_rate = h * GPUS_PER_HOST * gpu_fwd / c
            ada_rate = fwd_rate * ratio
            dec = h * THREADS_PROCESS_PER_GPU * decode_core
            hosts[h] = {
                "forward": n / min(fwd_rate, dec), "adascale": n / min(ada_rate, dec),
                "forward_bound": "decode" if dec < fwd_rate else "GPU",
                "adascale_bound": "decode" if dec < ada_rate else "GPU",
                "compile": r["compile_s"], "cache": cpu["cache"] / h,
                "aps_eval_write": scoring,
            }  # fmt: skip
        d = tv_archs()[arch].feature_dim
        rows.append({"arch": name, "tv": arch, "weights": weights, "gflops": flops(weights),
                     "cost": c, "crop": crop(weights), "feature_dim": d,
                     # cached per image: logits [1000] + feature [D] + perturbed feature [D]
                     "cache_gb": n * (1000 + 2 * d) * 4 / 1e9, "cpu": cpu, "hosts": hosts})
    return {"sizes": sizes, "n": n, "n_fit": n_fit, "aps": aps, "evaluate": ev,
            "adascale_over_forward_time": 1 / ratio, "rows": rows, "decode_core": decode_core}


def fmt_s(s: float) -> str:
    if s >= 86400:
        return f"{s / 86400:.1f} d"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.0f} s"


def markdown(p: dict) -> str:
    out = ["| architecture | torchvision weights | input px | GFLOPs | cost × ResNet-50 | D | "
           "feature cache |", "|---|---|---|---|---|---|---|"]
    for row in p["rows"]:
        out.append(f"| {row['arch']} | {row['weights'].split('.')[-1]} | {row['crop']} | "
                   f"{row['gflops']:.2f} | {row['cost']:.2f} | {row['feature_dim']} | "
                   f"{row['cache_gb']:.1f} GB |")
    out += ["", "| architecture | forward pass | AdaSCALE pass | decode wait | cache writes | "
            "compile | APS+eval+write (A and L) | **total, this CPU** |",
            "|---|---|---|---|---|---|---|---|"]
    tot = {"cpu": 0.0, 1: 0.0, 4: 0.0}
    for row in p["rows"]:
        c = row["cpu"]
        t = sum(c.values())
        tot["cpu"] += t
        out.append(f"| {row['arch']} | {fmt_s(c['forward'])} | {fmt_s(c['adascale'])} | "
                   f"{fmt_s(c['decode'])} | {fmt_s(c['cache'])} | {fmt_s(c['compile'])} | "
                   f"{fmt_s(c['aps_eval_write'])} | **{fmt_s(t)}** |")
    cols = ("forward", "adascale", "decode", "cache", "compile", "aps_eval_write")
    sums = [fmt_s(sum(r["cpu"][k] for r in p["rows"])) for k in cols]
    out.append(f"| **all 8** | {' | '.join(sums)} | **{fmt_s(tot['cpu'])}** |")
    out += ["", "| architecture | hosts | forward pass (bound) | AdaSCALE pass (bound) | "
            "compile | cache writes | APS+eval+write (A and L) | **total** |",
            "|---|---|---|---|---|---|---|---|"]
    for h in (1, 4):
        for row in p["rows"]:
            g = row["hosts"][h]
            t = sum(v for v in g.values() if isinstance(v, float))
            tot[h] += t
            out.append(f"| {row['arch']} | {h} | {fmt_s(g['forward'])} ({g['forward_bound']}) | "
                       f"{fmt_s(g['adascale'])} ({g['adascale_bound']}) | {fmt_s(g['compile'])} | "
                       f"{fmt_s(g['cache'])} | {fmt_s(g['aps_eval_write'])} | **{fmt_s(t)}** |")
        cols = ("forward", "adascale", "compile", "cache", "aps_eval_write")
        sums = [fmt_s(sum(r["hosts"][h][k] for r in p["rows"])) for k in cols]
        out.append(f"| **all 8** | {h} | {' | '.join(sums)} | **{fmt_s(tot[h])}** |")
    return "\n".join(out)


def measured_table(big: dict, small: dict | None) -> str:
    """The dry runs' stage table (seconds, images/s) as markdown."""
    runs = [big] + ([small] if small else [])
    head = " | ".join(f"{r['images_total']} images: s | images/s" for r in runs)
    out = [f"| stage | {head} |", "|---" * (1 + 2 * len(runs)) + "|"]

    def cells(row):
        if row is None:
            return "— | —"
        rate = f"{row['items_per_s']:,.1f}" if "items_per_s" in row else ""
        sec = row["seconds"]
        return f"{sec:,.2f} | {rate}" if sec >= 1 else f"{sec:.3f} | {rate}"

    d = [r["decode_only_pass"] for r in runs]
    out.append("| decode only, no network (before the run) | " + " | ".join(
        f"{x['seconds']:.2f} | {x['images_per_s']:.1f}" for x in d) + " |")
    order = ("open", "decode wait, features", "compile + first batch, features", "forward",
             "decode wait, AdaSCALE", "compile + first batch, AdaSCALE", "AdaSCALE extra",
             "feature cache", "APS", "evaluate", "metrics", "write")
    names = sorted(big["stage_summary"],
                   key=lambda k: next(i for i, o in enumerate(order) if k.startswith(o)))
    for name in names:
        out.append(f"| {name} | " + " | ".join(
            cells(r["stage_summary"].get(name)) for r in runs) + " |")
    out.append("| **wall time of the runner** | " + " | ".join(
        f"**{r['bench_wall_s']:.1f}** | " for r in runs) + " |")
    return "\n".join(out)


#: The records SCALING.md's projection was computed from (two-pass runner; the decode run with
#: its 1-thread variant). Results files hold one record per key since 2026-12-07.
DRYRUN_KEY = "images1400_batch25@two-pass runner (before 2026-12-07, unlabelled load)"
DECODE_KEY = "count5000@before 2026-12-07 (loaded: load average 7.9)"


def read_record(path: str, key: str) -> dict:
    """The record ``key`` of a results file, or the whole file when it is one flat record."""
    with open(path) as f:
        data = json.load(f)
    if key in data:
        return data[key]
    if any(isinstance(v, dict) and "recorded_at" in v for v in data.values()):
        raise SystemExit(f"{path}: no record {key!r}; its keys: {sorted(data)} "
                         "(pass --dryrun-key / --decode-key)")
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dryrun", default=os.path.join(HERE, "results", "dryrun_imagenet.json"))
    ap.add_argument("--small", default=None, help="a smaller dry run (fixed vs per-image split)")
    ap.add_argument("--decode", default=os.path.join(HERE, "results", "bench_decode.json"))
    ap.add_argument("--dryrun-key", default=DRYRUN_KEY, help="record of --dryrun to project from")
    ap.add_argument("--decode-key", default=DECODE_KEY, help="record of --decode to read")
    ap.add_argument("--json", default=None, help="also write the projection as JSON")
    args = ap.parse_args()
    big_run = read_record(args.dryrun, args.dryrun_key)
    small_run = None
    if args.small:
        with open(args.small) as f:
            small_run = json.load(f)
    r = rates(big_run)
    small = rates(small_run) if small_run else None
    loaders = read_record(args.decode, args.decode_key)["loaders"]
    decode_core = loaders["images_per_s_median"]["jaxood_imagelist_1_thread"]
    p = project(r, small, decode_core)
    print(json.dumps({k: v for k, v in p.items() if k != "rows"}, indent=1))
    print(json.dumps(r, indent=1))
    print(measured_table(big_run, small_run))
    print()
    print(markdown(p))
    if args.json:
        from jaxood.fsutil import atomic_write_json

        atomic_write_json(args.json, {"measured": r, "projection": p, "published": PUBLISHED})


if __name__ == "__main__":
    main()
