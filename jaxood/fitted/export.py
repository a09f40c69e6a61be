"""Export a fitted detector as a ``jax.export`` artifact that runs with only ``jax`` installed.

The whole scoring function — model forward, the detector's extract (AdaSCALE's attribution
and perturbation), its score and the threshold — is serialised as StableHLO. Weights,
fitted statistics and traced hyperparameters are passed as arrays (stored beside it), so
the program stays small and nothing is closed over as a constant.

Artifact (a directory)::

    det.jaxexport/metadata.json   detector, hyperparameters, threshold, preprocessing,
                                  input shape, batch sizes, XLA flags, platforms, outputs
    det.jaxexport/fixed.bin       the program at a fixed padded batch ``[B, H, W, C]``
    det.jaxexport/symbolic.bin    the same with a symbolic batch dimension (when the
                                  detector's program allows it)
    det.jaxexport/args.npz        the array arguments ``a0 .. a{n-1}`` (before the images)
    det.jaxexport/score.py        the standalone loader/scorer (:mod:`jaxood.fitted.standalone`):
                                  takes uint8 images (or a folder / .npy) and applies the
                                  recorded preprocessing; needs ``jax`` and ``flatbuffers``
    det.jaxexport/requirements.txt  exactly what ``score.py`` needs (pillow: image files)
    det.jaxexport/checksums.json  sha256 of every other file (and of each metadata field):
                                  ``score.py`` refuses an edited or corrupted artifact

Outputs of both programs: ``(score [B] float32, is_ood [B] bool, pred [B] int32,
max_softmax [B] float32)``; scores are higher = more in-distribution.

Numerics: the program is the one :class:`FittedDetector` runs. Under the same XLA flags the
scores are bit-identical on the same platform; ``jaxood`` sets one flag at import (see the
README), recorded in ``metadata.json`` and applied by ``score.py``. Gradient-based
detectors (AdaSCALE) are sensitive to other flags: near-tied ``|grad|`` elements at ReLU
kinks can be perturbed differently under different fusions.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import jax
import numpy as np

from jaxood import fsutil, models, scoring, validate
from jaxood.features.model import model_identity as model_fingerprint
from jaxood.fitted import standalone
from jaxood.version import __version__

if TYPE_CHECKING:  # annotations only: detector.py imports this module to export
    from jaxood.fitted.detector import FittedDetector

#: Files of an artifact.
#: Platforms ``jax.export`` lowers for.
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
METADATA, FIXED, SYMBOLIC, ARGS, SCRIPT, REQUIREMENTS = (
    "metadata.json", "fixed.bin", "symbolic.bin", "args.npz", "score.py", "requirements.txt"
)


def _flat_args(fitted: FittedDetector):
    traced, static = scoring.image_static(fitted.detector, fitted.hparams)
    leaves, treedef = jax.tree.flatten((fitted.model.variables, fitted.stats, traced))
    return [np.asarray(x) for x in leaves], treedef, static


def _scoring_fn(fitted: FittedDetector, treedef, static):
    body = scoring.image_body(fitted.detector, fitted.model.model, static)
    threshold = fitted.threshold_value

    def fn(*args):
        *leaves, x = args
        variables, stats, traced = jax.tree.unflatten(treedef, leaves)
        out = body(variables, stats, x, traced)
        is_ood = (
            jax.numpy.zeros_like(out["score"], bool) if threshold is None
            else ~(out["score"] >= threshold)
        )
        return out["score"], is_ood, out["pred"], out["max_softmax"]

    return fn


def _export(fn, leaves, x_shape, platforms):
    specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in leaves]
    x_spec = jax.ShapeDtypeStruct(x_shape, np.float32)
    return jax.export.export(jax.jit(fn), platforms=platforms)(*specs, x_spec)


def export(
    fitted: FittedDetector,
    path: str,
    *,
    batch_size: int | None = None,
    platforms: tuple[str, ...] = ("cpu",),
    symbolic: bool = True,
    overwrite: bool = False,
) -> str:
    """Writes the artifact directory ``path`` (atomically) and returns it.

    Args:
      batch_size: the fixed padded batch (default: the detector's).
      platforms: lowering platforms, e.g. ``("cpu", "cuda", "tpu")``.
      symbolic: also try a symbolic batch dimension (recorded as unavailable when the
        program cannot be lowered shape-polymorphically).
    """
    if fitted.detector.stream:
        raise ValueError(
            f"{fitted.name!r} is a stream detector: its score depends on state carried between "
            "calls, which an export of one scoring function cannot hold; export a state-free "
            "detector (or score with jaxood)"
        )
    if fitted.input_shape is None:
        raise ValueError("the model has no input shape in its manifest; cannot export")
    if batch_size is not None:
        validate.check_positive_int(batch_size, "batch_size")
    platforms = (platforms,) if isinstance(platforms, str) else tuple(platforms)
    unknown = sorted(set(platforms) - set(PLATFORMS))
    if unknown or not platforms:
        raise ValueError(f"`platforms` must be some of {list(PLATFORMS)}, got {list(platforms)}")
    leaves, treedef, static = _flat_args(fitted)
    fn = _scoring_fn(fitted, treedef, static)
    b = int(fitted.batch_size if batch_size is None else batch_size)
    fixed = _export(fn, leaves, (b, *fitted.input_shape), tuple(platforms))
    sym_blob, sym_error = None, None
    if symbolic:
        try:
            (n,) = jax.export.symbolic_shape("batch")
            sym_blob = _export(fn, leaves, (n, *fitted.input_shape), tuple(platforms)).serialize()
        except Exception as e:  # shape-polymorphism limits are many and version-specific
            sym_error = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
    meta = _metadata(fitted, b, platforms, len(leaves), sym_blob is not None, sym_error)
    with fsutil.atomic_dir(path, overwrite=overwrite, marker=METADATA) as tmp:
        with open(os.path.join(tmp, FIXED), "wb") as f:
            f.write(fixed.serialize())
        if sym_blob is not None:
            with open(os.path.join(tmp, SYMBOLIC), "wb") as f:
                f.write(sym_blob)
        np.savez(os.path.join(tmp, ARGS), **{f"a{i}": a for i, a in enumerate(leaves)})
        fsutil.atomic_write_json(os.path.join(tmp, METADATA), meta)
        fsutil.atomic_write_text(os.path.join(tmp, SCRIPT), script_text())
        fsutil.atomic_write_text(os.path.join(tmp, REQUIREMENTS), requirements_text())
        write_checksums(tmp)
        standalone.verify(tmp)  # what score.py will check, before the artifact is in place
    return os.path.abspath(path)


def _metadata(fitted, batch_size, platforms, num_args, has_symbolic, symbolic_error) -> dict:
    spec = fitted.model.preprocess
    return {
        "format": "jaxood-export/1",
        "jaxood_version": __version__,
        "jax_version": jax.__version__,
        "detector": fitted.name,
        "hparams": fitted.hparams,
        "threshold": fitted.threshold_value,
        "threshold_rule": fitted.threshold_info,
        "model": model_fingerprint(fitted.model),
        "input_shape": list(fitted.input_shape),
        "preprocess": None if spec is None else spec.to_dict(),
        "batch_size": batch_size,
        "symbolic_batch": has_symbolic,
        "symbolic_error": symbolic_error,
        "platforms": list(platforms),
        "num_args": num_args,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "classes": models.class_ids(fitted.model.manifest),
        "requirements": requirements_text().split(),
        "outputs": ["score (higher = more in-distribution)", "is_ood (score < threshold)",
                    "pred (argmax class)", "max_softmax"],
        "usage": "python score.py images/ (or uint8 images.npy; float32 normalised with "
                 "--normalised); or `from score import load; fn = load(dir); "
                 "score, is_ood, pred, msp = fn(uint8_images)`",
    }


def script_text() -> str:
    """``score.py``: the source of :mod:`jaxood.fitted.standalone` with this jax version."""
    with open(standalone.__file__) as f:
        return f.read().replace("JAX_VERSION", jax.__version__)


def requirements_text() -> str:
    """What ``score.py`` needs, pinned to the jax that lowered the program (a newer jax reads
    older artifacts, not always the other way round); pillow only for image files."""
    return f"jax=={jax.__version__}\nflatbuffers\npillow\n"


def write_checksums(directory: str) -> None:
    """``checksums.json``: sha256 of every file of the artifact and of each metadata field."""
    files = sorted(f for f in os.listdir(directory) if f != standalone.CHECKSUMS)
    with open(os.path.join(directory, METADATA)) as f:
        meta = json.load(f)
    fsutil.atomic_write_json(os.path.join(directory, standalone.CHECKSUMS), {
        "files": {f: standalone.sha256_file(os.path.join(directory, f)) for f in files},
        "metadata_fields": standalone.field_digests(meta),
    })


def read_metadata(path: str) -> dict:
    """``metadata.json`` of an artifact, after checking every file against its checksum and
    the metadata against its schema (``ValueError`` naming the file / edited fields)."""
    return standalone.verify(path)
