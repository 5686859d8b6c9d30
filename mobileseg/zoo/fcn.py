"""The thesis' semantic segmentation networks (Kolhatkar 2020, seed 004, Ch. 4): an encoder and a decoder.

Decoders, as Table 4.2's parameter counts pin them (``research/kolhatkar.md`` §1.3):

* ``plain``: a 1×1 score convolution (with bias) on the last map, then bilinear upsampling to the input size.
* FCN skips (``skips=1`` or ``2``): each step upsamples the scores ×2 with a 4×4 / 2 transposed convolution
  19→19 without bias (initialised as bilinear interpolation, as FCN does), adds a 1×1 score convolution
  (with bias) of the encoder's map at that stride (16, then 8), and the sum is upsampled to the input size.
* output stride (DeepLab): the encoder's last strides become dilations (`mobilenet_v1`, `squeezenet`); the
  plain decoder follows. No parameter changes.

All bilinear upsampling is ``align_corners=False`` (TF1's legacy resize is not reproduced: there are no
trained weights to match). Output: (N, 19, H, W) logits; softmax over classes gives the thesis' output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mobileseg.zoo.mobilenet_v1 import MobileNetV1Encoder
from mobileseg.zoo.squeezenet import SqueezeNetEncoder

__all__ = ["SemanticFCN", "bilinear_kernel", "MOBILENET_KEY_RULES", "SQUEEZENET_KEY_RULES"]


def bilinear_kernel(channels: int, size: int) -> torch.Tensor:
    """(channels, channels, size, size) weights of a transposed convolution that upsamples each channel
    bilinearly (FCN's initialisation)."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    grid = torch.arange(size, dtype=torch.float32)
    line = 1 - (grid - center).abs() / factor
    weight = torch.zeros(channels, channels, size, size)
    weight[range(channels), range(channels)] = line[:, None] * line[None, :]
    return weight


class SkipStep(nn.Module):
    """scores (N, K, h, w) → transposed conv 4×4 / 2 → (N, K, 2h, 2w) + score 1×1 of the skip map."""

    def __init__(self, num_classes: int, skip_channels: int):
        super().__init__()
        self.upsample = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=1, bias=False)
        self.score = nn.Conv2d(skip_channels, num_classes, 1)
        with torch.no_grad():
            self.upsample.weight.copy_(bilinear_kernel(num_classes, 4))

    def forward(self, scores: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.upsample(scores) + self.score(skip)


class SemanticFCN(nn.Module):
    """Input (N, 3, H, W) normalised to [-1, 1] (TF's ``2x/255 − 1``). Output (N, num_classes, H, W) logits.

    ``encoder``: "mobilenet" (MobileNet-v1 ×``width``) or "squeezenet" (1.1). ``skips``: FCN steps (0, 1, 2;
    SqueezeNet has no stride-16 skip of its own: its one step reads stride 8). ``output_stride``: DeepLab.
    """

    def __init__(self, encoder: str = "mobilenet", num_classes: int = 19, skips: int = 0, output_stride: int | None = None,
                 width: float = 0.5, last_rate: int = 1):  # fmt: skip
        super().__init__()
        if encoder == "mobilenet":
            self.encoder = MobileNetV1Encoder(width, output_stride or 32, last_rate)
            skip_channels = [int(512 * width), int(256 * width)][:skips]
            self.skip_taps = ["stride16", "stride8"][:skips]
        elif encoder == "squeezenet":
            self.encoder = SqueezeNetEncoder(output_stride or 16)
            skip_channels, self.skip_taps = [128][:skips], ["stride8"][:skips]
        else:
            raise ValueError(f"unknown encoder {encoder!r}")
        if skips > len(skip_channels) or (skips and output_stride):
            raise ValueError(f"{encoder} takes at most {len(skip_channels)} FCN skips, and none with an output stride")
        self.classifier = nn.Conv2d(self.encoder.out_channels, num_classes, 1)
        self.skips = nn.ModuleList(SkipStep(num_classes, c) for c in skip_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        scores = self.classifier(features.last)
        for step, tap in zip(self.skips, self.skip_taps):
            scores = step(scores, getattr(features, tap))
        return F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)


# Checkpoint key renames onto ours. MobileNet: TF-slim's variable names as PyTorch ports of them keep them
# ("MobilenetV1/Conv2d_3_pointwise/BatchNorm/moving_mean" → "MobilenetV1.Conv2d_3_pointwise.BatchNorm.running_mean").
MOBILENET_KEY_RULES = (
    (r"^MobilenetV1\.Conv2d_0\.", "encoder.stem."),
    (r"^MobilenetV1\.Conv2d_(\d+)_depthwise\.", lambda m: f"encoder.blocks.{int(m.group(1)) - 1}.depthwise."),
    (r"^MobilenetV1\.Conv2d_(\d+)_pointwise\.", lambda m: f"encoder.blocks.{int(m.group(1)) - 1}.pointwise."),
    (r"\.BatchNorm\.moving_mean$", ".BatchNorm.running_mean"),
    (r"\.BatchNorm\.moving_variance$", ".BatchNorm.running_var"),
    (r"\.BatchNorm\.gamma$", ".BatchNorm.weight"),
    (r"\.BatchNorm\.beta$", ".BatchNorm.bias"),
    (r"\.BatchNorm\.", ".bn."),
    (r"^(encoder\.[\w.]+?)\.(weights|depthwise_weights)$", r"\1.conv.weight"),
    (r"^Logits\.", "classifier."),
    (r"^Skip(\d)\.score\.", lambda m: f"skips.{int(m.group(1)) - 1}.score."),
    (r"^Skip(\d)\.upsample\.", lambda m: f"skips.{int(m.group(1)) - 1}.upsample."),
)
# SqueezeNet: torchvision's squeezenet1_1 feature indices ("features.3.squeeze.weight"), so its ImageNet
# weights' names map onto the encoder.
_TORCHVISION_FIRES = (3, 4, 6, 7, 9, 10, 11, 12)
SQUEEZENET_KEY_RULES = (
    (r"^features\.0\.", "encoder.stem."),
    *((rf"^features\.{index}\.", f"encoder.fires.{i}.") for i, index in enumerate(_TORCHVISION_FIRES)),
    (r"^classifier\.1\.", "classifier."),
    (r"^skip(\d)\.", lambda m: f"skips.{int(m.group(1)) - 1}."),
)
