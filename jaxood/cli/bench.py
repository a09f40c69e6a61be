"""``jaxood bench``: the full OOD benchmark table for a checkpoint and a set of detectors.

Example::

    jaxood bench --benchmark fashion-openset --model checkpoints/fashion_wrn \\
        --data-root ../shared/data --out runs/bench
    jaxood bench --benchmark cifar10 --model ckpt/s0 ckpt/s1 ckpt/s2 \\
        --data-root /data/openood --detectors msp ebo react adascale_a
"""

from __future__ import annotations

import json
import sys

from jaxood.cli.common import (
    add_distributed_arguments,
    add_import_argument,
    nonnegative_float,
    positive_int,
)


def add_arguments(parser) -> None:
    from jaxood.data import benchmarks

    parser.add_argument(
        "--benchmark",
        required=True,
        help=f"one of: {', '.join(benchmarks.names())}, or npz:<file.npz>",
    )
    parser.add_argument(
        "--model",
        required=True,
        nargs="+",
        metavar="DIR",
        help="saved-model directory; several = several runs (mean ± std)",
    )
    parser.add_argument(
        "--detectors",
        nargs="+",
        default=None,
        metavar="NAME",
        help="detector names (default: every registered detector the model supports; "
        "see `jaxood detectors`)",
    )
    parser.add_argument(
        "--data-root", default=None, help="OpenOOD data root / folder of .npz files"
    )
    parser.add_argument("--out", default="runs/bench", help="output directory (default runs/bench)")
    parser.add_argument(
        "--cache", default=None, help="feature cache directory (default <out>/cache)"
    )
    parser.add_argument("--batch-size", type=positive_int, default=256)
    parser.add_argument("--no-aps", action="store_true", help="use default hyperparameters")
    parser.add_argument(
        "--hparams",
        default=None,
        help='JSON of fixed hyperparameters per detector, e.g. \'{"react": {"percentile": 90}}\'',
    )
    parser.add_argument(
        "--fsood", action="store_true", help="full-spectrum: add covariate-shifted ID sets"
    )
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--checksums", default=None, help="sha256sum manifest of the image files")
    parser.add_argument(
        "--strict-counts", action="store_true", help="require OpenOOD v1.5 list sizes"
    )
    parser.add_argument("--strict", action="store_true", help="stop at the first detector error")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--name",
        default=None,
        help="results folder name (default: the model's manifest name); the folder is "
        "<out>/<benchmark>/<name>-<weights fingerprint>",
    )
    parser.add_argument(
        "--rerun",
        action="store_true",
        help="recompute detectors already stored with the same settings (default: skip = resume)",
    )
    parser.add_argument(
        "--no-save-detectors",
        action="store_true",
        help="do not write the tuned fitted detectors (<results>/fitted/<detector>/run<r>/)",
    )
    parser.add_argument(
        "--plot-detectors", nargs="+", default=None, metavar="NAME",
        help="detectors that get histogram/ROC plots (default: all)",
    )
    parser.add_argument(
        "--fit-images-mb", type=nonnegative_float, default=None,
        help="ID splits up to this size (MB as float32) are given to fits as an image array; "
        "larger ones are streamed in batches (OODD's crops); default: the library's "
        "(jaxood.features.store.FIT_IMAGES_MB)",
    )
    add_import_argument(parser)
    add_distributed_arguments(parser)


def main(args) -> int:
    from jaxood.bench import runner

    hparams = {}
    if args.hparams:
        try:
            hparams = json.loads(args.hparams)
        except json.JSONDecodeError as e:
            raise ValueError(f"--hparams is not valid JSON ({e})") from None
        if not isinstance(hparams, dict) or not all(isinstance(v, dict) for v in hparams.values()):
            raise ValueError(
                '--hparams must map detector names to dicts, e.g. {"react": {"percentile": 90}}'
            )
        unused = sorted(set(hparams) - set(args.detectors)) if args.detectors else []
        if unused:
            print(f"warning: --hparams given for {unused}, which are not among --detectors "
                  f"{args.detectors}; they are not used", file=sys.stderr)
    cfg = runner.BenchConfig(
        benchmark=args.benchmark,
        models=args.model,
        detectors=args.detectors,
        data_root=args.data_root,
        out_dir=args.out,
        cache_dir=args.cache,
        batch_size=args.batch_size,
        aps=not args.no_aps,
        hparams=hparams,
        fsood=args.fsood,
        plots=not args.no_plots,
        progress=not args.quiet,
        checksums=args.checksums,
        strict_counts=args.strict_counts,
        strict=args.strict,
        model_name=args.name,
        rerun=args.rerun,
        save_detectors=not args.no_save_detectors,
        plot_detectors=args.plot_detectors,
        distributed=args.distributed,
        # None: BenchConfig's default, the one budget of jaxood.features.store.
        **({} if args.fit_images_mb is None else {"fit_images_mb": args.fit_images_mb}),
    )
    result = runner.run(cfg)
    if result is None:  # a multi-host run's other process: its network passes are done
        print("this process's share of the network passes is in the cache; process 0 writes "
              "the results")
        return 0
    if args.quiet:
        from jaxood.bench import report

        print(report.markdown(result))
    return summarise(result)


def summarise(result) -> int:
    """Prints where the results went and every failure; exit code 1 when this invocation
    produced nothing (every detector it ran failed)."""
    info = result.info
    print(
        f"\nresults in {result.out_dir}/ (results.md/csv/json, aps.json, store.json, runs.jsonl, "
        "plots/, fitted/<detector>/run<r>/)"
    )
    if info["skipped"]:
        print(f"kept from earlier runs (same settings; --rerun recomputes): {', '.join(info['skipped'])}")
    if info["failed"]:
        print(f"\n{len(info['failed'])} detector(s) FAILED:", file=sys.stderr)
        for name, msg in info["failed"].items():
            print(f"  {name}: {msg}", file=sys.stderr)
    if not info["computed"] and not info["skipped"]:
        print("jaxood bench: error: no detector succeeded", file=sys.stderr)
        return 1
    return 0
