"""Layer conventions shared by the PyTorch-compatible Flax models.

PyTorch pads convolutions symmetrically (``kernel // 2`` on every side); Flax ``'SAME'`` pads
stride-2 convolutions asymmetrically, which shifts the sampling grid and breaks parity with
converted or reference weights. All our CNNs therefore build convs through :func:`conv`.
"""

from __future__ import annotations

import functools

import flax.linen as nn

# PyTorch BatchNorm2d(eps=1e-5, momentum=0.1) == Flax momentum 0.9.
BatchNorm = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)
# kaiming_normal_(mode="fan_out", nonlinearity="relu"): OpenOOD WRN/DenseNet, torchvision ResNet.
HE_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# kaiming_normal_(mode="fan_in"): torchvision DenseNet.
HE_FAN_IN = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
# PyTorch nn.Linear / nn.Conv2d default weight init: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
TORCH_DEFAULT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def conv(
    features: int,
    kernel: int,
    stride: int = 1,
    groups: int = 1,
    *,
    name: str | None = None,
    init=HE_FAN_OUT,
) -> nn.Conv:
    """Bias-free square conv with PyTorch's symmetric padding ``kernel // 2``."""
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        feature_group_count=groups,
        use_bias=False,
        kernel_init=init,
        name=name,
    )
