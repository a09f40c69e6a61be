"""Shared machinery for torchvision state dict -> Flax variables conversion.

An architecture's converter walks the Flax structure and *takes* the matching PyTorch keys
from a :class:`StateDict`; at the end :meth:`StateDict.finish` raises if any key was neither
taken nor explicitly ignored, so a missing or extra key is a clear error listing the keys,
never a silently random layer.

Layout rules (PyTorch -> Flax Linen):
  * ``Conv2d.weight`` OIHW -> ``Conv.kernel`` HWIO (``transpose(2, 3, 1, 0)``), groups kept.
  * ``Linear.weight`` [out, in] -> ``Dense.kernel`` [in, out].
  * ``BatchNorm`` weight/bias -> params scale/bias; running_mean/var -> batch_stats mean/var;
    ``num_batches_tracked`` ignored.
  * ``LayerNorm`` weight/bias -> scale/bias.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np


class StateDict:
    """A PyTorch state dict (name -> NumPy array) consumed key by key with strict accounting."""

    def __init__(self, tensors: Mapping[str, Any], *, source: str = "state dict"):
        self._tensors = {k: _to_numpy(v) for k, v in tensors.items()}
        self._taken: set[str] = set()
        self.source = source

    def keys(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, key: str) -> bool:
        return key in self._tensors

    def take(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Returns tensor ``key`` (marking it used); checks its PyTorch-layout shape."""
        if key not in self._tensors:
            near = [k for k in self._tensors if k.rsplit(".", 1)[0] == key.rsplit(".", 1)[0]]
            raise ValueError(
                f"{self.source}: expected key {key!r} is missing"
                + (f" (keys with that prefix: {near[:6]})" if near else "")
                + "; is this a checkpoint for another architecture?"
            )
        if key in self._taken:
            raise ValueError(f"{self.source}: key {key!r} mapped twice (converter bug)")
        value = self._tensors[key]
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise ValueError(
                f"{self.source}: {key!r} has shape {tuple(value.shape)}, expected {tuple(shape)} "
                "(wrong architecture variant or number of classes?)"
            )
        self._taken.add(key)
        return value

    def ignore(self, keys: Iterable[str]) -> None:
        """Marks keys that are deliberately not mapped (e.g. ``num_batches_tracked``)."""
        for k in keys:
            if k in self._tensors:
                self._taken.add(k)

    def finish(self) -> None:
        """Raises ValueError listing every key that was neither mapped nor ignored."""
        left = sorted(set(self._tensors) - self._taken)
        if left:
            raise ValueError(
                f"{self.source}: {len(left)} key(s) were not mapped to the Flax model, e.g. "
                f"{left[:8]}; is this a checkpoint for another architecture?"
            )

    # ---- layer helpers: each returns the Flax param dict (and batch stats) for one layer.

    def conv(self, prefix: str, *, bias: bool = False) -> dict[str, np.ndarray]:
        """``prefix.weight`` OIHW (-> HWIO) and optionally ``prefix.bias``."""
        out = {"kernel": self.take(f"{prefix}.weight").transpose(2, 3, 1, 0)}
        if bias:
            out["bias"] = self.take(f"{prefix}.bias")
        return out

    def linear(self, prefix: str, *, bias: bool = True) -> dict[str, np.ndarray]:
        """``prefix.weight`` [out, in] (-> [in, out]) and ``prefix.bias``."""
        out = {"kernel": self.take(f"{prefix}.weight").T}
        if bias:
            out["bias"] = self.take(f"{prefix}.bias")
        return out

    def batchnorm(self, prefix: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(params {scale, bias}, batch_stats {mean, var}) of a BatchNorm layer."""
        params = {"scale": self.take(f"{prefix}.weight"), "bias": self.take(f"{prefix}.bias")}
        stats = {"mean": self.take(f"{prefix}.running_mean"),
                 "var": self.take(f"{prefix}.running_var")}
        self.ignore([f"{prefix}.num_batches_tracked"])
        return params, stats

    def layernorm(self, prefix: str) -> dict[str, np.ndarray]:
        return {"scale": self.take(f"{prefix}.weight"), "bias": self.take(f"{prefix}.bias")}


def _to_numpy(v: Any) -> np.ndarray:
    """NumPy array; floating tensors (incl. float16/bfloat16) become float32."""
    arr = np.asarray(v)
    if arr.dtype.kind == "f" or arr.dtype.name == "bfloat16":
        arr = arr.astype(np.float32)
    return arr


def converter_for(module) -> Callable[[StateDict, Any], dict]:
    """The ``convert_torchvision`` function of the module defining ``type(module)``."""
    mod = importlib.import_module(type(module).__module__)
    fn = getattr(mod, "convert_torchvision", None)
    if fn is None:
        raise ValueError(f"{mod.__name__} defines no convert_torchvision(sd, module)")
    return fn
