"""Score images with this exported jaxood detector, without jaxood.

Requirements (exactly; checked in a fresh virtualenv by jaxood's tests)::

    pip install "jax==JAX_VERSION" flatbuffers     # numpy comes with jax
    pip install pillow                             # only to read image files or resize

Command line::

    python score.py images/ -o scores.csv           # a folder of PNG/JPEG/BMP images
    python score.py images.npy                      # uint8 [N, H, W(, C)] images
    python score.py x.npy --normalised              # float32 [N, H, W, C], already normalised

From Python::

    import sys; sys.path.insert(0, "det.jaxexport"); from score import load
    fn = load("det.jaxexport")        # verifies checksums.json; applies the recorded XLA flags
    score, is_ood, pred, max_softmax = fn(images_uint8)      # higher = more in-distribution
    score, is_ood, pred, max_softmax = fn(x, normalised=True)

uint8 images get the model's preprocessing recorded in ``metadata.json`` (resize, centre
crop, ``(x / 255 - mean) / std`` in float32), exactly as ``jaxood score`` applies it; float
input is accepted only with ``normalised=True``. ``pred`` is the model's class index;
``metadata.json`` ``class_names`` maps it to the original class when the model was trained
on a subset or relabelled.

This file is ``jaxood/fitted/standalone.py``, copied into every artifact as ``score.py``: it
imports only the standard library, NumPy, jax (when scoring) and PIL (only for image files
or resizing). Nothing in it may import jaxood.
"""

import argparse
import csv
import hashlib
import json
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FORMAT = "jaxood-export/1"
CHECKSUMS = "checksums.json"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: metadata.json fields the scorer uses, with their JSON types.
SCHEMA = {
    "format": str, "detector": str, "hparams": dict, "threshold": (int, float, type(None)),
    "input_shape": list, "preprocess": (dict, type(None)), "batch_size": int,
    "symbolic_batch": bool, "num_args": int, "xla_flags": str, "platforms": list,
}


class ArtifactError(ValueError):
    """The artifact or an input is not what the scorer needs; the message says what to do."""


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def field_digests(meta):
    """``{field: sha256}`` of each metadata field (to name the fields an edit changed)."""
    return {k: hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()
            for k, v in meta.items()}


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing; this is not a complete jaxood export "
                            "(re-export the detector)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path} is corrupt ({e}); re-export the detector") from None


def verify(directory=HERE):
    """Checks every file against ``checksums.json`` and ``metadata.json`` against its schema;
    returns the metadata. Raises :class:`ArtifactError` naming the file (and the edited
    metadata fields) that do not match."""
    sums = _read_json(os.path.join(directory, CHECKSUMS))
    meta = _read_json(os.path.join(directory, "metadata.json"))
    for name, digest in sorted(sums.get("files", {}).items()):
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise ArtifactError(f"{path} is missing; re-export the detector")
        if sha256_file(path) != digest:
            fields = ""
            if name == "metadata.json" and isinstance(meta, dict):
                old = sums.get("metadata_fields", {})
                new = field_digests(meta)
                fields = f" (fields {sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))})"
            raise ArtifactError(
                f"{path} does not match its checksum in {CHECKSUMS}: it was edited or "
                f"corrupted after export{fields}; re-export the detector instead of editing it"
            )
    check_schema(meta, os.path.join(directory, "metadata.json"))
    return meta


def check_schema(meta, where="metadata.json"):
    if not isinstance(meta, dict):
        raise ArtifactError(f"{where} must hold a JSON object")
    for key, types in SCHEMA.items():
        if key not in meta:
            raise ArtifactError(f"{where} lacks the field {key!r}; re-export the detector")
        value = meta[key]
        if not isinstance(value, types) or (isinstance(value, bool) and types in (int,)):
            raise ArtifactError(f"{where}: field {key!r} has the wrong type "
                                f"({type(value).__name__}); re-export the detector")
    if meta["format"] != FORMAT:
        raise ArtifactError(f"{where}: format {meta['format']!r} is not {FORMAT!r}")
    t = meta["threshold"]
    if t is not None and (isinstance(t, bool) or not math.isfinite(t)):
        raise ArtifactError(f"{where}: field 'threshold' must be a finite number or null")
    shape = meta["input_shape"]
    if len(shape) != 3 or not all(isinstance(s, int) and s >= 1 for s in shape):
        raise ArtifactError(f"{where}: field 'input_shape' must be [H, W, C] positive ints")
    if meta["batch_size"] < 1 or meta["num_args"] < 0:
        raise ArtifactError(f"{where}: 'batch_size' must be >= 1 and 'num_args' >= 0")


# ----------------------------------------------------------------- preprocessing


