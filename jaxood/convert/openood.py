"""Convert OpenOOD v1.5's released checkpoints (``s0/s1/s2/best.ckpt``) to jaxood models.

OpenOOD v1.5 publishes, per ID benchmark, three training runs of one network
(``scripts/eval_ood.py``: ``MODEL``/``NUM_CLASSES``):

=============  =================================================  =======  ==============
benchmark      network (``openood/networks/``)                    classes  eval transform
=============  =================================================  =======  ==============
cifar10        ``resnet18_32x32.py`` ``ResNet18_32x32``           10       32, CIFAR-10 norm
cifar100       ``resnet18_32x32.py`` ``ResNet18_32x32``           100      32, CIFAR-100 norm
imagenet200    ``resnet18_224x224.py`` ``ResNet18_224x224``       200      256 -> 224, ImageNet
=============  =================================================  =======  ==============

Each ``best.ckpt`` is ``torch.save(net.state_dict())``, with a ``module.`` prefix when the
run used DataParallel. ``ResNet18_224x224`` subclasses torchvision's ``ResNet`` (same keys
and computation as ``resnet18``), so it converts to jaxood's ``resnet18``;
``ResNet18_32x32`` converts to ``resnet18_32x32``. The manifest records the benchmark's
OpenOOD eval preprocessing (``openood/evaluation_api/preprocessor.py``), which
:mod:`jaxood.data.benchmarks` owns, so ``jaxood bench --benchmark cifar10 --model s0 s1 s2``
scores exactly what OpenOOD scores.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxood import models
from jaxood.convert.common import StateDict, converter_for
from jaxood.convert.files import read_state_dict, sha256_file
from jaxood.data import benchmarks


@dataclasses.dataclass(frozen=True)
class OpenOODNet:
    """One OpenOOD v1.5 network jaxood can convert.

    Attributes:
      name: OpenOOD's network name (``--arch`` of ``jaxood convert``).
      arch: the jaxood registry architecture it converts to.
      stem_kernel: side of ``conv1.weight`` (3 for the 32x32 net, 7 for the 224x224 one):
        with the shortcut key style, what tells the two apart in a state dict.
      shortcut_key: the projection shortcut of ``layer2.0`` in this network's state dict.
      benchmarks: the OpenOOD benchmarks released with this network.
    """

    name: str
    arch: str
    stem_kernel: int
    shortcut_key: str
    benchmarks: tuple[str, ...]


OPENOOD_NETS: dict[str, OpenOODNet] = {
    n.name: n
    for n in [
        OpenOODNet("resnet18_32x32", "resnet18_32x32", 3, "layer2.0.shortcut.0.weight",
                   ("cifar10", "cifar100")),
        OpenOODNet("resnet18_224x224", "resnet18", 7, "layer2.0.downsample.0.weight",
                   ("imagenet200",)),
    ]
}  # fmt: skip


def identify(tensors: Mapping[str, Any]) -> str | None:
    """Which OpenOOD network a state dict is (``None`` if neither): stem kernel, shortcut
    key style and the ResNet-18 depth (two blocks per stage, basic blocks)."""
    conv1 = np.shape(tensors.get("conv1.weight", ()))
    basic18 = (
        "layer4.1.conv2.weight" in tensors
        and "layer4.2.conv1.weight" not in tensors
        and "layer1.0.conv3.weight" not in tensors
    )
    for net in OPENOOD_NETS.values():
        if basic18 and conv1[-2:] == (net.stem_kernel,) * 2 and net.shortcut_key in tensors:
            return net.name
    return None


def describe(tensors: Mapping[str, Any]) -> str:
    """A short description of an unknown state dict, for error messages."""
    keys = list(tensors)
    stem = np.shape(tensors.get("conv1.weight", ()))
    fc = [f"{k} {tuple(np.shape(v))}" for k, v in tensors.items() if k.endswith("fc.weight")]
    return f"{len(keys)} keys, first {keys[:3]}, conv1.weight {tuple(stem)}, {fc[:1] or 'no fc'}"


def resolve_benchmark(net: OpenOODNet, num_classes: int, benchmark: str | None, source: str):
    """The :class:`jaxood.data.benchmarks.Benchmark` a checkpoint of ``net`` belongs to.

    Without ``benchmark``, the class count picks it among ``net.benchmarks``. Raises
    ValueError when the class count fits none of them, or not the given benchmark.
    """
    options = {b: benchmarks.get(b) for b in net.benchmarks}
    counts = ", ".join(f"{b}: {o.num_classes}" for b, o in options.items())
    if benchmark is not None:
        if benchmark not in options:
            raise ValueError(
                f"{source}: OpenOOD's {net.name} checkpoints are for {', '.join(options)}, not "
                f"{benchmark!r}"
            )
        if options[benchmark].num_classes != num_classes:
            raise ValueError(
                f"{source}: the checkpoint's classifier has {num_classes} classes, but "
                f"{benchmark} has {options[benchmark].num_classes}; is it a checkpoint of "
                "another benchmark?"
            )
        return options[benchmark]
    found = [o for o in options.values() if o.num_classes == num_classes]
    if not found:
        hint = (
            " (a torchvision ImageNet-1k ResNet-18? use --arch resnet18)"
            if net.name == "resnet18_224x224" and num_classes == 1000
            else ""
        )
        raise ValueError(
            f"{source}: an OpenOOD {net.name} with {num_classes} classes matches no OpenOOD "
            f"v1.5 benchmark ({counts}){hint}"
        )
    return found[0]


def convert_variables(tensors: Mapping[str, Any], name: str, *, source: str = "state dict"):
    """In-memory conversion of an OpenOOD ``name`` state dict.

    Returns:
      ``(module, variables, num_classes)``.

    Raises:
      ValueError: a state dict of another network (names what it looks like), or
        missing/extra/mis-shaped keys.
    """
    net = OPENOOD_NETS[name]
    found = identify(tensors)
    if found != name:
        what = (
            f"an OpenOOD {found} (use --arch {found})"
            if found
            else f"not an OpenOOD ResNet-18 ({describe(tensors)})"
        )
        raise ValueError(f"{source}: expected an OpenOOD {name} checkpoint, but this is {what}")
    fc = np.shape(tensors.get("fc.weight", ()))
    if len(fc) != 2 or fc[1] != 512:
        raise ValueError(f"{source}: fc.weight has shape {tuple(fc)}, expected [classes, 512]")
    num_classes = int(fc[0])
    module = models.create(net.arch, num_classes)
    sd = StateDict(tensors, source=source)
    variables = converter_for(module)(sd, module)
    sd.finish()
    size = 32 if net.stem_kernel == 3 else 224
    models.check_variables(module, variables, (size, size, 3), where=source)
    return module, variables, num_classes


def default_out_dir(path: str | os.PathLike, benchmark: str, name: str) -> str:
    """``checkpoints/openood_<benchmark>_<net>_<run folder>``, e.g. ``..._s0``."""
    run = os.path.basename(os.path.dirname(os.path.abspath(os.fspath(path)))) or "run"
    return os.path.join("checkpoints", f"openood_{benchmark}_{name}_{run}")


def convert(
    path: str | os.PathLike,
    name: str,
    out_dir: str | os.PathLike | None = None,
    *,
    benchmark: str | None = None,
    num_classes: int | None = None,
    overwrite: bool = False,
) -> str:
    """Converts an OpenOOD v1.5 ``best.ckpt`` into a saved jaxood model directory.

    Args:
      path: the checkpoint (``.ckpt``/``.pth``: needs torch; or ``.safetensors``).
      name: OpenOOD network, a key of :data:`OPENOOD_NETS`.
      out_dir: output directory (default :func:`default_out_dir`).
      benchmark: ``cifar10``, ``cifar100`` or ``imagenet200``; default: from the class count.
      num_classes: expected class count (checked).
      overwrite: replace an existing ``out_dir``.

    Returns:
      The absolute output directory; its manifest records the arch, the OpenOOD network,
      benchmark and run folder, source file + SHA-256 and the benchmark's preprocessing.
    """
    if name not in OPENOOD_NETS:
        raise ValueError(f"unknown OpenOOD network {name!r}; valid: {', '.join(OPENOOD_NETS)}")
    net = OPENOOD_NETS[name]
    source = os.path.basename(os.fspath(path))
    tensors = read_state_dict(path)  # FileNotFoundError / unreadable: clear errors there
    _, variables, k = convert_variables(tensors, name, source=source)
    if num_classes is not None and int(num_classes) != k:
        raise ValueError(f"{source}: expected {num_classes} classes but fc.weight has {k}")
    bench = resolve_benchmark(net, k, benchmark, source)
    out_dir = os.fspath(out_dir) if out_dir is not None else default_out_dir(path, bench.name, name)
    if os.path.exists(out_dir) and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass --overwrite (overwrite=True) to replace it")
    spec = bench.preprocess
    run = os.path.basename(os.path.dirname(os.path.abspath(os.fspath(path))))
    extra = {
        # One name for s0/s1/s2: `jaxood bench --model s0 s1 s2` reports them as runs of it.
        "name": f"openood-{bench.name}-{name}",
        "source": "openood",
        "source_file": source,
        "source_sha256": sha256_file(path),
        "openood_network": name,
        "openood_benchmark": bench.name,
        "openood_run": run,
        "preprocess_source": f"OpenOOD v1.5 evaluation_api/preprocessor.py ({bench.name})",
        "has_feature_map": True,
        "has_attention": False,
    }
    return models.save(
        out_dir,
        arch=net.arch,
        num_classes=k,
        variables=variables,
        input_shape=(spec.crop_size, spec.crop_size, 3),
        preprocess=spec,
        extra=extra,
        overwrite=overwrite,
    )
