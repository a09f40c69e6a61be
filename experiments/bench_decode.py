"""Image-list decoding throughput vs torchvision's loader and vs the network (issue 13 §2).

1. Generates (once, idempotent) ``--count`` JPEGs at ImageNet sizes from the two sklearn
   sample photos (random crops, resizes to ImageNet-like sizes, JPEG quality 70-95, ~2%
   grayscale) in an ``ImageFolder`` layout under ``experiments/runs/decode_jpegs/`` (git-ignored),
   plus an OpenOOD image list ``imglist.txt`` over the same files.
2. Times, in alternating rounds in this one process (the box is shared; medians reported):
   * torchvision ``ImageFolder`` + ``DataLoader(num_workers=2)`` through OpenOOD's eval transform
     (Convert RGB, Resize 256, CenterCrop 224, ToTensor, Normalize), one full pass per round;
   * jaxood's :class:`~jaxood.data.imglist.ImageListSource` reading the same images in
     batches, sequentially, as ``jaxood bench``'s extraction does;
   * optionally other loader variants (``--variants``) for the design decision.
3. Times ResNet-50 (random weights) forward and AdaSCALE scoring per image on this CPU, and
   extraction-style loops that decode (with read-ahead) and score, vs scoring preloaded
   arrays: the decode overhead when the loader feeds the network.

Usage::

    python experiments/bench_decode.py                      # generate 5000, bench, write JSON
    python experiments/bench_decode.py --rounds 3 --skip-network

Writes ``experiments/results/bench_decode.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "runs", "decode_jpegs")
RESULTS = os.path.join(HERE, "results", "bench_decode.json")
NUM_CLASSES = 10


# ----------------------------------------------------------------------------- generation


def _random_image(photos, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """A random crop of a sample photo resized to an ImageNet-like size; JPEG quality."""
    src = photos[int(rng.integers(len(photos)))]
    w0, h0 = src.size
    area = rng.uniform(0.25, 1.0)
    cw = int(w0 * np.sqrt(area) * rng.uniform(0.75, 1.0))
    ch = int(h0 * np.sqrt(area) * rng.uniform(0.75, 1.0))
    x0, y0 = int(rng.integers(0, w0 - cw + 1)), int(rng.integers(0, h0 - ch + 1))
    img = src.crop((x0, y0, x0 + cw, y0 + ch))
    # ImageNet val: most images are 500 px on the long side (500x375, 500x333, 375x500);
    # a minority are smaller or much larger.
    long = 500 if rng.random() < 0.7 else int(rng.integers(250, 1400))
    aspect = float(rng.choice([4 / 3, 3 / 2, 1.0, 3 / 4, 2 / 3]))
    size = (long, round(long / aspect)) if aspect >= 1 else (round(long * aspect), long)
    img = img.resize(size, Image.Resampling.BICUBIC)
    if rng.random() < 0.02:
        img = img.convert("L")
    return img, int(rng.integers(70, 96))


def generate(root: str, count: int, seed: int = 0) -> str:
    """Writes ``count`` JPEGs ``<root>/images/c<k>/<i>.jpg`` and ``<root>/imglist.txt``.

    Idempotent: an existing complete set (same count) is reused. Returns the list path.
    """
    from sklearn.datasets import load_sample_images

    list_path = os.path.join(root, "imglist.txt")
    if os.path.isfile(list_path):
        with open(list_path) as f:
            if sum(1 for _ in f) == count:
                return list_path
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(count):
        img, quality = _random_image(photos, rng)
        rel = f"c{i % NUM_CLASSES}/{i:06d}.jpg"
        path = os.path.join(root, "images", rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        img.save(path, quality=quality)
        lines.append(f"{rel} {i % NUM_CLASSES}\n")
    tmp = list_path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(lines)
    os.replace(tmp, list_path)
    return list_path


def dataset_stats(root: str, list_path: str) -> dict:
    """Mean/percentiles of the generated images' sizes and file sizes."""
    sizes, nbytes = [], []
    with open(list_path) as f:
        rels = [line.split(" ", 1)[0] for line in f]
    for rel in rels:
        path = os.path.join(root, "images", rel)
        with Image.open(path) as im:
            sizes.append(im.size)
        nbytes.append(os.path.getsize(path))
    px = np.asarray([w * h for w, h in sizes])
    return {
        "count": len(rels),
        "megapixels_mean": round(float(px.mean()) / 1e6, 4),
        "megapixels_p5_p50_p95": [round(float(q) / 1e6, 4) for q in np.percentile(px, [5, 50, 95])],
        "kbytes_mean": round(float(np.mean(nbytes)) / 1024, 1),
        "grayscale": sum(Image.open(os.path.join(root, "images", r)).mode == "L" for r in rels),
    }


