"""Published per-benchmark (and per-architecture) hyperparameters, for runs without APS.

* AdaSCALE-A/L: the paper's Tables 12 and 13 (``(p_min, p_max)`` and ``k2`` per dataset and
  network; ``lmbda = 10``, ``k1 = 1 %``, ``o = 5 %``, ``eps = 0.5`` everywhere).
* OODD: the release's per-benchmark ``K1/K2/ALPHA/queue`` (``jaxood.detectors.oodd``).
* NAP-x: the published ``w`` (``jaxood.detectors.nap.PUBLISHED_W``).

:func:`overrides` returns the values for a benchmark and model manifest together with a
record of where each came from; a detector without a published value keeps its own default
and the record says so. Benchmarks that are not in the paper (``fashion-openset``, ``demo``)
have none unless ``like`` names one to borrow from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jaxood.detectors.nap import PUBLISHED_W
from jaxood.detectors.oodd import OODD_DEFAULTS

#: Tables 12 (A) and 13 (L): (benchmark, network) -> {variant: (p_min, p_max, k2 in %)}.
ADASCALE_TABLES = {
    ("cifar10", "wrn28_10"): {"a": (60, 95, 80.0), "l": (60, 85, 80.0)},
    ("cifar10", "densenet_bc_100"): {"a": (65, 90, 10.0), "l": (70, 85, 10.0)},
    ("cifar100", "wrn28_10"): {"a": (60, 85, 80.0), "l": (60, 80, 80.0)},
    ("cifar100", "densenet_bc_100"): {"a": (70, 80, 100.0), "l": (65, 75, 50.0)},
    ("imagenet", "resnet50"): {"a": (80, 85, 5.0), "l": (80, 85, 5.0)},
    ("imagenet", "resnet101"): {"a": (80, 85, 5.0), "l": (70, 80, 5.0)},
    ("imagenet", "regnet_y_16gf"): {"a": (60, 90, 50.0), "l": (60, 85, 5.0)},
    ("imagenet", "resnext50_32x4d"): {"a": (80, 85, 5.0), "l": (70, 80, 5.0)},
    ("imagenet", "densenet201"): {"a": (90, 95, 10.0), "l": (90, 95, 10.0)},
    ("imagenet", "efficientnet_v2_l"): {"a": (60, 99, 20.0), "l": (60, 99, 5.0)},
    ("imagenet", "vit_b_16"): {"a": (60, 85, 100.0), "l": (75, 85, 100.0)},
    ("imagenet", "swin_b"): {"a": (90, 99, 5.0), "l": (90, 99, 100.0)},
}
#: Settings the paper uses for every benchmark and network (Appendix C).
ADASCALE_COMMON = {"lmbda": 10.0, "k1": 1.0, "o": 0.05, "eps": 0.5}
NETWORK_NAMES = {
    "wrn28_10": "WideResNet-28-10", "densenet_bc_100": "DenseNet-101", "resnet50": "ResNet-50",
    "resnet101": "ResNet-101", "regnet_y_16gf": "RegNet-Y-16", "resnext50_32x4d": "ResNeXt-50",
    "densenet201": "DenseNet-201", "efficientnet_v2_l": "EfficientNetV2-L",
    "vit_b_16": "ViT-B-16", "swin_b": "Swin-B",
}
#: jaxood benchmark name -> the dataset key of the published tables.
BENCHMARK_KEYS = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet": "imagenet",
                  "imagenet-adascale": "imagenet", "imagenet200": "imagenet200"}


def network_key(manifest: Mapping[str, Any]) -> str:
    """The published tables' network key of a model manifest (``wrn`` depth 28 width 10 ->
    ``wrn28_10``; ``densenet_bc`` depth 100 -> ``densenet_bc_100``)."""
    arch = str(manifest.get("arch", ""))
    kw = manifest.get("arch_kwargs", {}) or {}
    if arch == "wrn":
        return f"wrn{kw.get('depth', '?')}_{kw.get('widen_factor', '?')}"
    if arch == "densenet_bc" and kw.get("depth", 100) == 100:
        return "densenet_bc_100"
    return arch


def _adascale(variant: str, dataset: str, net: str):
    entry = ADASCALE_TABLES.get((dataset, net))
    if entry is None:
        return None, None
    p_min, p_max, k2 = entry[variant]
    table = "12" if variant == "a" else "13"
    values = {"percentile": (p_min, p_max), "k2": k2, **ADASCALE_COMMON}
    return values, f"AdaSCALE Table {table}: {dataset} / {NETWORK_NAMES.get(net, net)}"


def _published(name: str, dataset: str, net: str):
    if name in ("adascale_a", "adascale_l"):
        return _adascale(name[-1], dataset, net)
    if name == "oodd":
        if dataset in OODD_DEFAULTS:
            return dict(OODD_DEFAULTS[dataset]), f"OODD release bash.sh: {dataset}"
    if name.startswith("nap_"):
        w = PUBLISHED_W.get(name, {}).get(dataset)
        if w is not None:
            return {"w": w}, f"NAP paper, optimal w: {dataset}"
    return None, None


def overrides(benchmark: str, manifest: Mapping[str, Any], detectors: Sequence[str], *,
              like: str | None = None) -> tuple[dict, dict]:
    """``(hparams, record)`` for ``BenchConfig(aps=False, hparams=...)``.

    Args:
      benchmark: jaxood benchmark name.
      manifest: the model's manifest (its ``arch`` / ``arch_kwargs`` pick the network row).
      detectors: detector names.
      like: a benchmark whose values to borrow when ``benchmark`` has none.

    Returns:
      ``hparams = {detector: {name: value}}`` (only detectors with published values) and
      ``record = {detector: {"source": str, "values": dict}}`` for every detector.
    """
    dataset = BENCHMARK_KEYS.get(benchmark) or BENCHMARK_KEYS.get(like or "", None)
    borrowed = dataset is not None and benchmark not in BENCHMARK_KEYS
    net = network_key(manifest)
    hparams, record = {}, {}
    for name in detectors:
        values, source = _published(name, dataset, net) if dataset else (None, None)
        if values is None:
            record[name] = {"source": f"detector default (nothing published for {benchmark} / "
                                      f"{net})", "values": {}}
            continue
        if borrowed:
            source += f" (borrowed for {benchmark})"
        hparams[name] = values
        record[name] = {"source": source, "values": values}
    return hparams, record
