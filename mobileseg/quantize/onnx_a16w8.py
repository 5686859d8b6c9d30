"""a16w8 ONNX: QDQ with 16-bit activations and per-channel 8-bit weights (onnxruntime's static quantiser),
the form QNN-style NPUs take. On a CPU onnxruntime runs it as float kernels between Quantize/Dequantize
pairs: the file computes what an a16w8 device computes, not at integer speed.

Convolutions whose weights per-channel int8 wrecks stay float (`local_weight_errors`): their output error
with int8 weights, run alone on the float model's exact inputs, measured against the spread of that
output's values (not its peak: in C3Net a depthwise conv carries a signal of ~0.01 on a constant of ~16,
which the next conv and BN amplify ~600×).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

# Local error (RMS of the int8-weight error / RMS of the output around its per-channel mean) above which a
# convolution keeps float weights
FLOAT_WEIGHT_LIMIT = 0.02


def _int8_per_channel(weight: np.ndarray) -> np.ndarray:
    """``weight`` (O, I, kH, kW) through symmetric per-output-channel int8 and back."""
    peak = np.abs(weight).reshape(weight.shape[0], -1).max(axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).reshape(-1, *([1] * (weight.ndim - 1)))
    return np.clip(np.round(weight / scale), -127, 127) * scale


def local_weight_errors(onnx_path: Path, samples: np.ndarray, input_name: str) -> dict[str, float]:
    """Per Conv node name, its local error with per-channel int8 weights on ``samples`` (see module notes)."""
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import numpy_helper
    from torch.nn import functional as F

    model = onnx.load(str(onnx_path))
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.input[1] in constants]
    existing = {o.name for o in model.graph.output}
    for node in convs:
        if node.input[0] not in existing:
            model.graph.output.append(onnx.ValueInfoProto(name=node.input[0]))
            existing.add(node.input[0])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    errors: dict[str, list[float]] = {node.name: [] for node in convs}
    for sample in samples:
        values = dict(zip(names, session.run(None, {input_name: sample[None]})))
        for node in convs:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            x = torch.from_numpy(values[node.input[0]])
            x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
            weight = constants[node.input[1]].copy()
            bias = torch.from_numpy(constants[node.input[2]].copy()) if len(node.input) > 2 and node.input[2] else None
            args = dict(stride=tuple(attrs.get("strides", [1, 1])), dilation=tuple(attrs.get("dilations", [1, 1])), groups=int(attrs.get("group", 1)))
            exact = F.conv2d(x, torch.from_numpy(weight), bias, **args)
            rounded = F.conv2d(x, torch.from_numpy(_int8_per_channel(weight).astype(np.float32)), bias, **args)
            spread = exact - exact.mean(dim=(0, 2, 3), keepdim=True)
            errors[node.name].append(float(torch.sqrt(((rounded - exact) ** 2).mean()) / (torch.sqrt((spread**2).mean()) + 1e-30)))
    return {name: max(values) for name, values in errors.items() if values}


class _Pictures:
    """onnxruntime's `CalibrationDataReader` over NCHW pictures."""

    def __init__(self, samples: np.ndarray, input_name: str):
        self.feeds = iter([{input_name: np.ascontiguousarray(s[None])} for s in samples])

    def get_next(self):
        return next(self.feeds, None)


def quantize_a16w8(
    float_onnx: Path, target: Path, calibration: np.ndarray, input_name: str = "image", fallback_samples: int = 2,
    limit: float = FLOAT_WEIGHT_LIMIT,
) -> dict:  # fmt: skip
    """Write ``target``: ``float_onnx`` as QDQ a16w8 (uint16 activations with min/max ranges on ``calibration``,
    NCHW model inputs; symmetric per-channel int8 weights), the convolutions over ``limit`` kept float.
    Returns the manifest's record."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    errors = local_weight_errors(float_onnx, calibration[:fallback_samples], input_name)
    kept = sorted((name for name, error in errors.items() if error > limit), key=lambda n: -errors[n])
    quiet = logging.getLogger()
    level, quiet.level = quiet.level, logging.ERROR  # its per-tensor warnings (rank-1 BN weights, pre-processing advice)
    try:
        quantize_static(
            str(float_onnx), str(target), _Pictures(calibration, input_name), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt16, weight_type=QuantType.QInt8,
            nodes_to_exclude=kept, calibrate_method=CalibrationMethod.MinMax,
            extra_options={"UseQDQContribOps": True},
        )  # fmt: skip
    finally:
        quiet.level = level
    worst = sorted(errors.items(), key=lambda item: -item[1])[:5]
    return {
        "activations": "uint16 per tensor (min/max)", "weights": "int8 per channel (symmetric)",
        "calibration_samples": int(len(calibration)),
        "float_weights": {"limit": limit, "nodes": kept, "local_errors": {n: round(errors[n], 4) for n in kept}},
        "worst_local_errors": {name: round(error, 4) for name, error in worst},
    }
