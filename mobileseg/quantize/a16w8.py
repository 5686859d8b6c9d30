"""What TFLite's 16×8 kernels (int16 activations, int8 weights) need from a graph, beyond the int8 rewrites.

* No PRELU kernel: onnx2tf writes PReLUs in elementary ops (targets/tflite.py, ``A16W8_PSEUDO_OPERATORS``).
* The int16 AVERAGE_POOL_2D sums its window in 32 bits: over more than 2^16 pixels of large values the sum
  overflows. SINet-Cityscapes' first squeeze-excite pools 256×512 = 131,072 pixels at 1024×2048; its
  pooled values came out wrong by more than their own size and the file agreed with float on 13 % of the
  labels. `split_wide_average_pools` writes such a pool as two (2×2 windows first, then the rest): the
  mean of equal blocks' means, the same value in float.
"""

from __future__ import annotations

from pathlib import Path

WIDEST_INT16_POOL = 1 << 15  # pixels one int16 average may sum (32-bit sum of values up to 2^15: 2^30)


def split_wide_average_pools(onnx_path: Path, widest: int = WIDEST_INT16_POOL) -> int:
    """Rewrite, in place, each non-overlapping, unpadded ``AveragePool`` of an ONNX file whose window holds
    more than ``widest`` pixels as a pool of ``f``×``f`` windows followed by the pool of the rest (``f`` the
    smallest power of two that divides the window and brings both under ``widest``). Returns how many."""
    import onnx
    from onnx import helper

    model = onnx.load(str(onnx_path))
    nodes, rewritten = [], 0
    for node in model.graph.node:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        kernel = list(attributes.get("kernel_shape", []))
        strides = list(attributes.get("strides", kernel))
        split = _split(kernel, widest) if node.op_type == "AveragePool" and len(kernel) == 2 else None
        if split is None or strides != kernel or any(attributes.get("pads", [0])) or attributes.get("ceil_mode", 0):
            nodes.append(node)
            continue
        first, rest = split
        middle = f"{node.output[0]}_blocks"
        nodes.append(helper.make_node("AveragePool", [node.input[0]], [middle], name=f"{node.name}_blocks", kernel_shape=first, strides=first))
        nodes.append(helper.make_node("AveragePool", [middle], list(node.output), name=node.name, kernel_shape=rest, strides=rest))
        rewritten += 1
    if rewritten:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        onnx.checker.check_model(model)
        onnx.save(model, str(onnx_path))
    return rewritten


def _split(kernel: list[int], widest: int) -> tuple[list[int], list[int]] | None:
    height, width = kernel
    if height * width <= widest:
        return None
    factor = 2
    while height % factor == 0 and width % factor == 0 and factor * factor <= widest:
        if (height // factor) * (width // factor) <= widest:
            return [factor, factor], [height // factor, width // factor]
        factor *= 2
    return None
