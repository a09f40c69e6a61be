"""``jaxood score``: score images with a saved detector and write a CSV.

Examples::

    jaxood score det/knn new_images/ -o scores.csv
    jaxood score det/adascale test_list.txt --data-dir /data/images --batch-size 64
    jaxood score det/knn batch.npz:x_test --model other/copy/of/the/model

INPUT: a folder of images (PNG/JPEG/BMP, recursive, sorted), an OpenOOD-style image list, or
``FILE.npz[:KEY]`` (uint8 raw images or normalised floats). Output columns: ``input`` (path,
or ``FILE.npz:KEY[i]``), ``score`` (higher = more in-distribution), ``is_ood`` (at the saved
threshold), ``pred`` (the model's output index), ``class`` (the original class id: differs
from ``pred`` for a model trained on a subset with ``--classes``), ``max_softmax``. The output
may not be one of the inputs, nor lie in the detector's or the model's folder. Batches are
decoded in background threads and streamed to the CSV, so memory stays bounded for any number
of images. An unreadable image is skipped with a warning and listed at the end (``--strict``:
stop). A temporary CSV left by a killed earlier run (``.tmp-<pid>-*``) is removed.
"""

from __future__ import annotations

import csv
import os
import sys
import tempfile
import time

from jaxood import fsutil
from jaxood.cli.common import add_import_argument, load_saved_detector, positive_int


def add_arguments(parser) -> None:
    a = parser.add_argument
    a("detector", help="a saved detector directory (`jaxood fit`, or <bench results>/fitted/...)")
    a("inputs", nargs="+", metavar="INPUT", help="folder | image list | FILE.npz[:KEY]")
    a("-o", "--out", default="scores.csv", help="CSV file (default scores.csv)")
    a("--model", help="the model directory (default: the one recorded in the detector)")
    a("--batch-size", type=positive_int, default=None,
      help="rows per compiled call (default: saved)")
    a("--data-dir", help="root of relative paths in image lists (default: the list's folder)")
    a("--strict", action="store_true", help="stop at the first unreadable image")
    a("--quiet", action="store_true", help="no progress bar")
    add_import_argument(parser)


def _write_rows(fitted, sources, writer, progress: bool, strict: bool, classes=None):
    from tqdm.auto import tqdm

    total = sum(len(s) for s in sources)
    bar = tqdm(total=total, unit="img", disable=not progress, desc="score")
    scored = flagged = 0
    errors = []
    for src in sources:
        for start, ok, res in fitted.iter_detect(src, strict=strict):
            for i in range(len(ok)):
                if not ok[i]:
                    continue
                name = src.names[start + i]
                pred = int(res["pred"][i])
                writer.writerow([name, f"{res['score'][i]:.9g}", int(res["is_ood"][i]), pred,
                                 pred if classes is None else classes[pred],
                                 f"{res['max_softmax'][i]:.6g}"])
            scored += int(ok.sum())
            flagged += int((res["is_ood"] & ok).sum())
            bar.update(len(ok))
        errors += src.errors
    bar.close()
    return scored, flagged, errors


def check_output_file(path: str) -> str:
    """The folder a CSV ``path`` goes to, checked before any work."""
    if os.path.isdir(path):
        raise ValueError(f"-o {path!r} is a folder; give a file name, e.g. {path}/scores.csv")
    out_dir = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(out_dir):
        raise FileNotFoundError(f"-o {path!r}: folder {out_dir!r} does not exist; create it first")
    if not os.access(out_dir, os.W_OK):
        raise PermissionError(f"-o {path!r}: folder {out_dir!r} is not writable")
    return out_dir


def check_reads(out: str, args, fitted, sources) -> None:
    """Raises when ``-o`` is an input file (an .npz, an image, an image list or an image it
    lists) or lies in the detector's or the model's folder."""
    from jaxood.data.inputs import FileSource  # deferred with the data stack (see main)

    files = [p.split(".npz:")[0] + (".npz" if ".npz:" in p else "") for p in args.inputs]
    for src in sources:
        if isinstance(src, FileSource):
            files += src.names
    folders = [args.detector] + ([fitted.model.directory] if fitted.model.directory else [])
    fsutil.check_not_read(out, files, folders)


def main(args) -> int:
    from jaxood.data.inputs import open_input
    from jaxood.models import class_ids

    out_dir = check_output_file(args.out)
    fsutil.check_not_read(args.out, [], [args.detector])  # before loading anything
    fitted = load_saved_detector(args.detector, args.model, args.batch_size)
    sources = [
        open_input(p, fitted.model.preprocess, fitted.input_shape, data_dir=args.data_dir,
                   name=str(p))
        for p in args.inputs
    ]
    check_reads(args.out, args, fitted, sources)
    fsutil.clean_stale_temps(out_dir)  # a killed earlier run's partial CSV
    classes = class_ids(fitted.model.manifest)
    fd, tmp = tempfile.mkstemp(prefix=fsutil.temp_prefix(), suffix=".csv", dir=out_dir)
    t0 = time.perf_counter()
    try:
        with os.fdopen(fd, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["input", "score", "is_ood", "pred", "class", "max_softmax"])
            scored, flagged, errors = _write_rows(fitted, sources, w, not args.quiet, args.strict,
                                                  classes)
        os.chmod(tmp, 0o644)
        if scored:
            os.replace(tmp, args.out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    seconds = time.perf_counter() - t0
    for path, reason in errors:
        print(f"warning: skipped {path}: {reason}", file=sys.stderr)
    if not scored:
        print(f"jaxood score: error: no image could be scored ({len(errors)} unreadable)",
              file=sys.stderr)
        return 1
    t = fitted.threshold_value
    print(f"{scored} scored, {flagged} flagged as OOD ({flagged / scored:.1%}; threshold "
          f"{'unset' if t is None else f'{t:.6g}'}), {len(errors)} unreadable, "
          f"{scored / seconds:.1f} images/s -> {args.out}")
    return 0
