"""Convert torchvision ImageNet checkpoints (``.pth`` / ``.safetensors``) to jaxood models.

One call turns the state-dict file a user already has into a saved jaxood model directory
(orbax ``variables/`` + ``manifest.json``)::

    from jaxood.convert.torchvision import convert, load_converted
    out = convert("resnet50-0676ba61.pth", "resnet50")      # -> checkpoints/resnet50_imagenet1k_v1
    m = load_converted(out)
    x = m.preprocess_batch(pil_images)                       # [B, 224, 224, 3], torchvision-exact
    feats = m.model.features(m.variables, x)                 # logits, feature, feature_map

``.pth`` files are read with torch (the optional ``jaxood[torch]`` extra); ``.safetensors``
files need only the small ``safetensors`` package. Every tensor of the file must be mapped to
the Flax model or explicitly ignored (``jaxood.convert.common.StateDict``), and every Flax leaf
must receive a tensor of the right shape; otherwise a ValueError lists the keys.

Each architecture module (``jaxood/models/<arch>.py``) provides
``convert_torchvision(sd: StateDict, module) -> {"params": ..., "batch_stats": ...}``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from jaxood import models
from jaxood.convert.common import StateDict, converter_for
from jaxood.convert.files import read_state_dict, sha256_file
from jaxood.convert.openood import identify
from jaxood.data import transforms
from jaxood.types import Model, PreprocessSpec

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class WeightsInfo:
    """One torchvision weights enum entry (values from torchvision 0.29 ``Weights`` enums).

    Attributes:
      name: full enum name, e.g. ``"ResNet50_Weights.IMAGENET1K_V1"``.
      file: the file name torchvision downloads (its 8 hex digits are the SHA-256 prefix).
      preprocess: ``weights.transforms()`` as a ``PreprocessSpec``.
      top1: published ImageNet-1k top-1 (``meta["_metrics"]["ImageNet-1K"]["acc@1"]``).
      arch_kwargs: extra factory kwargs these weights need (e.g. a different image size).
    """

    name: str
    file: str
    preprocess: PreprocessSpec
    top1: float
    arch_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def tag(self) -> str:
        """The enum member, e.g. ``"IMAGENET1K_V1"``."""
        return self.name.split(".", 1)[1]

    @property
    def sha256_prefix(self) -> str:
        return re.search(r"-([0-9a-f]{8})\.", self.file).group(1)


@dataclasses.dataclass(frozen=True)
class ArchInfo:
    """A torchvision ImageNet architecture jaxood can convert.

    Attributes:
      arch: jaxood model registry name (also the torchvision builder, ``torchvision.models.<builder>``).
      builder: torchvision builder function name.
      feature_dim: D of the penultimate feature.
      head_key: state-dict key of the final Linear weight ``[K, D]``.
      weights: the torchvision weights of this architecture.
      default: the weights OpenOOD / the AdaSCALE paper use (OpenOOD ``--tvs-version 1``).
      has_feature_map, has_attention: what the jaxood model's ``Features`` fill.
    """

    arch: str
    builder: str
    feature_dim: int
    head_key: str
    weights: tuple[WeightsInfo, ...]
    default: str
    has_feature_map: bool = True
    has_attention: bool = False

    def get_weights(self, name: str) -> WeightsInfo:
        """Looks up ``name`` given as ``"IMAGENET1K_V1"`` or ``"ResNet50_Weights.IMAGENET1K_V1"``."""
        for w in self.weights:
            if name in (w.name, w.tag):
                return w
        raise ValueError(
            f"unknown weights {name!r} for {self.arch}; valid: {', '.join(w.name for w in self.weights)}"
        )

    @property
    def default_weights(self) -> WeightsInfo:
        return self.get_weights(self.default)


def _spec(resize: int, crop: int, interp: str = "bilinear", mean=_IMAGENET_MEAN, std=_IMAGENET_STD):
    return PreprocessSpec(resize, crop, interp, tuple(mean), tuple(std), 3)


def _w(name, file, resize, crop, interp, top1, mean=_IMAGENET_MEAN, std=_IMAGENET_STD, **kw):
    return WeightsInfo(name, file, _spec(resize, crop, interp, mean, std), top1, kw)


# Looked up in torchvision 0.29.1: ``W.transforms()`` (resize_size, crop_size, interpolation,
# mean, std; antialias=True) and ``W.meta["_metrics"]["ImageNet-1K"]["acc@1"]``.
ARCHS: dict[str, ArchInfo] = {
    a.arch: a
    for a in [
        ArchInfo("resnet18", "resnet18", 512, "fc.weight", (
            _w("ResNet18_Weights.IMAGENET1K_V1", "resnet18-f37072fd.pth", 256, 224, "bilinear", 69.758),
        ), "IMAGENET1K_V1"),
        ArchInfo("resnet50", "resnet50", 2048, "fc.weight", (
            _w("ResNet50_Weights.IMAGENET1K_V1", "resnet50-0676ba61.pth", 256, 224, "bilinear", 76.13),
            _w("ResNet50_Weights.IMAGENET1K_V2", "resnet50-11ad3fa6.pth", 232, 224, "bilinear", 80.858),
        ), "IMAGENET1K_V1"),
        ArchInfo("resnet101", "resnet101", 2048, "fc.weight", (
            _w("ResNet101_Weights.IMAGENET1K_V1", "resnet101-63fe2227.pth", 256, 224, "bilinear", 77.374),
            _w("ResNet101_Weights.IMAGENET1K_V2", "resnet101-cd907fc2.pth", 232, 224, "bilinear", 81.886),
        ), "IMAGENET1K_V1"),
        ArchInfo("resnext50_32x4d", "resnext50_32x4d", 2048, "fc.weight", (
            _w("ResNeXt50_32X4D_Weights.IMAGENET1K_V1", "resnext50_32x4d-7cdf4587.pth", 256, 224, "bilinear", 77.618),
            _w("ResNeXt50_32X4D_Weights.IMAGENET1K_V2", "resnext50_32x4d-1a0047aa.pth", 232, 224, "bilinear", 81.198),
        ), "IMAGENET1K_V1"),
        ArchInfo("densenet201", "densenet201", 1920, "classifier.weight", (
            _w("DenseNet201_Weights.IMAGENET1K_V1", "densenet201-c1103571.pth", 256, 224, "bilinear", 76.896),
        ), "IMAGENET1K_V1"),
        ArchInfo("regnet_y_16gf", "regnet_y_16gf", 3024, "fc.weight", (
            _w("RegNet_Y_16GF_Weights.IMAGENET1K_V1", "regnet_y_16gf-9e6ed7dd.pth", 256, 224, "bilinear", 80.424),
            _w("RegNet_Y_16GF_Weights.IMAGENET1K_V2", "regnet_y_16gf-3e4a00f9.pth", 232, 224, "bilinear", 82.886),
            _w("RegNet_Y_16GF_Weights.IMAGENET1K_SWAG_E2E_V1", "regnet_y_16gf_swag-43afe44d.pth", 384, 384, "bicubic", 86.012),
            _w("RegNet_Y_16GF_Weights.IMAGENET1K_SWAG_LINEAR_V1", "regnet_y_16gf_lc_swag-f3ec0043.pth", 224, 224, "bicubic", 83.976),
        ), "IMAGENET1K_SWAG_E2E_V1"),  # OpenOOD eval_ood_imagenet.py uses SWAG E2E
        ArchInfo("efficientnet_v2_l", "efficientnet_v2_l", 1280, "classifier.1.weight", (
            _w("EfficientNet_V2_L_Weights.IMAGENET1K_V1", "efficientnet_v2_l-59c71312.pth", 480, 480, "bicubic", 85.808,
               mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        ), "IMAGENET1K_V1"),
        ArchInfo("vit_b_16", "vit_b_16", 768, "heads.head.weight", (
            _w("ViT_B_16_Weights.IMAGENET1K_V1", "vit_b_16-c867db91.pth", 256, 224, "bilinear", 81.072),
            # SWAG E2E runs at 384: a 24x24 patch grid, so a different position embedding.
            _w("ViT_B_16_Weights.IMAGENET1K_SWAG_E2E_V1", "vit_b_16_swag-9ac1b537.pth", 384, 384, "bicubic", 85.304,
               image_size=384),
            _w("ViT_B_16_Weights.IMAGENET1K_SWAG_LINEAR_V1", "vit_b_16_lc_swag-4e70ced5.pth", 224, 224, "bicubic", 81.886),
        ), "IMAGENET1K_V1", has_feature_map=False, has_attention=True),
        ArchInfo("swin_t", "swin_t", 768, "head.weight", (
            _w("Swin_T_Weights.IMAGENET1K_V1", "swin_t-704ceda3.pth", 232, 224, "bicubic", 81.474),
        ), "IMAGENET1K_V1"),
        ArchInfo("swin_b", "swin_b", 1024, "head.weight", (
            _w("Swin_B_Weights.IMAGENET1K_V1", "swin_b-68c6b09e.pth", 238, 224, "bicubic", 83.582),
        ), "IMAGENET1K_V1"),
    ]
}  # fmt: skip


def get_arch(arch: str) -> ArchInfo:
    """The :class:`ArchInfo` of ``arch``; the error lists the convertible architectures."""
    if arch not in ARCHS:
        raise ValueError(f"cannot convert architecture {arch!r}; supported: {', '.join(ARCHS)}")
    return ARCHS[arch]


def known_file(filename: str) -> tuple[ArchInfo, WeightsInfo] | None:
    """``(arch, weights)`` of a torchvision download file name, e.g. ``resnet50-0676ba61.pth``."""
    base = os.path.basename(filename)
    for a in ARCHS.values():
        for w in a.weights:
            if base == w.file:
                return a, w
    return None


def _known_hash(sha256: str) -> tuple[ArchInfo, WeightsInfo] | None:
    for a in ARCHS.values():
        for w in a.weights:
            if sha256.startswith(w.sha256_prefix):
                return a, w
    return None


# --------------------------------------------------------------------------- conversion


def convert_state_dict(
    tensors: Mapping[str, Any],
    arch: str,
    *,
    num_classes: int | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
    input_size: int | None = None,
    source: str = "state dict",
):
    """Converts in-memory torchvision tensors into Flax variables for ``arch``.

    Args:
      tensors: state dict name -> array (torch tensors or NumPy).
      arch: a key of :data:`ARCHS`.
      num_classes: expected K; ``None`` takes it from the file's head weight.
      arch_kwargs: extra factory kwargs (e.g. ``image_size`` for ViT SWAG weights).
      input_size: square input side used to check the variables' shapes against the module
        (default: the default weights' crop size).
      source: label for error messages (the file name).

    Returns:
      ``(module, variables, num_classes)``; ``variables`` is ``{"params", "batch_stats"?}``.

    Raises:
      ValueError: a class count different from ``num_classes``, a missing/extra/unmapped key,
        or a tensor whose shape does not fit the architecture; the message lists the keys.
    """
    info = get_arch(arch)
    factory = models.get_factory(arch)
    rename = getattr(importlib.import_module(factory.__module__), "torchvision_key_fixes", None)
    if rename is not None:  # e.g. DenseNet's legacy "norm.1" keys in the official files
        tensors = rename(dict(tensors))
    sd = StateDict(tensors, source=source)
    if info.head_key not in sd:
        raise ValueError(
            f"{source}: no {info.head_key!r} (the {arch} classifier weight); is this a checkpoint "
            f"for another architecture? {_describe_keys(sd.keys())}.{_guess_hint(tensors, arch)}"
        )
    head = np.shape(tensors[info.head_key])
    file_classes, file_dim = int(head[0]), int(head[1]) if len(head) == 2 else -1
    if file_dim != info.feature_dim:
        raise ValueError(
            f"{source}: {info.head_key} has shape {tuple(head)}, i.e. a {file_dim}-d feature, but "
            f"{arch} has {info.feature_dim}-d features; is this a checkpoint for another "
            f"architecture?{_guess_hint(tensors, arch)}"
        )
    if num_classes is not None and int(num_classes) != file_classes:
        raise ValueError(
            f"{source}: expected {num_classes} classes but the file's classifier "
            f"{info.head_key} has {file_classes} (shape {tuple(head)})"
        )
    module = models.create(arch, file_classes, **dict(arch_kwargs or {}))
    try:
        variables = converter_for(module)(sd, module)
        sd.finish()
        size = input_size or info.default_weights.preprocess.crop_size
        models.check_variables(module, variables, (size, size, 3), where=source)
    except ValueError as e:
        hint = _guess_hint(tensors, arch) or f" Is this a checkpoint for another variant of {arch}?"
        raise ValueError(f"{e}\n{hint.strip()}") from None
    return module, variables, file_classes


def guess_arch(tensors: Mapping[str, Any]) -> list[str]:
    """Architectures of :data:`ARCHS` a state dict plausibly belongs to (cheap fingerprint).

    Matches the classifier key and feature dimension, then tells the ResNets apart by the
    number of blocks in ``layer3`` and the grouped ``conv2`` of ResNeXt.
    """
    found = []
    for a in ARCHS.values():
        head = np.shape(tensors[a.head_key]) if a.head_key in tensors else ()
        if len(head) == 2 and head[1] == a.feature_dim:
            found.append(a.arch)
    resnets = {"resnet18", "resnet50", "resnet101", "resnext50_32x4d"}
    if resnets & set(found):
        blocks = {k.split(".")[1] for k in tensors if k.startswith("layer3.")}
        conv2 = np.shape(tensors.get("layer1.0.conv2.weight", np.zeros(0)))
        grouped = len(conv2) == 4 and conv2[1] != conv2[0]
        want = {2: "resnet18", 6: "resnext50_32x4d" if grouped else "resnet50", 23: "resnet101"}
        found = [a for a in found if a not in resnets or a == want.get(len(blocks))]
    return found


def _guess_hint(tensors: Mapping[str, Any], arch: str) -> str:
    if identify(tensors) == "resnet18_32x32":  # torchvision has no such network
        return " It looks like an OpenOOD resnet18_32x32 checkpoint (--arch resnet18_32x32)."
    guess = [a for a in guess_arch(tensors) if a != arch]
    return f" It looks like a {' or '.join(guess)} checkpoint (--arch {guess[0]})." if guess else ""


def _describe_keys(keys: Iterable[str]) -> str:
    keys = list(keys)
    heads = [k for k in keys if k.endswith(".weight")][-3:]
    return f"The file has {len(keys)} keys; first {keys[:4]}, last weights {heads}"


def resolve_weights(
    arch: str, path: str | os.PathLike, weights: str | None, sha256: str
) -> WeightsInfo | None:
    """Which torchvision weights the file holds: ``weights`` if given, else by name or hash.

    Raises ValueError if the file name or hash identifies weights of *another* architecture,
    or if a torchvision file name's hash prefix does not match (corrupt download).
    """
    info = get_arch(arch)
    base = os.path.basename(os.fspath(path))
    by_name = known_file(base)
    if by_name is not None and not sha256.startswith(by_name[1].sha256_prefix):
        raise ValueError(
            f"{base}: SHA-256 {sha256[:8]}... does not match the {by_name[1].sha256_prefix} torchvision "
            "publishes for this file name; the file is corrupt or truncated (re-download it)"
        )
    found = by_name or _known_hash(sha256)
    if found is not None and found[0].arch != arch:
        raise ValueError(
            f"{base} holds torchvision {found[1].name} weights ({found[0].arch}), not {arch}; "
            f"use --arch {found[0].arch}"
        )
    if weights is not None:
        w = info.get_weights(weights)
        if found is not None and found[1].name != w.name:
            raise ValueError(f"{base} holds {found[1].name}, but weights {w.name} were given")
        return w
    return None if found is None else found[1]


def default_out_dir(arch: str, weights: WeightsInfo | None, path: str | os.PathLike) -> str:
    """``checkpoints/<arch>_<weights tag>`` (or the file stem for unknown weights)."""
    if weights is not None:
        return os.path.join("checkpoints", f"{arch}_{weights.tag.lower()}")
    stem = os.path.basename(os.fspath(path)).split(".")[0]
    return os.path.join("checkpoints", stem)


def convert(
    path: str | os.PathLike,
    arch: str,
    out_dir: str | os.PathLike | None = None,
    weights: str | None = None,
    num_classes: int | None = None,
    *,
    arch_kwargs: Mapping[str, Any] | None = None,
    input_size: int | None = None,
    overwrite: bool = False,
) -> str:
    """Converts a torchvision state-dict file into a saved jaxood model directory.

    Args:
      path: ``.pth``/``.pt``/``.bin`` (needs torch) or ``.safetensors`` file.
      arch: architecture, a key of :data:`ARCHS` (e.g. ``"resnet50"``).
      out_dir: output directory; default ``checkpoints/<arch>_<weights tag>``.
      weights: torchvision weights name (``"IMAGENET1K_V2"`` or
        ``"ResNet50_Weights.IMAGENET1K_V2"``); inferred from the file name or SHA-256 of the
        official downloads. Unknown (e.g. fine-tuned) files get the architecture's default
        preprocessing and no published top-1.
      num_classes: expected number of classes (checked against the file); default: the file's.
      arch_kwargs: extra model factory kwargs (merged over those the weights need), e.g. a
        ViT ``image_size`` for a fine-tuned checkpoint.
      input_size: square input side recorded in the manifest and used for the shape check
        (default: the weights' crop size).
      overwrite: replace an existing ``out_dir``.

    Returns:
      The absolute output directory. Its manifest records the architecture, source file name
      and SHA-256, torchvision weights name, classes, feature dim, preprocessing, published
      top-1, has_feature_map / has_attention.
    """
    info = get_arch(arch)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file {path!r} does not exist")
    sha = sha256_file(path)
    w = resolve_weights(arch, path, weights, sha)
    preprocess = (w or info.default_weights).preprocess
    arch_kwargs = {**(dict(w.arch_kwargs) if w is not None else {}), **dict(arch_kwargs or {})}
    input_size = int(input_size or preprocess.crop_size)
    out_dir = os.fspath(out_dir) if out_dir is not None else default_out_dir(arch, w, path)
    if os.path.exists(out_dir) and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass --overwrite (overwrite=True) to replace it")
    tensors = read_state_dict(path)
    _, variables, k = convert_state_dict(
        tensors,
        arch,
        num_classes=num_classes,
        arch_kwargs=arch_kwargs,
        input_size=input_size,
        source=os.path.basename(path),
    )
    extra = {
        "name": f"{arch}:{w.tag}" if w is not None else arch,
        "source": "torchvision",
        "source_file": os.path.basename(path),
        "source_sha256": sha,
        "torchvision_weights": None if w is None else w.name,
        "torchvision_builder": info.builder,
        "published_top1": None if w is None else w.top1,
        # Unknown weights (fine-tuned, random) get the architecture's default transform.
        "preprocess_source": (w or info.default_weights).name + (" (default)" if w is None else ""),
        "has_feature_map": info.has_feature_map,
        "has_attention": info.has_attention,
    }
    return models.save(
        out_dir,
        arch=arch,
        num_classes=k,
        variables=variables,
        arch_kwargs=arch_kwargs,
        input_shape=(input_size, input_size, 3),
        preprocess=preprocess,
        extra=extra,
        overwrite=overwrite,
    )


# --------------------------------------------------------------------------- loading


@dataclasses.dataclass(frozen=True)
class Converted:
    """A converted model ready to score.

    Attributes:
      model: pure ``features(variables, x[B,H,W,C]) -> Features`` and ``head`` functions.
      variables: the Flax variables.
      spec: the eval ``PreprocessSpec``.
      preprocess: ``PIL.Image -> [H, W, C] float32`` (torchvision-exact eval transform).
      preprocess_batch: ``[PIL.Image] -> [B, H, W, C] float32``.
      manifest: the saved manifest (source file, SHA-256, weights, top-1, ...).
    """

    model: Model
    variables: Any
    spec: PreprocessSpec
    preprocess: Callable[[Any], np.ndarray]
    preprocess_batch: Callable[[Iterable[Any]], np.ndarray]
    manifest: Mapping[str, Any]
    module: Any


def load_converted(
    directory: str | os.PathLike, *, expected_num_classes: int | None = None
) -> Converted:
    """Loads a converted (or any saved) model: model functions, variables, preprocessing."""
    loaded = models.load(directory, expected_num_classes=expected_num_classes)
    spec = loaded.preprocess
    if spec is None:
        raise ValueError(f"{directory}: the manifest records no preprocessing")
    return Converted(
        model=loaded.model,
        variables=loaded.variables,
        spec=spec,
        preprocess=functools.partial(transforms.preprocess, spec=spec),
        preprocess_batch=functools.partial(transforms.preprocess_batch, spec=spec),
        manifest=loaded.manifest,
        module=loaded.module,
    )
