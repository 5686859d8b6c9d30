"""Building blocks shared by the zoo networks (SINet, SINet-Cityscapes, ExtremeC3Net, C3Net).

Conventions
-----------
* Tensors are NCHW float32; every convolution is bias-free, as in the authors' code.
* Batch-norm ``eps`` is not stored in checkpoints, and the authors use two values: 1e-3 in most
  modules, PyTorch's default 1e-5 inside C3 blocks. Each block therefore takes it explicitly.
* Bilinear upsampling inside S2 blocks uses ``align_corners=True`` (the authors'
  ``nn.UpsamplingBilinear2d``); each caller states which mode it uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

AUTHORS_BN_EPS = 1e-3
TORCH_DEFAULT_BN_EPS = 1e-5


class ConvBNPReLU(nn.Module):
    """k×k convolution (padding k//2) → BatchNorm → per-channel PReLU. The authors' ``CBR``."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, eps: float = AUTHORS_BN_EPS):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=eps)
        self.act = nn.PReLU(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

class BNPReLU(nn.Module):
    """BatchNorm → per-channel PReLU, applied after a concatenation or residual sum. The authors' ``BR``."""

    def __init__(self, channels: int, eps: float = AUTHORS_BN_EPS):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=eps)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(x))

class SqueezeExcite(nn.Module):
    """Channel re-weighting of the SINet family: global average pool → Linear → PReLU [→ Linear → PReLU] → scale.

    There is no sigmoid: the authors scale the input by the PReLU output directly. ``reduction == 1``
    means a single ``Linear(C, C)``; otherwise ``Linear(C, C/r) → PReLU → Linear(C/r, C) → PReLU``.
    """

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        hidden = channels // reduction
        self.fc1 = nn.Linear(channels, hidden if reduction > 1 else channels)
        self.act1 = nn.PReLU(self.fc1.out_features)
        self.fc2 = nn.Linear(hidden, channels) if reduction > 1 else None
        self.act2 = nn.PReLU(channels) if reduction > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A full-size average pool (not adaptive pooling or mean) sums in the same order as the authors'
        # code, which keeps trained logits bit-exact; tracing records the kernel as a constant.
        pooled = F.avg_pool2d(x, kernel_size=(int(x.shape[2]), int(x.shape[3]))).flatten(1)
        # PReLU runs on [N, C, 1, 1]: CoreML's prelu takes per-channel slopes only on rank-4 tensors.
        scale = self.act1(self.fc1(pooled)[:, :, None, None])
        if self.fc2 is not None:
            scale = self.act2(self.fc2(scale.flatten(1))[:, :, None, None])
        return x * scale


