"""Blocks of the reuse-gated VOS model (G-FRTM-fast), written from the paper and the notes' reading of the
authors' code (``../shared/research/vos_reuse_gate.md`` §4). Shapes are for one object, batch 1.

Every bilinear resize here is ``align_corners=False`` (half-pixel), as in the authors' code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.2
TARGET_CHANNELS = 96  # the target model's projection width (authors' c_channels at evaluation)


def resize_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bilinear (half-pixel) resize of ``x`` to the spatial size of ``like``."""
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def conv(in_channels: int, out_channels: int, kernel: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, **kwargs)


class StaticAdaptiveMaxPool2d(nn.Module):
    """``nn.AdaptiveMaxPool2d(size)`` written as fixed slices and max-reductions, bit-exact.

    PyTorch's window ``i`` along a side of length ``n`` is ``[floor(i·n/s), ceil((i+1)·n/s))``. For a fixed
    input size these are constants, so the op exports (the TorchScript ONNX exporter rejects adaptive max
    pooling when the output size does not divide the input). Max is separable: rows first, then columns.
    """

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    @staticmethod
    def windows(length: int, size: int) -> list[tuple[int, int]]:
        return [((i * length) // size, -((-(i + 1) * length) // size)) for i in range(size)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = int(x.shape[-2]), int(x.shape[-1])
        rows = [x[:, :, a:b, :].amax(dim=2, keepdim=True) for a, b in self.windows(height, self.size)]
        x = torch.cat(rows, dim=2)
        cols = [x[:, :, :, a:b].amax(dim=3, keepdim=True) for a, b in self.windows(width, self.size)]
        return torch.cat(cols, dim=3)


class TemplateGenerator(nn.Module):
    """Frame 0's template (TTVOS-style): cat(f8_0 [1,128,h,w], S0 at 1/8 [1,1,h,w]) → TP [1, 64, 64].

    ``TP = softmax_row(val · keyᵀ / sqrt(h·w))`` with key/val from 1×1 → LeakyReLU → grouped 5×5 convs.
    """

    def __init__(self, in_channels: int = 129, channels: int = 64, group_width: int = 4):
        super().__init__()

        def branch() -> nn.Sequential:
            return nn.Sequential(
                conv(in_channels, channels, 1), nn.LeakyReLU(LEAKY_SLOPE), conv(channels, channels, 5, groups=channels // group_width)
            )

        self.key = branch()
        self.value = branch()

    def forward(self, f8: torch.Tensor, mask8: torch.Tensor) -> torch.Tensor:
        x = torch.cat([f8, mask8], dim=1)
        key, value = self.key(x), self.value(x)
        pixels = key.shape[-2] * key.shape[-1]
        affinity = torch.bmm(value.flatten(2), key.flatten(2).transpose(1, 2)) / math.sqrt(pixels)
        return torch.softmax(affinity, dim=2)


class TemplateMatching(nn.Module):
    """Movement quantification: (f8_t, S_prev at 1/16, TP) → dissimilarity D_t [1, 64, h8, w8].

    X_t = cat(f8_t, S_prev resized to 1/8); Z_t = TP · key(X_t); D_t = ReLU(1×1(grouped 5×5(cat(feat(X_t), Z_t)))).
    """

    def __init__(self, in_channels: int = 129, channels: int = 64, group_width: int = 4):
        super().__init__()

        def branch() -> nn.Sequential:
            return nn.Sequential(
                conv(in_channels, channels, 1), conv(channels, channels, 5, groups=channels // group_width), nn.LeakyReLU(LEAKY_SLOPE)
            )

        self.key = branch()
        self.feature = branch()
        both = 2 * channels
        self.blend = nn.Sequential(conv(both, both, 5, groups=both // group_width), conv(both, channels, 1))

    def forward(self, f8: torch.Tensor, score16: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
        x = torch.cat([f8, resize_to(score16, f8)], dim=1)
        key = self.key(x)
        batch, channels, height, width = key.shape
        similarity = torch.bmm(template, key.flatten(2)).view(batch, -1, height, width)
        return F.relu(self.blend(torch.cat([self.feature(x), similarity], dim=1)))


class ChangeCue(nn.Module):
    """mobileseg's extra gate input (not in the paper): how much the frame changed where the object was.

    (f8_t, f8_prev [B, 128, h8, w8], S_prev [B, 1, h16, w16]) → [B, 2, h8, w8]: the channel mean of
    |f8_t − f8_prev| divided by the mean |f8_prev| (a scale-free change map), and the same map weighted by
    S_prev (bilinear to 1/8, align_corners=False, clamped to [0, 1]). No parameters.
    """

    CHANNELS = 2

    def forward(self, f8: torch.Tensor, f8_prev: torch.Tensor, score_prev: torch.Tensor) -> torch.Tensor:
        scale = f8_prev.abs().mean(dim=(1, 2, 3), keepdim=True) + 1e-6
        change = (f8 - f8_prev).abs().mean(dim=1, keepdim=True) / scale
        where = resize_to(score_prev, f8).clamp(0.0, 1.0)
        return torch.cat([change, change * where], dim=1)


class ReuseGate(nn.Module):
    """D_t [1, 64, h8, w8] (with the change cue: [1, 66, h8, w8]) → P_reuse [1, 1]: max-pool to 7×7,
    conv 3×3/2 (→4×4), BN, max-pool to 3×3, conv 3×3/2 (→1×1), two-way softmax; channel 0 is the reuse
    probability (authors' code)."""

    def __init__(self, channels: int = 64, hidden: int = 16):
        super().__init__()
        self.pool7 = StaticAdaptiveMaxPool2d(7)
        self.conv1 = nn.Conv2d(channels, hidden, 3, 2, 1)
        self.bn = nn.BatchNorm2d(hidden)
        self.pool3 = StaticAdaptiveMaxPool2d(3)
        self.conv2 = nn.Conv2d(hidden, 2, 3, 2, 0)
        with torch.no_grad():  # starts mostly "compute": P_reuse = softmax([0.1, 2])[0] ≈ 0.13 (authors' init)
            self.conv2.bias.copy_(torch.tensor([0.1, 2.0]))

    def logits(self, dissimilarity: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.pool3(self.bn(self.conv1(self.pool7(dissimilarity)))))
        return x.flatten(1)

    def forward(self, dissimilarity: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(dissimilarity), dim=1)[:, 0:1]


class TargetModel(nn.Module):
    """The online-fitted score generator with its weights as inputs: f16 [1, C, h, w], project [96, C],
    filter [1, 96·9] → (S [1, 1, h, w], projected [1, 96, h, w]).

    Equal to ``conv3x3(conv1x1(f16, project), filter)`` (no bias, zero padding), written as matrix products
    over an explicit 3×3 neighbourhood so that every runtime accepts weights that are graph inputs.
    The neighbourhood order is (channel, dy, dx), the order of a ``[1, 96, 3, 3]`` kernel flattened.
    """

    def forward(self, f16: torch.Tensor, project: torch.Tensor, filter: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, channels, height, width = f16.shape
        projected = torch.matmul(project, f16.reshape(channels, height * width)).reshape(1, -1, height, width)
        padded = F.pad(projected, (1, 1, 1, 1))
        taps = [padded[:, :, dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)]
        neighbourhood = torch.stack(taps, dim=2).reshape(-1, height * width)  # [96·9, h·w], (channel, dy, dx)
        score = torch.matmul(filter, neighbourhood).reshape(1, 1, height, width)
        return score, projected


class DeltaGenerator(nn.Module):
    """D_t at 1/8 → Δ_t [1, 1, h16, w16]: one 3×3 stride-2 conv. On reuse, Ŝ_t = S_prev + Δ_t."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 3, 2, 1)

    def forward(self, dissimilarity: torch.Tensor) -> torch.Tensor:
        return self.conv(dissimilarity)


class TSE(nn.Module):
    """Target segmentation encoder: features + score → (h [1, 64, ·], pooled context)."""

    def __init__(self, feature_channels: int, channels: int = 64):
        super().__init__()
        both = channels + 1
        self.reduce = nn.Sequential(conv(feature_channels, channels, 1), nn.ReLU(), conv(channels, channels, 1))
        self.transform = nn.Sequential(
            conv(both, both, 3), nn.ReLU(), conv(both, both, 3), nn.ReLU(), conv(both, channels, 3), nn.ReLU()
        )

    def forward(self, feature: torch.Tensor, score: torch.Tensor, deeper: torch.Tensor | None):
        h = self.reduce(feature)
        context = F.adaptive_avg_pool2d(h, 1) if deeper is None else deeper
        return self.transform(torch.cat([h, resize_to(score, h)], dim=1)), context


class RRB(nn.Module):
    """Residual refinement block: h = 1×1(x); ReLU(h + 3×3 → BN → ReLU → 3×3(h))."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.project = conv(channels, channels, 1)
        self.residual = nn.Sequential(
            conv(channels, channels, 3), nn.BatchNorm2d(channels), nn.ReLU(), conv(channels, channels, 3, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.project(x)
        return F.relu(h + self.residual(h))


class CAB(nn.Module):
    """Channel attention block: shallow · σ(MLP(cat(GAP(shallow), GAP(deeper)))) + resize(deeper)."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.attention = nn.Sequential(conv(2 * channels, channels, 1), nn.ReLU(), conv(channels, channels, 1))

    def forward(self, deeper: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([F.adaptive_avg_pool2d(shallow, 1), F.adaptive_avg_pool2d(deeper, 1)], dim=1)
        return shallow * torch.sigmoid(self.attention(pooled)) + resize_to(deeper, shallow)


class RefinementStage(nn.Module):
    """One FRTM level: TSE → RRB → CAB (with the deeper stage's output) → RRB."""

    def __init__(self, feature_channels: int, channels: int = 64):
        super().__init__()
        self.tse = TSE(feature_channels, channels)
        self.rrb1 = RRB(channels)
        self.cab = CAB(channels)
        self.rrb2 = RRB(channels)

    def forward(self, feature: torch.Tensor, score: torch.Tensor, deeper: torch.Tensor | None = None) -> torch.Tensor:
        h, context = self.tse(feature, score, deeper)
        return self.rrb2(self.cab(context, self.rrb1(h)))


class PyrUpBicubic2d(nn.Module):
    """×2 bicubic upsampling (a = −0.75, half-pixel, replicated border) as fixed depthwise 5×5 convs, one
    per output phase, interleaved with a pixel shuffle; equal to ``F.interpolate(mode="bicubic",
    align_corners=False, scale_factor=2)`` to float rounding."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

        def cubic(d: float, a: float = -0.75) -> float:
            d = abs(d)
            if d <= 1:
                return (a + 2) * d**3 - (a + 3) * d**2 + 1
            return a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a if d < 2 else 0.0

        # Output 2i + p samples input position i − 0.25 (p = 0) or i + 0.25 (p = 1); taps i−2 … i+2.
        taps = torch.zeros(2, 5)
        for p, offset in enumerate((-0.25, 0.25)):
            for k, position in enumerate(range(-2, 3)):
                taps[p, k] = cubic(position - offset)
        kernels = torch.einsum("pi,qj->pqij", taps, taps).reshape(4, 1, 5, 5)  # phase (row, col), 5×5
        self.register_buffer("kernel", kernels.repeat(channels, 1, 1, 1))  # [C·4, 1, 5, 5], channel-major

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Replicate padding as edge slices and one depthwise conv per phase: onnx2tf turns an ONNX edge Pad
        # into eight one-row MIRROR_PADs between NCHW transposes, and with them LiteRT's refiner_fine took
        # 48 ms instead of 23 (128×224, one thread).
        rows = torch.cat([x[:, :, :1]] * 2 + [x] + [x[:, :, -1:]] * 2, dim=2)
        padded = torch.cat([rows[:, :, :, :1]] * 2 + [rows] + [rows[:, :, :, -1:]] * 2, dim=3)
        kernels = self.kernel.view(self.channels, 4, 1, 5, 5)
        phases = [F.conv2d(padded, kernels[:, p], groups=self.channels) for p in range(4)]  # 4 × [1, C, h, w]
        return F.pixel_shuffle(torch.stack(phases, dim=2).flatten(1, 2), 2)  # channel-major (c, phase)


class Upsampler(nn.Module):
    """1/4-scale features [1, 64, h4, w4] → logits [1, 1, H, W]: bicubic ×2, 3×3 conv, ReLU, bicubic ×2,
    bilinear resize to the image size, 3×3 conv."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.up1 = PyrUpBicubic2d(channels)
        self.conv1 = conv(channels, channels // 2, 3)
        self.up2 = PyrUpBicubic2d(channels // 2)
        self.conv2 = conv(channels // 2, 1, 3)

    def forward(self, x: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        x = self.up2(F.relu(self.conv1(self.up1(x))))
        if tuple(x.shape[-2:]) != tuple(image_size):
            x = F.interpolate(x, size=image_size, mode="bilinear", align_corners=False)
        return self.conv2(x)


class RefineTranslator(nn.Module):
    """(R8_prev [1, 64, h16, w16], Δ_t [1, 1, h16, w16]) → R̂8_t: three 3×3 convs with dilation 1, 2, 3
    (48 ch each), concat, 5×5 conv to 64, RRB. No activations between, as in the authors' code."""

    def __init__(self, channels: int = 64, branch: int = 48):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(channels + 1, branch, 3, padding=d, dilation=d) for d in (1, 2, 3)
        )
        self.blend = conv(3 * branch, channels, 5)
        self.rrb = RRB(channels)

    def forward(self, refined: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        x = torch.cat([refined, delta], dim=1)
        return self.rrb(self.blend(torch.cat([b(x) for b in self.branches], dim=1)))
