"""Model registry, the Flax-module -> ``Model`` adapter, and saved-model directories.

Every architecture is a Flax Linen module whose

* ``__call__(x, train: bool = False) -> jaxood.Features`` maps NHWC normalised images to
  logits, the penultimate ``feature`` and (where the architecture has one) ``feature_map``
  / ``attention``;
* ``head(feature) -> logits`` applies the final affine layer (defined in ``setup`` so both
  methods share it).

:func:`flax_model` turns such a module into the pure ``(features, head)`` pair detectors use.
A user model does not need to be Flax at all: build a :class:`jaxood.Model` directly.

Saved models (trained checkpoints exported as "best", or converted torchvision weights) are
directories with ``manifest.json`` + an orbax ``variables/`` tree; :func:`load` returns
everything needed to score with them.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jaxood import fsutil
from jaxood.types import Model, PreprocessSpec

# name -> "module:factory". Factories are called as factory(num_classes=..., **kwargs) and
# return a Flax module. Entries import lazily so that importing jaxood stays cheap.
_LAZY: dict[str, str] = {
    # CIFAR-style (32x32) networks.
    "wrn": "jaxood.models.wrn:WideResNet",
    "wrn28_10": "jaxood.models.wrn:wrn28_10",
    "wrn16_4": "jaxood.models.wrn:wrn16_4",
    "densenet_bc": "jaxood.models.densenet:DenseNetBC",
    "densenet_bc_100": "jaxood.models.densenet:densenet_bc_100",
    "resnet18_32x32": "jaxood.models.resnet_cifar:resnet18_32x32",
    # ImageNet architectures (torchvision-compatible, see jaxood.convert).
    "resnet18": "jaxood.models.resnet:resnet18",
    "resnet50": "jaxood.models.resnet:resnet50",
    "resnet101": "jaxood.models.resnet:resnet101",
    "resnext50_32x4d": "jaxood.models.resnet:resnext50_32x4d",
    "densenet201": "jaxood.models.densenet_tv:densenet201",
    "regnet_y_16gf": "jaxood.models.regnet:regnet_y_16gf",
    "efficientnet_v2_l": "jaxood.models.efficientnet:efficientnet_v2_l",
    "vit_b_16": "jaxood.models.vit:vit_b_16",
    "swin_t": "jaxood.models.swin:swin_t",
    "swin_b": "jaxood.models.swin:swin_b",
}
_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_model(name: str, factory: Callable[..., Any], *, overwrite: bool = False) -> None:
    """Registers ``factory(num_classes=..., **kwargs) -> flax module`` under ``name``."""
    if (name in _REGISTRY or name in _LAZY) and not overwrite:
        raise ValueError(f"a model named {name!r} is already registered")
    _LAZY.pop(name, None)
    _REGISTRY[name] = factory


def model_names() -> list[str]:
    """All registered architecture names."""
    return sorted(set(_REGISTRY) | set(_LAZY))


def get_factory(name: str) -> Callable[..., Any]:
    """The factory registered as ``name``; the error lists the valid names."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name not in _LAZY:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(model_names())}")
    module_name, attr = _LAZY[name].split(":")
    factory = getattr(importlib.import_module(module_name), attr)
    _REGISTRY[name] = factory
    return factory


def create(name: str, num_classes: int, **kwargs: Any):
    """Builds the Flax module registered as ``name`` (unknown ``kwargs``: a ValueError
    listing the valid ones)."""
    check_arch_kwargs(name, kwargs)
    try:
        return get_factory(name)(num_classes=num_classes, **kwargs)
    except TypeError as e:  # a factory forwarding **kwargs to a module without that field
        if kwargs and "keyword argument" in str(e):
            raise ValueError(f"model {name!r}: {e} (arch_kwargs / --arch-kwargs)") from None
        raise


def arch_arguments(name: str) -> list[str] | None:
    """The keyword arguments the factory of ``name`` takes besides ``num_classes``: a Flax
    module's fields or a function's parameters; None when it forwards ``**kwargs``."""
    factory = get_factory(name)
    if isinstance(factory, type) and dataclasses.is_dataclass(factory):
        names = [f.name for f in dataclasses.fields(factory) if f.init]
    else:
        params = inspect.signature(factory).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return None
        names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return [n for n in names if n not in ("num_classes", "parent", "name")]


