"""``jaxood fit``: fit and calibrate a detector for a saved model; write it for ``jaxood score``.

Examples::

    jaxood fit --model runs/fashion/best --detector knn --benchmark fashion-openset \\
        --data-root ../shared/data -o det/knn
    jaxood fit --model runs/fashion/best --detector adascale_a --id id_images.npz \\
        --aps runs/bench/fashion-openset/wrn-1a2b3c4d -o det/adascale
    jaxood fit --model ckpt/ --detector react --val val_images/ --hparams '{"percentile": 95}' -o det/
"""

from __future__ import annotations

import json
import os

from jaxood import fsutil
from jaxood.cli.common import (
    add_import_argument,
    fraction,
    open_unit,
    positive_float,
    positive_int,
)


def add_arguments(parser) -> None:
    a = parser.add_argument
    a("--model", required=True, help="saved-model directory (or a `jaxood train` workdir)")
    a("--detector", required=True, help="detector name (see `jaxood detectors`)")
    a("--id", help="ID data for every split the detector needs: an .npz with x_train/y_train and "
      "x_val/y_val, or a folder / image list / .npz used for all of them")
    a("--train", help="ID-train data (folder, image list, FILE.npz[:KEY]) for fits on train")
    a("--val", help="ID-val data (fits on val; default calibration set)")
    a("--calibration", help="held-out ID data for the threshold (default: --val; when the "
      "detector also fits on --val, a seeded 20%% of it is held out for the threshold)")
    a("--benchmark", help="take the ID splits from this benchmark (as `jaxood bench` does)")
    a("--data-root", help="with --benchmark: its data root")
    a("--data-dir", help="root of relative paths in image lists (default: the list's folder)")
    a("--hparams", help="hyperparameters: JSON text or a JSON file")
    a("--aps", help="a `jaxood bench` results folder (or its aps.json) of this model: use the "
      "tuned values (the defaults are the papers' and can be far from tuned on a new dataset)")
    a("--tpr", type=fraction, default=0.95,
      help="threshold keeps this fraction of ID (default 0.95)")
    a("--confidence", type=open_unit, default=None,
      help="finite-sample guarantee for --tpr with this probability (e.g. 0.9)")
    a("--batch-size", type=positive_int, default=None,
      help="largest number of images per compiled call, for the fit's extraction and saved for "
      "scoring; smaller calls are padded only to the next power of two, so they cost what they "
      "compute. Default: automatic, the largest power of two up to 256 whose memory per image "
      "fits --memory-mb per device; the memory per image is XLA's memory analysis of each "
      "compiled program (extraction, and network + detector for scoring) at 8 and 16 images "
      "(compiled, not run). The choice is printed and saved in detector.json (`jaxood score --batch-size` "
      "overrides it)")
    a("--memory-mb", type=positive_float, default=None,
      help="per-device budget (MiB) for the images and activations of one call, which chooses "
      "the default --batch-size (default 2048, jaxood.fitted.batching.SCORE_MEMORY_MB; the "
      "model's weights and the detector's statistics come on top); not with --batch-size")
    a("-o", "--out", required=True, help="output directory of the fitted detector")
    a("--overwrite", action="store_true", help="replace an existing output directory")
    a("--quiet", action="store_true")
    add_import_argument(parser)


def read_json_arg(text: str, flag: str) -> dict:
    """``--hparams`` as JSON text or a path to a JSON file; must be an object."""
    try:
        if os.path.isfile(text):
            with open(text) as f:
                value = json.load(f)
        else:
            value = json.loads(text)
    except json.JSONDecodeError as e:
        if not text.lstrip().startswith(("{", "[")):
            raise ValueError(f"{flag} {text!r} is neither an existing file nor JSON text like "
                             '\'{"percentile": 90}\'') from None
        raise ValueError(f"{flag} is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object like {{\"percentile\": 90}}")
    return value


