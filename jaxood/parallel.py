"""Data-parallel helpers: a 1-D device mesh, batch/replicated shardings, pad-and-mask.

The idiom is ``jax.make_mesh`` + ``NamedSharding`` + ``jax.jit`` (no pmap). Under jit, a
batch-sharded global array makes reductions over the batch axis global, so BatchNorm
statistics in training are synchronised across devices automatically.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

DATA_AXIS = "data"


def data_mesh(devices: list | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh over this process's local devices (or the given ones) with axis name
    ``"data"``. Scoring and extraction run per process (in a multi-host benchmark each
    process handles its own shards); multi-host training passes the global devices."""
    devices = jax.local_devices() if devices is None else list(devices)
    return jax.sharding.Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Shards the leading (batch) axis over the mesh."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Replicates an array on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def check_divisible(batch_size: int, mesh: jax.sharding.Mesh) -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(
            f"batch size {batch_size} is not divisible by the {n} devices of the mesh; "
            f"use a multiple of {n}"
        )


def pad_batch(batch: Any, size: int) -> tuple[Any, np.ndarray]:
    """Pads every leaf's leading axis up to ``size`` (repeating zeros) and returns a ``[size]``
    bool mask that is True for real samples, so a short last batch keeps static shapes and
    every sample is counted exactly once."""
    leaves = jax.tree.leaves(batch)
    n = int(np.shape(leaves[0])[0])
    if n > size:
        raise ValueError(f"batch of {n} samples does not fit the padded size {size}")

    def pad(x):
        x = np.asarray(x)
        if x.shape[0] == size:
            return x
        widths = [(0, size - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
        return np.pad(x, widths)

    mask = np.zeros(size, bool)
    mask[:n] = True
    return jax.tree.map(pad, batch), mask
