"""Exact graph rewrites: the same function with fewer layout and elementwise ops, found by block type.

Each rewrite changes a copy of the network in place and returns how many places it changed. The results
differ from the plain network only by float rounding (a sum in another order); the export proves them on
real photos with the lean graph (`export.lean`), and records them with the op counts before and after.

* ``channel_shuffles``: an S2 module's shuffle (reshape – transpose – reshape; in TFLite a GATHER or five
  layout ops) becomes the channel order of the per-channel ops of the branches that read it.
* ``squeeze_excite_as_convolutions``: the SE's linear layers as 1×1 convolutions on the (N, C, 1, 1)
  pooled tensor, so the graph stays 4-D and needs no flatten or reshape around its PReLUs.
* ``factorized_depthwise_merged``: an S2+ block's parallel k×1 and 1×k depthwise convs and their batch
  norms as one k×k depthwise conv with a cross-shaped kernel.
* ``merge_batchnorms``: the batch norm after a non-residual module's concatenation folded into the last
  linear op of each branch.
* ``two_class_confidence``: ``1 − max softmax`` over two classes (SINet's information blocking) as
  ``sigmoid(−|x₀ − x₁|)``: no softmax and no channel reduction.
* ``batchnorms_before_upsampling``: a batch norm after a bilinear upsampling moved before it (interpolation
  weights sum to one, so a per-channel affine commutes with it): it scales 4× fewer values, and where a
  convolution comes first (an S2 block's pointwise conv, SINet's classifier) the exporter folds it away.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from mobileseg.quantize.rewrites import _OneLevel, batchnorm_affine, fold_merge_batchnorm
from mobileseg.zoo.blocks import ChannelShuffle, MergeModule, S2Block, S2Module, SqueezeExcite

Rewrite = Callable[[nn.Module], int]

# Ops that only move values between layouts (ONNX, TFLite and MIL spellings, compared in lower case). The goal
# for every zoo file is none the network itself does not need.
LAYOUT_OPS = frozenset({"transpose", "reshape", "gather", "flatten", "squeeze", "unsqueeze", "expand_dims"})


def layout_ops(op_counts: dict[str, int]) -> int:
    """How many of a file's ops (op type → count, as its manifest entry's ``ops``) are layout ops."""
    return sum(count for op, count in op_counts.items() if op.lower() in LAYOUT_OPS)


def count_layout_ops(entries: list[dict]) -> None:
    """Add ``layout_ops`` to every manifest entry that lists its ``ops``."""
    for entry in entries:
        if "ops" in entry:
            entry["layout_ops"] = layout_ops(entry["ops"])


@torch.no_grad()
def fold_channel_shuffles(network: nn.Module) -> int:
    """Drop every S2 module's channel shuffle and permute its branches' input channels instead."""
    count = 0
    for module in network.modules():
        if not (isinstance(module, S2Module) and isinstance(module.shuffle, ChannelShuffle)):
            continue
        groups, width = module.shuffle.groups, module.reduce.out_channels
        # shuffled channel c is the reduce conv's channel order[c]
        order = torch.arange(width).view(groups, width // groups).t().reshape(-1)
        for branch in module.branches:
            _read_channels_in_order(branch, order)
        module.shuffle = nn.Identity()
        count += 1
    return count


def _read_channels_in_order(block: S2Block, order: torch.Tensor) -> None:
    """Make ``block`` compute on ``x`` what it computed on ``x[:, order]``: every op before its pointwise
    conv is per channel, so its channel c moves to ``order[c]``, and the pointwise conv's columns with it."""
    inverse = torch.argsort(order)
    per_channel = [block.dw_v, block.dw_v_bn, block.dw_h, block.dw_h_bn] if block.factorized else [block.dw, block.dw_bn]
    if block.act.num_parameters > 1:
        per_channel.append(block.act)
    for op in per_channel:
        for tensor in [*op.parameters(recurse=False), *op.buffers(recurse=False)]:
            if tensor.dim() > 0 and tensor.shape[0] == order.numel():
                tensor.copy_(tensor[inverse])
    block.pw.weight.copy_(block.pw.weight[:, inverse])


