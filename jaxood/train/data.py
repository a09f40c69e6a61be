"""The splits a run trains and evaluates on, checked once: ``prepare_data`` -> ``TrainData``."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxood.train.config import TrainConfig

Split = tuple[np.ndarray, np.ndarray]  # (x uint8 [N, H, W, C], y int32 [N])


class TrainData(NamedTuple):
    """Checked splits (``val``/``test`` may be None) and what the model needs to know."""

    train: Split
    val: Split | None
    test: Split | None
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.train[0].shape[1:])


def prepare_data(cfg: TrainConfig, train_data=None, val_data=None, test_data=None) -> TrainData:
    """Arrays as given (or ``cfg.dataset`` loaded) -> NHWC uint8 + int labels, all checked.

    ``mean``/``std``: ``cfg``'s, else the dataset's constants, else statistics of the
    training images (arrays).
    """
    from jaxood.data.sources import as_nhwc_uint8, check_labels, load_dataset

    if train_data is None:
        if not cfg.dataset:
            raise ValueError("no training data: pass train_data=(x, y) or set TrainConfig.dataset")
        splits = load_dataset(cfg.dataset, cfg.data_dir, val_size=cfg.val_size)
        raw = (splits.train, splits.val, splits.test)
        num_classes = cfg.num_classes or splits.num_classes
        mean, std, name = cfg.mean or splits.mean, cfg.std or splits.std, splits.name
    else:
        raw = (train_data, val_data, test_data)
        ys = [d[1] for d in raw if d is not None]
        num_classes = cfg.num_classes or int(max(np.max(y) for y in ys)) + 1
        mean, std, name = cfg.mean, cfg.std, cfg.dataset or "arrays"
    checked = []
    for split, data in zip(("train", "val", "test"), raw):
        if data is None:
            checked.append(None)
            continue
        x = as_nhwc_uint8(data[0], f"{split} images")
        checked.append((x, check_labels(data[1], len(x), f"{split} labels", num_classes)))
    train, val, test = checked
    if len(train[0]) == 0:
        raise ValueError("the training set is empty")
    if mean is None:  # statistics of the training images
        scaled = train[0].reshape(-1, train[0].shape[-1]).astype(np.float64) / 255.0
        mean, std = tuple(scaled.mean(0)), tuple(scaled.std(0))
    data = TrainData(
        train, val, test, num_classes, tuple(map(float, mean)), tuple(map(float, std)), name
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
    for split, d in (("val", data.val), ("test", data.test)):
        if d is not None and d[0].shape[1:] != data.train[0].shape[1:]:
            raise ValueError(
                f"{split} images {d[0].shape[1:]} differ from train images {data.train[0].shape[1:]}"
            )
    if cfg.input_shape is not None and tuple(cfg.input_shape) != data.input_shape:
        raise ValueError(
            f"input_shape {tuple(cfg.input_shape)} does not match the data {data.input_shape}"
        )
