"""Input checks that fail early with messages saying what was wrong and what to do.

All checks are skipped for traced values (inside ``jax.jit``), so the public functions can
validate concrete inputs eagerly and still be jit-compiled.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxood.types import Features

#: Floating-point dtypes accepted for images and features; half precision is cast to float32
#: before the network (see :func:`images`).
FLOAT_DTYPES = ("float32", "float64", "float16", "bfloat16")


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds values (not a tracer inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def is_float_dtype(dtype: Any) -> bool:
    """True for NumPy floats and JAX's extra ones (bfloat16)."""
    try:
        return bool(jnp.issubdtype(np.dtype(dtype), jnp.floating))
    except TypeError:
        return False


def dtype_of(x: Any) -> np.dtype:
    """The dtype of an array-like (``np.asarray`` of anything else)."""
    return np.dtype(x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype)


def check_array(
    x: Any,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    floating: bool = True,
    finite: bool = True,
    nonempty: bool = True,
    last_dim: int | None = None,
) -> None:
    """Checks rank, dtype, emptiness and finiteness of an array argument.

    Raises:
      ValueError: naming ``name``, what was expected and what was found.
    """
    if x is None:
        raise ValueError(f"`{name}` is required but was None")
    shape = np.shape(x)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if len(shape) not in allowed:
            raise ValueError(
                f"`{name}` must have rank {' or '.join(map(str, allowed))}, got shape {shape}"
            )
    if last_dim is not None and (not shape or shape[-1] != last_dim):
        raise ValueError(f"`{name}` must have last dimension {last_dim}, got shape {shape}")
    dtype = dtype_of(x)
    if floating and not is_float_dtype(dtype):
        raise ValueError(
            f"`{name}` must be a floating-point array ({'/'.join(FLOAT_DTYPES)}), got dtype "
            f"{dtype}; convert images with the model's preprocessing (e.g. uint8 -> float32 "
            "normalised) first"
        )
    if nonempty and shape and shape[0] == 0:
        raise ValueError(f"`{name}` is an empty batch (shape {shape}); pass at least one sample")
    if finite and floating and is_concrete(x):
        arr = np.asarray(x)
        if not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(
                f"`{name}` contains {bad} NaN/Inf value(s); clean the inputs or check the "
                "model/checkpoint that produced them"
            )


def check_features(features: Any, *, need: Sequence[str] = ("logits",)) -> None:
    """Checks a ``Features`` tuple: ranks, batch agreement, finiteness, required fields."""
    if not isinstance(features, Features):
        raise ValueError(f"expected a jaxood.Features, got {type(features).__name__}")
    batch = None
    for field, rank in (("logits", 2), ("feature", 2), ("feature_map", 4), ("attention", 2)):
        value = getattr(features, field)
        if value is None:
            if field in need:
                raise ValueError(
                    f"this detector needs `features.{field}`, but the model does not provide "
                    f"it (got None); use a model that exposes `{field}`"
                )
            continue
        if field not in need and field not in ("logits", "feature"):
            continue
        check_array(value, f"features.{field}", ndim=rank)
        b = np.shape(value)[0]
        if batch is None:
            batch = b
        elif b != batch:
            raise ValueError(
                f"`features.{field}` has batch size {b}, but other fields have {batch}"
            )


def is_batched_source(x: Any) -> bool:
    """True for a lazily batched image source: ``len(x)`` and ``x.batch(start, stop)``
    (normalised ``[n, H, W, C]`` float images), and no ``shape`` (not an array)."""
    return hasattr(x, "batch") and hasattr(x, "__len__") and not hasattr(x, "shape")


#: A float batch whose values lie in [0, max] with max above this looks like raw pixels.
UNNORMALISED_MAX = 20.0


