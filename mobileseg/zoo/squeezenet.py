"""SqueezeNet 1.1 features (Iandola et al. 2016; the torchvision layout) as an encoder of output stride 16 or 8.

The thesis' parameter counts (seed 004, Table 4.2) match SqueezeNet 1.1 exactly (not the 1.0 of its Table
2.4): a 3×3 / 2 stem with 64 maps, max-pools after the stem, fire3 and fire5, fire modules 2–9, no BN. As in
the thesis' TensorFlow, sizes follow "SAME": the stem pads 0 before and 1 after an even side and the
3×3 / 2 pools take the last row and column into a window of their own (torchvision's ``ceil_mode``, which
equals "SAME" on even sides), so an H×W input (multiples of 16) gives H/16×W/16. Output stride 8 removes
the last pool's stride (3×3 / 1, "SAME") and dilates the 3×3 expand convolutions of fire6–9 by 2.

The pools' padding repeats the edge row or column instead of padding with −∞: the same maximum (a copy
never exceeds its original), but no −FLT_MAX constant in the graph, which onnx2tf writes as a PADV2 whose
8-bit integer range then spans 1e36 (every value quantised to one level, and LiteRT's XNNPACK refuses the file).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mobileseg.zoo.mobilenet_v1 import Features, same_padding

__all__ = ["SqueezeNetEncoder", "FIRE_MODULES"]

# (squeeze, expand) widths of fire2..fire9; each module outputs 2 × expand
FIRE_MODULES = ((16, 64), (16, 64), (32, 128), (32, 128), (48, 192), (48, 192), (64, 256), (64, 256))
POOL_AFTER = (1, 3)  # max-pools follow the stem and fire modules 3 and 5 (indices 1 and 3 of the list)


class Fire(nn.Module):
    """squeeze 1×1 → ReLU → (expand 1×1 ∥ expand 3×3, dilated by ``dilation``) → ReLU, concatenated."""

    def __init__(self, cin: int, squeeze: int, expand: int, dilation: int = 1):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=dilation, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(s)), F.relu(self.expand3x3(s))], 1)


class SqueezeNetEncoder(nn.Module):
    """Input (N, 3, H, W) normalised to [-1, 1], H and W multiples of 16. Output: `Features`, the last map
    (N, 512, H/os, W/os); ``stride16`` is the last map too (the network's own stride)."""

    def __init__(self, output_stride: int = 16):
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"SqueezeNet output stride is 8 or 16, not {output_stride}")
        self.output_stride = output_stride
        self.stem = nn.Conv2d(3, 64, 3, stride=2)
        fires, cin = [], 64
        for i, (squeeze, expand) in enumerate(FIRE_MODULES):
            fires.append(Fire(cin, squeeze, expand, dilation=2 if output_stride == 8 and i >= 4 else 1))
            cin = 2 * expand
        self.fires = nn.ModuleList(fires)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> Features:
        top, bottom = same_padding(int(x.shape[-2]), 3, 2)
        left, right = same_padding(int(x.shape[-1]), 3, 2)
        x = max_pool_same(F.relu(self.stem(F.pad(x, (left, right, top, bottom)))), 2)
        stride8 = x
        for i, fire in enumerate(self.fires):
            x = fire(x)
            if i == POOL_AFTER[0]:
                x = stride8 = max_pool_same(x, 2)
            elif i == POOL_AFTER[1]:
                x = max_pool_same(x, 2 if self.output_stride == 16 else 1)
        return Features(x, stride8, x)


def max_pool_same(x: torch.Tensor, stride: int) -> torch.Tensor:
    """3×3 max-pooling with TF "SAME" sizes: the padding repeats edge rows and columns (see the module notes)."""
    top, bottom = same_padding(int(x.shape[-2]), 3, stride)
    left, right = same_padding(int(x.shape[-1]), 3, stride)
    x = torch.cat([x[:, :, :1]] * top + [x] + [x[:, :, -1:]] * bottom, dim=2) if top or bottom else x
    x = torch.cat([x[:, :, :, :1]] * left + [x] + [x[:, :, :, -1:]] * right, dim=3) if left or right else x
    return F.max_pool2d(x, 3, stride)