def _all_finite(value: Any) -> bool:
    """False when ``value`` is, or holds (lists, tuples, dicts), a NaN or infinite float."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(map(_all_finite, value))
    if isinstance(value, Mapping):
        return all(map(_all_finite, value.values()))
    return True


def check_arch_kwargs(name: str, kwargs: Mapping[str, Any]) -> None:
    """Raises a ValueError naming the unknown keys of ``kwargs`` (``arch_kwargs``,
    ``--arch-kwargs``) and listing the valid keyword arguments of model ``name``."""
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"arch_kwargs (--arch-kwargs) must be a JSON object of keyword "
                         f"arguments, e.g. {{\"depth\": 16}}, got {kwargs!r}")
    bad = sorted(k for k, v in kwargs.items() if not _all_finite(v))
    if bad:
        raise ValueError(f"model {name!r}: arch_kwargs (--arch-kwargs) {bad} must be finite "
                         f"numbers, got {', '.join(f'{k}={kwargs[k]!r}' for k in bad)}")
    valid = arch_arguments(name)
    unknown = sorted(k for k in kwargs if k == "num_classes" or (valid is not None and k not in valid))
    if unknown:
        raise ValueError(
            f"model {name!r} has no keyword argument(s) {unknown} (arch_kwargs / --arch-kwargs; "
            f"num_classes comes from the data); valid: {', '.join(valid or []) or 'none'}"
        )


def flax_model(module, *, name: str | None = None, input_shape=None, **meta: Any) -> Model:
    """Wraps a Flax module following the jaxood convention as a pure ``Model``.

    ``features(variables, x)`` runs ``module.apply(variables, x, train=False)`` (BatchNorm in
    inference mode, dropout off); ``head(variables, feature)`` runs ``module.head``.
    """

    def features(variables, x):
        return module.apply(variables, x, train=False)

    def head(variables, feature):
        return module.apply(variables, feature, method=type(module).head)

    return Model(
        features=features,
        head=head,
        name=name or type(module).__name__,
        input_shape=None if input_shape is None else tuple(input_shape),
        **meta,
    )


def init_variables(module, rng: jax.Array, input_shape: tuple[int, int, int]):
    """Initialises ``module`` on a ``[1, *input_shape]`` zero batch (inference mode)."""
    x = jax.numpy.zeros((1, *input_shape), jax.numpy.float32)
    return module.init(rng, x, train=False)


# --------------------------------------------------------------------------- saved models

MANIFEST = "manifest.json"
VARIABLES_DIR = "variables"


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A saved model ready to score: pure functions, weights, preprocessing, metadata, and the
    directory it was loaded from (``None`` when built in memory)."""

    model: Model
    variables: Any
    preprocess: PreprocessSpec | None
    manifest: Mapping[str, Any]
    module: Any
    directory: str | None = None


def save(
    directory: str | os.PathLike,
    *,
    arch: str,
    num_classes: int,
    variables: Any,
    arch_kwargs: Mapping[str, Any] | None = None,
    input_shape: tuple[int, int, int] | None = None,
    preprocess: PreprocessSpec | None = None,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> str:
    """Writes ``directory/{manifest.json, variables/}`` atomically (temp dir + rename).

    The manifest records the architecture and its kwargs, the class count, the feature
    dimension, the input shape and the eval preprocessing, plus ``extra`` (e.g. source file
    and SHA-256 of converted weights, training config, accuracy).
    """
    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory) and not overwrite:
        raise FileExistsError(f"{directory} exists; pass overwrite=True to replace it")
    variables = jax.tree.map(np.asarray, variables)
    module = create(arch, num_classes, **dict(arch_kwargs or {}))
    feature_dim = _feature_dim(module, variables, input_shape)
    manifest = {
        "format": "jaxood-model/1",
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs or {}),
        "num_classes": int(num_classes),
        "feature_dim": feature_dim,
        "input_shape": None if input_shape is None else list(input_shape),
        "preprocess": None if preprocess is None else preprocess.to_dict(),
        **dict(extra or {}),
    }
    with fsutil.atomic_dir(directory, overwrite=overwrite, marker=MANIFEST) as tmp:
        local_checkpointer().save(os.path.join(tmp, VARIABLES_DIR), variables)
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
    return directory


def local_checkpointer():
    """An orbax checkpointer for host NumPy trees that saves from this process alone, with no
    barrier across processes (multi-host runs export from process 0 only)."""
    import orbax.checkpoint as ocp

    me = jax.process_index()
    local = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    return ocp.Checkpointer(
        ocp.PyTreeCheckpointHandler(multiprocessing_options=local), multiprocessing_options=local
    )


def _feature_dim(module, variables, input_shape) -> int | None:
    if input_shape is None:
        return None
    x = jax.ShapeDtypeStruct((1, *input_shape), np.float32)
    out = jax.eval_shape(lambda v, x: module.apply(v, x, train=False), variables, x)
    return int(out.feature.shape[-1])


