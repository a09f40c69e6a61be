"""Conversion of torchvision checkpoints to jaxood models.

``convert(path, arch, out_dir=None, weights=None, num_classes=None)`` writes a saved model
directory; ``load_converted(dir)`` returns the model functions, variables and the
torchvision-exact preprocessing function. See :mod:`jaxood.convert.torchvision`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ARCHS", "convert", "load_converted"]


def __getattr__(name: str) -> Any:
    # Lazy: importing jaxood.convert must not import the model zoo (or torch).
    if name in __all__:
        from jaxood.convert import torchvision

        return getattr(torchvision, name)
    raise AttributeError(f"module 'jaxood.convert' has no attribute {name!r}")
