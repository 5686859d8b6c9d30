"""Rewrites that make a network's graph quantise well to int8 TFLite while computing the same function.

Full-integer TFLite keeps one scale per activation tensor and per constant of an element-wise op; per-channel
scales exist only for convolution weights. Five places in the zoo networks lose precision to that:

* channels that died in training are constant in float, but their BN's gain of up to ~1000 amplifies
  int8 rounding noise (`freeze_dead_channels`);
* the BN after each S2/C3 merge sees branches whose ranges differ up to ~100× (`fold_merge_batchnorms`);
* inside a block, the channels of one tensor span ranges up to ~10× apart (`equalize_channel_ranges`);
* a concatenation joins inputs whose ranges differ ~100×: a pyramid image beside features, encoder features
  beside upsampled decoder logits (`balance_concatenations`);
* a BN that follows no convolution (after a concatenation, a residual sum or an upsampling) becomes a
  MUL and an ADD whose per-channel constants share one int8 scale (`batchnorms_as_depthwise_convs`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobileseg.runtimes.torch_runtime import torch_threads
from mobileseg.quantize.rewrites import (
    balance_concatenations, equalize_channel_ranges, fold_merge_batchnorms, freeze_dead_channels,
)  # fmt: skip


# a16w8 files (TFLite 16×8, ONNX QDQ) convert the int8-rewritten network without channel equalisation: with
# 16-bit activations the ranges it narrows matter little, and the weight rescaling it adds cost C3Net label
# agreement (TFLite 16×8 at 256×512, stereo motorcycle: 0.937 at strength 0.75, 0.965 without)
A16W8_CHANNEL_EQUALIZATION = 0.0


def int8_module(reference: nn.Module, calibration: np.ndarray, equalization: float) -> tuple[nn.Module, dict]:
    """A copy of ``reference`` with merge BNs folded, dead channels frozen, channel ranges equalised with
    strength ``equalization`` (0: not) and concatenation inputs balanced, measured on ``calibration``
    ((N, 3, H, W) inputs of ``reference``); and a record of what was rewritten.

    The calibration passes run on one PyTorch thread: the sums inside a convolution are ordered by the
    thread count, the statistics then differ in their last bits, and int8 rounding turns that into a
    different file (SINet's labels moved by 0.3 points, the Cityscapes networks' by up to 1.5). With one
    thread the file depends on the recipe, not on the host's cores.
    """
    module, folded = fold_merge_batchnorms(reference)
    samples = torch.from_numpy(np.ascontiguousarray(calibration))
    with torch_threads(1):
        frozen = freeze_dead_channels(module, samples)
        equalized = equalize_channel_ranges(module, samples, equalization) if equalization > 0 else 0
        gains = balance_concatenations(module, samples)
    return module, {
        "merge_batchnorms_folded": folded, "dead_channels_frozen": frozen,
        "channels_equalized": {"tensors": equalized, "strength": equalization},
        "concat_gains": [round(g, 2) for g in gains],
    }  # fmt: skip


def batchnorms_as_depthwise_convs(onnx_path: Path) -> int:
    """Rewrite, in place, each ``BatchNormalization`` of an ONNX file as a depthwise 1×1 ``Conv`` with bias.

    The exporter already fused every BN that follows a convolution, so those left follow something else.
    As a convolution each gets per-channel int8 weights and an int32 bias. Returns how many were rewritten.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    constants = {tensor.name: tensor for tensor in graph.initializer}
    nodes, rewritten = [], 0
    for node in graph.node:
        if node.op_type != "BatchNormalization" or not all(name in constants for name in node.input[1:5]):
            nodes.append(node)
            continue
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        weight, bias, mean, var = (numpy_helper.to_array(constants[name]).astype(np.float64) for name in node.input[1:5])
        scale = weight / np.sqrt(var + eps)
        channels = scale.size
        weight_name, bias_name = f"{node.output[0]}_depthwise_weight", f"{node.output[0]}_depthwise_bias"
        graph.initializer.append(numpy_helper.from_array(scale.reshape(channels, 1, 1, 1).astype(np.float32), weight_name))
        graph.initializer.append(numpy_helper.from_array((bias - mean * scale).astype(np.float32), bias_name))
        nodes.append(helper.make_node(
            "Conv", [node.input[0], weight_name, bias_name], [node.output[0]],
            name=f"{node.name or node.output[0]}_depthwise", group=channels, kernel_shape=[1, 1],
        ))  # fmt: skip
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
        used = {name for node in graph.node for name in node.input}
        kept = [tensor for tensor in graph.initializer if tensor.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept)
        onnx.checker.check_model(model)
        onnx.save(model, str(onnx_path))
    return rewritten