def _pil():
    try:
        from PIL import Image  # optional: only image files and resizing need it
    except ImportError:
        raise ArtifactError("reading image files or resizing images needs pillow: "
                            "pip install pillow (or pass uint8 arrays of the model's size)"
                            ) from None
    return Image


def _normalise(x, spec):
    """uint8 ``[N, H, W, C]`` -> float32 ``(x / 255 - mean) / std`` (torchvision's op order)."""
    x = x.astype(np.float32) / np.float32(255)
    if x.shape[-1] == 1 and spec["channels"] == 3:
        x = np.repeat(x, 3, axis=-1)  # grayscale -> RGB, as PIL's convert("RGB")
    return (x - np.asarray(spec["mean"], np.float32)) / np.asarray(spec["std"], np.float32)


def _resize_crop(img, spec):
    """PIL image -> resized (shorter side) and centre-cropped, as torchvision's eval
    transform (the same rounding as jaxood.data.transforms)."""
    Image = _pil()
    img = img.convert("RGB" if spec["channels"] == 3 else "L")
    size = spec["resize_size"]
    if size is not None:
        w, h = img.size
        short, long = min(w, h), max(w, h)
        new = (size, int(size * long / short))
        new = new if w <= h else new[::-1]
        if new != img.size:
            img = img.resize(new, getattr(Image.Resampling, spec["interpolation"].upper()))
    crop = spec["crop_size"]
    if crop is not None:
        w, h = img.size
        if crop > w or crop > h:
            padded = Image.new(img.mode, (max(w, crop), max(h, crop)), 0)
            padded.paste(img, (max(crop - w, 0) // 2, max(crop - h, 0) // 2))
            img, (w, h) = padded, padded.size
        top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
        img = img.crop((left, top, left + crop, top + crop))
    x = np.asarray(img, np.uint8)
    return x[:, :, None] if x.ndim == 2 else x


def preprocess(images, meta, name="images"):
    """uint8 ``[N, H, W]`` / ``[N, H, W, C]`` -> normalised float32 ``[N, *input_shape]``."""
    spec = meta["preprocess"]
    if spec is None:
        raise ArtifactError(f"`{name}`: the model records no preprocessing; pass normalised "
                            "float32 images with normalised=True (--normalised)")
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        hint = "; NCHW? use x.transpose(0, 2, 3, 1)" if x.ndim == 4 and x.shape[1] in (1, 3) \
            else ""
        raise ArtifactError(f"`{name}`: uint8 images must be [N, H, W] or [N, H, W, C] with "
                            f"C = 1 or 3, got shape {list(x.shape)}{hint}")
    if x.shape[-1] == 3 and spec["channels"] == 1:
        raise ArtifactError(f"`{name}` is RGB but the model takes 1-channel images")
    h, w = x.shape[1:3]
    sizes = {spec["resize_size"], spec["crop_size"]} - {None}
    if sizes and (sizes != {h} or h != w):
        Image = _pil()
        mode = "L" if x.shape[-1] == 1 else "RGB"
        x = np.stack([_resize_crop(Image.fromarray(im[..., 0] if mode == "L" else im, mode),
                                   spec) for im in x])
    out = _normalise(x, spec)
    if list(out.shape[1:]) != list(meta["input_shape"]):
        raise ArtifactError(
            f"`{name}`: images of shape {list(x.shape[1:])} preprocess to "
            f"{list(out.shape[1:])} but the model takes {meta['input_shape']} (H, W, C)")
    return out


def read_image(path, meta):
    """One image file -> uint8 ``[H, W, C]`` after resize/crop (PIL)."""
    Image = _pil()
    with Image.open(path) as img:
        img.load()
        if img.mode in ("I;16", "I;16L", "I;16B", "I;16N"):  # as jaxood: round(v / 257)
            print(f"warning: {path} is 16-bit; scaled to 8 bits", file=sys.stderr)
            v = np.asarray(img, dtype=np.uint32)
            img = Image.fromarray(((v + 128) // 257).astype(np.uint8), "L")
        return _resize_crop(img, meta["preprocess"])


# ----------------------------------------------------------------- scoring


def check_normalised(x, meta, name="x"):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise ArtifactError(f"`{name}`: normalised=True needs float images, got {x.dtype}")
    shape = [int(s) for s in x.shape]
    if x.ndim != 4 or shape[1:] != list(meta["input_shape"]):
        raise ArtifactError(f"`{name}`: expected [N, H, W, C] = [N, "
                            f"{', '.join(map(str, meta['input_shape']))}], got {shape}")
    x = x.astype(np.float32)
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise ArtifactError(f"`{name}` contains {bad} NaN/Inf values")
    return x


def as_model_input(x, meta, normalised=False, name="x"):
    """Any accepted input -> float32 ``[N, *input_shape]`` (checked; see the module doc)."""
    arr = np.asarray(x)
    if arr.ndim == 0 or len(arr) == 0:
        raise ArtifactError(f"`{name}` is empty (shape {list(arr.shape)}); pass at least one "
                            "image")
    if normalised:
        return check_normalised(arr, meta, name)
    if arr.dtype == np.uint8:
        return preprocess(arr, meta, name)
    if np.issubdtype(arr.dtype, np.floating):
        raise ArtifactError(
            f"`{name}` is {arr.dtype}: pass raw uint8 images (preprocessed here), or "
            "normalised=True (--normalised) if these floats are already normalised with the "
            "model's mean/std")
    raise ArtifactError(f"`{name}` must be uint8 images (or normalised floats with "
                        f"normalised=True), got {arr.dtype}")


def load(directory=HERE):
    """Verifies the artifact and returns ``fn(x, normalised=False, use_symbolic=False) ->
    (score, is_ood, pred, max_softmax)`` (each ``[N]``; higher score = more ID)."""
    meta = verify(directory)
    if "jax" not in sys.modules:  # flags only take effect before jax initialises
        os.environ["XLA_FLAGS"] = meta["xla_flags"]
    import jax

    def read(name):
        with open(os.path.join(directory, name), "rb") as f:
            return jax.export.deserialize(bytearray(f.read()))

    with np.load(os.path.join(directory, "args.npz"), allow_pickle=False) as args:
        leaves = [args[f"a{i}"] for i in range(meta["num_args"])]
    fixed = read("fixed.bin")
    symbolic = read("symbolic.bin") if meta["symbolic_batch"] else None
    b = meta["batch_size"]

    def fn(x, normalised=False, use_symbolic=False):
        x = as_model_input(x, meta, normalised)
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


# ----------------------------------------------------------------- command line


def _files(path):
    if os.path.isdir(path):
        found = [os.path.join(r, f) for r, ds, fs in os.walk(path) for f in fs
                 if f.lower().endswith(IMAGE_EXTENSIONS)]
        if not found:
            raise ArtifactError(f"folder {path!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        return sorted(found)
    if not os.path.isfile(path):
        raise ArtifactError(f"input {path!r} does not exist")
    return [path]


def _batches(inputs, meta, normalised):
    """Yields ``(names, x)`` per input array, and per file folder the decoded images;
    unreadable files are collected in the returned list (``(path, reason)``)."""
    for path in inputs:
        if path.lower().endswith(".npy"):
            x = np.load(path, allow_pickle=False)
            yield [f"{os.path.basename(path)}[{i}]" for i in range(len(x))], x
            continue
        names, images = [], []
        for f in _files(path):
            try:
                images.append(read_image(f, meta))
                names.append(f)
            except Exception as e:  # PIL raises many types (a decompression bomb too)
                print(f"warning: skipped {f}: {type(e).__name__}: {e}", file=sys.stderr)
        if images:
            yield names, np.stack(images)


def main(argv=None):
    p = argparse.ArgumentParser(description="Score images with an exported jaxood detector.")
    p.add_argument("inputs", nargs="+", help="image folders / files, or .npy arrays")
    p.add_argument("-o", "--out", default="scores.csv")
    p.add_argument("--normalised", action="store_true",
                   help=".npy inputs are float32 images already normalised")
    args = p.parse_args(argv)
    out = os.path.abspath(args.out)
    protected = {os.path.abspath(i) for i in args.inputs} | {
        os.path.join(HERE, f) for f in os.listdir(HERE)}
    if out in protected or os.path.isdir(out):
        p.error(f"-o {args.out!r} is an input, a folder or a file of the artifact; choose "
                "another output file")
    try:
        fn = load()
        rows = []
        for names, x in _batches(args.inputs, fn.metadata, args.normalised):
            score, is_ood, pred, msp = fn(x, normalised=args.normalised)
            rows += zip(names, score, is_ood, pred, msp)
    except ArtifactError as e:
        print(f"score.py: error: {e}", file=sys.stderr)
        return 2
    if not rows:
        print("score.py: error: no image could be scored", file=sys.stderr)
        return 1
    classes = fn.metadata.get("classes")
    tmp = f"{out}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["input", "score", "is_ood", "pred", "class", "max_softmax"])
            for name, s, o, c, m in rows:
                w.writerow([name, f"{s:.9g}", int(o), int(c),
                            int(c) if classes is None else classes[int(c)], f"{m:.6g}"])
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    flagged = sum(int(r[2]) for r in rows)
    print(f"{len(rows)} scored, {flagged} flagged as OOD -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
