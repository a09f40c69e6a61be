"""Eval preprocessing identical to torchvision's on PIL images, without torch.

Reproduces ``torchvision.transforms`` ``Resize(size)`` -> ``CenterCrop(crop)`` ->
``ToTensor()`` -> ``Normalize(mean, std)`` (and ``weights.transforms()``, i.e.
``ImageClassification``, which does the same) bit for bit:

* the shorter side is resized to ``resize_size`` with the longer side ``int(size * long /
  short)`` (truncation, as ``_compute_resized_output_size``), by PIL ``Image.resize`` which
  antialiases bilinear/bicubic downsampling; an image already at the target size is left
  untouched;
* the centre crop offset is ``int(round((H - crop) / 2))`` (Python's half-to-even round),
  with zero padding first when the crop is larger than the image;
* pixels are scaled by ``/ 255`` in float32 and normalised ``(x - mean) / std`` in float32.
  Those two steps map each uint8 value of a channel to one float32, so they are computed
  once per (channel, value) into a ``[C, 256]`` table with exactly torchvision's operations
  and applied as a lookup: identical results at about half the cost of the per-pixel
  arithmetic.

Output layout is NHWC-friendly ``[H, W, C]`` (jaxood models take NHWC).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable

import numpy as np
from PIL import Image

from jaxood.types import PreprocessSpec

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """``(new_w, new_h)`` with the shorter side ``size``, as torchvision ``Resize(int)``."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def resize_shorter(img: Image.Image, size: int, interpolation: str = "bilinear") -> Image.Image:
    """Resizes the shorter side of ``img`` to ``size`` (PIL, antialiased like torchvision)."""
    if interpolation not in _RESAMPLE:
        raise ValueError(
            f"unknown interpolation {interpolation!r}; valid: {', '.join(sorted(_RESAMPLE))}"
        )
    new_w, new_h = resized_size(img.width, img.height, size)
    if (new_w, new_h) == img.size:
        return img
    return img.resize((new_w, new_h), _RESAMPLE[interpolation])


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """Square centre crop with torchvision's rounding (zero-pads images smaller than ``size``)."""
    w, h = img.size
    if size > w or size > h:
        # torchvision pads (left, top) = floor, (right, bottom) = ceil of the deficit.
        left, top = max(size - w, 0) // 2, max(size - h, 0) // 2
        padded = Image.new(img.mode, (max(w, size), max(h, size)), 0)
        padded.paste(img, (left, top))
        img, (w, h) = padded, padded.size
        if (w, h) == (size, size):
            return img
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


@functools.lru_cache(maxsize=32)
def normalise_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``[C, 256]`` float32: ``(v / 255 - mean[c]) / std[c]`` for every uint8 value ``v``.

    Computed with torchvision's float32 op order (``x.float().div(255)``, then
    ``sub(mean).div(std)``), so looking a pixel up equals computing it.
    """
    v = np.arange(256, dtype=np.float32)[:, None] / np.float32(255)
    table = (v - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    table = np.ascontiguousarray(table.T)
    table.setflags(write=False)
    return table


def to_array(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """``ToTensor`` + ``Normalize`` in float32: ``[H, W, C]``."""
    x = np.asarray(img, dtype=np.uint8)
    if x.ndim == 2:
        x = x[:, :, None]
    if len(spec.mean) != x.shape[-1] or len(spec.std) != x.shape[-1]:
        raise ValueError(
            f"preprocess spec has mean/std for {len(spec.mean)}/{len(spec.std)} channels but "
            f"the image has {x.shape[-1]} (channels={spec.channels})"
        )
    table = normalise_table(tuple(spec.mean), tuple(spec.std))
    out = np.empty(x.shape, np.float32)
    for c in range(x.shape[-1]):  # uint8 indices are always in range: "clip" skips a check
        np.take(table[c], x[..., c], out=out[..., c], mode="clip")
    return out


#: PIL modes of 16-bit grayscale images (PNG/TIFF); ``convert("L")`` would clip them to 255.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def to_eight_bit(img: Image.Image) -> Image.Image:
    """A 16-bit grayscale image scaled to 8 bits, ``round(v / 257)`` (65535 -> 255), with a
    warning: models take 8-bit images, and PIL's own conversion clips every value above 255
    to white."""
    v = np.asarray(img, dtype=np.uint32)
    warnings.warn(
        "16-bit images are scaled to 8 bits (round(v / 257)) as the model takes 8-bit "
        "images; convert them yourself to control this", UserWarning, stacklevel=3)
    return Image.fromarray(((v + 128) // 257).astype(np.uint8), "L")


def preprocess(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """torchvision eval transform of one PIL image.

    Args:
      img: any-mode PIL image (converted to RGB when ``spec.channels == 3``, to ``L`` when 1;
        grayscale images are thus replicated to three channels).
      spec: resize/crop sizes, interpolation, mean/std, channels.

    Returns:
      ``[crop, crop, C]`` float32 (or the resized size when ``crop_size`` is None).
    """
    if not isinstance(img, Image.Image):
        raise ValueError(f"preprocess expects a PIL.Image.Image, got {type(img).__name__}")
    if spec.channels not in (1, 3):
        raise ValueError(f"spec.channels must be 1 or 3, got {spec.channels}")
    mode = "RGB" if spec.channels == 3 else "L"
    if img.mode in SIXTEEN_BIT_MODES:
        img = to_eight_bit(img)
    if img.mode != mode:
        img = img.convert(mode)
    if spec.resize_size is not None:
        img = resize_shorter(img, int(spec.resize_size), spec.interpolation)
    if spec.crop_size is not None:
        img = center_crop(img, int(spec.crop_size))
    return to_array(img, spec)


def preprocess_batch(images: Iterable[Image.Image], spec: PreprocessSpec) -> np.ndarray:
    """Stacks :func:`preprocess` over ``images``: ``[B, H, W, C]`` float32.

    All outputs must share a shape (set ``crop_size``), otherwise a ValueError names the sizes.
    """
    arrays = [preprocess(img, spec) for img in images]
    if not arrays:
        raise ValueError("preprocess_batch got no images")
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(
            f"preprocessed images have different shapes {sorted(shapes)}; set crop_size to batch"
        )
    return np.stack(arrays)
