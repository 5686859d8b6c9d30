"""Baking the input preprocessing into the exported graph.

``rgb01``       float32 RGB in [0, 1], NCHW: the graph applies the model's normalisation (and channel order).
``uint8``       uint8 RGB 0..255, NCHW: the graph casts, divides by 255, then normalises.
``normalized``  the authors' normalised float input, passed through unchanged.
``centered``    (internal) ``x − mean`` already in the network's channel order, as a Core ML image input
                delivers it after its own channel reorder, ``scale`` and ``bias``: the graph divides by ``std``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mobileseg.zoo import Normalization

INPUT_DTYPES = {"rgb01": "float32", "uint8": "uint8", "normalized": "float32"}


class WithPreprocessing(nn.Module):
    """Wraps a zoo model so that it takes ``input_format`` input; outputs are unchanged logits.

    The channel reorder, the 1/255 of uint8 input and the normalisation are one fixed 1×1 convolution
    (``out[c] = x[order[c]] · scale / std[c] − mean[c] / std[c]``): a single op that every converter maps
    well. A channel gather is the obvious alternative, but onnx2tf loses the tensor layout after it when
    the height and width are symbolic.
    """

    def __init__(self, model: nn.Module, normalization: Normalization, input_format: str):
        super().__init__()
        self.model = model
        self.input_format = input_format
        order = [2, 1, 0] if normalization.channel_order == "bgr" else [0, 1, 2]
        scale = 1 / 255.0 if input_format == "uint8" else 1.0
        mean = torch.tensor(normalization.mean, dtype=torch.float64)
        std = torch.tensor(normalization.std, dtype=torch.float64)
        weight = torch.zeros(3, 3, 1, 1, dtype=torch.float64)
        for out_channel, in_channel in enumerate(order):
            weight[out_channel, in_channel] = scale / std[out_channel]
        self.register_buffer("weight", weight.float(), persistent=False)
        self.register_buffer("bias", (-mean / std).float(), persistent=False)
        self.register_buffer("std", std.float().view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.input_format == "normalized":
            return self.model(image)
        if self.input_format == "centered":
            return self.model(image / self.std)
        return self.model(F.conv2d(image.to(self.weight.dtype), self.weight, self.bias))


def example_input(input_format: str, batch: int, height: int, width: int) -> torch.Tensor:
    """A tracing example of the right dtype and shape (values do not matter for a static trace)."""
    if input_format == "uint8":
        return torch.full((batch, 3, height, width), 128, dtype=torch.uint8)
    return torch.full((batch, 3, height, width), 0.5)


def format_input(rgb01: np.ndarray, input_format: str, normalization: Normalization) -> np.ndarray:
    """NCHW RGB in [0, 1] → the array a model of ``input_format`` takes (``pixels``: a Core ML image
    input's RGB 0..255, as uint8)."""
    if input_format in ("uint8", "pixels"):
        return np.round(rgb01 * 255).astype(np.uint8)
    if input_format == "normalized":
        return normalization.apply(torch.from_numpy(np.ascontiguousarray(rgb01))).numpy()
    return rgb01


def build_reference(recipe, weights=None) -> nn.Module:
    """The zoo model of ``recipe`` (a `Recipe`) with ``weights`` (seeded random init when None), wrapped
    with the recipe's preprocessing: the reference every export of it is compared with."""
    from mobileseg import zoo

    torch.manual_seed(recipe.seed)
    model = zoo.build(recipe.model, weights)
    return WithPreprocessing(model, recipe.normalization, recipe.input_format).eval()