class ConvSqueezeExcite(nn.Module):
    """`SqueezeExcite` with its linear layers as 1×1 convolutions: every tensor stays (N, C, 1, 1)."""

    def __init__(self, se: SqueezeExcite):
        super().__init__()
        self.fc1, self.act1 = _as_conv(se.fc1), se.act1
        self.fc2 = _as_conv(se.fc2) if se.fc2 is not None else None
        self.act2 = se.act2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.act1(self.fc1(F.avg_pool2d(x, kernel_size=(int(x.shape[2]), int(x.shape[3])))))
        if self.fc2 is not None:
            scale = self.act2(self.fc2(scale))
        return x * scale


def _as_conv(linear: nn.Linear) -> nn.Conv2d:
    conv = nn.Conv2d(linear.in_features, linear.out_features, 1, bias=linear.bias is not None)
    conv.weight.data.copy_(linear.weight.detach()[:, :, None, None])
    if linear.bias is not None:
        conv.bias.data.copy_(linear.bias.detach())
    return conv


def squeeze_excite_as_convolutions(network: nn.Module) -> int:
    """Replace every `SqueezeExcite` by a `ConvSqueezeExcite`."""
    count = 0
    for parent in list(network.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SqueezeExcite):
                setattr(parent, name, ConvSqueezeExcite(child))
                count += 1
    return count


@torch.no_grad()
def merge_factorized_depthwise(network: nn.Module) -> int:
    """Make every factorized S2 block's two parallel depthwise convs (k×1 and 1×k, each with its BN, summed)
    one k×k depthwise conv with bias whose kernel is the cross of both: one op instead of four (onnx2tf
    also loses the tensor layout at a PReLU that reads a sum, and writes ~5 TRANSPOSEs around each).
    It costs k² instead of 2k multiply-adds per value on those convolutions."""
    count = 0
    for block in network.modules():
        if not (isinstance(block, S2Block) and block.factorized):
            continue
        (scale_v, shift_v), (scale_h, shift_h) = batchnorm_affine(block.dw_v_bn), batchnorm_affine(block.dw_h_bn)
        channels, kernel = block.dw_v.out_channels, block.dw_v.kernel_size[0]
        middle = kernel // 2
        conv = nn.Conv2d(channels, channels, kernel, padding=middle, groups=channels, bias=True)
        weight = torch.zeros_like(conv.weight)
        weight[:, :, :, middle] += block.dw_v.weight[:, :, :, 0] * scale_v.view(-1, 1, 1)
        weight[:, :, middle, :] += block.dw_h.weight[:, :, 0, :] * scale_h.view(-1, 1, 1)
        conv.weight.copy_(weight)
        conv.bias.copy_(shift_v + shift_h)
        block.dw, block.dw_bn, block.factorized = conv, nn.Identity(), False
        del block.dw_v, block.dw_v_bn, block.dw_h, block.dw_h_bn
        count += 1
    return count


def fold_merge_batchnorms(network: nn.Module) -> int:
    """Fold every non-residual merge module's batch norm into its branches (`quantize.rewrites.fold_merge_batchnorm`).
    After a residual sum the fold would scale the residual input with a depthwise conv and put the PReLU
    right after the ADD, where onnx2tf loses the tensor layout (SINet: 27 TRANSPOSEs)."""
    merges = [m for m in network.modules() if isinstance(m, MergeModule) and not m.residual and isinstance(m.out.bn, nn.BatchNorm2d)]
    for merge in merges:
        fold_merge_batchnorm(merge)
    return len(merges)


def _rewrite_forwards(network: nn.Module, rewrite: Callable[[nn.Module, fx.Graph], int]) -> int:
    """Trace each module's forward one level (torch.fx), let ``rewrite`` change the graph in place, and give a
    module whose graph changed that forward (its class becomes a subclass, so type checks still hold).
    Returns the places changed; a module whose forward does not trace (``int(x.shape[2])``) is left as is."""
    changed = 0
    for owner in list(network.modules()):
        if next(owner.children(), None) is None:
            continue  # both rewrites match calls of child modules: a leaf has nothing to rewrite
        try:
            graph = _OneLevel(owner).trace(owner)
        except Exception:  # noqa: BLE001 (not traceable one level, so not rewritten)
            continue
        here = rewrite(owner, graph)
        if here:
            graph.lint()
            forward = type(fx.GraphModule(owner, graph)).forward
            name = type(owner).__name__
            owner.__class__ = type(name if name.startswith("Lean") else f"Lean{name}", (type(owner),), {"forward": forward})
            changed += here
    return changed


