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
  jaxood train --dataset fashion_mnist --classes 0,1,2,3,5,8 --val-size 600 --arch wrn \\
      --arch-kwargs '{"depth": 10, "widen_factor": 1}' --workdir runs/fashion_openset
  jaxood train --dataset npz:data.npz --workdir runs/mine   # same .npz as bench --benchmark
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os

from jaxood.cli.common import (
    add_distributed_arguments,
    json_object,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
)
from jaxood.data.npzfile import LAYOUT_HELP
from jaxood.data.sources import check_classes
from jaxood.train.config import TrainConfig


def _floats(positive: bool):
    """argparse type: comma-separated finite numbers (> 0 when ``positive``)."""
    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            values = (float("nan"),)
        if not all(math.isfinite(v) and (v > 0 or not positive) for v in values):
            kind = "positive finite numbers" if positive else "finite numbers"
            raise argparse.ArgumentTypeError(
                f"must be comma-separated {kind} (one per channel), got {text!r}")
        return values
    return parse


def _class_ids(text: str) -> tuple[int, ...]:
    """argparse type for --classes: distinct class ids >= 0, comma-separated."""
    try:
        ids = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated class ids such as 0,1,2,3,5,8, got {text!r}") from None
    try:
        return check_classes(ids)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _percentile(text: str) -> float:
    """argparse type: a number in [0, 1) (ISH's pruning percentile)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value < 1.0:  # False for NaN too
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1) (e.g. 0.85), got {text!r}")
    return value


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags saying what to train on (dataset, classes, val, normalisation, augmentation)."""
    d = TrainConfig()
    a = parser.add_argument
    a("--dataset", help="cifar10 | cifar100 | fashion_mnist | npz:<path>. The .npz layout, "
      f"{LAYOUT_HELP}")
    a("--data-dir", help="TFDS data dir, or the folder holding fashion_mnist.npz")
    a("--classes", type=_class_ids, metavar="IDS",
      help="train on these class ids only, relabelled 0..k-1 in the given order (train, val "
      "and test), e.g. --dataset fashion_mnist --classes 0,1,2,3,5,8 --val-size 600 gives "
      "the fashion-openset model; recorded in the model's manifest (train.class_map)")
    a("--mean", type=_floats(False), help="comma-separated per-channel mean (default: dataset's)")
    a("--std", type=_floats(True), help="comma-separated per-channel std")
    a("--crop-padding", type=nonnegative_int,
      help=f"default {d.crop_padding}; 0 disables the random crop")
    a("--no-hflip", dest="hflip", action="store_false", default=None)
    a("--drop-last", action="store_true", default=None)
    a(
        "--val-size",
        type=nonnegative_int,
        help=f"ID-val images (the same number per class) when the data has no val split: "
        f"carved from the test split for cifar10/cifar100/fashion_mnist (OpenOOD), from "
        f"x_train for an .npz without x_val; 0 = no val; default {d.val_size}",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    a = parser.add_argument
    a(
        "--config",
        help="a JSON TrainConfig file (e.g. a previous run's config.json); flags override it",
    )
    add_data_arguments(parser)
    a("--arch", help=f"model name (see jaxood.models.model_names()); default {d.arch}")
    a("--arch-kwargs", type=json_object,
      help='JSON keyword arguments of the model, e.g. \'{"depth": 16, "widen_factor": 4}\'')
    a("--num-classes", type=positive_int)
    a("--workdir", help="run directory (config.json, metrics.jsonl, checkpoints/, best/)")
    a("--resume", action="store_true", help="continue from the newest checkpoint in --workdir")
    a("--epochs", type=positive_int, help=f"default {d.epochs}")
    a("--max-steps", type=positive_int, help="stop after this many steps (schedule unchanged)")
    a("--batch-size", type=positive_int, help=f"global batch size, default {d.batch_size}")
    a("--eval-batch-size", type=positive_int)
    a("--lr", type=positive_float, help=f"peak learning rate, default {d.lr}")
    a("--min-lr", type=nonnegative_float, help=f"cosine floor, default {d.min_lr}")
    a("--momentum", type=nonnegative_float)
    a("--no-nesterov", dest="nesterov", action="store_false", default=None)
    a("--weight-decay", type=nonnegative_float, help=f"coupled L2, default {d.weight_decay}")
    a(
        "--fc-weight-decay",
        type=nonnegative_float,
        help="separate L2 for the classifier; default: --weight-decay, or 5e-5 with --ish",
    )
    a("--loss", choices=["ce", "logitnorm", "elogitnorm"])
    a("--logitnorm-tau", type=positive_float, help=f"default {d.logitnorm_tau}")
    a(
        "--ish",
        action="store_true",
        default=None,
        help="ISH fine-tuning (reshaped fc gradient; fc weight decay 5e-5 unless given)",
    )
    a("--ish-percentile", type=_percentile, help=f"default {d.ish_percentile}")
    a("--init-from", help="saved-model directory to start from (fine-tuning)")
    a("--seed", type=nonnegative_int)
    a("--checkpoint-every", type=nonnegative_int, help="steps between checkpoints (0: every epoch)")
    a("--keep-checkpoints", type=positive_int)
    a("--log-every", type=positive_int)
    a("--num-devices", type=positive_int, help="use the first N devices (default: all)")
    a(
        "--precision",
        choices=["f32", "bf16"],
        help="bf16: convolutions/matmuls in bfloat16, parameters, optimizer state and loss in "
        "float32 (for accelerators); default f32",
    )
    a("--no-progress", dest="progress", action="store_false", default=None)
    add_distributed_arguments(parser)


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
    from jaxood.distributed import exit_promptly_when_a_peer_dies
    from jaxood.train.trainer import summary, train

    cfg = config_from_args(args)
    if not cfg.dataset:
        raise ValueError("--dataset is required (cifar10, cifar100, fashion_mnist, npz:<path>)")
    # (--distributed joined the cluster in jaxood.cli.main, before JAX started its backend.)
    # A lost peer: one line with the resume command and a prompt exit, not a 60 s hang.
    with exit_promptly_when_a_peer_dies(resume_flag="--resume"):
        result = train(cfg, resume=args.resume)
    if not cfg.progress:
        print(summary(result))
    return 0
