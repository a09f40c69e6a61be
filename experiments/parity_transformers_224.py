"""Full-resolution (224x224) parity and forward time of the converted transformers.

The unit tests (tests/convert/test_vit.py, test_swin.py) check parity at small inputs to stay
fast; this script checks the real input size once: for each of vit_b_16, swin_t, swin_b it
builds torchvision's model with random weights (LayerNorm scales/biases re-randomised),
converts the state dict in memory with ``jaxood.convert.torchvision.convert_state_dict``,
and compares on the same random batch under ``jax.default_matmul_precision("highest")``:
logits, the penultimate feature, and for ViT the last block's CLS attention row (torch:
``self_attention(..., need_weights=True)`` on the last ``ln_1`` output). Errors are
``max|jax - torch| / max|torch|``.

It also times one forward of the batch (``jax.jit(model.features)``, compiled before timing,
``block_until_ready``; torch under ``inference_mode``), alternating torch/JAX rounds so the
shared machine's load hits both alike, and reports medians.

Usage::

    python experiments/parity_transformers_224.py [--archs vit_b_16 swin_t swin_b]
        [--batch 4 --rounds 3]

Writes ``experiments/results/parity_transformers_224.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import numpy as np
import torch
import torchvision

from jaxood.convert.torchvision import convert_state_dict
from jaxood.models import flax_model

RESULTS = os.path.join(os.path.dirname(__file__), "results", "parity_transformers_224.json")


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def _randomise(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or name == "class_token":
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.startswith("heads"):  # torchvision zero-initialises the ViT head
                p.copy_(0.02 * torch.randn(p.shape, generator=g))


def run(arch: str, batch: int, rounds: int) -> dict:
    torch.manual_seed(0)
    tv = getattr(torchvision.models, arch)(weights=None).eval()
    _randomise(tv, 1)
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    x_t = torch.from_numpy(x)
    ref: dict[str, torch.Tensor] = {}
    hooks = []
    if arch.startswith("vit"):
        last = tv.encoder.layers[-1]

        def attn_hook(_m, _i, y):
            ref["attention"] = last.self_attention(y, y, y, need_weights=True)[1][:, 0]

        hooks.append(last.ln_1.register_forward_hook(attn_hook))
        head = tv.heads.head
    else:
        head = tv.head
    hooks.append(head.register_forward_pre_hook(lambda _m, a: ref.__setitem__("feature", a[0])))
    with torch.inference_mode():
        ref["logits"] = tv(x_t)
    for h in hooks:
        h.remove()

    module, variables, _ = convert_state_dict(tv.state_dict(), arch, input_size=224)
    model = flax_model(module)
    variables = jax.device_put(variables)
    x_j = jax.device_put(x.transpose(0, 2, 3, 1))
    with jax.default_matmul_precision("highest"):
        features = jax.jit(model.features)
        out = jax.block_until_ready(features(variables, x_j))
    errors = {
        "logits": _rel(out.logits, ref["logits"]),
        "feature": _rel(out.feature, ref["feature"]),
    }
    if "attention" in ref:
        errors["attention"] = _rel(out.attention, ref["attention"])

    # Timing at the default precision (what scoring uses); compiled before the clock starts.
    fast = jax.jit(model.features)
    jax.block_until_ready(fast(variables, x_j))
    t_torch, t_jax = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        with torch.inference_mode():
            tv(x_t)
        t_torch.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        jax.block_until_ready(fast(variables, x_j))
        t_jax.append(time.perf_counter() - t0)
    return {
        "arch": arch,
        "batch": batch,
        "rel_errors": errors,
        "torch_s_per_batch": statistics.median(t_torch),
        "jax_s_per_batch": statistics.median(t_jax),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=["vit_b_16", "swin_t", "swin_b"])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    results = []
    for arch in args.archs:
        r = run(arch, args.batch, args.rounds)
        print(json.dumps(r), flush=True)
        results.append(r)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(
            {
                "machine": platform.platform(),
                "cpu_count": os.cpu_count(),
                "jax": jax.__version__,
                "torch": torch.__version__,
                "note": "shared 2-core CPU box, other jobs running; times are indicative",
                "results": results,
            },
            f,
            indent=2,
        )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
