"""SegNet and SegNet-Basic (Badrinarayanan et al., TPAMI 2017), as the SegNet notes (seed 003) describe them.

SegNet: VGG-16's 13 convolutions (3×3, bias, BN, ReLU) in five stages, each closed by a 2×2 / 2 max-pool
whose maximum positions drive the max-unpooling of the mirrored decoder stage (3×3 conv + BN + ReLU,
the last stage ending in a 3×3 convolution to K classes). SegNet-Basic: four stages of one 7×7
convolution with 64 maps (BN after the convolution, no bias), ReLU in the encoder only, and a 1×1
classifier. Pooling and unpooling are `zoo.unpooling`'s (ceil-mode pooling, unpooling to the encoder's
exact size), so any input size runs; 360×480 gives 180×240, 90×120, 45×60, 23×30 and 12×15.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mobileseg.zoo.unpooling import MaxPoolWithPositions, MaxUnpool

__all__ = ["SegNet", "SEGNET_KEY_RULES", "SEGNET_BASIC_KEY_RULES"]

VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# The decoder mirrors the encoder: stage s convolves at stage s's width, its last conv narrows to stage s−1's
DECODER_STAGES = ((512, 512, 512), (512, 512, 256), (256, 256, 128), (128, 64), (64,))


class ConvBN(nn.Sequential):
    """k×k convolution ("same" padding) → BN → optional ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, bias: bool, relu: bool):
        layers = [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=bias), nn.BatchNorm2d(cout)]
        super().__init__(*layers, *([nn.ReLU(inplace=False)] if relu else []))


class EncoderStage(nn.Module):
    def __init__(self, widths: Sequence[int], cin: int, kernel: int, bias: bool):
        super().__init__()
        self.convs = nn.Sequential(*(ConvBN(cin if i == 0 else widths[i - 1], w, kernel, bias, True) for i, w in enumerate(widths)))
        self.pool = MaxPoolWithPositions()

    def forward(self, x: torch.Tensor):
        return self.pool(self.convs(x))


class DecoderStage(nn.Module):
    def __init__(self, widths: Sequence[int], cin: int, kernel: int, bias: bool, relu: bool):
        super().__init__()
        self.unpool = MaxUnpool()
        self.convs = nn.Sequential(*(ConvBN(cin if i == 0 else widths[i - 1], w, kernel, bias, relu) for i, w in enumerate(widths)))

    def forward(self, x: torch.Tensor, pooled) -> torch.Tensor:
        return self.convs(self.unpool(x, pooled))


class SegNet(nn.Module):
    """Input: (N, 3, H, W), ImageNet normalisation, any H and W. Output: (N, num_classes, H, W) logits.

    ``basic=True`` is SegNet-Basic (4 + 4 stages of 64 7×7 maps, no bias, no decoder ReLU, 1×1 classifier).
    """

    def __init__(self, num_classes: int = 11, basic: bool = False):
        super().__init__()
        if basic:
            encoder, decoder, kernel, bias, decoder_relu = ((64,),) * 4, ((64,),) * 4, 7, False, False
        else:
            encoder, decoder, kernel, bias, decoder_relu = VGG16_STAGES, DECODER_STAGES, 3, True, True
        self.encoder = nn.ModuleList(
            EncoderStage(widths, 3 if i == 0 else encoder[i - 1][-1], kernel, bias) for i, widths in enumerate(encoder)
        )
        self.decoder = nn.ModuleList(
            DecoderStage(widths, encoder[-1 - i][-1], kernel, bias, decoder_relu) for i, widths in enumerate(decoder)
        )
        classifier_kernel = 1 if basic else 3
        self.classifier = nn.Conv2d(decoder[-1][-1], num_classes, classifier_kernel, padding=classifier_kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []
        for stage in self.encoder:
            p = stage(x)
            pooled.append(p)
            x = p.values
        for stage, p in zip(self.decoder, reversed(pooled)):
            x = stage(x, p)
        return self.classifier(x)


# Checkpoint key renames from the Caffe SegNet layer names as PyTorch ports keep them (conv1_1, conv1_1_bn,
# conv5_3_D, conv5_3_D_bn, ..., conv1_1_D: the classifier), onto ours; SegNet-Basic's conv1..4, conv_decode4..1, conv_classifier.
def _segnet_rules() -> tuple[tuple[str, str], ...]:
    rules = []
    for s, widths in enumerate(VGG16_STAGES):
        for i in range(len(widths)):
            rules += [(rf"^conv{s + 1}_{i + 1}\.", f"encoder.{s}.convs.{i}.0."),
                      (rf"^conv{s + 1}_{i + 1}_bn\.", f"encoder.{s}.convs.{i}.1.")]  # fmt: skip
    for d, widths in enumerate(DECODER_STAGES):
        stage = len(VGG16_STAGES) - d
        last = len(widths) + (stage == 1)  # conv1_1_D is the classifier
        for i in range(len(widths)):
            caffe = f"conv{stage}_{last - i}_D"
            rules += [(rf"^{caffe}\.", f"decoder.{d}.convs.{i}.0."), (rf"^{caffe}_bn\.", f"decoder.{d}.convs.{i}.1.")]
    return (*rules, (r"^conv1_1_D\.", "classifier."))


def _segnet_basic_rules() -> tuple[tuple[str, str], ...]:
    rules = []
    for s in range(4):
        rules += [(rf"^conv{s + 1}\.", f"encoder.{s}.convs.0.0."), (rf"^conv{s + 1}_bn\.", f"encoder.{s}.convs.0.1."),
                  (rf"^conv_decode{4 - s}\.", f"decoder.{s}.convs.0.0."),
                  (rf"^conv_decode{4 - s}_bn\.", f"decoder.{s}.convs.0.1.")]  # fmt: skip
    return (*rules, (r"^conv_classifier\.", "classifier."))


SEGNET_KEY_RULES = _segnet_rules()
SEGNET_BASIC_KEY_RULES = _segnet_basic_rules()
