"""C3Net (C3-MESP2): an ESPNet-style network whose dilated convolutions are C3 blocks.

Park et al., "Concentrated-Comprehensive Convolutions for lightweight semantic segmentation"
(arXiv 1812.04920); dissertation ch. 4.2–4.4, Table 4.2 (C3-MESP2, d = 2, 3, 7, 13).
Follows the authors' ``Dnc_C3Net`` in clovaai/c3_sinet @ dd91638 (MIT): p=2, q=8, 20 output classes
(19 Cityscapes classes + the ignore label), ESPNet-style decoder with transposed convolutions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from mobileseg.zoo.blocks import BNPReLU, C3Module, ConvBNPReLU, ImagePyramid
from mobileseg.zoo.extremec3net import C3_BLOCK_KEY_RULES, C3_BRANCH_KEY_RULES

__all__ = ["C3Net", "C3NetEncoder", "C3NetFeatures", "C3NET_ENCODER_KEY_RULES"]



class C3NetFeatures(NamedTuple):
    stem: torch.Tensor  # H/2, stem conv output
    stem_fused: torch.Tensor  # H/2, BR(stem ∥ image/2)
    stage2: torch.Tensor  # H/4, last stage-2 module output
    stage2_fused: torch.Tensor  # H/4, BR(stage2 ∥ down2 ∥ image/4)
    logits8: torch.Tensor  # H/8, encoder classifier


class C3NetEncoder(nn.Module):
    """The C3-MESP encoder (ESPNet-C skeleton with C3 modules); returns the features its decoders need."""

    def __init__(self, num_classes: int, dilations: Sequence[int], stem_width: int = 16, depth2: int = 2, depth3: int = 8):
        super().__init__()
        w2, w3 = 64, 128
        self.stem = ConvBNPReLU(3, stem_width, 3, stride=2)
        self.image2 = ImagePyramid(1)
        self.image4 = ImagePyramid(2)
        self.stem_fuse = BNPReLU(stem_width + 3)
        self.down2 = C3Module(stem_width + 3, w2, dilations, residual=False, downsample=True)
        self.stage2 = nn.ModuleList(C3Module(w2, w2, dilations, residual=True) for _ in range(depth2))
        self.stage2_fuse = BNPReLU(2 * w2 + 3)
        self.down3 = C3Module(2 * w2 + 3, w3, dilations, residual=False, downsample=True)
        self.stage3 = nn.ModuleList(C3Module(w3, w3, dilations, residual=True) for _ in range(depth3))
        self.stage3_fuse = BNPReLU(2 * w3)
        self.classifier = nn.Conv2d(2 * w3, num_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> C3NetFeatures:
        stem = self.stem(x)
        stem_fused = self.stem_fuse(torch.cat([stem, self.image2(x)], 1))
        x4 = self.down2(stem_fused)
        s4 = x4
        for module in self.stage2:
            s4 = module(s4)
        stage2_fused = self.stage2_fuse(torch.cat([s4, x4, self.image4(x)], 1))
        x8 = self.down3(stage2_fused)
        s8 = x8
        for module in self.stage3:
            s8 = module(s8)
        logits8 = self.classifier(self.stage3_fuse(torch.cat([x8, s8], 1)))
        return C3NetFeatures(stem, stem_fused, s4, stage2_fused, logits8)


class C3Net(nn.Module):
    """C3-MESP encoder + ESPNet-style decoder (transposed convolutions, a C3 module at H/4).

    Input: (N, 3, H, W), Cityscapes normalisation, H and W multiples of 8.
    Output: (N, num_classes, H, W) logits.
    """

    def __init__(self, num_classes: int = 20, dilations: Sequence[int] = (2, 3, 7, 13)):
        super().__init__()
        c = num_classes
        self.encoder = C3NetEncoder(num_classes, dilations)
        self.coarse_bn = nn.BatchNorm2d(c, eps=1e-3)
        self.up4 = nn.ConvTranspose2d(c, c, 2, stride=2, bias=False)
        self.skip4 = nn.Conv2d(2 * 64 + 3, c, 1, bias=False)
        self.fuse4_act = BNPReLU(2 * c)
        self.fuse4 = C3Module(2 * c, c, dilations, residual=False)
        self.up2 = nn.ConvTranspose2d(c, c, 2, stride=2, bias=False)
        self.up2_act = BNPReLU(c)
        self.fuse2 = ConvBNPReLU(16 + 3 + c, c, 3)
        self.head = nn.ConvTranspose2d(c, c, 2, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.encoder(x)
        up4 = self.up4(self.coarse_bn(f.logits8))
        y4 = self.fuse4(self.fuse4_act(torch.cat([self.skip4(f.stage2_fused), up4], 1)))
        y2 = self.fuse2(torch.cat([self.up2_act(self.up2(y4)), f.stem_fused], 1))
        return self.head(y2)


C3NET_ENCODER_KEY_RULES = (
    (r"^encoder\.level1\.", "encoder.stem."),
    (r"^encoder\.b1\.", "encoder.stem_fuse."),
    (r"^encoder\.level2_0\.", "encoder.down2."),
    (r"^encoder\.level2\.", "encoder.stage2."),
    (r"^encoder\.b2\.", "encoder.stage2_fuse."),
    (r"^encoder\.level3_0\.", "encoder.down3."),
    (r"^encoder\.level3\.", "encoder.stage3."),
    (r"^encoder\.b3\.", "encoder.stage3_fuse."),
    (r"^encoder\.classifier\.conv\.", "encoder.classifier."),
)
C3NET_KEY_RULES = (
    *C3NET_ENCODER_KEY_RULES,
    (r"^br\.", "coarse_bn."),
    (r"^up_l3\.0\.", "up4."),
    (r"^level3_C\.conv\.", "skip4."),
    (r"^combine_l2_l3\.0\.", "fuse4_act."),
    (r"^combine_l2_l3\.1\.", "fuse4."),
    (r"^up_l2\.0\.", "up2."),
    (r"^up_l2\.1\.", "up2_act."),
    (r"^conv\.", "fuse2."),
    (r"^classifier\.", "head."),
    *C3_BRANCH_KEY_RULES,
    *C3_BLOCK_KEY_RULES,
)
