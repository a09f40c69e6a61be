"""Saving and loading fitted detectors: orbax arrays + a JSON manifest, written atomically.

Layout::

    det/detector.json   format, jaxood + detector versions, hyperparameters, the model's
                        fingerprint, input shape + preprocessing, threshold, calibration info,
                        batch size and how it was chosen ("batch"),
                        static fields of the statistics, a SHA-256 of every array, XLA flags,
                        and a SHA-256 of each of its own fields ("fields_sha256")
    det/arrays/         orbax tree {"stats": {field: array}, "calibration": [n],
                        "state": {field: array}}  (zero-size arrays live in the manifest)

Loading (:mod:`jaxood.fitted.loading`) checks everything it can before returning: a missing or corrupt file, a detector
that is not registered (a plugin not imported), another detector version, and above all a
model other than the one the detector was fitted on, an edited ``detector.json`` (its fields
against their checksums, then its schema) — each a clear error naming what differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from jaxood import fsutil
from jaxood.features.model import model_identity
from jaxood.fitted.standalone import field_digests
from jaxood.models import LoadedModel, local_checkpointer
from jaxood.version import __version__

if TYPE_CHECKING:  # annotations only: detector.py imports this module to save
    from jaxood.fitted.detector import FittedDetector

FORMAT = "jaxood-detector/1"
MANIFEST = "detector.json"
ARRAYS = "arrays"


def _split_fields(obj: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A flat pytree record -> ``({field: array or None}, {static field: value})``."""
    if obj is None:
        return {}, {}
    if dataclasses.is_dataclass(obj):
        arrays, static = {}, {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.metadata.get("pytree_node", True):
                arrays[f.name] = value
            else:
                static[f.name] = value
        return arrays, static
    if hasattr(obj, "_fields"):  # NamedTuple
        return dict(obj._asdict()), {}
    raise TypeError(f"cannot save statistics of type {type(obj).__name__}: use a flax.struct "
                    "dataclass or a NamedTuple of arrays")


def _arrays_digest(tree: dict) -> str:
    h = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(tree), key=lambda kv: str(kv[0])):
        arr = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{arr.dtype}|{arr.shape}".encode())
        h.update(arr.data)
    return h.hexdigest()


def _arrays_tree(fitted: FittedDetector) -> tuple[dict, dict, dict]:
    """``(orbax tree, empty arrays, layout)``: non-empty arrays for orbax; zero-size ones
    (orbax cannot store them) and ``None`` fields described in the manifest."""
    stats_arrays, stats_static = _split_fields(fitted.stats)
    state_arrays, _ = _split_fields(fitted.state)
    groups = {"stats": stats_arrays, "state": state_arrays,
              "calibration": {"scores": fitted.calibration}}
    tree, empty, layout = {}, {}, {"stats_static": stats_static}
    for group, fields in groups.items():
        layout[group] = {}
        for name, value in fields.items():
            if value is None:
                layout[group][name] = None
                continue
            arr = np.asarray(value)
            layout[group][name] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
            if arr.size == 0:
                empty[f"{group}/{name}"] = layout[group][name]
            else:
                tree.setdefault(group, {})[name] = arr
    return tree, empty, layout


def save(fitted: FittedDetector, directory: str, *, overwrite: bool = False) -> str:
    """Writes ``fitted`` to ``directory`` (temp dir + rename: never half-written)."""
    tree, empty, layout = _arrays_tree(fitted)
    det = fitted.detector
    manifest = {
        "format": FORMAT,
        "jaxood_version": __version__,
        "detector": det.name,
        "detector_version": det.version,
        "stats_type": None if fitted.stats is None else type(fitted.stats).__name__,
        "hparams": fitted.hparams,
        "model": model_identity(fitted.model),
        "input": {
            "shape": fitted.input_shape,
            "preprocess": None if fitted.model.preprocess is None
            else fitted.model.preprocess.to_dict(),
        },
        "threshold": {"value": fitted.threshold_value, **(fitted.threshold_info or {})},
        "calibration": fitted.calibration_info,
        "adapted": fitted.adapted,
        "batch_size": fitted.batch_size,
        "batch": fitted.batch_info,
        "model_dir": fitted.model_dir,
        "layout": layout,
        "empty_arrays": empty,
        "arrays_sha256": _arrays_digest(tree),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    manifest = fsutil.plain(manifest)
    manifest["fields_sha256"] = field_digests(manifest)
    with fsutil.atomic_dir(directory, overwrite=overwrite, marker=MANIFEST) as tmp:
        if tree:
            local_checkpointer().save(os.path.join(tmp, ARRAYS), tree)
        fsutil.atomic_write_json(os.path.join(tmp, MANIFEST), manifest)
    return os.path.abspath(directory)


def read_manifest(directory: str) -> dict:
    """``detector.json`` of a saved detector, checked for presence, JSON and format."""
    manifest = fsutil.read_manifest(
        directory, MANIFEST, kind="saved detector",
        make="write one with `jaxood fit` or FittedDetector.save",
    )
    path = os.path.join(os.fspath(directory), MANIFEST)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}; "
                         "re-save the detector with this jaxood version")
    check_manifest(manifest, path)
    return manifest


