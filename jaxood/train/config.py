"""``TrainConfig``: every training setting, OpenOOD v1.5 CIFAR recipe by default.

Defaults (spec-methods-training section 7.1): SGD, Nesterov, momentum 0.9, weight decay
5e-4 added to the gradient (PyTorch-style coupled L2, on all parameters), lr 0.1 with a
per-step cosine schedule to 1e-6, 100 epochs, batch 128, random crop (4-pixel zero padding)
+ horizontal flip, best checkpoint on ID-val accuracy. A run writes its config to
``<workdir>/config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

from jaxood import models
from jaxood.data.sources import check_classes
from jaxood.train.losses import LOSSES

ISH_FC_WEIGHT_DECAY = 5e-5  # OpenOOD train_ish.yml / imagenet_train_ish.sh: weight_decay_fc
PRECISIONS = ("f32", "bf16")
_FLOATS = (
    "lr",
    "min_lr",
    "momentum",
    "weight_decay",
    "fc_weight_decay",
    "logitnorm_tau",
    "ish_percentile",
)


@dataclasses.dataclass
class TrainConfig:
    """Training settings; all fields have defaults.

    Attributes:
      arch: model registry name (``jaxood.models.model_names()``).
      arch_kwargs: extra factory arguments, e.g. ``{"depth": 16, "widen_factor": 4}``.
      num_classes: K; ``None`` = from the dataset / the largest label + 1.
      dataset: dataset name for :func:`jaxood.data.sources.load_dataset` when ``train`` gets no
        arrays (``cifar10``, ``cifar100``, ``fashion_mnist``, ``npz:<path>``).
      data_dir: where the dataset lives (TFDS data dir, or the folder holding the ``.npz``).
      val_size: ID-val images carved per class when the data has no val split: from the
        test split for CIFAR/Fashion-MNIST (OpenOOD: 1000), from ``x_train`` for an ``.npz``
        without ``x_val`` (0: no val, the last epoch's model is kept).
      classes: train on these original class ids only, relabelled ``0..len-1`` in the given
        order (train/val/test alike), e.g. ``(0, 1, 2, 3, 5, 8)`` for fashion-openset's ID
        classes; ``None`` = all. Saved in the model's manifest (``train.classes``).
      epochs: training epochs; the cosine schedule spans ``epochs * steps_per_epoch``.
      max_steps: stop after this many steps (schedule unchanged); for smoke tests.
      batch_size: global batch size (divisible by the device count).
      eval_batch_size: evaluation batch size (rounded up to a multiple of the device count).
      lr, min_lr: cosine schedule from ``lr`` to ``min_lr``, stepped per iteration.
      momentum, nesterov: SGD momentum (PyTorch formulation).
      weight_decay: coupled L2 added to every gradient before momentum.
      fc_weight_decay: a different L2 for the classifier (``fc``) weight and bias; ``None`` =
        ``weight_decay``, or 5e-5 with ``ish`` (OpenOOD's ``train_ish.yml``
        ``weight_decay_fc``); see :meth:`classifier_weight_decay`.
      loss: ``ce``, ``logitnorm`` or ``elogitnorm``.
      logitnorm_tau: LogitNorm temperature (OpenOOD: 0.04).
      ish: ISH mode: reshape the fc-weight gradient (spec section 6.2); needs ``loss="ce"``.
      ish_percentile: ISH pruning percentile p (keep the top ``1 - p``).
      init_from: a saved-model directory to start from (fine-tuning, e.g. ISH).
      mean, std: per-channel normalisation of ``x / 255``; ``None`` = the dataset's constants
        (or statistics of the training images for arrays).
      input_shape: ``(H, W, C)``; ``None`` = from the data (checked against it otherwise).
      crop_padding: zero padding of the random crop (0 disables the crop).
      hflip: random horizontal flips.
      drop_last: drop the short last batch (OpenOOD keeps it).
      seed: initialisation, data order, augmentation and dropout seed.
      workdir: run directory (config, metrics.jsonl, checkpoints/, best/).
      checkpoint_every: save every N steps; 0 = at the end of every epoch.
      keep_checkpoints: how many recent checkpoints to keep (the best model is kept apart).
      log_every: steps between progress/metrics updates (also the NaN check interval).
      progress: show a progress bar.
      num_devices: use the first N devices; ``None`` = all.
      precision: ``"f32"``, or ``"bf16"``: convolutions and matmuls in bfloat16 while the
        parameters, optimizer state, BatchNorm statistics and the loss stay float32 (for
        accelerators; evaluation and the exported model are float32).
    """

    arch: str = "resnet18_32x32"
    arch_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    num_classes: int | None = None
    dataset: str | None = None
    data_dir: str | None = None
    val_size: int = 1000
    classes: tuple[int, ...] | None = None
    epochs: int = 100
    max_steps: int | None = None
    batch_size: int = 128
    eval_batch_size: int = 256
    lr: float = 0.1
    min_lr: float = 1e-6
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    fc_weight_decay: float | None = None
    loss: str = "ce"
    logitnorm_tau: float = 0.04
    ish: bool = False
    ish_percentile: float = 0.85
    init_from: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_shape: tuple[int, int, int] | None = None
    crop_padding: int = 4
    hflip: bool = True
    drop_last: bool = False
    seed: int = 0
    workdir: str = "runs/train"
    checkpoint_every: int = 0
    keep_checkpoints: int = 3
    log_every: int = 50
    progress: bool = True
    num_devices: int | None = None
    precision: str = "f32"

    def classifier_weight_decay(self) -> float | None:
        """The ``fc`` L2 when it differs from ``weight_decay`` (``None`` = the same)."""
        if self.fc_weight_decay is not None:
            return self.fc_weight_decay
        return ISH_FC_WEIGHT_DECAY if self.ish else None

    def validate(self) -> None:
        """Raises ValueError for settings that cannot work."""
        for name in _FLOATS:  # NaN/inf would pass every comparison below
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.weight_decay < 0 or (self.fc_weight_decay or 0) < 0 or self.momentum < 0:
            raise ValueError("weight_decay, fc_weight_decay and momentum must be >= 0")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; valid: {', '.join(LOSSES)}")
        if self.ish and self.loss != "ce":
            raise ValueError("ISH reshapes the cross-entropy fc gradient; use loss='ce' with ish")
        for name in ("epochs", "batch_size", "eval_batch_size", "keep_checkpoints", "log_every"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError(
                f"need 0 <= min_lr <= lr and lr > 0, got lr={self.lr}, min_lr={self.min_lr}"
            )
        if self.logitnorm_tau <= 0:
            raise ValueError(f"logitnorm_tau must be positive, got {self.logitnorm_tau}")
        if not 0 <= self.ish_percentile < 1:
            raise ValueError(f"ish_percentile must be in [0, 1), got {self.ish_percentile}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ValueError(f"max_steps must be positive, got {self.max_steps}")
        if self.val_size < 0:
            raise ValueError(f"val_size (--val-size) must be >= 0, got {self.val_size}")
        self._validate_classes()
        models.check_arch_kwargs(self.arch, self.arch_kwargs)  # before the data is loaded

    def _validate_classes(self) -> None:
        if self.classes is None:
            return
        check_classes(self.classes)  # the range is checked when the data is known
        if self.num_classes is not None and self.num_classes != len(self.classes):
            raise ValueError(
                f"num_classes = {self.num_classes} but classes (--classes) selects "
                f"{len(self.classes)}; the model has len(classes) outputs: drop --num-classes"
            )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("mean", "std", "input_shape", "classes"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(
                f"unknown TrainConfig fields {sorted(unknown)}; valid: {sorted(names)}"
            )
        d = dict(d)
        for k in ("mean", "std", "input_shape", "classes"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)

    def save(self, path: str | os.PathLike) -> None:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainConfig:
        with open(path) as f:
            return cls.from_dict(json.load(f))
