"""The model a pipeline runs: binding the ways a user names one, and its identity.

One identity serves every user: the feature cache keys (a projection of it, see
:func:`cache_identity`), the benchmark's results folder and ``aps.json`` runs, and the model
check of a saved fitted detector.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import jax
import numpy as np

from jaxood import fsutil, models
from jaxood.models import LoadedModel
from jaxood.types import Model

#: The identity fields the feature cache keys hold. Fixed: a cache entry written before
#: stays valid only as long as its key is derived the same way.
CACHE_FIELDS = ("arch", "arch_kwargs", "weights")


def variables_fingerprint(variables: Any) -> str:
    """SHA-256 over every leaf's path, dtype, shape and bytes: identifies trained weights."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables):
        arr = np.ascontiguousarray(np.asarray(leaf))
        h.update(jax.tree_util.keystr(path).encode())
        h.update(f"{arr.dtype}{arr.shape}".encode())
        h.update(arr.data)
    return h.hexdigest()


def model_identity(model: LoadedModel) -> dict[str, Any]:
    """What identifies a model: architecture, classes, shapes and a SHA-256 of every weight
    (JSON-plain values)."""
    m = model.manifest
    return fsutil.plain({
        "name": m.get("name"),
        "arch": m.get("arch"),
        "arch_kwargs": m.get("arch_kwargs", {}),
        "num_classes": m.get("num_classes", model.model.num_classes),
        "feature_dim": m.get("feature_dim", model.model.feature_dim),
        "input_shape": m.get("input_shape"),
        "weights": variables_fingerprint(model.variables),
    })


def cache_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """The part of :func:`model_identity` that feature-cache keys hold (``CACHE_FIELDS``)."""
    return {k: identity[k] for k in CACHE_FIELDS}


def bind_model(model: Any) -> LoadedModel:
    """A saved-model directory, a ``LoadedModel``, or ``(Model, variables)`` -> ``LoadedModel``."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        return models.load(models.resolve_model_dir(os.fspath(model)))
    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], Model):
        m, variables = model
        manifest = {
            "name": m.name, "num_classes": m.num_classes, "feature_dim": m.feature_dim,
            "input_shape": None if m.input_shape is None else list(m.input_shape),
        }
        return LoadedModel(model=m, variables=variables, preprocess=None, manifest=manifest,
                           module=None)
    raise ValueError(
        f"`model` must be a saved-model directory, a jaxood.models.LoadedModel or a "
        f"(Model, variables) pair; got {type(model).__name__}"
    )


def input_shape(loaded: LoadedModel) -> tuple[int, ...] | None:
    """``(H, W, C)`` the model takes (manifest first, then the ``Model``), ``None`` if unknown."""
    shape = loaded.manifest.get("input_shape") or loaded.model.input_shape
    return None if shape is None else tuple(int(s) for s in shape)


def model_capabilities(model, variables, sample_shape: tuple[int, ...]) -> set[str]:
    """Which ``Features`` fields the model fills, found by shape evaluation (no compute)."""
    x = jax.ShapeDtypeStruct((1, *sample_shape), np.float32)
    try:
        out = jax.eval_shape(model.features, variables, x)
    except Exception as e:
        raise ValueError(
            f"model {model.name!r} cannot run on inputs of shape {tuple(sample_shape)} "
            f"({type(e).__name__}: {e}); wrong benchmark/preprocessing for this checkpoint?"
        ) from e
    caps = {"logits", "feature", "input"}
    if out.feature_map is not None:
        caps.add("feature_map")
    if out.attention is not None:
        caps.add("attention")
    return caps
