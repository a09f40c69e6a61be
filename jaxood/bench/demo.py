"""The demo (``jaxood demo``): train a small network on 8x8 digits and benchmark every detector.

Needs nothing but the installed package (scikit-learn's bundled digits and sample photos):
ID = digits 0-4, near-OOD = digits 5-9, far-OOD = noise and grey photo patches. Trains a
small WRN with :mod:`jaxood.train`, then runs :func:`jaxood.bench.runner.run` (APS for
every detector) and prints the table. Runs in about two minutes on a laptop CPU.
"""

from __future__ import annotations

import os

from jaxood.data.openset import demo_dataset
from jaxood.train import TrainConfig, train

#: WRN-10-2 on 8x8x1: 128-d features, ~0.3M parameters.
DEMO_ARCH = {"depth": 10, "widen_factor": 2}


def train_demo_model(out: str, epochs: int = 10, seed: int = 0, progress: bool = True) -> str:
    """Trains the demo WRN on ID digits 0-4 (reusing a finished model in ``out``)."""
    import numpy as np

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
