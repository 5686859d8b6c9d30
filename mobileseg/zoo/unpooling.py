"""SegNet's max-pooling with remembered positions and max-unpooling, in two exact forms.

A 2×2 / 2 max-pool keeps, for every pooled value, where in its window the maximum was; the decoder's
unpooling puts each value back at that place and zeros elsewhere. Odd sizes follow Caffe's SegNet:
pooling rounds up (``ceil_mode``: the last window of an odd side holds one row or column) and unpooling
restores the encoder map's exact size (360×480: 45 → 23 → 12 on the fourth and fifth pools, and back).

* ``native``: PyTorch's ``max_pool2d(return_indices=True)`` and ``max_unpool2d``. Indices are int64 per
  plane (``h·W + w``); ONNX's MaxUnpool wants them flat over N·C·H·W, and `export.onnx` adds the
  ``n·C·H·W + c·H·W`` offsets (the common export recipes pass the per-plane ones: wrong when N·C > 1).
* ``portable`` (builtin ops only, what Core ML and TFLite run): the window position of the maximum, 0..3
  = 2·dy + dx, computed from the four strided slices of the map (first maximum in row-major order, as
  PyTorch breaks ties) and kept as a float map of the pooled size; unpooling masks the values once per
  position (4 maps), orders them as ``pixel_shuffle`` reads and shuffles them into place (DepthToSpace):
  no constant of the map's size, which TFLite converters mis-lay out. An odd side is
  first made even by repeating its last row or column: a copy comes after its original in the window
  order, so it never wins a tie and never changes the maximum.

Both forms give the same values as PyTorch's own pair, ties included (tests/test_segnet.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mobileseg.zoo._registry import UNPOOLING_FORMS

__all__ = ["Pooled", "MaxPoolWithPositions", "MaxUnpool", "unpooling_form", "has_unpooling"]


class Pooled(NamedTuple):
    """What a pooling stage hands its decoder stage: pooled values, positions, and the encoder map's size."""

    values: torch.Tensor  # (N, C, ⌈H/2⌉, ⌈W/2⌉)
    positions: torch.Tensor  # native: int64 per-plane indices; portable: window position 0..3 (input dtype)
    size: tuple[int, int]  # (H, W) of the map before pooling


class MaxPoolWithPositions(nn.Module):
    """2×2 / 2 max-pooling that remembers where each maximum was. Input (N, C, H, W), any H and W."""

    def __init__(self, form: str = "portable"):
        super().__init__()
        self.form = form

    def forward(self, x: torch.Tensor) -> Pooled:
        size = (int(x.shape[-2]), int(x.shape[-1]))
        if self.form == "native":
            values, indices = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
            return Pooled(values, indices, size)
        if size[0] % 2:
            x = torch.cat([x, x[:, :, -1:, :]], dim=2)
        if size[1] % 2:
            x = torch.cat([x, x[:, :, :, -1:]], dim=3)
        windows = [x[:, :, dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)]  # position k = 2·dy + dx
        values = torch.maximum(torch.maximum(windows[0], windows[1]), torch.maximum(windows[2], windows[3]))
        not0, not1, not2 = ((w != values).to(x.dtype) for w in windows[:3])
        positions = not0 * (1 + not1 * (1 + not2))  # the first position holding the maximum (0..3)
        return Pooled(values, positions, size)


class MaxUnpool(nn.Module):
    """Puts (N, C, h, w) values back at their pooled positions in an (N, C, H, W) map of zeros."""

    def __init__(self, form: str = "portable"):
        super().__init__()
        self.form = form

    def forward(self, x: torch.Tensor, pooled: Pooled) -> torch.Tensor:
        height, width = pooled.size
        if self.form == "native":
            return F.max_unpool2d(x, pooled.positions, 2, 2, output_size=(height, width))
        channels = x.shape[1]
        # position k is 0..3 exactly in float; comparing with k ± 0.5 rather than == k keeps the masks right
        # where an 8-bit integer file holds the positions on its own quantisation grid (±1 level)
        above = [(pooled.positions > k - 0.5).to(x.dtype) for k in (1, 2, 3)]
        masks = [1 - above[0], above[0] - above[1], above[1] - above[2], above[2]]
        placed = torch.cat([x * mask for mask in masks], 1)  # channel k·C + c
        order = torch.arange(4 * channels).view(4, channels).t().reshape(-1)  # → c·4 + k, as pixel_shuffle reads
        out = F.pixel_shuffle(placed.index_select(1, order), 2)
        return out[:, :, :height, :width] if tuple(out.shape[-2:]) != (height, width) else out


def has_unpooling(module: nn.Module) -> bool:
    return any(isinstance(m, (MaxPoolWithPositions, MaxUnpool)) for m in module.modules())


@contextmanager
def unpooling_form(module: nn.Module, form: str) -> Iterator[nn.Module]:
    """Run ``module``'s pooling/unpooling pairs in ``form`` inside the block; their forms are restored after."""
    if form not in UNPOOLING_FORMS:
        raise ValueError(f"unknown unpooling form {form!r}; choose from {', '.join(UNPOOLING_FORMS)}")
    layers = [m for m in module.modules() if isinstance(m, (MaxPoolWithPositions, MaxUnpool))]
    before = [m.form for m in layers]
    for layer in layers:
        layer.form = form
    try:
        yield module
    finally:
        for layer, old in zip(layers, before):
            layer.form = old
