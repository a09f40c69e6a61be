"""Training step: jaxood vs an equal PyTorch loop, side by side on this machine (issue 12).

For each network (OpenOOD's WRN-16-4, ResNet-18-32x32, DenseNet-BC; PyTorch versions are
the OpenOOD re-implementations of ``tests/models/test_cifar_models.py``), batch 128 at
32x32x3, SGD Nesterov 0.9, weight decay 5e-4, per-iteration cosine lr, cross-entropy:

* ``step``: the training step alone on a batch already in memory (no augmentation):
  jaxood's jitted ``train_step`` (uint8 in, normalisation in the step) vs PyTorch's
  ``net(x); loss.backward(); opt.step(); sched.step(); float(loss)`` (OpenOOD's loop body).
* ``pipeline``: the same plus the data pipeline: jaxood's own (``TrainBatches`` + the
  prefetch thread + host->device copy + on-device random crop (pad 4) / flip) vs a PyTorch
  ``DataLoader`` with torchvision's ``RandomHorizontalFlip, RandomCrop(32, 4), ToTensor,
  Normalize`` on in-memory uint8 images (``--torch-workers`` loader processes).

Timing goes through ``experiments/harness.py``: each (network, mode) is one figure, taken
after waiting for a quiet machine, in rounds alternating jaxood / PyTorch (order swapped
every round), ``--steps`` steps per contender per round after a warm-up (compile excluded),
medians over rounds; an in-process sgemm per framework before every round, and the
``loaded`` verdict. Throughput is converted to GFLOP/s with XLA's cost analysis of the
jitted step (the same arithmetic runs in both frameworks) and compared with that sgemm,
so the remaining headroom is visible. Results merge into ``--out`` under the keys
``<model>/step`` and ``<model>/pipeline`` (``@<label>`` appended with ``--label``).

  python experiments/bench_train.py --label after
  python experiments/bench_train.py --models wrn16_4 --rounds 3 --steps 1 --out /tmp/b.json
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import pathlib
import sys
import time

import harness
import jax
import jax.numpy as jnp
import numpy as np

from jaxood import models, parallel
from jaxood.data.pipeline import TrainBatches, prefetch
from jaxood.train import TrainConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOTAL_STEPS = 39100  # 100 CIFAR epochs of 391 steps (the cosine schedule's length)
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
ARCHS = {  # registry name, kwargs, PyTorch constructor (from the model tests)
    "wrn16_4": ("wrn16_4", {}, lambda t: t.TWRN(16, 4, 10)),
    "resnet18_32x32": ("resnet18_32x32", {}, lambda t: t.TResNet18(10)),
    "densenet_bc_100": ("densenet_bc_100", {}, lambda t: t.TDenseNet(100, 12, 10)),
    "densenet_bc_40": ("densenet_bc", {"depth": 40}, lambda t: t.TDenseNet(40, 12, 10)),
}


def jaxood_step(cfg: TrainConfig, module, total_steps: int):
    """(jitted step(state, x_uint8, y) -> (state, metrics), initial state) from the library."""
    variables = jax.jit(lambda k: models.init_variables(module, k, (32, 32, 3)))(
        jax.random.PRNGKey(0)
    )
    try:
        from jaxood.train.steps import StepConfig, create_train_state, train_step
    except ImportError:  # the trainer before the restructure (for the "before" record)
        from jaxood.train.trainer import make_optimizer, make_train_step

        tx = make_optimizer(cfg, total_steps, variables["params"])
        state = {
            "params": variables["params"],
            "batch_stats": variables["batch_stats"],
            "opt_state": tx.init(variables["params"]),
            "step": jnp.asarray(0, jnp.int32),
        }
        step = make_train_step(cfg, module, tx, np.float32(MEAN), np.float32(STD))
        return jax.jit(step, donate_argnums=0), state
    state = create_train_state(cfg, module, variables, total_steps)
    step = functools.partial(train_step, hp=StepConfig.from_config(cfg, MEAN, STD))
    return jax.jit(step, donate_argnums=0), state


class JaxContender:
    """The library's step; with ``pipeline`` also its input pipeline and augmentation."""

    def __init__(self, arch, kwargs, module, data, batch_size: int, pipeline: bool,
                 precision: str = "f32"):
        cfg = TrainConfig(
            arch=arch,
            arch_kwargs=kwargs,
            batch_size=batch_size,
            mean=MEAN,
            std=STD,
            crop_padding=4 if pipeline else 0,
            hflip=pipeline,
            precision=precision,
        )
        step, self.state = jaxood_step(cfg, module, TOTAL_STEPS)
        self.x, self.y = jnp.asarray(data[0][:batch_size]), jnp.asarray(data[1][:batch_size])
        t = time.perf_counter()
        self.compiled = step.lower(self.state, self.x, self.y).compile()
        self.compile_s = time.perf_counter() - t
        cost = self.compiled.cost_analysis()
        self.flops = float((cost[0] if isinstance(cost, list) else cost)["flops"])
        sharding = parallel.batch_sharding(parallel.data_mesh())
        batches = TrainBatches(*data, batch_size, seed=0, drop_last=True)
        self.make = lambda s: tuple(
            jax.make_array_from_process_local_data(sharding, a) for a in batches.batch(s)
        )
        self.pipeline, self.next_step = pipeline, 0

    def run(self, steps: int) -> None:
        if not self.pipeline:
            for _ in range(steps):
                self.state, m = self.compiled(self.state, self.x, self.y)
        else:  # a fresh prefetch thread per round: nothing is prepared during PyTorch's turn
            start, self.next_step = self.next_step, self.next_step + steps
            for _, (x, y) in prefetch(self.make, range(start, self.next_step)):
                self.state, m = self.compiled(self.state, x, y)
        jax.block_until_ready(m)


