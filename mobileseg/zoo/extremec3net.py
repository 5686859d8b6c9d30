"""ExtremeC3Net for portrait segmentation.

Park et al., "ExtremeC3Net: Extreme Lightweight Portrait Segmentation Networks using Advanced C3-modules"
(arXiv 1908.03093). Follows the authors' ``Stage2_ExtremeC3Net`` (p=1, q=5) in
clovaai/ext_portrait_segmentation @ 9bc1bad (MIT): a coarse C3 encoder at H/4 plus a fine branch at
H/2, summed, then upsampled. One output channel trained with the Lovász hinge: foreground where > 0.
"""

from __future__ import annotations

import torch
from torch import nn

from mobileseg.zoo.blocks import BNPReLU, C3Module, ConvBNPReLU, ImagePyramid, upsample_bilinear

__all__ = ["ExtremeC3Net", "C3_BRANCH_KEY_RULES", "C3_BLOCK_KEY_RULES"]


class ExtremeC3Net(nn.Module):
    """Input: (N, 3, H, W), portrait normalisation, H and W multiples of 4.
    Output: (N, 1, H, W) logit of the person (foreground where > 0).
    Upsampling is bilinear with ``align_corners=True`` (the authors' ``nn.UpsamplingBilinear2d``).
    """

    def __init__(self, num_classes: int = 1, stage2_depth: int = 1, stage3_depth: int = 5):
        super().__init__()
        c0, c1, c2, c_fine = 24, 48, 56, 24
        self.stem = ConvBNPReLU(3, c0, 3, stride=2)  # H/2
        self.image2 = ImagePyramid(1)
        self.image4 = ImagePyramid(2)
        self.stem_fuse = BNPReLU(c0 + 3)
        self.down2 = C3Module(c0 + 3, c1, (1, 2, 3), residual=False, downsample=True)  # H/4
        self.stage2 = nn.ModuleList(C3Module(c1, c1, (1, 3, 4), residual=True) for _ in range(stage2_depth))
        self.stage2_fuse = BNPReLU(2 * c1 + 3)
        self.stage3_in = C3Module(2 * c1 + 3, c2, (1, 3, 5), residual=False)  # still H/4
        self.stage3 = nn.ModuleList(C3Module(c2, c2, (2, 4, 8), residual=True) for _ in range(stage3_depth))
        self.stage3_fuse = BNPReLU(2 * c2)
        self.coarse_proj = nn.Conv2d(2 * c2, c_fine, 1, bias=False)
        self.coarse_bn = nn.BatchNorm2d(c_fine)  # PyTorch default eps, as the authors
        self.fine_stem = nn.Conv2d(3, c_fine, 3, stride=2, padding=1, bias=False)
        self.fine = C3Module(c_fine, c_fine, (2, 4, 8), residual=True)
        self.head_act = BNPReLU(c_fine)
        self.head = nn.Conv2d(c_fine, num_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = self.stem_fuse(torch.cat([self.stem(x), self.image2(x)], 1))
        x4 = self.down2(x2)
        s4 = x4
        for module in self.stage2:
            s4 = module(s4)
        y4 = self.stage3_in(self.stage2_fuse(torch.cat([s4, x4, self.image4(x)], 1)))
        z4 = y4
        for module in self.stage3:
            z4 = module(z4)
        coarse = self.stage3_fuse(torch.cat([y4, z4], 1))
        coarse2 = upsample_bilinear(self.coarse_bn(self.coarse_proj(coarse)), 2, align_corners=True)
        fine2 = self.fine(self.fine_stem(x))
        return self.head(upsample_bilinear(self.head_act(coarse2 + fine2), 2, align_corners=True))


# The authors' C3 module / C3 block names → ours (shared with C3Net). Applied after the prefix renames.
C3_BRANCH_KEY_RULES = (
    (r"\.c1\.conv\.", ".reduce."),
    (r"\.d1\.", ".branches.0."),
    (r"\.d2\.", ".branches.1."),
    (r"\.d3\.", ".branches.2."),
    (r"\.d4\.", ".branches.3."),
)
C3_BLOCK_KEY_RULES = (
    (r"(branches\.\d)\.conv\.0\.", r"\1.conc_v."),
    (r"(branches\.\d)\.conv\.1\.", r"\1.conc_v_bn."),
    (r"(branches\.\d)\.conv\.2\.", r"\1.conc_act."),
    (r"(branches\.\d)\.conv\.3\.", r"\1.conc_h."),
    (r"(branches\.\d)\.conv\.4\.", r"\1.conc_h_bn."),
    (r"(branches\.\d)\.conv\.5\.", r"\1.dilated_dw."),
    (r"(branches\.\d)\.conv\.6\.", r"\1.pw."),
    (r"\.bn\.(bn|act)\.", r".out.\1."),  # C3module: its BN+PReLU is a BR named "bn"
    (r"(^|\.)(down\d)\.(bn|act)\.", r"\1\2.out.\3."),  # Down module: bare "bn" and "act"
)

EXTREMEC3NET_KEY_RULES = (
    (r"^encoder\.level1\.", "stem."),
    (r"^encoder\.b1\.", "stem_fuse."),
    (r"^encoder\.level2_0\.", "down2."),
    (r"^encoder\.level2\.", "stage2."),
    (r"^encoder\.b2\.", "stage2_fuse."),
    (r"^encoder\.level3_0\.", "stage3_in."),
    (r"^encoder\.level3\.", "stage3."),
    (r"^encoder\.b3\.", "stage3_fuse."),
    (r"^upsample\.0\.", "coarse_proj."),
    (r"^upsample\.1\.", "coarse_bn."),
    (r"^Fine\.0\.conv\.", "fine_stem."),
    (r"^Fine\.1\.", "fine."),
    (r"^classifier\.0\.", "head_act."),
    (r"^classifier\.2\.", "head."),
    *C3_BRANCH_KEY_RULES,
    # a d = 1 block (branch 0 of down2, stage2.*, stage3_in) is depthwise 3×3 (conv.0) + pointwise (conv.1)
    (r"^((down2|stage2\.\d+|stage3_in)\.branches\.0)\.conv\.0\.", r"\1.dilated_dw."),
    (r"^((down2|stage2\.\d+|stage3_in)\.branches\.0)\.conv\.1\.", r"\1.pw."),
    *C3_BLOCK_KEY_RULES,
)
