"""ResNet-18 split where the reuse gate needs it (our own code; no torchvision).

``ResNet18Low`` is the stem + ``layer1`` + ``layer2`` and gives f4 (64 ch, 1/4) and f8 (128 ch, 1/8);
``ResNet18High`` is ``layer3`` + ``layer4`` on f8 and gives f16 (256 ch, 1/16) and f32 (512 ch, 1/32).
The low part takes RGB pixels in [0, 255] (NCHW float) and normalises them in-graph with the ImageNet
mean/std, as the authors' feature extractor does.

No ImageNet checkpoint can be fetched here, so the backbone is initialised from a seed (Kaiming) and its
batch-norm statistics are calibrated on real photos (``calibrate_batchnorm``): a frozen, well-scaled random
feature extractor. Everything downstream is trained on top of it (``mobileseg.vos.train``).
"""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 convs with batch norm and an identity (or 1×1 strided) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + shortcut)


def resnet_layer(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(in_channels, out_channels, stride), BasicBlock(out_channels, out_channels))


class ResNet18Low(nn.Module):
    """Pixels [1, 3, H, W] in [0, 255] → (f4 [1, 64, H/4, W/4], f8 [1, 128, H/8, W/8])."""

    def __init__(self):
        super().__init__()
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = resnet_layer(64, 64, 1)
        self.layer2 = resnet_layer(64, 128, 2)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (pixels - self.mean) / self.std
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        f4 = self.layer1(x)
        return f4, self.layer2(f4)


class ResNet18High(nn.Module):
    """f8 [1, 128, H/8, W/8] → (f16 [1, 256, H/16, W/16], f32 [1, 512, H/32, W/32])."""

    def __init__(self):
        super().__init__()
        self.layer3 = resnet_layer(128, 256, 2)
        self.layer4 = resnet_layer(256, 512, 2)

    def forward(self, f8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f16 = self.layer3(f8)
        return f16, self.layer4(f16)


def init_resnet(module: nn.Module, seed: int) -> None:
    """Kaiming-normal convs (fan-out, ReLU), unit batch-norm scale, zero shift; seeded."""
    generator = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * (2.0 / fan_out) ** 0.5)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@torch.no_grad()
def calibrate_batchnorm(modules: list[nn.Module], batches: list[torch.Tensor]) -> None:
    """Set every batch norm's running statistics to those of ``batches`` (cumulative average), in order.

    ``modules`` run in sequence (the output's last tensor feeds the next module), so each layer's
    statistics are measured on the already-calibrated activations before it.
    """
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # cumulative moving average
    for module in modules:
        module.train()
    try:
        for batch in batches:
            x = batch
            for module in modules:
                out = module(x)
                x = out[-1] if isinstance(out, tuple) else out
    finally:
        for module in modules:
            module.eval()
