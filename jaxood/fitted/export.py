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
    det.jaxexport/score.py        a standalone loader/scorer that imports only jax and numpy

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

from jaxood import fsutil, scoring, validate
from jaxood.features.model import model_identity as model_fingerprint
from jaxood.version import __version__

if TYPE_CHECKING:  # annotations only: detector.py imports this module to export
    from jaxood.fitted.detector import FittedDetector

#: Files of an artifact.
#: Platforms ``jax.export`` lowers for.
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
METADATA, FIXED, SYMBOLIC, ARGS, SCRIPT = (
    "metadata.json", "fixed.bin", "symbolic.bin", "args.npz", "score.py"
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
        with open(os.path.join(tmp, SCRIPT), "w") as f:
            f.write(SCRIPT_TEXT)
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
        "outputs": ["score (higher = more in-distribution)", "is_ood (score < threshold)",
                    "pred (argmax class)", "max_softmax"],
        "usage": "python score.py images.npy  (normalised float32 [N, H, W, C]); or "
                 "`from score import load; fn = load(dir); score, is_ood, pred, msp = fn(x)`",
    }


# The standalone loader written into every artifact: jax and numpy only.
SCRIPT_TEXT = '''"""Score images with this exported jaxood detector; needs only jax and numpy.

    python score.py images.npy          # normalised float32 [N, H, W, C] -> scores.csv

or from Python::

    import sys; sys.path.insert(0, "det.jaxexport"); from score import load
    fn = load("det.jaxexport")          # applies the recorded XLA flags (before jax starts)
    score, is_ood, pred, max_softmax = fn(x)   # higher score = more in-distribution
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def load(directory=HERE):
    with open(os.path.join(directory, "metadata.json")) as f:
        meta = json.load(f)
    if "jax" not in sys.modules:  # flags only take effect before jax initialises
        os.environ["XLA_FLAGS"] = meta["xla_flags"]
    import jax
    import numpy as np

    def read(name):
        with open(os.path.join(directory, name), "rb") as f:
            return jax.export.deserialize(bytearray(f.read()))

    args = np.load(os.path.join(directory, "args.npz"))
    leaves = [args[f"a{i}"] for i in range(meta["num_args"])]
    fixed = read("fixed.bin")
    symbolic = read("symbolic.bin") if meta["symbolic_batch"] else None
    b = meta["batch_size"]

    def fn(x, use_symbolic=False):
        x = np.asarray(x, np.float32)
        if use_symbolic and symbolic is not None:
            return tuple(np.asarray(o) for o in symbolic.call(*leaves, x))
        outs = []
        for start in range(0, len(x), b):
            chunk = x[start : start + b]
            padded = np.zeros((b, *x.shape[1:]), np.float32)
            padded[: len(chunk)] = chunk
            outs.append([np.asarray(o)[: len(chunk)] for o in fixed.call(*leaves, padded)])
        return tuple(np.concatenate(parts) for parts in zip(*outs))

    fn.metadata = meta
    return fn


if __name__ == "__main__":
    import numpy as np

    fn = load()
    score, is_ood, pred, msp = fn(np.load(sys.argv[1]))
    out = sys.argv[2] if len(sys.argv) > 2 else "scores.csv"
    with open(out, "w") as f:
        f.write("index,score,is_ood,pred,max_softmax\\n")
        for i in range(len(score)):
            f.write(f"{i},{score[i]:.9g},{int(is_ood[i])},{pred[i]},{msp[i]:.6g}\\n")
    print(f"{len(score)} scored, {int(is_ood.sum())} flagged as OOD -> {out}")
'''


def read_metadata(path: str) -> dict:
    """``metadata.json`` of an artifact."""
    with open(os.path.join(path, METADATA)) as f:
        return json.load(f)