def images(
    x: Any,
    name: str = "x",
    *,
    input_shape: Sequence[int] | None = None,
    channels: int | None = None,
    allow_any_size: bool = False,
    values: bool = True,
) -> Any:
    """Checks a batch of normalised NHWC images at a model's boundary; returns it as float32.

    The one owner of the model-input checks (registry ``prepare_inputs``, AdaSCALE's
    functional API, ``FittedDetector``, image sources, OODD's crops):

    * dtype: floating point (``FLOAT_DTYPES``; half precision is cast to float32); uint8 is
      named as raw images, other integer/bool dtypes are refused;
    * shape ``[N, H, W, C]``: one image ``[H, W, C]``, NCHW ``[N, C, H, W]`` and (with
      ``input_shape = (H, W, C)``, the model's) another size or channel count are errors
      that say what was expected. ``allow_any_size`` accepts another ``H x W`` (for
      resolution-agnostic architectures; never silently);
    * not empty; finite; a :class:`UserWarning` when the values look like unnormalised
      pixels (all >= 0 with a maximum above ``UNNORMALISED_MAX``).

    Works on tracers (inside ``jax.jit``) too: the value checks are then skipped. NumPy
    (and lists) come back as NumPy float32, JAX arrays as JAX float32. ``values=False``
    checks only the layout (dtype, shape) and returns ``x`` as given (for a large or
    memory-mapped array whose values are checked batch by batch as they are read).

    Raises:
      ValueError: naming ``name``, what was expected and what was found.
    """
    x = as_array(x, name)
    if x.ndim < 3:
        raise ValueError(f"`{name}` must be a batch of images [N, H, W, C], got shape "
                         f"{tuple(x.shape)}")
    dtype = np.dtype(x.dtype)
    if dtype == np.uint8:
        raise ValueError(
            f"`{name}` is uint8 (raw images): pass normalised float images (the model's "
            "preprocessing), e.g. fitted.score_images(...) or jaxood.fit(...) apply it for you"
        )
    if not is_float_dtype(dtype):
        hint = "; raw pixel values? pass them as uint8" if np.issubdtype(dtype, np.integer) else ""
        raise ValueError(
            f"`{name}` must hold normalised floating-point images "
            f"({'/'.join(FLOAT_DTYPES)}), got dtype {dtype}{hint}"
        )
    _check_image_shape(tuple(x.shape), name, input_shape, channels, allow_any_size)
    if x.shape[0] == 0:
        raise ValueError(f"`{name}` is an empty batch (shape {tuple(x.shape)}); pass at least "
                         "one image")
    if not values:
        return x
    if is_concrete(x):
        _check_image_values(np.asarray(x), name)
    if dtype == np.float32:
        return x
    return x.astype(jnp.float32) if isinstance(x, jax.Array) else np.asarray(x, np.float32)


def as_array(x: Any, name: str) -> Any:
    """``x`` as an array: NumPy and JAX arrays (and tracers) as they are; anything else
    (lists, torch tensors, ...) through ``np.asarray``, with clear errors for ``None``,
    ragged sequences and non-numeric objects."""
    if x is None:
        raise ValueError(f"`{name}` is required but was None")
    if isinstance(x, (np.ndarray, jax.Array)) or not is_concrete(x):
        return x
    if is_batched_source(x):
        raise ValueError(f"`{name}` is a lazily batched source; pass an array batch")
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor (maybe on a GPU)
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except ValueError:
        raise ValueError(
            f"`{name}` is ragged (images of different shapes?); images must share one shape: "
            "stack them into one [N, H, W, C] array"
        ) from None
    if arr.dtype == object:
        raise ValueError(f"`{name}` must be an array of images, got {type(x).__name__}")
    return arr


def _check_image_shape(shape, name, input_shape, channels, allow_any_size) -> None:
    if input_shape is not None:
        input_shape = tuple(int(s) for s in input_shape)
        channels = input_shape[-1] if channels is None else channels
    expected = "[N, H, W, C]" if input_shape is None else "[N, H, W, C] = [N, {}, {}, {}]".format(
        *input_shape)
    if len(shape) == 3 and (input_shape is None or shape == input_shape
                            or shape[-1] in (1, 3)):
        var = name if name.isidentifier() else "x"
        raise ValueError(f"`{name}` must be a batch {expected}; got one image {shape}: use "
                         f"{var}[None]")
    if len(shape) != 4:
        raise ValueError(f"`{name}` must be a batch of images {expected} (NHWC), got shape "
                         f"{shape}")
    c = channels
    nchw = (shape[1] == c and shape[-1] != c) if c is not None else (
        shape[1] in (1, 3) and shape[-1] not in (1, 3, 4))
    if nchw:
        var = name if name.isidentifier() else "x"
        raise ValueError(f"`{name}`: expected {expected}, got {list(shape)}; NCHW? use "
                         f"{var}.transpose(0, 2, 3, 1)")
    if c is not None and shape[-1] != c:
        raise ValueError(f"`{name}`: expected {expected} with {c} channel(s), got "
                         f"{list(shape)}")
    if input_shape is not None and not allow_any_size and tuple(shape[1:3]) != input_shape[:2]:
        raise ValueError(
            f"`{name}`: expected {expected}, got {list(shape)}: the model takes "
            f"{input_shape[0]}x{input_shape[1]} images (resize them with the model's "
            "preprocessing; allow_any_size=True only for resolution-agnostic architectures)"
        )


