"""SINet for portrait segmentation.

Park et al., "SINet: Extreme Lightweight Portrait Segmentation Networks with Spatial Squeeze Modules
and Information Blocking Decoder", WACV 2020 (arXiv 1911.09099); dissertation ch. 4.6–4.8, Table 4.5.
Architecture details the dissertation leaves out (SE without sigmoid, shuffle groups, decoder) follow
the authors' code, clovaai/ext_portrait_segmentation @ 9bc1bad (MIT), whose EG1800 checkpoint loads here.
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

__all__ = ["SINet", "S2_KEY_RULES", "SEPARABLE_KEY_RULES", "SINET_KEY_RULES"]

# (kernel, pool) of the two S2 blocks of each module: 2 modules at H/4, then 8 at H/8 (Table 4.5).
SINET_PORTRAIT_BLOCKS = (
    ((3, 1), (5, 1)), ((3, 1), (3, 1)),
    ((3, 1), (5, 1)), ((3, 1), (3, 1)), ((5, 1), (3, 2)), ((5, 2), (3, 4)),
    ((3, 1), (3, 1)), ((5, 1), (5, 1)), ((3, 2), (3, 4)), ((3, 1), (5, 2)),
)  # fmt: skip


class SINet(nn.Module):
    """SINet encoder (S2 modules) with the information-blocking decoder; full-resolution logits.

    Input: (N, 3, H, W), the authors' normalisation (`specs.PORTRAIT_NORMALIZATION`), H and W multiples of 32.
    Output: (N, num_classes, H, W) logits; class 1 is the person.
    Decoder upsampling is bilinear with ``align_corners=True`` (the authors' ``nn.UpsamplingBilinear2d``).
    """

    def __init__(self, num_classes: int = 2, stage2_depth: int = 2, stage3_depth: int = 8):
        super().__init__()
        c1, c2, c3 = 16, 48, 96
        blocks = [tuple((k, p, False) for k, p in module) for module in SINET_PORTRAIT_BLOCKS]
        self.stem = ConvBNPReLU(3, 12, 3, stride=2)
        self.down2 = SeparableConvBNPReLU(12, c1, stride=2, se_reduction=1)
        self.stage2 = nn.ModuleList(
            S2Module(c1 if i == 0 else c2, c2, blocks[i], residual=i > 0) for i in range(stage2_depth)
        )
        self.stage2_fuse = BNPReLU(c1 + c2)
        self.down3 = SeparableConvBNPReLU(c1 + c2, c2, stride=2, se_reduction=2)
        self.stage3 = nn.ModuleList(
            S2Module(c2 if i == 0 else c3, c3, blocks[2 + i], residual=i > 0) for i in range(stage3_depth)
        )
        self.stage3_fuse = BNPReLU(c2 + c3)
        self.classifier = nn.Conv2d(c2 + c3, num_classes, 1, bias=False)
        self.decoder = InformationBlockingDecoder(c2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down2(self.stem(x))  # H/4
        skip = x
        for module in self.stage2:
            skip = module(skip)
        y = self.down3(self.stage2_fuse(torch.cat([x, skip], 1)))  # H/8
        z = y
        for module in self.stage3:
            z = module(z)
        logits8 = self.classifier(self.stage3_fuse(torch.cat([y, z], 1)))
        return self.decoder(logits8, skip)


class InformationBlockingDecoder(nn.Module):
    """H/8 logits → ×2 → BN → gate the H/4 skip by (1 − confidence) → ×2 → BN → ×2 → 3×3 conv (full resolution)."""

    def __init__(self, skip_ch: int, num_classes: int):
        super().__init__()
        self.coarse_bn = nn.BatchNorm2d(num_classes, eps=1e-3)
        self.skip = ConvBNPReLU(skip_ch, num_classes, 1)
        self.fine_bn = nn.BatchNorm2d(num_classes, eps=1e-3)
        self.head = nn.Conv2d(num_classes, num_classes, 3, padding=1, bias=False)

    def forward(self, logits8: torch.Tensor, skip4: torch.Tensor) -> torch.Tensor:
        coarse = self.coarse_bn(upsample_bilinear(logits8, 2, align_corners=True))
        fine = self.fine_bn(upsample_bilinear(information_blocking(coarse, self.skip(skip4)), 2, align_corners=True))
        return self.head(upsample_bilinear(fine, 2, align_corners=True))


# Key renames shared by the SINet family: the authors' S2 module / S2 block and (SE-)separable conv.
S2_KEY_RULES = (
    (r"\.c1\.conv\.", ".reduce."),
    (r"\.d(1)\.", ".branches.0."),
    (r"\.d(2)\.", ".branches.1."),
    (r"(branches\.\d)\.conv\.0\.", r"\1.dw."),
    (r"(branches\.\d)\.conv\.1\.", r"\1.dw_bn."),
    (r"(branches\.\d)\.vertical\.", r"\1.dw_v."),
    (r"(branches\.\d)\.horizontal\.", r"\1.dw_h."),
    (r"(branches\.\d)\.B_v\.", r"\1.dw_v_bn."),
    (r"(branches\.\d)\.B_h\.", r"\1.dw_h_bn."),
    (r"(branches\.\d)\.act_conv1x1\.0\.", r"\1.act."),
    (r"(branches\.\d)\.act_conv1x1\.1\.", r"\1.pw."),
    (r"\.BR\.", ".out."),
)
SEPARABLE_KEY_RULES = (
    (r"^(down\d)\.conv\.0\.", r"\1.dw."),
    (r"^(down\d)\.conv\.1\.dense\.0\.", r"\1.se.fc1."),
    (r"^(down\d)\.conv\.1\.dense\.1\.", r"\1.se.act1."),
    (r"^(down\d)\.conv\.1\.dense\.2\.", r"\1.se.fc2."),
    (r"^(down\d)\.conv\.1\.dense\.3\.", r"\1.se.act2."),
    (r"^(down\d)\.conv\.2\.", r"\1.pw."),
)
SINET_KEY_RULES = (
    (r"^encoder\.level1\.", "stem."),
    (r"^encoder\.level2_0\.", "down2."),
    (r"^encoder\.level3_0\.", "down3."),
    (r"^encoder\.level2\.", "stage2."),
    (r"^encoder\.level3\.", "stage3."),
    (r"^encoder\.BR2\.", "stage2_fuse."),
    (r"^encoder\.BR3\.", "stage3_fuse."),
    (r"^encoder\.classifier\.conv\.", "classifier."),
    (r"^bn_3\.", "decoder.coarse_bn."),
    (r"^level2_C\.", "decoder.skip."),
    (r"^bn_2\.", "decoder.fine_bn."),
    (r"^classifier\.1\.", "decoder.head."),
    *SEPARABLE_KEY_RULES,
    *S2_KEY_RULES,
)
