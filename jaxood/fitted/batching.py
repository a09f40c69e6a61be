"""The default batch size of a fitted detector: from the memory per image of its compiled
scoring program, measured by XLA.

A scoring call is padded to a bucket of at most ``batch_size`` rows
(:func:`jaxood.fitted.detector.bucket_size`), and that largest bucket must fit the device:
one fixed size for every model is either wasteful on a small network or too much for a large
one (a ResNet-50 AdaSCALE at 256 rows held 17 GB). :func:`choose` compiles the program at two
probe batches ``p`` and ``2p``, reads XLA's memory analysis of each (arguments + outputs +
temporaries - aliased, per device), and takes the per-image slope; the batch is the largest
power of two up to :data:`MAX_BATCH_SIZE` whose images fit :data:`SCORE_MEMORY_MB` (a
per-device budget for what grows with the batch; the fixed weights and statistics are
needed at any batch size and are reported, not budgeted). On a backend without a memory
analysis the batch is :data:`MAX_BATCH_SIZE`, with the reason recorded.

The choice is a dict saved with the detector: ``{"rule": "auto", "mb_per_image" (MiB one
device holds per image of the batch: on a mesh of n devices each holds 1/n of the batch),
"fixed_mb", "budget_mb", "probe" (the two batch sizes compiled), "fits_budget" (False: one
image is over the budget; the smallest batch is used)}``, ``{"rule": "given"}`` or
``{"rule": "fallback", "reason"}``. Memory grows close to linearly with the batch (WRN-16-4
AdaSCALE at 32x32: 2.0 MiB per image measured at 8-16 images, 2.1 at 64-256).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxood import validate
from jaxood.features.extract import device_batch_size

#: The largest (and the fallback) number of rows per compiled scoring call.
MAX_BATCH_SIZE = 256
#: Per-device memory budget (MiB) for the part of one scoring call that grows with the batch
#: (images, activations, the detector's per-image work); override with ``memory_mb=`` /
#: ``jaxood fit --memory-mb``.
SCORE_MEMORY_MB = 2048.0
#: The smaller probe batch (rounded up to a multiple of the device count); the other is 2x.
PROBE_BATCH = 8

_MIB = 2.0**20
_FIELDS = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
           "alias_size_in_bytes")


def program_bytes(compiled) -> int | None:
    """Bytes one device holds while running ``compiled`` (a ``jax.stages.Compiled``):
    arguments + outputs + temporaries - aliased buffers, from XLA's memory analysis;
    ``None`` when the backend gives none."""
    stats = compiled.memory_analysis()
    values = [getattr(stats, f, None) for f in _FIELDS] if stats is not None else [None]
    if any(v is None for v in values):
        return None
    arguments, outputs, temps, aliased = values
    return int(arguments + outputs + temps - aliased)


def check_memory_mb(memory_mb: Any) -> float:
    """``memory_mb`` (``None``: :data:`SCORE_MEMORY_MB`) as a finite number > 0."""
    if memory_mb is None:
        return SCORE_MEMORY_MB
    ok = isinstance(memory_mb, (int, float)) and not isinstance(memory_mb, bool)
    if not ok or not 0 < memory_mb < float("inf"):
        raise ValueError(f"`memory_mb` must be a number of MiB > 0, got {memory_mb!r}")
    return float(memory_mb)


def structs(tree, sharding=None):
    """``jax.ShapeDtypeStruct`` leaves of an array ``tree`` (to lower a program without
    data), placed with ``sharding`` (``None``: as uncommitted host arrays are)."""
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a), sharding=sharding),
        tree)


def given(batch_size: Any) -> dict:
    """The record of a batch size the user chose (checked: an integer >= 1)."""
    validate.check_positive_int(batch_size, "batch_size")
    return {"rule": "given"}


def fallback(reason: str) -> tuple[int, dict]:
    """``(MAX_BATCH_SIZE, record)`` when the memory per image cannot be measured."""
    return MAX_BATCH_SIZE, {"rule": "fallback", "reason": reason}


def choose(lower: Callable[[int], Any], mesh: jax.sharding.Mesh,
           memory_mb: float | None = None) -> tuple[int, dict]:
    """``(batch_size, record)``: the largest power of two ``<= MAX_BATCH_SIZE`` (rounded up to
    a multiple of ``mesh``'s devices) whose per-image memory fits ``memory_mb`` (default
    :data:`SCORE_MEMORY_MB`) per device; at least the smallest such size.

    ``lower(b)`` returns the program lowered (``jax.jit(f).lower(...)``) at a global batch
    of ``b`` rows; it is compiled here at two probe sizes (not run).
    """
    budget = check_memory_mb(memory_mb)
    p = device_batch_size(PROBE_BATCH, mesh)
    used = [program_bytes(lower(b).compile()) for b in (p, 2 * p)]
    if None in used:
        return fallback(f"the {jax.default_backend()} backend gives no XLA memory analysis")
    per_image = max(0.0, (used[1] - used[0]) / p) / _MIB
    sizes = sorted({device_batch_size(1 << k, mesh)
                    for k in range(MAX_BATCH_SIZE.bit_length())})
    fits = [b for b in sizes if b * per_image <= budget]
    batch = fits[-1] if fits else sizes[0]
    return batch, {"rule": "auto", "mb_per_image": round(per_image, 6),
                   "fixed_mb": round(used[0] / _MIB - p * per_image, 2),
                   "budget_mb": budget, "probe": [p, 2 * p], "fits_budget": bool(fits)}
