"""MobileNet-v1 (Howard et al. 2017) as an encoder, with TensorFlow's "SAME" padding and DeepLab's output stride.

Kolhatkar's thesis (seed 004, Ch. 4) uses it at depth multiplier 0.5 in TensorFlow: a 3×3 / 2 stem and 13
depthwise-separable blocks (depthwise 3×3 → BN → ReLU6 → pointwise 1×1 → BN → ReLU6; BN ε = 1e-3).
TF's "SAME" padding is reproduced exactly: a stride-2 3×3 convolution on an even side pads 0 before and 1
after (PyTorch's ``padding=1`` would shift the sampling grid by one pixel). With an output stride below
32, DeepLab's rule applies: once the running stride reaches it, a block's stride 2 becomes 1 at the
current rate and every later depthwise convolution is dilated by the rate multiplied by 2 (so for output
stride 8: rate 2 for blocks 7–12, 4 for block 13). ``last_rate`` multiplies the last depthwise rate.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MobileNetV1Encoder", "Features", "MOBILENET_V1_BLOCKS", "same_padding"]

# (pointwise width at multiplier 1, stride) of the 13 depthwise-separable blocks
MOBILENET_V1_BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip
TF_BN_EPS = 1e-3


class Features(NamedTuple):
    """An encoder's maps: the last one, and those at strides 8 and 16 (FCN skips read them)."""

    last: torch.Tensor
    stride8: torch.Tensor
    stride16: torch.Tensor


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's "SAME" padding (before, after) of one side: the extra pixel goes after."""
    effective = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


class SameConvBNReLU6(nn.Module):
    """k×k convolution with TF "SAME" padding (from the input's static size) → BN (ε 1e-3) → ReLU6."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, dilation=dilation, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=TF_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s, d = self.conv.kernel_size[0], self.conv.stride[0], self.conv.dilation[0]
        if k > 1:
            top, bottom = same_padding(int(x.shape[-2]), k, s, d)
            left, right = same_padding(int(x.shape[-1]), k, s, d)
            x = F.pad(x, (left, right, top, bottom))
        return F.relu6(self.bn(self.conv(x)))


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dilation: int):
        super().__init__()
        self.depthwise = SameConvBNReLU6(cin, cin, 3, stride, dilation, groups=cin)
        self.pointwise = SameConvBNReLU6(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class MobileNetV1Encoder(nn.Module):
    """Input (N, 3, H, W), normalised to [-1, 1]; H and W multiples of 32. Output: `Features`, the last map
    (N, 1024·α, H/os, W/os) with os the output stride (32, 16 or 8)."""

    def __init__(self, width: float = 0.5, output_stride: int = 32, last_rate: int = 1):
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"MobileNet-v1 output stride is 8, 16 or 32, not {output_stride}")
        self.stem = SameConvBNReLU6(3, int(32 * width), 3, stride=2)
        blocks, cin, running, rate = [], int(32 * width), 2, 1
        self.stride8_block = self.stride16_block = -1
        for i, (channels, stride) in enumerate(MOBILENET_V1_BLOCKS):
            if stride > 1 and running == output_stride:
                layer_stride, layer_rate, rate = 1, rate, rate * stride
            else:
                layer_stride, layer_rate, running = stride, rate, running * stride
            if i == len(MOBILENET_V1_BLOCKS) - 1:
                layer_rate *= last_rate
            blocks.append(DepthwiseSeparable(cin, int(channels * width), layer_stride, layer_rate))
            cin = int(channels * width)
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> Features:
        x = self.stem(x)
        taps = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in (4, 10):  # the last blocks at strides 8 and 16 (before any stride is removed)
                taps[i] = x
        return Features(x, taps[4], taps[10])
