"""Multiply-accumulate counting, the way the dissertation reports "FLOPs" (ptflops-style MACs).

Counts Conv2d, ConvTranspose2d and Linear; BN, activations, pooling and resizing are not counted.
"""

from __future__ import annotations

import torch
from torch import nn


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of one forward pass of ``model`` on a zero tensor of ``input_shape``."""
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def conv_transpose_hook(module: nn.ConvTranspose2d, inputs, _output) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += inputs[0].numel() * (module.out_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, inputs, _output) -> None:
        nonlocal total
        total += inputs[0].numel() // module.in_features * module.in_features * module.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.ConvTranspose2d):
            hooks.append(m.register_forward_hook(conv_transpose_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))  # a model on "meta" counts shapes only
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
    return total


def count_params(model: nn.Module, counted: str = "parameters") -> int:
    """Trainable parameters; ``counted="variables"`` adds BN's running mean and variance, as TensorFlow
    counts a graph's variables (the thesis' Table 4.2)."""
    total = sum(p.numel() for p in model.parameters())
    if counted == "variables":
        total += sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    return total
