"""``jaxood demo``: train a small WRN on 8x8 digits and benchmark every detector.

A thin layer over :mod:`jaxood.bench.demo` (training) and :mod:`jaxood.bench.runner`.
"""

from __future__ import annotations

import os
import time

from jaxood import fsutil
from jaxood.bench.demo import train_demo_model
from jaxood.cli.bench import summarise


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    parser.add_argument("--detectors", nargs="+", default=None, help="default: all applicable")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a fast end-to-end check (2 epochs; MSP, EBO, KNN, AdaSCALE-A; no plots)",
    )


def main(args) -> int:
    from jaxood.bench import runner

    if args.quick:
        args.epochs = min(args.epochs, 2)
        args.detectors = args.detectors or ["msp", "ebo", "knn", "adascale_a"]
        args.no_plots = True
    t0 = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    fsutil.check_writable(args.out)
    model_dir = train_demo_model(args.out, args.epochs, args.seed, progress=not args.quiet)
    t_train = time.perf_counter() - t0
    cfg = runner.BenchConfig(
        benchmark="demo",
        models=[model_dir],
        detectors=args.detectors,
        out_dir=args.out,
        plots=not args.no_plots,
        progress=not args.quiet,
        model_name="wrn10_2",
        # Histograms/ROC curves for a few detectors keep the demo fast; the near/far bar
        # chart covers all of them.
        plot_detectors=("msp", "ebo", "react", "knn", "adascale_a", "adascale_l"),
    )
    result = runner.run(cfg)
    if args.quiet:
        from jaxood.bench import report

        print(report.markdown(result))
    total = time.perf_counter() - t0
    print(
        f"\ndemo: training {t_train:.1f} s, benchmark {result.info['total_s']:.1f} s, total "
        f"{total:.1f} s"
    )
    return summarise(result)
