"""Forward throughput of converted jaxood ImageNet models vs torchvision on this CPU.

For each architecture: build torchvision's model (random weights; throughput does not depend
on the values), convert its state dict with ``jaxood.convert.torchvision`` (in memory), then
time batches of ``--batch`` 224x224 images in two modes:

* ``forward``: torch under ``torch.inference_mode()``; jaxood ``jax.jit(model.features)``
  (logits + pooled feature + feature map);
* ``grad``: the forward + input-gradient pass AdaSCALE needs (gradient of each sample's
  predicted-class logit w.r.t. its input): torch ``autograd.grad`` with weights frozen,
  jaxood ``jax.vjp`` with the one-hot argmax cotangent.

JAX functions are compiled once before timing and blocked on. Torch and JAX are timed in
alternating rounds so a change in machine load (the box is shared) hits both equally; the
reported number is the median over rounds (and the per-round paired ratios are kept).

Usage::

    python experiments/bench_imagenet_forward.py            # resnet50 vit_b_16 swin_t swin_b
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

# --threads 1 must configure XLA before jax is imported: one CPU for this process (XLA sizes
# its thread pools from the affinity mask) and single-threaded Eigen. (An earlier version
# also passed a bare "intra_op_parallelism_threads=1", which is not an XLA flag: XLA then
# ignored every flag after it, including jaxood's YNNPACK opt-out.)
if "--threads" in sys.argv and sys.argv[sys.argv.index("--threads") + 1] == "1":
    _cpu = int(sys.argv[sys.argv.index("--cpu") + 1]) if "--cpu" in sys.argv else 0
    os.sched_setaffinity(0, {_cpu})
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
    ).strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
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


def _rel_err(a, ref) -> float:
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


def _torch_fns(tv, x_t, num_classes: int):
    """Torch forward (inference mode) and forward + input gradient (AdaSCALE's vjp: the
    gradient of each sample's predicted-class logit w.r.t. its input; no weight grads)."""
    for prm in tv.parameters():
        prm.requires_grad_(False)

    def forward():
        with torch.inference_mode():
            return tv(x_t)

    def grad():
        x = x_t.clone().requires_grad_(True)
        logits = tv(x)
        onehot = torch.nn.functional.one_hot(logits.argmax(-1), num_classes).to(logits.dtype)
        (g,) = torch.autograd.grad(logits, x, grad_outputs=onehot)
        return g

    return {"forward": forward, "grad": grad}


def _jax_fns(model, variables, x_j):
    """The jaxood counterparts, jitted; outputs blocked on."""

    def grad_fn(v, x):
        logits, vjp_fn = jax.vjp(lambda x: model.features(v, x).logits, x)
        onehot = jax.nn.one_hot(jnp.argmax(logits, -1), logits.shape[-1], dtype=logits.dtype)
        return vjp_fn(onehot)[0]

    features, grad = jax.jit(model.features), jax.jit(grad_fn)
    return {
        "forward": lambda: jax.block_until_ready(features(variables, x_j)),
        "grad": lambda: jax.block_until_ready(grad(variables, x_j)),
    }


def bench(arch: str, batch: int, rounds: int, iters: int, check: bool, modes) -> dict:
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
    t_fns = _torch_fns(tv, x_t, info_classes(tv))
    j_fns = _jax_fns(model, variables, x_j)

    res = {"arch": arch, "batch": batch, "input": [size, size, 3]}
    for mode in modes:
        t0 = time.perf_counter()
        out = j_fns[mode]()  # compiles
        res[f"{mode}_jax_compile_s"] = round(time.perf_counter() - t0, 2)
        ref = t_fns[mode]()  # also warms torch up
        if check:
            got = out.logits if mode == "forward" else np.asarray(out).transpose(0, 3, 1, 2)
            res[f"{mode}_rel_err"] = _rel_err(got, ref.detach().numpy())
        t_torch, t_jax = [], []
        for _ in range(rounds):
            t_torch.append(_time(t_fns[mode], iters))
            t_jax.append(_time(j_fns[mode], iters))
        torch_ips = batch / statistics.median(t_torch)
        jax_ips = batch / statistics.median(t_jax)
        res[mode] = {
            "torchvision_images_per_s": round(torch_ips, 3),
            "jaxood_images_per_s": round(jax_ips, 3),
            "speedup_jaxood_over_torchvision": round(jax_ips / torch_ips, 3),
            "paired_speedup_rounds": [round(a / b, 3) for a, b in zip(t_torch, t_jax)],
            "torch_s_per_batch_rounds": [round(t, 4) for t in t_torch],
            "jax_s_per_batch_rounds": [round(t, 4) for t in t_jax],
            "loadavg_1min": os.getloadavg()[0],
        }
    print(json.dumps(res))
    return res


def info_classes(tv) -> int:
    """Output classes of a torchvision classifier (its last Linear)."""
    return [m for m in tv.modules() if isinstance(m, torch.nn.Linear)][-1].out_features


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--archs", nargs="+", default=["resnet50", "vit_b_16", "swin_t", "swin_b"])
    p.add_argument("--modes", nargs="+", default=["forward", "grad"], choices=["forward", "grad"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5, help="alternating torch/jax timing rounds")
    p.add_argument("--iters", type=int, default=3, help="batches per round")
    p.add_argument("--no-check", action="store_true", help="skip the logits comparison")
    p.add_argument("--out", default=RESULTS)
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="1: torch and XLA pinned to one CPU (--cpu), single-threaded (less sensitive to a "
        "loaded machine); 0: defaults",
    )
    p.add_argument("--cpu", type=int, default=0, help="the CPU used with --threads 1")
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
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
    }
    print(json.dumps(env))
    results = []
    for arch in args.archs:
        try:
            results.append(
                bench(arch, args.batch, args.rounds, args.iters, not args.no_check, args.modes)
            )
        except (ImportError, ValueError) as e:  # e.g. an architecture module not yet available
            print(f"{arch}: skipped ({type(e).__name__}: {e})")
            results.append({"arch": arch, "skipped": f"{type(e).__name__}: {e}"})
    env["loadavg_end"] = list(os.getloadavg())
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"env": env, "results": results, "command": " ".join(sys.argv)}, f, indent=2)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
