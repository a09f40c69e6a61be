"""The splits a run trains and evaluates on, checked once: ``prepare_data`` -> ``TrainData``."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxood.data.sources import from_arrays, load_dataset
from jaxood.train.config import TrainConfig

Split = tuple[np.ndarray, np.ndarray]  # (x uint8 [N, H, W, C], y int32 [N])


class TrainData(NamedTuple):
    """Checked splits (``val``/``test`` may be None) and what the model needs to know.

    ``val_source``: where val came from, in words; ``classes``: the original class ids kept
    (label ``i`` = original class ``classes[i]``), None = all.
    """

    train: Split
    val: Split | None
    test: Split | None
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    val_source: str = ""
    classes: tuple[int, ...] | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.train[0].shape[1:])


def prepare_data(cfg: TrainConfig, train_data=None, val_data=None, test_data=None) -> TrainData:
    """Arrays as given (or ``cfg.dataset`` loaded) -> NHWC uint8 + int labels, all checked
    (:func:`jaxood.data.sources.from_arrays`: labels in range, no stray label, one image
    shape), ``cfg.classes`` selected and relabelled.

    ``mean``/``std``: ``cfg``'s, else the dataset's constants, else statistics of the
    training images (arrays). Val: ``val_data``, else the dataset's (see ``load_dataset``).
    """
    own_k = None if cfg.classes else cfg.num_classes  # K of the original labels
    if train_data is None:
        if not cfg.dataset:
            raise ValueError("no training data: pass train_data=(x, y) or set TrainConfig.dataset")
        splits = load_dataset(cfg.dataset, cfg.data_dir, val_size=cfg.val_size,
                              classes=cfg.classes, num_classes=own_k)
    else:
        val, test = val_data or (None, None), test_data or (None, None)
        splits = from_arrays(cfg.dataset or "arrays", *train_data, *test, x_val=val[0],
                             y_val=val[1], num_classes=own_k, classes=cfg.classes,
                             mean=cfg.mean, std=cfg.std, val_size=0)
    val_source = splits.val_source
    if train_data is not None:
        val_source = "val_data" if val_data is not None else (
            "none (no val_data given): the last epoch's model is kept")
    num_classes = cfg.num_classes or splits.num_classes
    if num_classes < splits.num_classes:  # CIFAR/Fashion-MNIST (npz/arrays were checked)
        raise ValueError(f"num_classes (--num-classes) = {num_classes} but {splits.name} has "
                         f"{splits.num_classes} classes; select a subset with --classes")
    if len(splits.train[0]) == 0:
        raise ValueError(f"the training set of {splits.name} is empty")
    data = TrainData(
        splits.train, splits.val if len(splits.val[0]) else None, splits.test, num_classes,
        tuple(map(float, cfg.mean or splits.mean)), tuple(map(float, cfg.std or splits.std)),
        splits.name, val_source, splits.classes,
    )
    _check_shapes(cfg, data)
    return data


def _check_shapes(cfg: TrainConfig, data: TrainData) -> None:
    channels = data.input_shape[-1]
    if len(data.mean) != channels or len(data.std) != channels:
        raise ValueError(
            f"mean/std have {len(data.mean)}/{len(data.std)} entries but the images have "
            f"{channels} channels"
        )
    if cfg.input_shape is not None and tuple(cfg.input_shape) != data.input_shape:
        raise ValueError(
            f"input_shape {tuple(cfg.input_shape)} does not match the data {data.input_shape}"
        )