def _module(owner: nn.Module, node) -> nn.Module | None:
    return owner.get_submodule(node.target) if isinstance(node, fx.Node) and node.op == "call_module" else None


def batchnorms_before_upsampling(network: nn.Module) -> int:
    """Move every batch norm that reads a bilinear upsampling's output (and is its only reader) before the
    upsampling: 4× fewer values to scale, and after a convolution the exporter folds it into the weights."""

    def rewrite(owner: nn.Module, graph: fx.Graph) -> int:
        moved = 0
        for node in list(graph.nodes):
            if not (isinstance(_module(owner, node), nn.BatchNorm2d) and node.args):
                continue
            upsampled = node.args[0]
            if not (isinstance(upsampled, fx.Node) and upsampled.op == "call_function" and upsampled.target is F.interpolate
                    and upsampled.kwargs.get("mode") == "bilinear" and len(upsampled.users) == 1):  # fmt: skip
                continue
            with graph.inserting_before(upsampled):
                normalised = graph.call_module(node.target, (upsampled.args[0],))
            upsampled.args = (normalised, *upsampled.args[1:])
            node.replace_all_uses_with(upsampled)
            graph.erase_node(node)
            moved += 1
        return moved

    return _rewrite_forwards(network, rewrite)


def two_class_confidence(network: nn.Module) -> int:
    """``1 − max_c softmax(x)`` over two channels as ``sigmoid(−|x₀ − x₁|)`` (the same number: one exponential,
    no softmax and no channel reduction); SINet's information blocking computes it at H/4. The difference
    is a 1×1 convolution with weights (1, −1): exact, and no channel slicing in the graph."""

    def rewrite(owner: nn.Module, graph: fx.Graph) -> int:
        count = 0
        for node in list(graph.nodes):
            if not (node.op == "call_function" and node.target is torch.softmax and node.kwargs.get("dim") == 1
                    and getattr(_module(owner, node.args[0]), "num_features", getattr(_module(owner, node.args[0]), "out_channels", 0)) == 2
                    and len(node.users) == 1):  # fmt: skip
                continue
            (peak,) = node.users
            if not (peak.op == "call_method" and peak.target == "amax" and peak.kwargs == {"dim": 1, "keepdim": True}
                    and len(peak.users) == 1):  # fmt: skip
                continue
            (complement,) = peak.users
            if not (complement.op == "call_function" and complement.target is operator.sub and complement.args == (1, peak)):
                continue
            if not hasattr(owner, "class_difference"):
                owner.register_buffer("class_difference", torch.tensor([1.0, -1.0]).view(1, 2, 1, 1))
            with graph.inserting_before(complement):
                weight = graph.get_attr("class_difference")
                difference = graph.call_function(F.conv2d, (node.args[0], weight))
                blocked = graph.call_function(torch.sigmoid, (graph.call_function(torch.neg, (graph.call_function(torch.abs, (difference,)),)),))
            complement.replace_all_uses_with(blocked)
            for dead in (complement, peak, node):
                graph.erase_node(dead)
            count += 1
        return count

    return _rewrite_forwards(network, rewrite)


# In order: the merge fold writes into the S2 blocks' final batch norms, which the last rewrite then moves.
REWRITES: dict[str, Rewrite] = {
    "channel_shuffles": fold_channel_shuffles,
    "squeeze_excite_as_convolutions": squeeze_excite_as_convolutions,
    "factorized_depthwise_merged": merge_factorized_depthwise,
    "merge_batchnorms": fold_merge_batchnorms,
    "two_class_confidence": two_class_confidence,
    "batchnorms_before_upsampling": batchnorms_before_upsampling,
}


def apply_rewrites(network: nn.Module) -> dict[str, int]:
    """Apply every rewrite to ``network`` in place; returns the places each changed (the ones that did)."""
    counts = {name: rewrite(network) for name, rewrite in REWRITES.items()}
    return {name: count for name, count in counts.items() if count}
