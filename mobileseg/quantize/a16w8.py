"""16-bit activations with 8-bit weights (a16w8): what a network needs to run in TFLite's 16×8 mode.

TFLite's 16×8 kernels cover convolutions, pooling, element-wise arithmetic, concatenation, resizing and
the usual activations, but not PRELU: the converter refuses a graph with one. A PReLU is expressed in ops
it takes: ``relu(x) + α · min(x, 0)`` (RELU, MINIMUM, MUL, ADD), the same function up to float rounding.
"""

from __future__ import annotations

import torch
from torch import nn


class PReLUAsRelu(nn.Module):
    """``relu(x) + α · min(x, 0)`` with a PReLU's per-channel (or single) slope α; NCHW input."""

    def __init__(self, prelu: nn.PReLU):
        super().__init__()
        self.weight = nn.Parameter(prelu.weight.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slope = self.weight.view(1, -1, *([1] * (x.dim() - 2))) if x.dim() > 1 else self.weight
        return torch.relu(x) + slope * torch.clamp(x, max=0.0)


def prelus_as_relus(module: nn.Module) -> int:
    """Replace, in place, every ``nn.PReLU`` of ``module`` by `PReLUAsRelu`; returns how many."""
    replaced = 0
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.PReLU):
                setattr(parent, name, PReLUAsRelu(child))
                replaced += 1
    return replaced
