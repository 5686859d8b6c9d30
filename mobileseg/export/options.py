"""Each export target's options, typed and validated before anything heavy loads (no PyTorch, no
converter is imported here): recipes and CLI flags become these, and the exporters take them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from mobileseg.errors import ExportError
from mobileseg.zoo import UNPOOLING_FORMS  # imports no PyTorch

# ---- ONNX (export/onnx.py) --------------------------------------------------------------------------------

DEFAULT_OPSET = 17
OPSET_RANGE = (11, 21)
ONNX_EXPORTERS = ("torchscript", "dynamo")


@dataclass(frozen=True)
class OnnxOptions:
    opset: int = DEFAULT_OPSET
    exporter: str = "torchscript"  # or "dynamo"
    simplify: bool = True
    unpooling: str = "native"  # max-unpooling as ONNX MaxUnpool, or "portable": the builtin-only lowering
    # set by the pipeline (the recipe's input section, the graph's names), not recipe keys of the target
    dynamic_batch: bool = field(default=False, metadata={"recipe": False})
    dynamic_spatial: bool = field(default=False, metadata={"recipe": False})  # symbolic height and width
    input_name: str = field(default="image", metadata={"recipe": False})
    output_name: str = field(default="logits", metadata={"recipe": False})

    def validate(self) -> None:
        if not OPSET_RANGE[0] <= self.opset <= OPSET_RANGE[1]:
            raise ExportError(f"ONNX opset {self.opset} is not supported; choose {OPSET_RANGE[0]}..{OPSET_RANGE[1]}")
        if self.exporter not in ONNX_EXPORTERS:
            raise ExportError(f"unknown ONNX exporter {self.exporter!r}; choose {' or '.join(ONNX_EXPORTERS)}")
        if self.unpooling not in UNPOOLING_FORMS:
            raise ExportError(f"unknown ONNX unpooling {self.unpooling!r}; choose {' or '.join(UNPOOLING_FORMS)}")

    def to_dict(self) -> dict:
        return asdict(self)


# ---- Core ML (export/coreml.py) ---------------------------------------------------------------------------

COREML_PRECISIONS = ("fp16", "fp32")
INPUT_TYPES = ("tensor", "image")
SOURCES = ("trace", "export")
DEPLOYMENT_TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18", "macOS12", "macOS13", "macOS14", "macOS15")


@dataclass(frozen=True)
class CoreMLOptions:
    precisions: tuple[str, ...] = COREML_PRECISIONS
    input_type: str = "tensor"
    minimum_deployment_target: str = "iOS16"
    source: str = "trace"
    float_fallback: bool = True  # fp16: keep in fp32 the ops fp16 arithmetic wrecks (quantize/coreml_fallback.py)

    def validate(self, input_format: str) -> None:
        bad = [p for p in self.precisions if p not in COREML_PRECISIONS]
        if bad:
            raise ExportError(f"coreml has no precision {', '.join(bad)}; choose from {', '.join(COREML_PRECISIONS)}")
        if self.input_type not in INPUT_TYPES:
            raise ExportError(f"coreml input type {self.input_type!r} is not one of {', '.join(INPUT_TYPES)}")
        if self.minimum_deployment_target not in DEPLOYMENT_TARGETS:
            raise ExportError(
                f"coreml deployment target {self.minimum_deployment_target!r} is not one of {', '.join(DEPLOYMENT_TARGETS)} "
                "(ML programs need iOS15/macOS12 or later)"
            )
        if self.source not in SOURCES:
            raise ExportError(f"coreml source {self.source!r} is not one of {', '.join(SOURCES)}")
        if self.input_type == "image" and input_format == "normalized":
            raise ExportError("a coreml image input carries pixels; it needs input format rgb01 or uint8, not normalized")
        if self.input_type == "tensor" and input_format == "uint8":
            raise ExportError("Core ML tensor inputs cannot be uint8; use --coreml-input image or input format rgb01")

    def to_dict(self) -> dict:
        return {**asdict(self), "precisions": list(self.precisions)}


# ---- TFLite (export/tflite.py) ----------------------------------------------------------------------------

TFLITE_PRECISIONS = ("fp32", "fp16", "dynamic", "int8", "a16w8")
RANGE_METHODS = ("minmax", "mse")


@dataclass(frozen=True)
class TfliteOptions:
    precisions: tuple[str, ...] = TFLITE_PRECISIONS
    keep_nchw: bool = False  # NCHW input (and whatever output layout onnx2tf gives) instead of NHWC
    int8_io: bool = False  # int8 models take and return int8 tensors (else float32 I/O around int8 kernels)
    calibration_samples: int = 16
    activation_ranges: str = "minmax"  # int8 activation ranges: "minmax" (observed) or "mse" (see tflite._mse_ranges)
    float_fallback: bool = True  # fp16 / dynamic: float32 weights where quantised ones wreck the result
    bias_correction: bool = True  # int8: take each convolution's mean output shift out of its bias (quantize/bias.py)
    channel_equalization: float = 0.75  # int8: strength of the channel-range equalisation (quantize/int8.py); 0 = off

    def validate(self, input_format: str) -> None:
        bad = [p for p in self.precisions if p not in TFLITE_PRECISIONS]
        if bad:
            raise ExportError(f"tflite has no precision {', '.join(bad)}; choose from {', '.join(TFLITE_PRECISIONS)}")
        if self.int8_io and input_format == "uint8":
            raise ExportError("--int8-io needs a float input format (rgb01 or normalized); uint8 input is already integer")
        if not 1 <= self.calibration_samples <= 10_000:
            raise ExportError(f"tflite calibration_samples must be between 1 and 10000, not {self.calibration_samples}")
        if not 0.0 <= self.channel_equalization <= 1.0:
            raise ExportError(f"tflite channel_equalization must be between 0 (off) and 1, not {self.channel_equalization}")
        if self.activation_ranges not in RANGE_METHODS:
            raise ExportError(
                f"unknown int8 activation range method {self.activation_ranges!r}; choose {' or '.join(RANGE_METHODS)}"
            )

    def to_dict(self) -> dict:
        return {**asdict(self), "precisions": list(self.precisions)}
