"""The network as it is exported with symbolic height and width, for onnx2tf (see export/tflite.py).

onnx2tf converts a channel shuffle written as reshape – transpose – reshape wrongly when the height and
width are symbolic: it computes the 5-D shape from the NHWC tensor as if it were NCHW ("Dimension size
must be evenly divisible by 9216 but is 6144" at SINet's first S2 module, at every input size). A channel
shuffle is a fixed permutation of the channels, so here it becomes a gather along the channel axis, which
names no spatial size and which onnx2tf maps onto the channel axis whatever the layout. The rewrite is
exact (the same values in the same places) and is checked with ``torch.equal``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from mobileseg.zoo.blocks import ChannelShuffle


class ChannelGather(nn.Module):
    """A fixed permutation of the channels: ``x[:, order]`` on (N, C, H, W)."""

    def __init__(self, order: torch.Tensor):
        super().__init__()
        self.register_buffer("order", order.clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.order)


def shuffle_order(channels: int, groups: int) -> torch.Tensor:
    """The source channel of each output channel of `ChannelShuffle` (g groups of c = channels / g)."""
    return torch.arange(channels).view(groups, channels // groups).t().reshape(-1)


def for_symbolic_shapes(module: nn.Module, example: torch.Tensor) -> nn.Module:
    """A copy of ``module`` whose channel shuffles are channel gathers (their channel counts read on
    ``example``); ``module`` itself when it has none."""
    channels: dict[str, int] = {}
    hooks = [
        shuffle.register_forward_hook(lambda _m, _i, out, name=name: channels.__setitem__(name, out.shape[1]))
        for name, shuffle in module.named_modules() if isinstance(shuffle, ChannelShuffle)
    ]  # fmt: skip
    if not hooks:
        return module
    try:
        with torch.no_grad():
            expected = module(example)
    finally:
        for hook in hooks:
            hook.remove()
    rewritten = copy.deepcopy(module)
    for name, count in channels.items():
        parent_name, _, leaf = name.rpartition(".")
        parent = rewritten.get_submodule(parent_name)
        setattr(parent, leaf, ChannelGather(shuffle_order(count, getattr(parent, leaf).groups)))
    with torch.no_grad():
        if not torch.equal(rewritten(example), expected):
            raise RuntimeError("the channel shuffles rewritten as gathers changed the output")
    return rewritten.eval()