class SeparableConvBNPReLU(nn.Module):
    """Depthwise k×k (stride s) → [SqueezeExcite] → pointwise 1×1 → BN → PReLU.

    The authors' ``separableCBR`` (no SE) and ``SEseparableCBR`` (the "ds-Conv+SE" down-sampling layers).
    """

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, se_reduction: int | None = None
    ):
        super().__init__()
        self.dw = nn.Conv2d(in_ch, in_ch, kernel_size, stride, padding=kernel_size // 2, groups=in_ch, bias=False)
        self.se = SqueezeExcite(in_ch, se_reduction) if se_reduction else None
        self.pw = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=AUTHORS_BN_EPS)
        self.act = nn.PReLU(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw(x)
        if self.se is not None:
            x = self.se(x)
        return self.act(self.bn(self.pw(x)))

class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle: (N, g·c, H, W) → view (N, g, c, H, W) → swap g, c → (N, c·g, H, W)."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, channels, height, width = x.shape
        x = x.reshape(-1, self.groups, channels // self.groups, height, width)
        return x.transpose(1, 2).reshape(-1, channels, height, width)


def upsample_bilinear(x: torch.Tensor, scale: int, align_corners: bool) -> torch.Tensor:
    """Bilinear upsampling by an integer factor; ``align_corners`` is always spelled out by the caller."""
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=align_corners)


class S2Block(nn.Module):
    """Spatial-squeeze block: [AvgPool p×p] → depthwise conv → BN → PReLU → 1×1 conv → [bilinear ×p] → BN.

    With ``factorized`` (the S2+ block of SINet-Cityscapes) the k×k depthwise conv is replaced by two
    *parallel* depthwise convs, k×1 and 1×k, each followed by its own BN, and summed. ``pool == 1``
    skips the pool/upsample pair. Upsampling is bilinear with ``align_corners=True``. The feature size
    must be divisible by ``pool`` for the pool/upsample round trip to restore it.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, pool: int, factorized: bool = False):
        super().__init__()
        self.out_channels = out_ch
        self.pool = pool
        self.factorized = factorized
        pad = kernel_size // 2
        if factorized:
            self.dw_v = nn.Conv2d(in_ch, in_ch, (kernel_size, 1), padding=(pad, 0), groups=in_ch, bias=False)
            self.dw_v_bn = nn.BatchNorm2d(in_ch, eps=AUTHORS_BN_EPS)
            self.dw_h = nn.Conv2d(in_ch, in_ch, (1, kernel_size), padding=(0, pad), groups=in_ch, bias=False)
            self.dw_h_bn = nn.BatchNorm2d(in_ch, eps=AUTHORS_BN_EPS)
        else:
            self.dw = nn.Conv2d(in_ch, in_ch, kernel_size, padding=pad, groups=in_ch, bias=False)
            self.dw_bn = nn.BatchNorm2d(in_ch, eps=AUTHORS_BN_EPS)
        self.act = nn.PReLU(in_ch)
        self.pw = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=AUTHORS_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool, self.pool)
        if self.factorized:
            x = self.dw_v_bn(self.dw_v(x)) + self.dw_h_bn(self.dw_h(x))
        else:
            x = self.dw_bn(self.dw(x))
        x = self.pw(self.act(x))
        if self.pool > 1:
            x = upsample_bilinear(x, self.pool, align_corners=True)
        return self.bn(x)


class MergeModule(nn.Module):
    """Split-transform-merge base: every branch reads one reduced tensor → concat → [+ input] → BN → PReLU."""

    branches: nn.ModuleList  # of blocks with ``out_channels``
    out: BNPReLU

    def __init__(self, residual: bool):
        super().__init__()
        self.residual = residual

    def merge(self, reduced: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        merged = torch.cat([branch(reduced) for branch in self.branches], 1)
        if self.residual:
            merged = merged + x
        return self.out(merged)

class S2Module(MergeModule):
    """Split-transform-merge module of S2 blocks.

    Grouped 1×1 conv (groups = number of blocks) reducing to ``out_ch / blocks`` channels → channel
    shuffle → every S2 block reads the *same* reduced tensor (the first block also takes the remainder
    channels) → concat → [+ input] → BN → PReLU.

    ``blocks`` is a sequence of ``(kernel_size, pool, factorized)``.
    """

    def __init__(self, in_ch: int, out_ch: int, blocks: Sequence[tuple[int, int, bool]], residual: bool):
        super().__init__(residual)
        groups = len(blocks)
        width = out_ch // groups
        remainder = out_ch - groups * width
        self.reduce = nn.Conv2d(in_ch, width, 1, groups=groups, bias=False)
        self.shuffle = ChannelShuffle(groups)
        self.branches = nn.ModuleList(
            S2Block(width, width + (remainder if i == 0 else 0), k, p, factorized)
            for i, (k, p, factorized) in enumerate(blocks)
        )
        self.out = BNPReLU(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge(self.shuffle(self.reduce(x)), x)


class C3Block(nn.Module):
    """Concentrated-comprehensive convolution with dilation ``d``.

    ``d > 1``: depthwise (2d−1)×1 → BN → PReLU → depthwise 1×(2d−1) → BN (the *concentration* stage)
    → depthwise 3×3 dilated by d → pointwise 1×1 (the *comprehensive* stage).
    ``d == 1``: depthwise 3×3 → pointwise 1×1.
    No BN or activation follows the pointwise conv; the module applies them after concatenation.
    The two BNs use PyTorch's default eps (1e-5), as in the authors' code.
    """

    def __init__(self, in_ch: int, out_ch: int, dilation: int):
        super().__init__()
        self.out_channels = out_ch
        self.dilation = dilation
        if dilation > 1:
            k = 2 * dilation - 1
            pad = dilation - 1
            self.conc_v = nn.Conv2d(in_ch, in_ch, (k, 1), padding=(pad, 0), groups=in_ch, bias=False)
            self.conc_v_bn = nn.BatchNorm2d(in_ch, eps=TORCH_DEFAULT_BN_EPS)
            self.conc_act = nn.PReLU(in_ch)
            self.conc_h = nn.Conv2d(in_ch, in_ch, (1, k), padding=(0, pad), groups=in_ch, bias=False)
            self.conc_h_bn = nn.BatchNorm2d(in_ch, eps=TORCH_DEFAULT_BN_EPS)
        self.dilated_dw = nn.Conv2d(
            in_ch, in_ch, 3, padding=dilation, dilation=dilation, groups=in_ch, bias=False
        )
        self.pw = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dilation > 1:
            x = self.conc_h_bn(self.conc_h(self.conc_act(self.conc_v_bn(self.conc_v(x)))))
        return self.pw(self.dilated_dw(x))

class C3Module(MergeModule):
    """ESP-style module of C3 blocks (the "MESP" module: no d=1 branch, no hierarchical fusion).

    Reduce to ``out_ch / branches`` channels with a 1×1 conv, or a 3×3 stride-2 conv when
    ``downsample`` → one C3 block per dilation, all reading the same reduced tensor (the first takes
    the remainder channels) → concat → [+ input] → BN → PReLU.
    """

    def __init__(
        self, in_ch: int, out_ch: int, dilations: Sequence[int], residual: bool, downsample: bool = False
    ):
        super().__init__(residual)
        width = out_ch // len(dilations)
        remainder = out_ch - len(dilations) * width
        if downsample:
            self.reduce = nn.Conv2d(in_ch, width, 3, stride=2, padding=1, bias=False)
        else:
            self.reduce = nn.Conv2d(in_ch, width, 1, bias=False)
        self.branches = nn.ModuleList(
            C3Block(width, width + (remainder if i == 0 else 0), d) for i, d in enumerate(dilations)
        )
        self.out = BNPReLU(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge(self.reduce(x), x)


class ImagePyramid(nn.Module):
    """Down-samples the input image by 2**levels with repeated 2×2 average pooling (the authors' InputProjectionA)."""

    def __init__(self, levels: int):
        super().__init__()
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.levels):
            x = F.avg_pool2d(x, 2, 2)
        return x


def information_blocking(coarse: torch.Tensor, detail: torch.Tensor) -> torch.Tensor:
    """SINet's information-blocking fusion: ``detail * (1 − max_c softmax(coarse)) + coarse``.

    Where the coarse prediction is confident, the high-resolution detail is blocked.
    """
    confidence = torch.softmax(coarse, dim=1).amax(dim=1, keepdim=True)
    return detail * (1 - confidence) + coarse
