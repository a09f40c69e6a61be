"""Native-resolution parity and forward time of converted RegNet-Y-16GF and EfficientNetV2-L.

The unit tests (tests/convert/test_regnet.py, test_efficientnet.py) check parity at 72x72 to
stay fast; this script checks each model once at the resolution its torchvision ImageNet
weights use (RegNet-Y-16GF: 224, EfficientNetV2-L: 480). For each, it builds torchvision's
model with random weights, sets every BatchNorm's statistics from its own input on the test
batch (perturbed; the same per-layer calibration as the EfficientNet test, which keeps a deep
random network well-conditioned), converts the state dict in memory with
``jaxood.convert.torchvision.convert_state_dict`` and compares, under
``jax.default_matmul_precision("highest")``, logits and the penultimate feature
(``max|jax - torch| / max|torch|``). As a noise floor it also reports torch float32 vs torch
float64 on the same weights.

It then times one forward of the batch (``jax.jit(model.features)`` at default precision,
compiled before timing, ``block_until_ready``; torch under ``inference_mode``), alternating
torch/JAX rounds so the shared machine's load hits both alike, and reports medians.

Usage::

    python experiments/parity_cnns_native.py [--archs regnet_y_16gf efficientnet_v2_l]
        [--batch 1 --rounds 2]

Writes ``experiments/results/parity_cnns_native.json``.
"""

from __future__ import annotations

import argparse
import copy
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

RESULTS = os.path.join(os.path.dirname(__file__), "results", "parity_cnns_native.json")
SIZES = {"regnet_y_16gf": 224, "efficientnet_v2_l": 480}


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def _calibrate_bn(model: torch.nn.Module, x: torch.Tensor, seed: int) -> None:
    """Random BN affine params; running stats = perturbed statistics of each BN's input."""
    g = torch.Generator().manual_seed(seed)
    # Small residual branches (as in a trained network) keep a deep random stream
    # well-conditioned; EfficientNet's residual blocks end in ``block[-1][1]`` (BN).
    last = {id(m.block[-1][1]) for m in model.modules() if getattr(m, "use_res_connect", False)}

    def pre_hook(bn, args):
        n = bn.num_features
        mean = args[0].mean(dim=(0, 2, 3))
        var = args[0].var(dim=(0, 2, 3), unbiased=False)
        gamma = torch.rand(n, generator=g) * 0.5 + 0.5
        bn.weight.copy_(gamma * 0.2 if id(bn) in last else gamma)
        bn.bias.copy_(torch.randn(n, generator=g) * 0.2)
        bn.running_mean.copy_(mean + 0.2 * var.sqrt() * torch.randn(n, generator=g))
        bn.running_var.copy_(var * (torch.rand(n, generator=g) * 0.6 + 0.7))

    hooks = [
        m.register_forward_pre_hook(pre_hook)
        for m in model.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    ]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()


def _torch_outputs(model, x):
    feats = {}
    head = model.fc if hasattr(model, "fc") else model.classifier[-1]
    h = head.register_forward_pre_hook(lambda _m, a: feats.__setitem__("feature", a[0]))
    with torch.inference_mode():
        logits = model(x)
    h.remove()
    return logits.double().numpy(), feats["feature"].double().numpy()


def run(arch: str, batch: int, rounds: int) -> dict:
    size = SIZES[arch]
    torch.manual_seed(0)
    tv = getattr(torchvision.models, arch)(weights=None).eval()
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    x_t = torch.from_numpy(x)
    _calibrate_bn(tv, x_t, seed=1)
    logits, feature = _torch_outputs(tv, x_t)
    logits64, feature64 = _torch_outputs(copy.deepcopy(tv).double(), x_t.double())

    module, variables, _ = convert_state_dict(tv.state_dict(), arch, input_size=size)
    model = flax_model(module)
    variables = jax.device_put(variables)
    x_j = jax.device_put(x.transpose(0, 2, 3, 1))
    with jax.default_matmul_precision("highest"):
        out = jax.block_until_ready(jax.jit(model.features)(variables, x_j))
    errors = {
        "logits": _rel(out.logits, logits),
        "feature": _rel(out.feature, feature),
        "torch_f32_vs_f64_logits": _rel(logits, logits64),
        "jax_vs_torch_f64_logits": _rel(out.logits, logits64),
    }

    fast = jax.jit(model.features)
    t0 = time.perf_counter()
    jax.block_until_ready(fast(variables, x_j))
    compile_s = time.perf_counter() - t0
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
        "input_size": size,
        "batch": batch,
        "feature_map_shape": list(out.feature_map.shape),
        "rel_errors": errors,
        "jax_first_call_s (compile+run)": compile_s,
        "torch_s_per_batch": statistics.median(t_torch),
        "jax_s_per_batch": statistics.median(t_jax),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=list(SIZES))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
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
