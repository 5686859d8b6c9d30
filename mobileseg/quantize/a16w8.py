"""16-bit activations with 8-bit weights (a16w8): what a network needs to run in TFLite's 16×8 mode.

TFLite's 16×8 kernels cover convolutions, pooling, element-wise arithmetic, concatenation, resizing and
the usual activations, but not PRELU: the converter refuses a graph with one. A PReLU is expressed in ops
it takes: ``relu(x) + α ⊛ min(x, 0)``, the per-channel slopes as a depthwise 1×1 convolution (RELU,
MINIMUM, DEPTHWISE_CONV_2D, ADD), the same function up to float rounding. The slopes are a convolution, not
a multiplication by a (1, C, 1, 1) constant, because onnx2tf may broadcast such a constant along the width
where the channel count equals it (C3Net at 512×1024 has 128 channels on 128 columns: its Keras model did
not run); and a per-channel int8 weight holds a single value per channel exactly.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class PReLUAsRelu(nn.Module):
    """``relu(x) + α ⊛ min(x, 0)`` with a PReLU's slopes α: per channel as a depthwise 1×1 convolution of
    NCHW input, a single slope as a scalar multiplication."""

    def __init__(self, prelu: nn.PReLU):
        super().__init__()
        self.weight = nn.Parameter(prelu.weight.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        negative = torch.clamp(x, max=0.0)
        if self.weight.numel() == 1:
            return torch.relu(x) + self.weight * negative
        channels = self.weight.numel()
        return torch.relu(x) + F.conv2d(negative, self.weight.view(channels, 1, 1, 1), groups=channels)


def prelus_as_relus(module: nn.Module) -> int:
    """Replace, in place, every ``nn.PReLU`` of ``module`` by `PReLUAsRelu`; returns how many."""
    replaced = 0
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.PReLU):
                setattr(parent, name, PReLUAsRelu(child))
                replaced += 1
    return replaced