def id_data(args, det, loaded) -> dict:
    """The ``id_data`` mapping of ``jaxood.fit`` from the data flags."""
    given = [f for f in ("id", "train", "val") if getattr(args, f)]
    if args.benchmark and given:
        raise ValueError(f"give --benchmark or --{'/--'.join(given)}, not both (the benchmark "
                         "provides the ID splits)")
    if args.benchmark:
        from jaxood.data import benchmarks

        opened = benchmarks.open_benchmark(
            benchmarks.get(args.benchmark), args.data_root, loaded.preprocess,
            need_train="train" in det.fit_splits,
        )
        data = {"val": opened.id_val}
        if "train" in det.fit_splits:
            data["train"] = opened.id_train
        return data
    data = {}
    if args.id:
        data = _split_id(args.id, det)
    for split in ("train", "val"):
        if getattr(args, split):
            data[split] = getattr(args, split)
    if not data:
        raise ValueError("give the ID data: --id, --train/--val, or --benchmark")
    return data


def _split_id(spec: str, det) -> dict:
    from jaxood.data import npzfile

    if spec.endswith(".npz") and os.path.isfile(spec):
        with npzfile.open_npz(spec) as archive:
            keys = set(archive.files)
        needed = set(det.fit_splits) | {"val"}
        if {"x_train", "x_val"} & keys:
            return {s: f"{spec}:x_{s}" for s in ("train", "val")
                    if f"x_{s}" in keys and s in needed}
    needed = set(det.fit_splits) | {"val"}
    if len(needed) > 1:
        print(f"note: {spec} serves both as fit data ({', '.join(det.fit_splits)}) and as "
              "calibration set; pass --calibration for a held-out threshold")
    return {s: spec for s in needed}


def describe_batch(batch_size: int, info: dict) -> str:
    """One line saying how the batch size was chosen (``fitted.batch_info``)."""
    if info.get("rule") == "auto":
        over = "" if info["fits_budget"] else " (one image is over the budget: raise it)"
        return (f"batch size {batch_size}: XLA measured {info['mb_per_image']:.3g} MiB per image "
                f"(+ {info['fixed_mb']:.3g} MiB fixed) under the {info['budget_mb']:g} MiB budget"
                f"{over}; --batch-size / --memory-mb to change")
    if info.get("rule") == "fallback":
        return f"batch size {batch_size} ({info['reason']}); --batch-size to change"
    return f"batch size {batch_size} (given)"


def main(args) -> int:
    from jaxood import detectors, models
    from jaxood.fitted import bind_model, fit, io

    det = detectors.get(args.detector)
    if args.hparams and args.aps:
        raise ValueError("give --hparams or --aps, not both")
    if args.batch_size is not None and args.memory_mb is not None:
        raise ValueError("give --batch-size or --memory-mb (the budget that chooses it), not both")
    hparams = read_json_arg(args.hparams, "--hparams") if args.hparams else args.aps
    fsutil.check_replaceable(args.out, overwrite=args.overwrite, marker=io.MANIFEST)
    fsutil.check_can_create(args.out, "-o")
    model_dir = models.resolve_model_dir(args.model)
    loaded = bind_model(model_dir)
    fitted = fit(
        det, loaded, id_data(args, det, loaded), hparams, calibration=args.calibration,
        tpr=args.tpr, batch_size=args.batch_size, memory_mb=args.memory_mb,
        data_dir=args.data_dir, progress=not args.quiet,
    )
    if args.confidence is not None:
        fitted.threshold(args.tpr, confidence=args.confidence)
    path = fitted.save(args.out, overwrite=args.overwrite)
    info = fitted.threshold_info
    print(f"{det.name} fitted on {args.model}: hyperparameters {fitted.hparams}")
    for name, a in fitted.adapted.items():
        print(f"note: {name} = {a['published']} does not fit this model's feature dimension "
              f"D = {a['feature_dim']}; used {a['used']} (recorded in the detector)")
    if hparams is None and any(hp.sweep for hp in det.hparams.values()):
        print(f"note: default hyperparameters (the papers'); tuned ones are often much better "
              f"on a new dataset: run `jaxood bench ... --detectors {det.name}` and pass its "
              "results folder with --aps")
    print(describe_batch(fitted.batch_size, fitted.batch_info))
    cal = fitted.calibration_info
    if "held_out_from" in cal:
        print(f"calibration: {cal['n']} images held out of {cal['held_out_from']} (the fit used "
              f"the other {cal['fit_rows']}); pass --calibration to use your own")
    print(f"threshold {fitted.threshold_value:.6g} (keeps {1 - info['calibration_flag_rate']:.2%} "
          f"of {info['n_calibration']} ID calibration inputs) -> {path}")
    return 0
