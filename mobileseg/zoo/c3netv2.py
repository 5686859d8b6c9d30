"""C3NetV2 (C3-MESP1): the C3-MESP encoder with d = 2, 4, 8, 16 and a light bilinear decoder.

Dissertation Table 4.2 (C3-MESP1). Follows the authors' ``Dnc_C3Netv2`` in clovaai/c3_sinet @ dd91638
(MIT): its stem is as wide as the class count (20) and its decoder fuses features at H/4 and H/2 with
depthwise-separable convolutions after bilinear upsampling (``align_corners=True``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mobileseg.zoo.blocks import SeparableConvBNPReLU, upsample_bilinear
from mobileseg.zoo.c3net import C3NET_ENCODER_KEY_RULES, C3NetEncoder
from mobileseg.zoo.extremec3net import C3_BLOCK_KEY_RULES, C3_BRANCH_KEY_RULES

__all__ = ["C3NetV2"]


class C3NetV2(nn.Module):
    """Input: (N, 3, H, W), Cityscapes normalisation, H and W multiples of 8.
    Output: (N, num_classes, H, W) logits. Upsampling is bilinear, ``align_corners=True``.
    """

    def __init__(self, num_classes: int = 20, dilations: Sequence[int] = (2, 4, 8, 16)):
        super().__init__()
        c = num_classes
        self.encoder = C3NetEncoder(num_classes, dilations, stem_width=c)
        self.coarse_bn = nn.BatchNorm2d(c, eps=1e-3)
        self.fuse4 = SeparableConvBNPReLU(c + 64, c)
        self.fuse2 = SeparableConvBNPReLU(2 * c, c)
        self.head = nn.Conv2d(c, c, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.encoder(x)
        y4 = upsample_bilinear(self.coarse_bn(f.logits8), 2, align_corners=True)
        y4 = self.fuse4(torch.cat([y4, f.stage2], 1))
        y2 = self.fuse2(torch.cat([upsample_bilinear(y4, 2, align_corners=True), f.stem], 1))
        return self.head(upsample_bilinear(y2, 2, align_corners=True))


C3NETV2_KEY_RULES = (
    *C3NET_ENCODER_KEY_RULES,
    (r"^bn\.", "coarse_bn."),
    (r"^conv_l2\.", "fuse4."),
    (r"^conv_l1\.", "fuse2."),
    (r"^(fuse\d)\.conv\.0\.", r"\1.dw."),
    (r"^(fuse\d)\.conv\.1\.", r"\1.pw."),
    (r"^classifier\.1\.conv\.", "head."),
    *C3_BRANCH_KEY_RULES,
    *C3_BLOCK_KEY_RULES,
)
