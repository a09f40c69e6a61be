"""jaxood.data.transforms vs torchvision's eval transforms on real photos (sklearn samples)."""

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_images

from jaxood.data.transforms import center_crop, preprocess, preprocess_batch, resized_size
from jaxood.types import PreprocessSpec

torch = pytest.importorskip("torch")
T = pytest.importorskip("torchvision.transforms")

_MODES = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}


@pytest.fixture(scope="module")
def photos():
    """china.jpg and flower.jpg (427x640 RGB) plus odd-sized crops/variants of them."""
    china, flower = (Image.fromarray(a) for a in load_sample_images().images)
    return {
        "china": china,
        "flower": flower,
        "portrait_odd": china.crop((11, 0, 310, 427)),  # 299x427: shorter side is the width
        "small": flower.crop((100, 50, 233, 151)),  # 133x101: upsampled by Resize(224)
        "gray": china.convert("L"),
        "rgba": flower.convert("RGBA"),
    }


def torchvision_eval(img, spec: PreprocessSpec) -> np.ndarray:
    """OpenOOD/torchvision eval pipeline; [H, W, C] like jaxood."""
    ops = [T.Lambda(lambda im: im.convert("RGB" if spec.channels == 3 else "L"))]
    if spec.resize_size is not None:
        ops.append(T.Resize(spec.resize_size, interpolation=_MODES[spec.interpolation]))
    if spec.crop_size is not None:
        ops.append(T.CenterCrop(spec.crop_size))
    ops += [T.ToTensor(), T.Normalize(spec.mean, spec.std)]
    return T.Compose(ops)(img).permute(1, 2, 0).numpy()


SPECS = [
    PreprocessSpec(256, 224, "bilinear"),  # ResNet-50 V1, ViT-B/16 V1
    PreprocessSpec(232, 224, "bicubic"),  # Swin-T
    PreprocessSpec(238, 224, "bicubic"),  # Swin-B
    PreprocessSpec(384, 384, "bicubic"),  # RegNet-Y-16GF SWAG E2E
    PreprocessSpec(480, 480, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # EfficientNetV2-L
    PreprocessSpec(33, 31, "bilinear"),  # odd sizes: half-pixel crop offsets (round-half-even)
    PreprocessSpec(None, 500, "bilinear"),  # crop larger than the image -> zero padding
]


@pytest.mark.parametrize(
    "spec", SPECS, ids=lambda s: f"{s.resize_size}-{s.crop_size}-{s.interpolation}"
)
@pytest.mark.parametrize("name", ["china", "flower", "portrait_odd", "small", "gray", "rgba"])
def test_matches_torchvision_exactly(photos, name, spec):
    ours = preprocess(photos[name], spec)
    ref = torchvision_eval(photos[name], spec)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize(
    "weights", ["ResNet50_Weights.IMAGENET1K_V2", "Swin_T_Weights.IMAGENET1K_V1"]
)
def test_matches_weights_transforms(photos, weights):
    """The manifest's spec reproduces ``weights.transforms()`` (ImageClassification)."""
    import torchvision.models as tvm

    from jaxood.convert.torchvision import ARCHS

    enum_name, member = weights.split(".")
    tv_transform = getattr(tvm, enum_name)[member].transforms()
    spec = next(w.preprocess for a in ARCHS.values() for w in a.weights if w.name == weights)
    ref = tv_transform(photos["china"]).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(preprocess(photos["china"], spec), ref)


def test_grayscale_model_and_batch(photos):
    spec = PreprocessSpec(32, 28, "bilinear", (0.5,), (0.25,), channels=1)
    batch = preprocess_batch([photos["china"], photos["flower"]], spec)
    assert batch.shape == (2, 28, 28, 1)
    np.testing.assert_array_equal(batch[1], torchvision_eval(photos["flower"], spec))


def test_resized_size_truncates_like_torchvision():
    # 427x640 -> shorter side 256: long side int(256 * 640 / 427) = 383 (not rounded to 384).
    assert resized_size(640, 427, 256) == (383, 256)
    assert resized_size(427, 640, 256) == (256, 383)


def test_center_crop_rounds_half_to_even(photos):
    # (427 - 100) / 2 = 163.5 -> round() gives 164 (half to even); width (640-100)/2 = 270.
    img = photos["china"]
    np.testing.assert_array_equal(
        np.asarray(center_crop(img, 100)), np.asarray(img)[164:264, 270:370]
    )


def test_bad_input(photos):
    with pytest.raises(ValueError, match="PIL"):
        preprocess(np.zeros((4, 4, 3)), SPECS[0])
    with pytest.raises(ValueError, match="interpolation"):
        preprocess(photos["china"], PreprocessSpec(256, 224, "cubic-ish"))
    with pytest.raises(ValueError, match="channels"):
        preprocess(photos["china"], PreprocessSpec(256, 224, channels=2))
    with pytest.raises(ValueError, match="shapes"):
        preprocess_batch([photos["china"], photos["small"]], PreprocessSpec(64, None))


@pytest.mark.parametrize(
    "mean, std",
    [
        (SPECS[0].mean, SPECS[0].std),
        ((0.5,) * 3, (0.5,) * 3),
        ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    ],
)
def test_every_pixel_value_matches_totensor_normalize(mean, std):
    """The lookup table reproduces ToTensor + Normalize for all 256 values of each channel."""
    values = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :, None], (4, 256, 3))
    img = Image.fromarray(np.ascontiguousarray(values))
    ref = T.Compose([T.ToTensor(), T.Normalize(mean, std)])(img).permute(1, 2, 0).numpy()
    spec = PreprocessSpec(None, None, "bilinear", mean, std)
    np.testing.assert_array_equal(preprocess(img, spec), ref)
