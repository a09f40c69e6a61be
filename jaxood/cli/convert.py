"""``jaxood convert``: torchvision state-dict file -> saved jaxood model directory.

Example::

    jaxood convert resnet50-0676ba61.pth --arch resnet50
    jaxood convert model.safetensors --arch swin_t --weights IMAGENET1K_V1 --out checkpoints/swin_t
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jaxood.convert.torchvision import ARCHS

    parser.add_argument("file", help="torchvision state dict: .pth (needs torch) or .safetensors")
    parser.add_argument("--arch", required=True, choices=sorted(ARCHS), help="architecture")
    parser.add_argument(
        "--weights",
        default=None,
        help="torchvision weights name, e.g. IMAGENET1K_V1 or ResNet50_Weights.IMAGENET1K_V2 "
        "(default: inferred from the official file name / SHA-256; sets the preprocessing)",
    )
    parser.add_argument(
        "--out", default=None, help="output directory (default: checkpoints/<arch>_<weights>)"
    )
    parser.add_argument(
        "--num-classes", type=int, default=None, help="expected number of classes (checked)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def main(args: argparse.Namespace) -> int:
    from jaxood.convert.torchvision import convert
    from jaxood.models import read_manifest

    out = convert(
        args.file,
        args.arch,
        args.out,
        weights=args.weights,
        num_classes=args.num_classes,
        overwrite=args.overwrite,
    )
    m = read_manifest(out)
    keys = ("arch", "torchvision_weights", "num_classes", "feature_dim", "published_top1")
    print(f"converted {m['source_file']} -> {out}")
    print(json.dumps({k: m.get(k) for k in keys} | {"preprocess": m.get("preprocess")}, indent=2))
    if m.get("torchvision_weights") is None:
        print(
            "note: unknown weights file; using the default preprocessing of the architecture "
            "(pass --weights to choose another)"
        )
    return 0
