"""Conversion of torchvision checkpoints to jaxood models.

``convert(path, arch, out_dir=None, weights=None, num_classes=None)`` writes a saved model
directory; ``load_converted(dir)`` returns the model functions, variables and the
torchvision-exact preprocessing function. See :mod:`jaxood.convert.torchvision`. Importing
this package does not import torch: only reading a ``.pth`` file does.
"""

from jaxood.convert.torchvision import ARCHS, convert, load_converted

__all__ = ["ARCHS", "convert", "load_converted"]
