"""``jaxood convert``: torchvision or OpenOOD state-dict file -> saved jaxood model directory.

Example::

    jaxood convert resnet50-0676ba61.pth --arch resnet50
    jaxood convert model.safetensors --arch swin_t --weights IMAGENET1K_V1 --out checkpoints/swin_t
    jaxood convert cifar10_resnet18_32x32_base_e100_lr0.1_default/s0/best.ckpt \\
        --arch resnet18_32x32 --out checkpoints/cifar10_s0        # OpenOOD v1.5 release
"""

from __future__ import annotations

import argparse
import json

from jaxood.cli.common import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jaxood.convert.openood import OPENOOD_NETS
    from jaxood.convert.torchvision import ARCHS

    parser.add_argument("file", help="state dict: .pth/.ckpt (needs torch) or .safetensors")
    parser.add_argument(
        "--arch",
        required=True,
        choices=sorted(ARCHS) + sorted(OPENOOD_NETS),
        help="torchvision architecture, or an OpenOOD v1.5 network "
        f"({', '.join(OPENOOD_NETS)}) for its released best.ckpt files",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="torchvision weights name, e.g. IMAGENET1K_V1 or ResNet50_Weights.IMAGENET1K_V2 "
        "(default: inferred from the official file name / SHA-256; sets the preprocessing)",
    )
    parser.add_argument(
        "--benchmark",
        default=None,
        help="OpenOOD networks only: cifar10, cifar100 or imagenet200 (default: from the "
        "number of classes); sets OpenOOD's preprocessing for that benchmark",
    )
    parser.add_argument(
        "--out", default=None, help="output directory (default: checkpoints/<arch>_<weights>)"
    )
    parser.add_argument(
        "--num-classes", type=positive_int, default=None, help="expected number of classes (checked)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def main(args: argparse.Namespace) -> int:
    from jaxood.convert import openood
    from jaxood.convert.torchvision import convert
    from jaxood.models import read_manifest

    if args.arch in openood.OPENOOD_NETS:
        if args.weights is not None:
            raise ValueError(
                "--weights names torchvision weights; OpenOOD networks take --benchmark"
            )
        out = openood.convert(
            args.file,
            args.arch,
            args.out,
            benchmark=args.benchmark,
            num_classes=args.num_classes,
            overwrite=args.overwrite,
        )
        keys = ("arch", "openood_network", "openood_benchmark", "openood_run", "num_classes")
    else:
        if args.benchmark is not None:
            raise ValueError("--benchmark applies to OpenOOD networks (--arch resnet18_32x32 ...)")
        out = convert(
            args.file,
            args.arch,
            args.out,
            weights=args.weights,
            num_classes=args.num_classes,
            overwrite=args.overwrite,
        )
        keys = ("arch", "torchvision_weights", "num_classes", "feature_dim", "published_top1")
    m = read_manifest(out)
    print(f"converted {m['source_file']} -> {out}")
    print(json.dumps({k: m.get(k) for k in keys} | {"preprocess": m.get("preprocess")}, indent=2))
    if m.get("source") == "torchvision" and m.get("torchvision_weights") is None:
        print(
            "note: unknown weights file; using the default preprocessing of the architecture "
            "(pass --weights to choose another)"
        )
    return 0
