"""The best model of a run as a ``jaxood.models`` saved-model directory.

``<workdir>/best_models/step_<t>/`` holds the export of step ``t``; ``<workdir>/best`` is a
symlink to the current one, repointed atomically (write the new directory, swap a temporary
link over the old one with ``os.replace``, then remove older exports), so a reader or a
crash at any moment sees one complete model.
"""

from __future__ import annotations

import os
import shutil

import jax

from jaxood import models
from jaxood.train.config import TrainConfig
from jaxood.types import PreprocessSpec

BEST = "best"
EXPORTS = "best_models"


def export_best(
    workdir: str,
    variables: dict,
    *,
    run_cfg: TrainConfig,
    step: int,
    val_acc: float | None,
    data_name: str,
    steps_per_epoch: int,
    data_notes: dict | None = None,
) -> str:
    """Saves ``variables`` of ``step`` and points ``<workdir>/best`` at it; returns its path.

    ``run_cfg`` is the resolved config (``num_classes``, ``mean``, ``std``, ``input_shape``
    set). ``data_notes`` (val source, ``class_map`` of a class subset) go into the manifest's
    ``train`` entry. Call it on one process only: the save is process-local.
    """
    h = run_cfg.input_shape[0]
    preprocess = PreprocessSpec(
        resize_size=h,
        crop_size=h,
        interpolation="bilinear",
        mean=run_cfg.mean,
        std=run_cfg.std,
        channels=run_cfg.input_shape[-1],
    )
    target = os.path.join(workdir, EXPORTS, f"step_{step}")
    extra = {
        "name": f"{run_cfg.arch}-{data_name}",
        "train": {
            "dataset": data_name,
            **(data_notes or {}),
            "step": step,
            "epoch": step / steps_per_epoch,
            "val_acc": val_acc,
            "config": run_cfg.to_dict(),
        },
        "has_feature_map": True,
    }
    models.save(
        target,
        arch=run_cfg.arch,
        num_classes=run_cfg.num_classes,
        variables=jax.device_get(variables),
        arch_kwargs=run_cfg.arch_kwargs,
        input_shape=tuple(run_cfg.input_shape),
        preprocess=preprocess,
        extra=extra,
        overwrite=True,
    )
    link, tmp_link = os.path.join(workdir, BEST), os.path.join(workdir, BEST + ".tmp")
    if os.path.lexists(tmp_link):
        os.remove(tmp_link)
    os.symlink(os.path.relpath(target, workdir), tmp_link)
    os.replace(tmp_link, link)
    for old in os.listdir(os.path.join(workdir, EXPORTS)):
        if old != f"step_{step}":
            shutil.rmtree(os.path.join(workdir, EXPORTS, old), ignore_errors=True)
    return target
