"""The architecture/weights table agrees with the installed torchvision's Weights enums."""

import os

import pytest

from jaxood.convert.torchvision import ARCHS
from jaxood.models import model_names

tvm = pytest.importorskip("torchvision.models")


def _enum(name):
    enum_name, member = name.split(".")
    return getattr(tvm, enum_name)[member]


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_weights_match_torchvision(arch):
    info = ARCHS[arch]
    assert arch in model_names() and callable(getattr(tvm, info.builder))
    assert info.default_weights in info.weights
    enums = {str(w) for w in tvm.get_model_weights(info.builder)}
    assert {w.name for w in info.weights} == enums  # every published weight, nothing else
    for w in info.weights:
        ref = _enum(w.name)
        tf = ref.transforms()
        assert w.file == os.path.basename(ref.url)
        assert w.top1 == ref.meta["_metrics"]["ImageNet-1K"]["acc@1"]
        spec = w.preprocess
        assert (spec.resize_size, spec.crop_size) == (tf.resize_size[0], tf.crop_size[0])
        assert spec.interpolation == tf.interpolation.value and tf.antialias
        assert list(spec.mean) == list(tf.mean) and list(spec.std) == list(tf.std)
        # Weights trained at another resolution need the matching model size (ViT SWAG E2E).
        if "image_size" in w.arch_kwargs:
            assert w.arch_kwargs["image_size"] == ref.meta["min_size"][0] == tf.crop_size[0]


def test_openood_defaults():
    # OpenOOD eval_ood_imagenet.py (--tvs-version 1) and spec section 5.
    assert ARCHS["resnet50"].default_weights.name == "ResNet50_Weights.IMAGENET1K_V1"
    assert ARCHS["regnet_y_16gf"].default_weights.name == (
        "RegNet_Y_16GF_Weights.IMAGENET1K_SWAG_E2E_V1"
    )
    dims = {a: ARCHS[a].feature_dim for a in ARCHS}
    assert dims == {
        "resnet18": 512, "resnet50": 2048, "resnet101": 2048, "resnext50_32x4d": 2048,
        "densenet201": 1920, "regnet_y_16gf": 3024, "efficientnet_v2_l": 1280,
        "vit_b_16": 768, "swin_t": 768, "swin_b": 1024,
    }  # fmt: skip