#: Fields of detector.json the loader reads, with their JSON types.
SCHEMA = {
    "detector": str, "detector_version": (str, int), "hparams": dict, "model": dict,
    "threshold": dict, "calibration": dict, "batch_size": int, "layout": dict,
    "arrays_sha256": str, "stats_type": (str, type(None)),
}


def check_manifest(manifest: dict, path: str) -> None:
    """Every field against its saved checksum (naming the edited ones), then the schema."""
    sums = manifest.get("fields_sha256")
    if isinstance(sums, dict):
        now = field_digests({k: v for k, v in manifest.items() if k != "fields_sha256"})
        edited = sorted(k for k in set(sums) | set(now) if sums.get(k) != now.get(k))
        if edited:
            raise ValueError(
                f"{path} was edited after it was saved (fields {edited}); re-fit or re-save the "
                "detector (set a threshold with `jaxood fit --tpr` or fitted.threshold(), not "
                "by editing the file)")
    for key, types in SCHEMA.items():
        value = manifest.get(key)
        if not isinstance(value, types) or (types is int and isinstance(value, bool)):
            raise ValueError(f"{path}: field {key!r} is missing or has the wrong type "
                             f"({type(value).__name__}); re-fit the detector")
    t = manifest["threshold"].get("value")
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float))
                          or not np.isfinite(t)):
        raise ValueError(f"{path}: threshold {t!r} must be a finite number or null")
    if manifest["batch_size"] < 1:
        raise ValueError(f"{path}: batch_size must be >= 1, got {manifest['batch_size']}")
    # How the batch size was chosen: absent from files saved before it was recorded.
    if not isinstance(manifest.get("batch", {}), dict):
        raise ValueError(f"{path}: field 'batch' must be an object; re-fit the detector")


def check_same_model(saved: dict, model: LoadedModel, where: str) -> None:
    """Raises naming every fingerprint field that differs between ``saved`` and ``model``."""
    current = model_identity(model)
    # A (Model, variables) pair built in memory knows no architecture name/kwargs (and maybe
    # no D): what it cannot tell is not a difference; the weights always decide.
    unknown = {k for k, v in current.items() if v is None}
    if "arch" not in model.manifest:
        unknown |= {"arch", "arch_kwargs"}
    diff = {k: (saved.get(k), current.get(k)) for k in saved
            if saved.get(k) != current.get(k) and (k not in unknown or k == "weights")}
    diff.pop("name", None)  # a renamed copy of the same weights is the same model
    if diff:
        lines = "; ".join(
            f"{k}: fitted on {a!r}, got {b!r}" if k != "weights"
            else f"weights: fitted on sha256 {str(a)[:12]}…, got {str(b)[:12]}…"
            for k, (a, b) in diff.items()
        )
        raise ValueError(
            f"{where} was fitted on another model ({lines}); load it with the model it was "
            "fitted on, or fit a new detector for this one"
        )


def restore_arrays(directory: str, manifest: dict) -> dict:
    tree = {}
    path = os.path.join(os.path.abspath(directory), ARRAYS)
    has_arrays = any(
        v is not None and int(np.prod(v["shape"])) > 0
        for group in ("stats", "state", "calibration")
        for v in manifest["layout"].get(group, {}).values()
    )
    if has_arrays:
        if not os.path.isdir(path):
            raise FileNotFoundError(f"{directory}: missing {ARRAYS}/ (incomplete copy?)")
        try:
            tree = local_checkpointer().restore(path)
        except Exception as e:  # orbax raises many types for truncated/corrupt data
            raise ValueError(
                f"{directory}: the arrays are unreadable ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:200]}); the directory is corrupt or truncated"
            ) from e
    tree = jax.tree.map(np.asarray, tree)
    if _arrays_digest(tree) != manifest["arrays_sha256"]:
        raise ValueError(f"{directory}: array checksum mismatch (corrupt or modified files)")
    for key, spec in manifest.get("empty_arrays", {}).items():
        group, name = key.split("/")
        tree.setdefault(group, {})[name] = np.zeros(spec["shape"], spec["dtype"])
    return tree


def rebuild(cls, arrays: dict, layout: dict, static: dict):
    fields = {name: (None if spec is None else arrays[name]) for name, spec in layout.items()}
    return cls(**fields, **static)
