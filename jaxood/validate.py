"""Input checks that fail early with messages saying what was wrong and what to do.

All checks are skipped for traced values (inside ``jax.jit``), so the public functions can
validate concrete inputs eagerly and still be jit-compiled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds values (not a tracer inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


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
    dtype = np.dtype(x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype)
    if floating and not np.issubdtype(dtype, np.floating):
        raise ValueError(
            f"`{name}` must be a floating-point array, got dtype {dtype}; convert images with "
            "the model's preprocessing (e.g. uint8 -> float32 normalised) first"
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
    from jaxood.types import Features

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


def check_images(x: Any, name: str = "x", channels: int | None = None) -> None:
    """Checks an NHWC float image batch."""
    check_array(x, name, ndim=4)
    if channels is not None and np.shape(x)[-1] != channels:
        raise ValueError(
            f"`{name}` must be NHWC with {channels} channels, got shape {np.shape(x)}; "
            "NCHW input must be transposed with x.transpose(0, 2, 3, 1)"
        )


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
    check_range(value, name, 0.0, 1.0)
    if np.asarray(value) <= 0:
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