# ----------------------------------------------------------------------------- loaders


def torchvision_pass(root: str, spec, batch: int, workers: int) -> int:
    """One pass of ``ImageFolder`` + ``DataLoader`` with OpenOOD's eval transform."""
    import torch
    import torchvision
    from torchvision import transforms as T

    tf = T.Compose([
        T.Lambda(lambda im: im.convert("RGB")),  # OpenOOD's Convert('RGB')
        T.Resize(spec.resize_size, interpolation=T.InterpolationMode.BILINEAR),
        T.CenterCrop(spec.crop_size),
        T.ToTensor(),
        T.Normalize(spec.mean, spec.std),
    ])  # fmt: skip
    ds = torchvision.datasets.ImageFolder(os.path.join(root, "images"), tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers)
    return sum(len(x) for x, _ in loader)


def jaxood_pass(lst, spec, batch: int, workers: int | None) -> int:
    """One pass of ``ImageListSource.batch`` over consecutive ranges (as extraction reads)."""
    from jaxood.data.imglist import ImageListSource

    src = ImageListSource(lst, spec, workers=workers)
    n = sum(len(src.batch(i, min(len(lst), i + batch))) for i in range(0, len(lst), batch))
    src.close()
    return n


def grain_processes_pass(lst, spec, batch: int, workers: int) -> int:
    """Design alternative: the same decoder in grain worker *processes* (``mp_prefetch``)."""
    import grain
    from absl import flags

    from jaxood.data.imglist import DecodedImages

    flags.FLAGS.mark_as_parsed()  # grain's workers read absl flags
    ds = grain.MapDataset.source(DecodedImages(lst, spec)).to_iter_dataset(
        grain.ReadOptions(num_threads=1, prefetch_buffer_size=batch)
    )
    ds = ds.batch(batch).mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return sum(len(x) for x in ds)


def loader_rounds(lst, spec, args) -> dict:
    """Images/s of each loader, one full pass per round, loaders alternating."""
    runs = {
        "torchvision_dataloader": lambda: torchvision_pass(DATA, spec, args.batch, args.workers),
        "jaxood_imagelist": lambda: jaxood_pass(lst, spec, args.batch, None),
    }
    if not args.skip_variants:
        runs["jaxood_imagelist_1_thread"] = lambda: jaxood_pass(lst, spec, args.batch, 1)
        runs["grain_processes"] = lambda: grain_processes_pass(lst, spec, args.batch, args.workers)
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            n = run()
            dt = time.perf_counter() - t0
            if n != len(lst):
                raise RuntimeError(f"{name} read {n} images, expected {len(lst)}")
            rates[name].append(n / dt)
            print(f"round {r}: {name} {n / dt:.1f} images/s  load {os.getloadavg()[0]:.2f}")
    med = {k: statistics.median(v) for k, v in rates.items()}
    base = med["torchvision_dataloader"]
    return {
        "images_per_s_median": {k: round(v, 1) for k, v in med.items()},
        "images_per_s_rounds": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "over_torchvision": {k: round(v / base, 3) for k, v in med.items()},
        "paired_ratio_rounds_jaxood_over_torchvision": [
            round(a / b, 3)
            for a, b in zip(rates["jaxood_imagelist"], rates["torchvision_dataloader"])
        ],
    }


def startup_rounds(lst, spec, args, n: int = 64) -> dict:
    """Seconds for one pass over the first ``n`` images (one batch): mostly start-up cost,
    paid per dataset and extraction pass (a benchmark reads ~10 image lists, twice or more)."""
    from jaxood.data.imglist import ImageList

    sub = ImageList(lst.paths[:n], lst.labels[:n], lst.data_dir, lst.source)
    runs = {
        "jaxood_imagelist": lambda: jaxood_pass(sub, spec, n, None),
        "grain_processes": lambda: grain_processes_pass(sub, spec, n, args.workers),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    return {
        "images": n,
        "seconds_median": {k: round(statistics.median(v), 3) for k, v in times.items()},
        "seconds_rounds": {k: [round(x, 3) for x in v] for k, v in times.items()},
    }


# ----------------------------------------------------------------------------- network


class Preloaded:
    """The same images decoded beforehand (the no-decode reference for extraction)."""

    def __init__(self, x: np.ndarray, labels: np.ndarray, key: str):
        self.x, self.labels, self._key = x, labels, key

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, start: int, stop: int) -> np.ndarray:
        return self.x[start:stop]

    def fingerprint(self) -> str:
        return self._key