class TorchContender:
    """OpenOOD's ``BaseTrainer.train_epoch`` body for a PyTorch reference net."""

    def __init__(self, net, data, batch_size: int, pipeline: bool, workers: int):
        import torch

        self.torch, self.net = torch, net.train()
        self.opt = torch.optim.SGD(
            net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True
        )
        cos = lambda s: (
            1e-6 / 0.1 + (1 - 1e-6 / 0.1) * 0.5 * (1 + math.cos(s / TOTAL_STEPS * math.pi))
        )
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, cos)
        x = ((data[0][:batch_size] / 255.0 - MEAN) / STD).astype(np.float32)
        self.x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        self.y = torch.from_numpy(data[1][:batch_size].astype(np.int64))
        self.loader = torch_loader(*data, batch_size, workers) if pipeline else None

    def step(self, x, y) -> float:
        loss = self.torch.nn.functional.cross_entropy(self.net(x)[0], y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.sched.step()
        return loss.item()

    def run(self, steps: int) -> None:
        batches = iter(self.loader) if self.loader is not None else None
        for _ in range(steps):
            self.step(*(next(batches) if batches is not None else (self.x, self.y)))


def torch_loader(x_u8, y, batch_size: int, workers: int):
    import torch
    import torchvision.transforms as T
    from PIL import Image

    tf = T.Compose(
        [
            T.RandomHorizontalFlip(),
            T.RandomCrop(32, padding=4),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ]
    )

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return len(x_u8)

        def __getitem__(self, i):
            return tf(Image.fromarray(x_u8[i])), int(y[i])

    return torch.utils.data.DataLoader(
        Images(), batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True
    )


def alternate(jx: JaxContender, tc: TorchContender, run: harness.Run, args, label: str) -> dict:
    """Median images/s of both over ``args.rounds`` alternating rounds (after a warm-up),
    and the achieved GFLOP/s as a fraction of the sgemm peak measured between the rounds."""
    contenders = {"jaxood": lambda: jx.run(args.steps), "torch": lambda: tc.run(args.steps)}
    times = run.alternate(contenders, args.rounds, label=label)
    out = harness.compare(times, args.steps * args.batch_size, "images")
    med = harness.medians(times)
    j, t = (args.steps * args.batch_size / med[k] for k in ("jaxood", "torch"))
    gflop = jx.flops / args.batch_size / 1e9
    return {
        **out,
        "jaxood_fraction_of_xla_sgemm": round(j * gflop / run.sgemm_median("xla"), 3),
        "torch_fraction_of_torch_sgemm": round(t * gflop / run.sgemm_median("torch"), 3),
        "jaxood_compile_s": round(jx.compile_s, 1),
        "xla_gflop_per_image": round(gflop, 3),
        "jaxood_gflops_per_s": round(j * gflop, 1),
        "torch_gflops_per_s": round(t * gflop, 1),
    }


def make_data(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 CIFAR-sized images and labels (speed does not depend on the values)."""
    rng = np.random.default_rng(0)
    return (
        rng.integers(0, 256, (size, 32, 32, 3), dtype=np.uint8),
        rng.integers(0, 10, size).astype(np.int32),
    )


def bench_model(name: str, args, tmod) -> dict:
    """``{"<name>/step": record, "<name>/pipeline": record}``, each its own harness run."""
    arch, kwargs, make_torch = ARCHS[name]
    module = models.create(arch, 10, **kwargs)
    data = make_data(args.dataset_size)
    net = make_torch(tmod)
    out = {}
    for mode in ("step", "pipeline"):
        pipe = mode == "pipeline"
        run = harness.Run.from_args(args, extra_threads=args.torch_workers if pipe else 0)
        jx = JaxContender(arch, kwargs, module, data, args.batch_size, pipe)
        tc = TorchContender(net, data, args.batch_size, pipe, args.torch_workers)
        fields = {"arch": arch, "arch_kwargs": kwargs, "mode": mode, "label": args.label,
                  "batch_size": args.batch_size, "rounds": args.rounds,
                  "steps_per_round": args.steps, "torch_workers": args.torch_workers}
        fields.update(alternate(jx, tc, run, args, f"{name} {mode}"))
        key = harness.record_key(f"{name}/{mode}", args.label)
        out[key] = run.record(fields)
        print(json.dumps({key: fields["ratio_jaxood_over_torch"]}), file=sys.stderr, flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument(
        "--models",
        nargs="+",
        default=["wrn16_4", "resnet18_32x32", "densenet_bc_100"],
        choices=sorted(ARCHS),
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=2, help="steps per contender per round")
    p.add_argument("--dataset-size", type=int, default=10000)
    p.add_argument("--torch-workers", type=int, default=0)
    p.add_argument("--label", default="", help="free text stored in the JSON and its keys")
    p.add_argument("--out", default="experiments/results/bench_train.json")
    harness.add_arguments(p)
    args = p.parse_args()
    tmod = torch_models()
    return harness.collect(args, args.out, args.models, lambda m: bench_model(m, args, tmod))


def torch_models():
    """The OpenOOD PyTorch reference nets of the model tests (one owner: the tests)."""
    sys.path.insert(0, str(ROOT / "tests" / "models"))
    import test_cifar_models

    return test_cifar_models


if __name__ == "__main__":
    raise SystemExit(main())
