"""OOD benchmarks as data: which sets play which role, where their images are, how many.

A benchmark names its ID splits (train / val / test), its OOD validation set (used only by
APS), its near- and far-OOD test sets and its covariate-shifted ID sets (full-spectrum OOD).
OpenOOD v1.5's four benchmarks (``openood/evaluation_api/datasets.py``, ``DATA_INFO``) and the
AdaSCALE paper's ImageNet-1k variant are image-list benchmarks read from a user data root in
OpenOOD's layout; ``fashion-openset`` and ``demo`` are array benchmarks built in
:mod:`jaxood.data.openset`.

:func:`open_benchmark` turns a definition into *sources*: objects with ``__len__``,
``labels`` (``[N]`` int, ``-1`` for OOD), ``batch(start, stop) -> [B, H, W, C]`` float32
(normalised with the model's :class:`~jaxood.types.PreprocessSpec`) and ``fingerprint()``
(a content hash for the feature cache). Everything is verified when opened, before any
network pass.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from jaxood.data import imglist as il
from jaxood.data import openset
from jaxood.data.transforms import preprocess
from jaxood.types import PreprocessSpec

# --------------------------------------------------------------------------- definitions


@dataclasses.dataclass(frozen=True)
class SetRef:
    """One image-list dataset of a benchmark.

    Attributes:
      name: short name used in result tables (OpenOOD's key, e.g. ``"tin"``).
      imglist: list path relative to the data root.
      data_dir: image directory relative to the data root.
      count: expected number of lines (OpenOOD v1.5 counts, spec §4); ``None`` when unverified.
      no_resize: ImageNet-C style: images are already at crop size, only ToTensor+Normalize.
    """

    name: str
    imglist: str
    data_dir: str
    count: int | None = None
    no_resize: bool = False


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """A benchmark definition.

    Attributes:
      name: registry name (``"cifar10"``, ``"fashion-openset"``, ...).
      num_classes: ID class count; a checkpoint must have the same.
      id_train, id_val, id_test, ood_val: the ID splits and the APS OOD-val set.
      near, far: ordered near-/far-OOD test sets.
      csid: covariate-shifted ID sets (full-spectrum OOD), labelled with ID class ids.
      preprocess: the benchmark's default eval preprocessing (OpenOOD's), used when a
        checkpoint does not carry its own.
      arrays: for array benchmarks, ``arrays(data_root) -> dict`` (see
        :mod:`jaxood.data.openset`); ``None`` for image-list benchmarks.
      description: one line for ``--help`` and reports.
    """

    name: str
    num_classes: int
    id_train: SetRef | None
    id_val: SetRef | None
    id_test: SetRef | None
    ood_val: SetRef | None
    near: tuple[SetRef, ...] = ()
    far: tuple[SetRef, ...] = ()
    csid: tuple[SetRef, ...] = ()
    preprocess: PreprocessSpec | None = None
    arrays: Callable[[str | None], Mapping[str, Any]] | None = None
    description: str = ""

    @property
    def ood_names(self) -> dict[str, list[str]]:
        return {"near": [s.name for s in self.near], "far": [s.name for s in self.far]}


_C = "images_classic/"
_L = "images_largescale/"


def _ref(bench: str, name: str, file: str, data_dir: str, count: int | None, **kw) -> SetRef:
    return SetRef(name, f"benchmark_imglist/{bench}/{file}", data_dir, count, **kw)


def _cifar(bench: str, k: int, near_other: str, counts: dict[str, int]) -> Benchmark:
    mean, std = {
        "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    }[bench]
    r = lambda name, file, n=None: _ref(bench, name, file, _C, n)
    return Benchmark(
        name=bench,
        num_classes=k,
        id_train=r(bench, f"train_{bench}.txt", 50_000),
        id_val=r(bench, f"val_{bench}.txt", 1_000),
        id_test=r(bench, f"test_{bench}.txt", 9_000),
        ood_val=r("tin", "val_tin.txt", counts["val_tin"]),
        near=(
            r(near_other, f"test_{near_other}.txt", counts[near_other]),
            r("tin", "test_tin.txt", counts["tin"]),
        ),
        far=(
            r("mnist", "test_mnist.txt", 70_000),
            r("svhn", "test_svhn.txt", 26_032),
            r("texture", "test_texture.txt", 5_640),
            r("places365", "test_places365.txt", counts["places365"]),
        ),
        csid=(r("cifar10c", "test_cifar10c.txt", 10_000),) if bench == "cifar10" else (),
        preprocess=PreprocessSpec(32, 32, "bilinear", mean, std, 3),
        description=f"OpenOOD v1.5 {bench.upper()} ({k} classes)",
    )


def _imagenet(bench: str, k: int, *, paper: bool = False) -> Benchmark:
    lst = "imagenet200" if k == 200 else "imagenet"  # list folder under benchmark_imglist/
    r = lambda name, file, n=None, d=_L, **kw: _ref(lst, name, file, d, n, **kw)
    near = (r("ssb_hard", "test_ssb_hard.txt", 49_000), r("ninco", "test_ninco.txt", 5_879))
    far = (
        r("inaturalist", "test_inaturalist.txt", 10_000),
        r("textures", "test_textures.txt", 5_160, _C),
        r("openimage_o", "test_openimage_o.txt", 15_869),
    )
    if paper:
        # AdaSCALE paper Table 2 (spec §4.6): ImageNet-O joins near-OOD and Places far-OOD.
        # Neither is in OpenOOD's DATA_INFO; list names follow OpenOOD's download ids.
        near = (*near, r("imagenet_o", "test_imagenet_o.txt", 2_000))
        far = (far[0], r("places", "test_places.txt", None), *far[1:])
    if k == 200:
        train, val, test = (None, 1_000, 9_000)
        csid = (
            r("imagenet_v2", "test_imagenet200_v2.txt", 2_000),
            r("imagenet_c", "test_imagenet200_c.txt", 2_000, no_resize=True),
            r("imagenet_r", "test_imagenet200_r.txt", 30_000),
        )
    else:
        train, val, test = (1_281_167, 5_000, 45_000)
        csid = (
            r("imagenet_v2", "test_imagenet_v2.txt", 10_000),
            r("imagenet_c", "test_imagenet_c.txt", 10_000, no_resize=True),
            r("imagenet_r", "test_imagenet_r.txt", 30_000),
            r("imagenet_es", "test_imagenet_es.txt", None),
        )
    return Benchmark(
        name=bench,
        num_classes=k,
        id_train=r(lst, f"train_{lst}.txt", train),
        id_val=r(lst, f"val_{lst}.txt", val),
        id_test=r(lst, f"test_{lst}.txt", test),
        ood_val=r("openimage_o", "val_openimage_o.txt", 1_763),
        near=near,
        far=far,
        csid=csid,
        preprocess=PreprocessSpec(256, 224, "bilinear"),
        description=(
            "AdaSCALE paper ImageNet-1k (OpenOOD v1.5 + ImageNet-O near, Places far)"
            if paper
            else f"OpenOOD v1.5 ImageNet-{'200' if k == 200 else '1k'} ({k} classes)"
        ),
    )


def _array_benchmark(name: str) -> Benchmark:
    spec = openset.npz_spec(name[4:]) if name.startswith("npz:") else openset.SPECS[name]
    if name.startswith("npz:"):  # a name that is safe as a results folder
        name = "npz-" + os.path.splitext(os.path.basename(name[4:]))[0]
    return Benchmark(
        name=name,
        num_classes=spec["num_classes"],
        id_train=None,
        id_val=None,
        id_test=None,
        ood_val=None,
        near=tuple(SetRef(n, "", "") for n in spec["near"]),
        far=tuple(SetRef(n, "", "") for n in spec["far"]),
        arrays=spec["loader"],
        description=spec["description"],
        preprocess=(
            PreprocessSpec(None, None, "bilinear", *spec["preprocess"], 3)
            if "preprocess" in spec
            else None
        ),
    )


_BUILDERS: dict[str, Callable[[], Benchmark]] = {
    "cifar10": lambda: _cifar(
        "cifar10",
        10,
        "cifar100",
        {"val_tin": 1_000, "cifar100": 9_000, "tin": 7_793, "places365": 35_195},
    ),
    "cifar100": lambda: _cifar(
        "cifar100",
        100,
        "cifar10",
        {"val_tin": 972, "cifar10": 10_000, "tin": 6_526, "places365": 33_773},
    ),
    "imagenet200": lambda: _imagenet("imagenet200", 200),
    "imagenet": lambda: _imagenet("imagenet", 1000),
    "imagenet-adascale": lambda: _imagenet("imagenet-adascale", 1000, paper=True),
    "fashion-openset": lambda: _array_benchmark("fashion-openset"),
    "cifar10-tfds": lambda: _array_benchmark("cifar10-tfds"),
    "demo": lambda: _array_benchmark("demo"),
}


def register(bench: Benchmark, *, overwrite: bool = False) -> Benchmark:
    """Adds a user-defined benchmark (e.g. a custom image-list set) under ``bench.name``."""
    if bench.name in _BUILDERS and not overwrite:
        raise ValueError(f"a benchmark named {bench.name!r} exists; pass overwrite=True")
    _BUILDERS[bench.name] = lambda: bench
    return bench


def names() -> list[str]:
    """Names of all defined benchmarks."""
    return list(_BUILDERS)


def get(name: str) -> Benchmark:
    """The benchmark called ``name``; the error lists the valid names."""
    if name.startswith("npz:"):
        return _array_benchmark(name)
    if name not in _BUILDERS:
        raise ValueError(
            f"unknown benchmark {name!r}; valid names: {', '.join(names())}, or npz:<file.npz>"
        )
    return _BUILDERS[name]()


# --------------------------------------------------------------------------- array sources


class ArraySource:
    """A dataset held as uint8 images in memory, preprocessed per batch.

    Args:
      images: ``[N, H, W]`` or ``[N, H, W, C]`` uint8.
      labels: ``[N]`` int (class ids; ``-1`` for OOD).
      spec: the model's eval preprocessing. Resizing/cropping goes through PIL (exactly as
        for decoded files) only when the spec asks for a size different from the array's.
      name: dataset name.
    """

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, spec: PreprocessSpec, name: str = ""
    ):
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(
                f"dataset {name!r}: images must be uint8 [N, H, W] or [N, H, W, C], got "
                f"{images.dtype} {images.shape}"
            )
        if len(labels) != len(images):
            raise ValueError(f"dataset {name!r}: {len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, np.asarray(labels, np.int64)
        self.spec, self.name = spec, name
        h, w = images.shape[1:3]
        sizes = {spec.resize_size, spec.crop_size} - {None}
        self._needs_pil = bool(sizes) and sizes != {h} or (h != w and bool(sizes))
        if spec.channels not in (1, 3):
            raise ValueError(f"PreprocessSpec.channels must be 1 or 3, got {spec.channels}")
        if images.shape[-1] == 3 and spec.channels == 1:
            raise ValueError(f"dataset {name!r} is RGB but the model takes 1-channel images")

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, start: int, stop: int) -> np.ndarray:
        x = self.images[start:stop]
        if self._needs_pil:
            from PIL import Image

            mode = "L" if x.shape[-1] == 1 else "RGB"
            return np.stack(
                [
                    np.asarray(
                        preprocess(
                            Image.fromarray(im.squeeze(-1) if mode == "L" else im, mode), self.spec
                        ),
                        np.float32,
                    )
                    for im in x
                ]
            )
        x = x.astype(np.float32) / 255.0
        if x.shape[-1] == 1 and self.spec.channels == 3:
            x = np.repeat(x, 3, axis=-1)  # grayscale -> RGB, as PIL's convert("RGB")
        mean = np.asarray(self.spec.mean, np.float32)
        std = np.asarray(self.spec.std, np.float32)
        return (x - mean) / std

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.images).data)
        h.update(np.ascontiguousarray(self.labels).data)
        h.update(repr(sorted(self.spec.to_dict().items())).encode())
        return h.hexdigest()


# --------------------------------------------------------------------------- opening


@dataclasses.dataclass
class OpenedBenchmark:
    """Sources for every role of a benchmark, verified and ready to extract.

    ``near``/``far``/``csid`` map dataset name -> source in the benchmark's order.
    ``id_train`` is ``None`` when it was not requested (no detector fits on train).
    """

    benchmark: Benchmark
    id_train: Any
    id_val: Any
    id_test: Any
    ood_val: Any
    near: dict[str, Any]
    far: dict[str, Any]
    csid: dict[str, Any]

    def all_sources(self) -> dict[str, Any]:
        """``role/name -> source`` for every non-empty role (``id_train`` only if opened)."""
        out = {}
        for role in ("id_train", "id_val", "id_test", "ood_val"):
            src = getattr(self, role)
            if src is not None:
                out[role] = src
        for group in ("near", "far", "csid"):
            for name, src in getattr(self, group).items():
                out[f"{group}/{name}"] = src
        return out


def _spec_no_resize(spec: PreprocessSpec) -> PreprocessSpec:
    return dataclasses.replace(spec, resize_size=None, crop_size=None)


def open_benchmark(
    bench: Benchmark | str,
    data_root: str | os.PathLike | None,
    spec: PreprocessSpec | None,
    *,
    need_train: bool = True,
    csid: bool = False,
    checksums: str | os.PathLike | None = None,
    strict_counts: bool = False,
) -> OpenedBenchmark:
    """Verifies a benchmark's data under ``data_root`` and returns its sources.

    Args:
      bench: a :class:`Benchmark` or its name.
      data_root: OpenOOD-style root (``benchmark_imglist/``, ``images_classic/``,
        ``images_largescale/``) for image-list benchmarks; the folder holding
        ``fashion_mnist.npz`` / ``mnist_10k.npz`` for fashion-openset; unused by ``demo``.
      spec: the model's eval preprocessing (``None``: the benchmark's default).
      need_train: open (and verify) the ID train split too.
      csid: open the covariate-shifted ID sets (full-spectrum mode).
      checksums: optional ``sha256sum``-style manifest (paths relative to the data root).
      strict_counts: require each list's line count to equal OpenOOD v1.5's.

    Raises:
      ValueError / FileNotFoundError: missing lists or images, before any compute.
    """
    if isinstance(bench, str):
        bench = get(bench)
    spec = spec or bench.preprocess
    if spec is None:
        raise ValueError(
            f"benchmark {bench.name!r} has no default preprocessing; the model checkpoint must "
            "record its PreprocessSpec (manifest 'preprocess')"
        )
    if bench.arrays is not None:
        if checksums is not None:
            raise ValueError(
                f"checksums verify the image files of image-list benchmarks; {bench.name!r} is "
                "an array benchmark (its arrays are fingerprinted instead): drop --checksums"
            )
        return _open_arrays(bench, data_root, spec, need_train=need_train, csid=csid)
    if data_root is None:
        raise ValueError(f"benchmark {bench.name!r} needs --data-root (OpenOOD v1.5 layout)")
    root = os.fspath(data_root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data root {root!r} does not exist")
    sums = None if checksums is None else il.read_checksums(checksums)
    refs = _imglist_refs(bench, need_train=need_train, csid=csid)
    _check_lists_exist(bench, root, refs)
    return _open_imglists(bench, root, spec, refs, sums, strict_counts)


def _open_arrays(bench: Benchmark, data_root, spec, *, need_train: bool, csid: bool):
    """Array benchmarks: every split is an :class:`ArraySource` over the loaded arrays."""
    data = bench.arrays(None if data_root is None else os.fspath(data_root))

    def src(role_name: str, xy) -> ArraySource:
        return ArraySource(xy[0], xy[1], spec, role_name)

    return OpenedBenchmark(
        bench,
        id_train=src("id_train", data["train"]) if need_train else None,
        id_val=src("id_val", data["val"]),
        id_test=src("id_test", data["test"]),
        ood_val=src("ood_val", data["ood_val"]),
        near={n: src(n, xy) for n, xy in data["near"].items()},
        far={n: src(n, xy) for n, xy in data["far"].items()},
        # Optional covariate-shifted ID sets ({"csid": {name: (x, y)}}), full-spectrum only.
        csid={n: src(n, xy) for n, xy in data.get("csid", {}).items()} if csid else {},
    )


def _imglist_refs(bench: Benchmark, *, need_train: bool, csid: bool) -> list[tuple[str, SetRef]]:
    """``(role, SetRef)`` of every list to open, in opening order; roles ``id_*``/``ood_val``
    for single splits and ``near``/``far``/``csid`` for the grouped sets."""
    refs: list[tuple[str, SetRef]] = [("id_val", bench.id_val), ("id_test", bench.id_test)]
    refs.append(("ood_val", bench.ood_val))
    if need_train:
        refs.insert(0, ("id_train", bench.id_train))
    refs += [("near", r) for r in bench.near] + [("far", r) for r in bench.far]
    if csid:
        refs += [("csid", r) for r in bench.csid]
    return refs


def _check_lists_exist(bench: Benchmark, root: str, refs) -> None:
    """Every list must exist before any image is looked at: reports all missing at once."""
    missing = [
        r.imglist
        for _, r in refs
        if r is not None and not os.path.isfile(os.path.join(root, r.imglist))
    ]
    if any(r is None for _, r in refs):
        absent = [role for role, r in refs if r is None]
        raise ValueError(f"benchmark {bench.name!r} defines no {absent} split(s)")
    if missing:
        raise FileNotFoundError(
            f"benchmark {bench.name!r}: {len(missing)} image list(s) missing under data root "
            f"{root!r}:\n{il.listing(missing)}\nExpected OpenOOD v1.5's layout "
            "<root>/benchmark_imglist/<benchmark>/*.txt"
        )


def _open_imglists(bench, root: str, spec, refs, sums, strict_counts) -> OpenedBenchmark:
    """Reads and verifies every list (files exist, ``sums``: path -> SHA-256, counts) into
    sources."""
    opened: dict[str, Any] = {"near": {}, "far": {}, "csid": {}}
    for role, ref in refs:
        lst = il.read_imglist(os.path.join(root, ref.imglist), os.path.join(root, ref.data_dir))
        sub = None
        if sums is not None:
            prefix = ref.data_dir.rstrip("/") + "/"
            sub = {k[len(prefix) :]: v for k, v in sums.items() if k.startswith(prefix)}
        il.verify(
            lst, checksums=sub, expected_count=ref.count if strict_counts else None, name=ref.name
        )
        s = _spec_no_resize(spec) if ref.no_resize else spec
        source = il.ImageListSource(lst, s, name=ref.name)
        if role in opened:
            opened[role][ref.name] = source
        else:
            opened[role] = source
    return OpenedBenchmark(
        bench,
        id_train=opened.get("id_train"),
        id_val=opened["id_val"],
        id_test=opened["id_test"],
        ood_val=opened["ood_val"],
        near=opened["near"],
        far=opened["far"],
        csid=opened["csid"],
    )
