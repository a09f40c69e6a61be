"""End-to-end file -> convert -> load_converted for architectures owned by other modules.

Their own tests check each converter against torchvision in memory; these check that the
shared path (state-dict file, ``jaxood.convert.torchvision.convert``, orbax save, manifest,
``load_converted``) works with them too, including factory kwargs (ViT ``image_size``).
"""

import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")

from tests.convert.parity import assert_parity  # noqa: E402


def test_vit_b_16_small_image_via_file(tmp_path):
    size = {"image_size": 32}  # 2x2 patch grid: the position embedding shape follows
    assert_parity("vit_b_16", tmp_path, input_size=32, tv_kwargs=size, arch_kwargs=size, jit=True)


def test_swin_t_via_file(tmp_path):
    assert_parity("swin_t", tmp_path, input_size=64, jit=True, fmt="safetensors")
