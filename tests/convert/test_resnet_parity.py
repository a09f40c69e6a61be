"""ResNet / ResNeXt conversion parity against torchvision (random weights, random BN stats)."""

import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")

from tests.convert.parity import assert_parity  # noqa: E402

STAGES = {
    "relu": "stem",
    "layer1": "layer1",
    "layer2": "layer2",
    "layer3": "layer3",
    "layer4": "layer4",
}


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "resnext50_32x4d", "resnet101"])
def test_resnet_family_matches_torchvision(arch, tmp_path):
    assert_parity(arch, tmp_path, input_size=64, stages=STAGES)
