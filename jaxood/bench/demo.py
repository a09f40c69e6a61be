"""``jaxood demo``: train a small network on 8x8 digits and benchmark every detector.

Needs nothing but the installed package (scikit-learn's bundled digits and sample photos):
ID = digits 0-4, near-OOD = digits 5-9, far-OOD = noise and grey photo patches. Trains a
small WRN with :mod:`jaxood.train`, then runs :func:`jaxood.bench.runner.run` (APS for
every detector) and prints the table. Runs in about two minutes on a laptop CPU.
"""

from __future__ import annotations

import os
import time

#: WRN-10-2 on 8x8x1: 128-d features, ~0.3M parameters.
DEMO_ARCH = {"depth": 10, "widen_factor": 2}


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    parser.add_argument("--detectors", nargs="+", default=None, help="default: all applicable")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--seed", type=int, default=0)


def train_demo_model(out: str, epochs: int = 10, seed: int = 0, progress: bool = True) -> str:
    """Trains the demo WRN on ID digits 0-4 (reusing a finished model in ``out``)."""
    import numpy as np

    from jaxood.data.openset import demo_dataset
    from jaxood.train import TrainConfig, train

    workdir = os.path.join(out, f"train_s{seed}_e{epochs}")
    best = os.path.join(workdir, "best")
    if os.path.isfile(os.path.join(best, "manifest.json")):
        return best
    data = demo_dataset()
    x, y = data["train"]
    mean = float(np.mean(x / 255.0))
    std = float(np.std(x / 255.0))
    cfg = TrainConfig(
        arch="wrn",
        arch_kwargs=DEMO_ARCH,
        num_classes=5,
        epochs=epochs,
        batch_size=64,
        lr=0.05,
        input_shape=(8, 8, 1),
        mean=(mean,),
        std=(std,),
        crop_padding=1,
        hflip=False,  # digits are not mirror-symmetric
        seed=seed,
        workdir=workdir,
        progress=progress,
        log_every=10,
    )
    result = train(cfg, train_data=(x, y), val_data=data["val"], resume=True)
    return result.model_dir


def main(args) -> int:
    from jaxood.bench import runner

    t0 = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    runner.check_writable(args.out)
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
        # OpenOOD's ViM grid (dim 256 or 1000) needs features wider than this 128-d model.
        hparams={"vim": {"dim": 64}},
    )
    result = runner.run(cfg)
    if args.quiet:
        from jaxood.bench import report

        print(report.markdown(result))
    total = time.perf_counter() - t0
    print(
        f"\ndemo: training {t_train:.1f} s, benchmark {result.info['total_s']:.1f} s, total "
        f"{total:.1f} s; results in {result.out_dir}/"
    )
    return 0