def resolve_model_dir(directory: str | os.PathLike, *, verbose: bool = True) -> str:
    """A saved-model directory, or a ``jaxood train`` workdir -> its ``best`` model.

    A workdir (``config.json`` + ``best/``, no manifest of its own) resolves to the
    best-on-val model it exported; with ``verbose`` the choice is printed.
    """
    directory = os.fspath(directory)
    best = os.path.join(directory, "best")
    if not os.path.isfile(os.path.join(directory, MANIFEST)) and os.path.isfile(
        os.path.join(best, MANIFEST)
    ):
        resolved = os.path.realpath(best)
        if verbose:
            print(f"{directory}: a training workdir; using its best model {resolved}")
        return resolved
    return directory


def read_manifest(directory: str | os.PathLike) -> dict:
    """Reads and checks ``manifest.json`` of a saved model directory (via the one manifest
    reader, :func:`jaxood.fsutil.read_manifest`)."""
    manifest = fsutil.read_manifest(
        directory, MANIFEST, kind="jaxood saved-model directory",
        make="train one with `jaxood train` or convert torchvision weights with `jaxood convert`",
    )
    for key in ("arch", "num_classes"):
        if key not in manifest:
            path = os.path.join(os.fspath(directory), MANIFEST)
            raise ValueError(f"{path} lacks the required key {key!r}")
    return manifest


def load(directory: str | os.PathLike, *, expected_num_classes: int | None = None) -> LoadedModel:
    """Loads a saved model directory: returns the ``Model``, variables and preprocessing.

    Raises:
      FileNotFoundError / ValueError: missing or corrupt directory, unknown architecture,
        a class count different from ``expected_num_classes``, or weights whose structure or
        shapes do not match the architecture.
    """
    manifest = read_manifest(directory)
    arch, num_classes = manifest["arch"], int(manifest["num_classes"])
    if expected_num_classes is not None and num_classes != expected_num_classes:
        raise ValueError(
            f"{directory}: model has {num_classes} classes but {expected_num_classes} were "
            "expected (checkpoint for another dataset?)"
        )
    module = create(arch, num_classes, **manifest.get("arch_kwargs", {}))
    input_shape = manifest.get("input_shape")
    vpath = os.path.join(os.path.abspath(os.fspath(directory)), VARIABLES_DIR)
    if not os.path.isdir(vpath):
        raise FileNotFoundError(f"{directory}: missing {VARIABLES_DIR}/ (incomplete save?)")
    try:
        variables = local_checkpointer().restore(vpath)
    except Exception as e:  # orbax raises many types for corrupt data
        raise ValueError(f"{directory}: could not read the weights ({type(e).__name__}: {e})") from e
    if input_shape is not None:
        check_variables(module, variables, tuple(input_shape), where=str(directory))
    preprocess = manifest.get("preprocess")
    model = flax_model(
        module,
        name=manifest.get("name", arch),
        input_shape=input_shape,
        num_classes=num_classes,
        feature_dim=manifest.get("feature_dim"),
        has_feature_map=bool(manifest.get("has_feature_map", True)),
        has_attention=bool(manifest.get("has_attention", False)),
    )
    return LoadedModel(
        model=model,
        variables=variables,
        preprocess=None if preprocess is None else PreprocessSpec.from_dict(preprocess),
        manifest=manifest,
        module=module,
        directory=os.path.abspath(os.fspath(directory)),
    )


def check_variables(module, variables, input_shape, *, where: str = "variables") -> None:
    """Raises ValueError listing missing/extra/mis-shaped leaves vs. a fresh init of ``module``."""
    x = jax.ShapeDtypeStruct((1, *input_shape), np.float32)
    expected = jax.eval_shape(
        lambda x: module.init(jax.random.PRNGKey(0), x, train=False), x
    )
    exp = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(expected)}
    got = {
        jax.tree_util.keystr(k): np.shape(v)
        for k, v in jax.tree_util.tree_leaves_with_path(variables)
    }
    missing = sorted(set(exp) - set(got))
    extra = sorted(set(got) - set(exp))
    shapes = sorted(k for k in set(exp) & set(got) if tuple(exp[k]) != tuple(got[k]))
    if missing or extra or shapes:
        lines = [f"{where}: weights do not match architecture {type(module).__name__}"]
        if missing:
            lines.append(f"  missing ({len(missing)}): {missing[:5]}")
        if extra:
            lines.append(f"  unexpected ({len(extra)}): {extra[:5]}")
        if shapes:
            lines.append(
                "  shape mismatch: "
                + ", ".join(f"{k} expected {exp[k]} got {got[k]}" for k in shapes[:5])
            )
        raise ValueError("\n".join(lines))


def class_ids(manifest: Mapping[str, Any]) -> list[int] | None:
    """Original class id of each model output when it was trained on a subset
    (``jaxood train --classes``): output ``i`` means class ``class_ids[i]``; ``None`` when
    outputs are the class ids themselves."""
    classes = ((manifest.get("train") or {}).get("config") or {}).get("classes")
    return None if classes is None else [int(c) for c in classes]