def _check_image_values(arr: np.ndarray, name: str) -> None:
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int(arr.size - np.count_nonzero(finite))
        raise ValueError(f"`{name}` contains {bad} NaN/Inf value(s); clean the images first")
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0 and hi > UNNORMALISED_MAX:
        warnings.warn(
            f"`{name}` ranges over [{lo:.3g}, {hi:.3g}]: it looks like unnormalised pixel "
            "values; normalise with the model's preprocessing (or pass uint8 images to "
            "score_images / jaxood.fit, which apply it)",
            UserWarning,
            stacklevel=3,
        )


def check_images(
    x: Any, name: str = "x", channels: int | None = None, *, input_shape=None
) -> None:
    """Checks an NHWC float image batch (see :func:`images`, which also returns it as
    float32)."""
    images(x, name, channels=channels, input_shape=input_shape)


def check_percentile(p: Any, name: str) -> None:
    """A percentile must lie strictly inside (0, 100)."""
    if not is_concrete(p):
        return
    arr = np.asarray(p, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0) or np.any(arr >= 100):
        raise ValueError(f"`{name}` must be in the open interval (0, 100), got {p}")


def check_range(value: Any, name: str, low: float, high: float, *, inclusive: bool = True) -> None:
    """``low <= value <= high`` (or strict when ``inclusive`` is False)."""
    if not is_concrete(value):
        return
    arr = np.asarray(value, dtype=np.float64)
    ok = (arr >= low) & (arr <= high) if inclusive else (arr > low) & (arr < high)
    if not np.all(np.isfinite(arr)) or not np.all(ok):
        brackets = "[]" if inclusive else "()"
        raise ValueError(
            f"`{name}` must be in {brackets[0]}{low}, {high}{brackets[1]}, got {value}"
        )


def check_positive(value: Any, name: str) -> None:
    """``value > 0`` and finite."""
    if not is_concrete(value):
        return
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"`{name}` must be a finite number > 0, got {value}")


def check_nonnegative(value: Any, name: str) -> None:
    """``value >= 0`` and finite."""
    check_range(value, name, 0.0, float("inf"))


def check_percent(value: Any, name: str) -> None:
    """A percentage of a dimension: ``0 < value <= 100``."""
    check_range(value, name, 0.0, 100.0)
    if np.asarray(value) <= 0:
        raise ValueError(f"`{name}` must be a percentage in (0, 100], got {value}")


def check_fraction(value: Any, name: str) -> None:
    """A fraction in ``[0, 1]``."""
    check_range(value, name, 0.0, 1.0)


def check_positive_int(value: Any, name: str) -> None:
    """An integer ``>= 1`` (a count or size that fixes an array shape)."""
    _check_int(value, name, 1)


def check_nonnegative_int(value: Any, name: str) -> None:
    """An integer ``>= 0`` (a seed, or a count that may be zero)."""
    _check_int(value, name, 0)


def _check_int(value: Any, name: str, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value}")


def check_open_fraction(value: Any, name: str) -> None:
    """A fraction in ``(0, 1]`` (something must be kept)."""
    if not is_concrete(value):
        return
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0) or np.any(arr > 1):
        raise ValueError(f"`{name}` must be in (0, 1], got {value}")


def topk_count(d: int, percent: float, name: str) -> int:
    """``int(d * percent / 100)`` (truncation, as OpenOOD/AdaSCALE), required to be >= 1."""
    if not (0 < percent <= 100):
        raise ValueError(f"`{name}` must be a percentage in (0, 100], got {percent}")
    k = int(d * percent / 100)
    if k < 1:
        raise ValueError(
            f"`{name}`={percent}% of feature dimension {d} rounds down to 0 elements; "
            f"use at least {100.0 / d:.4g}%"
        )
    return k
