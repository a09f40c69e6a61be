"""Forward throughput of converted jaxood ImageNet models vs torchvision on this CPU.

For each architecture: build torchvision's model (random weights; throughput does not depend
on the values), convert its state dict with ``jaxood.convert.torchvision`` (in memory), then
time batches of ``--batch`` 224x224 images. Torch runs under ``torch.inference_mode()``;
jaxood runs ``jax.jit(model.features)`` (logits + pooled feature + feature map), compiled
once before timing, with ``block_until_ready``. Torch and JAX are timed in alternating rounds
so a change in machine load (the box is shared) hits both equally; the reported number is
the median over rounds.

Usage::

    python experiments/bench_imagenet_forward.py                    # resnet50 + vit_b_16, batch 16
    python experiments/bench_imagenet_forward.py --archs resnet50 --rounds 3
    python experiments/bench_imagenet_forward.py --threads 1 --out experiments/results/x.json

Writes ``experiments/results/bench_imagenet_forward.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

# --threads 1 must configure XLA before jax is imported.
if "--threads" in sys.argv and sys.argv[sys.argv.index("--threads") + 1] == "1":
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    ).strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

from jaxood.convert.torchvision import ARCHS, convert_state_dict  # noqa: E402
from jaxood.models import flax_model  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results", "bench_imagenet_forward.json")


def _time(fn, iters: int) -> float:
    """Seconds per call (mean over ``iters`` back-to-back calls)."""
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def bench(arch: str, batch: int, rounds: int, iters: int, check: bool) -> dict:
    info = ARCHS[arch]
    size = 224
    torch.manual_seed(0)
    tv = getattr(torchvision.models, info.builder)().eval()
    with torch.no_grad():  # ViT's head is zero-initialised: give it values for the check
        for prm in tv.parameters():
            if prm.ndim == 2 and not prm.any():
                prm.normal_(0, 0.02)
    module, variables, _ = convert_state_dict(tv.state_dict(), arch, input_size=size)
    model = flax_model(module)
    variables = jax.device_put(variables)

    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    x_t = torch.from_numpy(x)
    x_j = jax.device_put(x.transpose(0, 2, 3, 1))
    features = jax.jit(model.features)

    t0 = time.perf_counter()
    out = jax.block_until_ready(features(variables, x_j))
    compile_s = time.perf_counter() - t0

    def run_torch():
        with torch.inference_mode():
            return tv(x_t)

    def run_jax():
        return jax.block_until_ready(features(variables, x_j))

    ref = run_torch()  # also warms torch up
    run_jax()
    rel_err = None
    if check:
        rel_err = float(
            np.max(np.abs(np.asarray(out.logits) - ref.numpy())) / np.max(np.abs(ref.numpy()))
        )

    t_torch, t_jax = [], []
    for _ in range(rounds):
        t_torch.append(_time(run_torch, iters))
        t_jax.append(_time(run_jax, iters))
    torch_ips = batch / statistics.median(t_torch)
    jax_ips = batch / statistics.median(t_jax)
    res = {
        "arch": arch,
        "batch": batch,
        "input": [size, size, 3],
        "torchvision_images_per_s": round(torch_ips, 2),
        "jaxood_images_per_s": round(jax_ips, 2),
        "speedup_jaxood_over_torchvision": round(jax_ips / torch_ips, 3),
        "torch_s_per_batch_rounds": [round(t, 4) for t in t_torch],
        "jax_s_per_batch_rounds": [round(t, 4) for t in t_jax],
        "jax_compile_s": round(compile_s, 2),
        "logits_rel_err_default_precision": rel_err,
    }
    print(json.dumps(res))
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--archs", nargs="+", default=["resnet50", "vit_b_16"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5, help="alternating torch/jax timing rounds")
    p.add_argument("--iters", type=int, default=3, help="batches per round")
    p.add_argument("--no-check", action="store_true", help="skip the logits comparison")
    p.add_argument("--out", default=RESULTS)
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="1: single-threaded torch and XLA (less sensitive to a loaded machine); 0: defaults",
    )
    args = p.parse_args()
    if args.threads == 1:
        torch.set_num_threads(1)

    env = {
        "jax": jax.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "jax_devices": [str(d) for d in jax.devices()],
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "loadavg_start": list(os.getloadavg()),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "threads_option": args.threads,
    }
    print(json.dumps(env))
    results = []
    for arch in args.archs:
        try:
            results.append(bench(arch, args.batch, args.rounds, args.iters, not args.no_check))
        except (ImportError, ValueError) as e:  # e.g. an architecture module not yet available
            print(f"{arch}: skipped ({type(e).__name__}: {e})")
            results.append({"arch": arch, "skipped": f"{type(e).__name__}: {e}"})
    env["loadavg_end"] = list(os.getloadavg())
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"env": env, "results": results, "command": " ".join(sys.argv)}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
