"""``jaxood train``: train a CIFAR-style classifier, resumable, with the OpenOOD v1.5 recipe.

Examples::

  jaxood train --dataset cifar10 --arch wrn28_10 --workdir runs/wrn28_10_c10_s0 --data-dir ~/tfds
  jaxood train --dataset fashion_mnist --arch wrn --arch-kwargs '{"depth": 16, "widen_factor": 4}' \\
      --epochs 10 --workdir runs/fmnist
  jaxood train --workdir runs/fmnist --resume            # continue a killed run
  jaxood train --dataset cifar10 --arch resnet18_32x32 --loss logitnorm --workdir runs/ln
  jaxood train --dataset cifar10 --arch wrn28_10 --ish --init-from runs/wrn/best \\
      --epochs 10 --lr 0.003 --workdir runs/wrn_ish      # fc weight decay 5e-5 implied
  jaxood train --dataset cifar10 --arch wrn28_10 --precision bf16 --workdir runs/wrn_bf16
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

from jaxood.train.config import TrainConfig


def _tuple(kind):
    return lambda s: tuple(kind(v) for v in s.split(","))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    a = parser.add_argument
    a(
        "--config",
        help="a JSON TrainConfig file (e.g. a previous run's config.json); flags override it",
    )
    a("--dataset", help="cifar10 | cifar100 | fashion_mnist | npz:<path>")
    a("--data-dir", help="TFDS data dir, or the folder holding fashion_mnist.npz")
    a("--arch", help=f"model name (see jaxood.models.model_names()); default {d.arch}")
    a("--arch-kwargs", type=json.loads, help='JSON, e.g. \'{"depth": 16, "widen_factor": 4}\'')
    a("--num-classes", type=int)
    a("--workdir", help="run directory (config.json, metrics.jsonl, checkpoints/, best/)")
    a("--resume", action="store_true", help="continue from the newest checkpoint in --workdir")
    a("--epochs", type=int, help=f"default {d.epochs}")
    a("--max-steps", type=int, help="stop after this many steps (schedule unchanged)")
    a("--batch-size", type=int, help=f"global batch size, default {d.batch_size}")
    a("--eval-batch-size", type=int)
    a("--lr", type=float, help=f"peak learning rate, default {d.lr}")
    a("--min-lr", type=float, help=f"cosine floor, default {d.min_lr}")
    a("--momentum", type=float)
    a("--no-nesterov", dest="nesterov", action="store_false", default=None)
    a("--weight-decay", type=float, help=f"coupled L2, default {d.weight_decay}")
    a(
        "--fc-weight-decay",
        type=float,
        help="separate L2 for the classifier; default: --weight-decay, or 5e-5 with --ish",
    )
    a("--loss", choices=["ce", "logitnorm", "elogitnorm"])
    a("--logitnorm-tau", type=float, help=f"default {d.logitnorm_tau}")
    a(
        "--ish",
        action="store_true",
        default=None,
        help="ISH fine-tuning (reshaped fc gradient; fc weight decay 5e-5 unless given)",
    )
    a("--ish-percentile", type=float, help=f"default {d.ish_percentile}")
    a("--init-from", help="saved-model directory to start from (fine-tuning)")
    a("--mean", type=_tuple(float), help="comma-separated per-channel mean (default: dataset's)")
    a("--std", type=_tuple(float), help="comma-separated per-channel std")
    a("--crop-padding", type=int, help=f"default {d.crop_padding}; 0 disables the random crop")
    a("--no-hflip", dest="hflip", action="store_false", default=None)
    a("--drop-last", action="store_true", default=None)
    a(
        "--val-size",
        type=int,
        help=f"ID-val images carved from the test split, default {d.val_size}",
    )
    a("--seed", type=int)
    a("--checkpoint-every", type=int, help="steps between checkpoints (0: every epoch)")
    a("--keep-checkpoints", type=int)
    a("--log-every", type=int)
    a("--num-devices", type=int, help="use the first N devices (default: all)")
    a(
        "--precision",
        choices=["f32", "bf16"],
        help="bf16: convolutions/matmuls in bfloat16, parameters, optimizer state and loss in "
        "float32 (for accelerators); default f32",
    )
    a("--no-progress", dest="progress", action="store_false", default=None)
    a("--distributed", action="store_true", help="call jax.distributed.initialize() (multi-host)")
    a(
        "--coordinator-address",
        help="with --distributed: host:port of process 0 (when the cluster "
        "is not auto-detected, e.g. plain machines without SLURM/MPI)",
    )
    a("--num-processes", type=int, help="with --distributed: total number of processes")
    a("--process-id", type=int, help="with --distributed: this process's index")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Builds the config: defaults < ``--config`` file (or the workdir's on ``--resume``) < flags."""
    base: dict = {}
    path = args.config
    if path is None and args.resume and args.workdir:
        candidate = os.path.join(args.workdir, "config.json")
        path = candidate if os.path.isfile(candidate) else None
    if path is not None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file {path!r} does not exist")
        base = TrainConfig.load(path).to_dict()
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for key, value in vars(args).items():
        if key in names and value is not None:
            base[key] = value
    return TrainConfig.from_dict(base)


def main(args: argparse.Namespace) -> int:
    import jax

    if args.distributed:
        # CPU processes need a cross-process collectives backend; GPU/TPU ignore this setting.
        # (Must not query the backend here: initialize() has to run before it starts.)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        # None lets JAX auto-detect the cluster (SLURM, MPI, TPU, Kubernetes).
        jax.distributed.initialize(
            coordinator_address=args.coordinator_address,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    from jaxood.train.trainer import train

    cfg = config_from_args(args)
    if not cfg.dataset:
        raise ValueError("--dataset is required (cifar10, cifar100, fashion_mnist, npz:<path>)")
    result = train(cfg, resume=args.resume)
    if not cfg.progress:
        from jaxood.train.trainer import summary

        print(summary(result))
    return 0