def network_rounds(lst, spec, args) -> dict:
    """ResNet-50 (random weights) through ``jaxood.features.extract.extract``, as ``jaxood bench``
    runs it: MSP's forward pass and AdaSCALE's extraction (forward + input gradient +
    forward of the perturbed input), from preloaded arrays vs decoding the image list
    (read-ahead threads, and decoding in the calling thread for reference)."""
    import shutil
    import tempfile

    import jax

    from jaxood import models
    from jaxood.data.imglist import ImageList, ImageListSource
    from jaxood.detectors import adascale
    from jaxood.features.cache import CacheEntry
    from jaxood.features.extract import extract
    from jaxood.scoring import features_fn

    module = models.create("resnet50", 1000)
    variables = models.init_variables(module, jax.random.PRNGKey(0), (224, 224, 3))
    model = models.flax_model(module)
    n = args.network_images
    sub = ImageList(lst.paths[:n], lst.labels[:n], lst.data_dir, lst.source)
    preloaded = Preloaded(ImageListSource(sub, spec).batch(0, n), sub.labels, "preloaded")

    def adascale_fn(v, x):
        feats, perturbed = adascale.perturbed_features(model, v, x, o=0.05, eps=0.5)
        return {"feature": feats.feature, "feature_perturbed": perturbed}

    fns = {"forward": features_fn(model, ("logits", "feature")), "adascale": adascale_fn}
    sources = {
        "preloaded": lambda: preloaded,
        "decode_readahead": lambda: ImageListSource(sub, spec),
        "decode_in_caller": lambda: ImageListSource(sub, spec, workers=0),
    }
    cache_root = tempfile.mkdtemp(prefix="bench_decode_cache-")
    counter = iter(range(1_000_000))

    def run(fn, source) -> float:
        entry = CacheEntry(cache_root, {"run": next(counter)})  # always a fresh extraction
        t0 = time.perf_counter()
        extract(fn, variables, source, [(entry, None)], batch_size=args.net_batch,
                shard_batches=4, progress=False)  # fmt: skip
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {}
    try:
        for fname, fn in fns.items():
            run(fn, Preloaded(preloaded.x[: args.net_batch], sub.labels, "warm"))  # compile
            for r in range(args.network_rounds):
                for sname, make in sources.items():
                    dt = run(fn, make())
                    times.setdefault(f"{fname}/{sname}", []).append(dt)
                    print(f"round {r}: {fname} {sname} {n / dt:.2f} images/s")
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "images": n,
        "batch": args.net_batch,
        "images_per_s_median": {k: round(n / v, 3) for k, v in med.items()},
        "seconds_rounds": {k: [round(x, 2) for x in v] for k, v in times.items()},
    }
    for fname in fns:  # wall time with decoding / wall time without: the decode overhead
        base = times[f"{fname}/preloaded"]
        for sname in ("decode_readahead", "decode_in_caller"):
            paired = [a / b for a, b in zip(times[f"{fname}/{sname}"], base)]
            out[f"{fname}/{sname}_over_preloaded"] = round(statistics.median(paired), 4)
    return out


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=5000, help="JPEGs to generate / read")
    ap.add_argument("--rounds", type=int, default=3, help="alternating loader rounds")
    ap.add_argument("--batch", type=int, default=64, help="loader batch size")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader / grain processes")
    ap.add_argument("--skip-variants", action="store_true", help="only torchvision vs jaxood")
    ap.add_argument("--skip-network", action="store_true")
    ap.add_argument(
        "--skip-loaders", action="store_true", help="only the start-up and network parts"
    )
    ap.add_argument("--network-images", type=int, default=128)
    ap.add_argument("--net-batch", type=int, default=16)
    ap.add_argument("--network-rounds", type=int, default=2)
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args()

    import jax
    import torch
    import torchvision

    from jaxood.data.imglist import default_workers, read_imglist
    from jaxood.types import PreprocessSpec

    list_path = generate(DATA, args.count)
    lst = read_imglist(list_path, os.path.join(DATA, "images"))
    spec = PreprocessSpec(256, 224, "bilinear")  # OpenOOD ImageNet eval transform
    result = {
        "script": "experiments/bench_decode.py",
        "command": " ".join(sys.argv),
        "dataset": dataset_stats(DATA, list_path),
        "preprocess": spec.to_dict(),
        "env": {
            "cpu_count": os.cpu_count(),
            "jaxood_decode_threads": default_workers(),
            "platform": platform.platform(),
            "jax": jax.__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "pillow": Image.__version__,
            "loadavg_start": list(os.getloadavg()),
        },
    }
    print(json.dumps(result, indent=1))
    if not args.skip_loaders:
        result["loaders"] = loader_rounds(lst, spec, args)
    result["startup_one_batch"] = startup_rounds(lst, spec, args)
    if not args.skip_network:
        result["network_resnet50"] = network_rounds(lst, spec, args)
    result["env"]["loadavg_end"] = list(os.getloadavg())
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, args.out)
    print(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
