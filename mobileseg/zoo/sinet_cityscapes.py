"""SINet-Large with S2+ blocks for Cityscapes ("SINet+", dissertation Tables 4.6, 4.9, 4.10).

Follows the authors' ``SBNet_aux`` in clovaai/c3_sinet @ dd91638 (MIT): p=3, q=10, chnn=4, and the
84→108 channel transition at the 6th module of the last stage (the placement that reproduces the
reported 119.42 K parameters). Output logits are at half the input resolution.
"""

from __future__ import annotations

import torch
from torch import nn

from mobileseg.zoo.blocks import (
    BNPReLU,
    ConvBNPReLU,
    S2Module,
    SeparableConvBNPReLU,
    information_blocking,
    upsample_bilinear,
)
from mobileseg.zoo.sinet import S2_KEY_RULES, SEPARABLE_KEY_RULES

__all__ = ["SINetCityscapes", "SINET_CITYSCAPES_KEY_RULES"]

# The authors' (kernel, pool) per S2+ module: 3 at H/8, then 10 at H/16. pool 0 means a plain 3×3
# depthwise conv without pooling; pool >= 1 a factorised (k×1 ∥ 1×k) block.
SINET_CITYSCAPES_BLOCKS = (
    ((3, 1), (5, 1)), ((3, 0), (3, 1)), ((3, 0), (3, 1)),
    ((3, 1), (5, 1)), ((3, 0), (3, 1)), ((5, 1), (5, 4)), ((3, 2), (5, 8)), ((3, 1), (5, 1)),
    ((3, 1), (5, 1)), ((3, 0), (3, 1)), ((5, 1), (5, 8)), ((3, 2), (5, 4)), ((3, 0), (5, 2)),
)  # fmt: skip

def _block(kernel: int, pool: int) -> tuple[int, int, bool]:
    return (3, 1, False) if pool == 0 else (kernel, pool, True)


class SINetCityscapes(nn.Module):
    """SINet-Large encoder (S2+ modules) with a two-stage information-blocking decoder.

    Input: (N, 3, H, W), Cityscapes normalisation, H and W multiples of 128.
    Output: (N, num_classes, H/2, W/2) logits. Decoder upsampling is bilinear with
    ``align_corners=False`` (the authors' ``F.interpolate``); the S2 blocks inside use ``True``.
    """

    def __init__(self, num_classes: int = 19, stage3_depth: int = 3, stage4_depth: int = 10):
        super().__init__()
        c1, c2, c3, c4 = 24, 60, 84, 108
        blocks = [tuple(_block(k, p) for k, p in module) for module in SINET_CITYSCAPES_BLOCKS]
        self.stem = ConvBNPReLU(3, 16, 3, stride=2)  # H/2
        self.down2 = SeparableConvBNPReLU(16, num_classes, stride=2, se_reduction=1)  # H/4
        self.down3 = SeparableConvBNPReLU(num_classes, c1, stride=2, se_reduction=1)  # H/8
        self.stage3 = nn.ModuleList(
            S2Module(c1 if i == 0 else c2, c2, blocks[i], residual=i > 0) for i in range(stage3_depth)
        )
        self.stage3_fuse = BNPReLU(c1 + c2)
        self.down4 = SeparableConvBNPReLU(c1 + c2, c2, stride=2, se_reduction=2)  # H/16
        half = stage4_depth // 2
        widths = [(c2 if i == 0 else c3, c3) for i in range(half)]
        widths += [(c3 if i == half else c4, c4) for i in range(half, stage4_depth)]
        self.stage4 = nn.ModuleList(
            S2Module(w_in, w_out, blocks[stage3_depth + i], residual=w_in == w_out)
            for i, (w_in, w_out) in enumerate(widths)
        )
        self.stage4_fuse = BNPReLU(c2 + c4)
        self.classifier = nn.Conv2d(c2 + c4, num_classes, 1, bias=False)
        self.coarse_bn = nn.BatchNorm2d(num_classes, eps=1e-3)
        self.skip = ConvBNPReLU(c2, num_classes, 1)
        self.fine_bn = nn.BatchNorm2d(num_classes, eps=1e-3)
        self.head = nn.ConvTranspose2d(num_classes, num_classes, 2, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x4 = self.down2(self.stem(x))
        x8 = self.down3(x4)
        s8 = x8
        for module in self.stage3:
            s8 = module(s8)
        x16 = self.down4(self.stage3_fuse(torch.cat([x8, s8], 1)))
        s16 = x16
        for module in self.stage4:
            s16 = module(s16)
        logits16 = self.classifier(self.stage4_fuse(torch.cat([x16, s16], 1)))
        coarse8 = self.coarse_bn(upsample_bilinear(logits16, 2, align_corners=False))
        fine4 = self.fine_bn(upsample_bilinear(information_blocking(coarse8, self.skip(s8)), 2, align_corners=False))
        return self.head(information_blocking(fine4, x4))


SINET_CITYSCAPES_KEY_RULES = (
    (r"^classifier\.", "head."),  # before the encoder's classifier is renamed to "classifier"
    (r"^encoder\.level1\.", "stem."),
    (r"^encoder\.level2_0\.", "down2."),
    (r"^encoder\.level3_0\.", "down3."),
    (r"^encoder\.level4_0\.", "down4."),
    (r"^encoder\.level3\.", "stage3."),
    (r"^encoder\.level4\.", "stage4."),
    (r"^encoder\.BR3\.", "stage3_fuse."),
    (r"^encoder\.BR4\.", "stage4_fuse."),
    (r"^encoder\.classifier\.conv\.", "classifier."),
    (r"^bn_4\.", "coarse_bn."),
    (r"^level3_C\.", "skip."),
    (r"^bn_3\.", "fine_bn."),
    *SEPARABLE_KEY_RULES,
    *S2_KEY_RULES,
)
