"""A tiny model (with feature map and attention) and data every detector can fit on."""

import numpy as np
import pytest

from tests.detectors import tiny_net
from tests.detectors.test_all_detectors import OVERRIDES, _tiny_model_with_attention

__all__ = ["OVERRIDES"]


@pytest.fixture(scope="session")
def tiny_world():
    model = _tiny_model_with_attention()
    model = type(model)(**{**model.__dict__, "input_shape": (8, 8, 3)})
    weights = tiny_net.make_weights(seed=4)
    rng = np.random.default_rng(5)
    x_train = rng.normal(size=(64, 8, 8, 3)).astype(np.float32)
    x_val = rng.normal(size=(32, 8, 8, 3)).astype(np.float32)
    x_test = np.concatenate(
        [rng.normal(size=(12, 8, 8, 3)), rng.uniform(-3, 3, (12, 8, 8, 3))]
    ).astype(np.float32)
    id_data = {"train": (x_train, np.arange(64) % 10), "val": (x_val, np.arange(32) % 10)}
    return model, weights, id_data, x_test


# The saved digits model (with preprocessing) and its fitted KNN, for the export/deploy tests.
from tests.cli.conftest import digits_world  # noqa: E402,F401 - fixture re-exported here
from tests.fuzz.conftest import fuzz_world  # noqa: E402,F401 - fixture re-exported here
