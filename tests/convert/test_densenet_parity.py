"""DenseNet-201 conversion parity against torchvision (random weights, random BN stats)."""

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")

from jaxood.models.densenet_tv import torchvision_key_fixes  # noqa: E402
from tests.convert.parity import assert_parity  # noqa: E402

STAGES = {
    "features.relu0": "stem",
    "features.denseblock1": "block1",
    "features.transition2": "trans2",
    "features.denseblock4": "block4",
}


def test_densenet201_matches_torchvision(tmp_path):
    # jit: eager mode would compile ~1000 per-shape ops (every dense layer has new widths).
    assert_parity(
        "densenet201", tmp_path, input_size=64, stages=STAGES, fmt="safetensors", jit=True
    )


def test_legacy_densenet_keys_are_renamed():
    # The published densenet201-c1103571.pth uses "norm.1" where torchvision now has "norm1".
    legacy = {
        "features.denseblock1.denselayer1.norm.1.weight": np.ones(2),
        "features.denseblock1.denselayer1.conv.2.weight": np.ones(2),
        "features.norm5.weight": np.ones(2),
    }
    assert sorted(torchvision_key_fixes(legacy)) == [
        "features.denseblock1.denselayer1.conv2.weight",
        "features.denseblock1.denselayer1.norm1.weight",
        "features.norm5.weight",
    ]
