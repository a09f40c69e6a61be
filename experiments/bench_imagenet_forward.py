"""Forward throughput of converted jaxood ImageNet models vs torchvision on this CPU.

For each architecture: build torchvision's model (random weights; throughput does not depend
on the values), convert its state dict with ``jaxood.convert.torchvision`` (in memory), then
time batches of ``--batch`` 224x224 images in two modes:

* ``forward``: torch under ``torch.inference_mode()``; jaxood ``jax.jit(model.features)``
  (logits + pooled feature + feature map);
* ``grad``: the forward + input-gradient pass AdaSCALE needs (gradient of each sample's
  predicted-class logit w.r.t. its input): torch ``autograd.grad`` with weights frozen,
  jaxood ``jax.vjp`` with the one-hot argmax cotangent.

Before timing, jaxood's output (logits, or the input gradient) is compared with
torchvision's on the same batch; a difference above ``--tol`` (logits, max-normalised) or
``--grad-tol`` (input gradient, relative L2; see :func:`check_agreement`) stops the script.
Timing goes through ``experiments/harness.py``: one figure per (architecture, mode), after
waiting for a quiet machine, JAX compiled first (compile time recorded apart) and blocked
on, alternating rounds of ``--iters`` batches, medians, per-round sgemm (XLA and torch) and
the ``loaded`` verdict.

Usage::

    python experiments/bench_imagenet_forward.py            # resnet50 vit_b_16 swin_t
    python experiments/bench_imagenet_forward.py --archs resnet50 --rounds 3
    python experiments/bench_imagenet_forward.py --threads 1 --out experiments/results/x.json

Results merge into ``experiments/results/bench_imagenet_forward.json`` under
``<arch>/<mode>`` (``@label`` appended with ``--label``).
"""

from __future__ import annotations

import argparse
import json
import os
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

import harness  # noqa: E402  (imports jax: after the XLA_FLAGS above)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

from jaxood.convert.torchvision import ARCHS, convert_state_dict  # noqa: E402
from jaxood.models import flax_model  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results", "bench_imagenet_forward.json")


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


class Disagreement(RuntimeError):
    """jaxood's output differs from torchvision's beyond float32 tolerance."""


def _l2_err(a, ref) -> float:
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))


def check_agreement(arch: str, mode: str, got, ref, tol: float) -> dict:
    """Both differences of ``got`` from ``ref``; raises :class:`Disagreement` when the one
    checked exceeds ``tol``: for logits the max difference over max |ref|; for input
    gradients the relative L2 norm, because a max-pool whose window holds a near-tie may
    route one gradient element elsewhere under float32 rounding (torchvision's own float32
    ResNet-50 gradient is 1.3e-3 (L2) but 0.3 % (max) away from its float64 one)."""
    err = {"max_rel_err": _rel_err(got, ref), "l2_rel_err": _l2_err(got, ref)}
    checked = "max_rel_err" if mode == "forward" else "l2_rel_err"
    if not err[checked] <= tol:  # also catches NaN
        raise Disagreement(
            f"{arch} {mode}: jaxood vs torchvision {checked} {err[checked]:.3g} > {tol:g}: the "
            "converted model does not compute what torchvision does; timing it is moot"
        )
    return err


def bench(arch: str, args) -> dict:
    """``{"<arch>/<mode>": record}`` for each of ``args.modes``, one harness run each."""
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

    x = np.random.default_rng(0).standard_normal((args.batch, 3, size, size)).astype(np.float32)
    x_t = torch.from_numpy(x)
    x_j = jax.device_put(x.transpose(0, 2, 3, 1))
    t_fns = _torch_fns(tv, x_t, info_classes(tv))
    j_fns = _jax_fns(model, variables, x_j)

    out = {}
    for mode in args.modes:
        run = harness.Run.from_args(args)
        fields = {"arch": arch, "mode": mode, "batch": args.batch, "input": [size, size, 3],
                  "iters_per_round": args.iters, "rounds": args.rounds,
                  "threads_option": args.threads}
        t0 = time.perf_counter()
        got = j_fns[mode]()  # compiles
        fields["jaxood_compile_s"] = round(time.perf_counter() - t0, 2)
        ref = t_fns[mode]()  # also warms torch up
        if not args.no_check:
            got = got.logits if mode == "forward" else np.asarray(got).transpose(0, 3, 1, 2)
            tol = args.tol if mode == "forward" else args.grad_tol
            fields.update(check_agreement(arch, mode, got, ref.detach().numpy(), tol))
        contenders = {
            "jaxood": lambda f=j_fns[mode]: [f() for _ in range(args.iters)],
            "torchvision": lambda f=t_fns[mode]: [f() for _ in range(args.iters)],
        }
        times = run.alternate(contenders, args.rounds, label=f"{arch} {mode}")
        fields.update(harness.compare(times, args.batch * args.iters, "images"))
        key = harness.record_key(f"{arch}/{mode}", args.label)
        out[key] = run.record(fields)
        print(json.dumps({key: fields["ratio_jaxood_over_torchvision"]}), flush=True)
    return out


def info_classes(tv) -> int:
    """Output classes of a torchvision classifier (its last Linear)."""
    return [m for m in tv.modules() if isinstance(m, torch.nn.Linear)][-1].out_features


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--archs", nargs="+", default=["resnet50", "vit_b_16", "swin_t"])
    p.add_argument("--modes", nargs="+", default=["forward", "grad"], choices=["forward", "grad"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5, help="alternating torch/jax timing rounds")
    p.add_argument("--iters", type=int, default=3, help="batches per round")
    p.add_argument("--no-check", action="store_true", help="skip the output comparison")
    p.add_argument("--tol", type=float, default=1e-4,
                   help="forward: largest max|jaxood - torchvision| / max|torchvision| accepted")
    p.add_argument("--grad-tol", type=float, default=1e-2,
                   help="grad: largest ||jaxood - torchvision|| / ||torchvision|| accepted")
    p.add_argument("--label", default="", help="free text stored in the JSON and its keys")
    p.add_argument("--out", default=RESULTS)
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="1: torch and XLA pinned to one CPU (--cpu), single-threaded (less sensitive to a "
        "loaded machine); 0: defaults",
    )
    p.add_argument("--cpu", type=int, default=0, help="the CPU used with --threads 1")
    harness.add_arguments(p)
    args = p.parse_args()
    if args.threads == 1:
        torch.set_num_threads(1)
    return harness.collect(args, args.out, args.archs, lambda a: bench_or_skip(a, args),
                           Disagreement)


def bench_or_skip(arch: str, args) -> dict:
    try:
        return bench(arch, args)
    except ImportError as e:  # e.g. an architecture module not available
        print(f"{arch}: skipped ({type(e).__name__}: {e})", file=sys.stderr)
        return {}


if __name__ == "__main__":
    raise SystemExit(main())
