"""TFLite interpreters for ``.tflite`` artifacts: LiteRT (``ai-edge-litert``) and ``tflite-runtime``,
each with the default XNNPACK delegate and without it (the reference built-in kernels).

Runners keep the project's NCHW contract: they transpose NCHW inputs to the model's layout (NHWC by
default) and NHWC outputs back, as the artifact's ``io`` entry records, and they quantise float inputs /
dequantise outputs of integer-I/O models with the tensors' own scale and zero point.

``tflite-runtime`` 2.14 is the runtime of many deployed apps; its XNNPACK delegate returns NaN for a
PReLU with one shared slope. Parity runs every runner so that such a runtime bug shows as a failure of
that runner, not of the model.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mobileseg.errors import ArtifactError, ExportError
from mobileseg.quiet import captured_output
from mobileseg.runtimes.base import Runtime, Session, SessionInfo


def to_model_layout(array: np.ndarray, layout: str) -> np.ndarray:
    """Channel-first → the model's layout: "NHWC" (4-D) or "channels_last" (3-D and 4-D); else unchanged."""
    if (layout == "NHWC" and array.ndim == 4) or (layout == "channels_last" and array.ndim in (3, 4)):
        return np.ascontiguousarray(np.moveaxis(array, 1, -1))
    return array


def to_nchw(array: np.ndarray, layout: str) -> np.ndarray:
    """The model's layout → channel-first (the inverse of ``to_model_layout``)."""
    if (layout == "NHWC" and array.ndim == 4) or (layout == "channels_last" and array.ndim in (3, 4)):
        return np.ascontiguousarray(np.moveaxis(array, -1, 1))
    return array


def layout_of(shape, nchw: tuple[int, ...]) -> str:
    """"NHWC" or "NCHW": the layout of a 4-D tensor of ``shape`` that holds the NCHW tensor ``nchw``
    (NCHW where both read the same)."""
    n, c, h, w = nchw
    if list(shape) == [n, h, w, c] and list(shape) != [n, c, h, w]:
        return "NHWC"
    if list(shape) == [n, c, h, w]:
        return "NCHW"
    raise ExportError(f"tflite output shape {list(shape)} is neither NCHW {list(nchw)} nor NHWC")


def quantize(array: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    dtype = detail["dtype"]
    if np.issubdtype(np.asarray(array).dtype, np.integer) and np.asarray(array).dtype == dtype:
        return array
    if not scale:  # an integer input without quantisation (e.g. uint8 pixels): pass the values through
        return np.asarray(array).astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(np.asarray(array, dtype=np.float32) / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize(array: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.issubdtype(array.dtype, np.integer) and scale:
        return ((array.astype(np.float32) - zero_point) * scale).astype(np.float32)
    return array


class TfliteSession(Session):
    def __init__(self, runtime: TfliteRuntime, path: Path, threads: int | None, io: dict | None):
        module = importlib.import_module(runtime.module)
        kwargs = {"model_path": str(path), "num_threads": threads or None}
        if not runtime.xnnpack:
            kwargs["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        start = time.perf_counter()
        try:
            with captured_output(os.devnull):  # "INFO: Created TensorFlow Lite XNNPACK delegate" per session
                self.interpreter = module.Interpreter(**kwargs)
                self.interpreter.allocate_tensors()
        except Exception as exc:
            raise ArtifactError(f"{runtime.name} cannot load {path}: {str(exc).strip().splitlines()[0]}") from exc
        load_seconds = time.perf_counter() - start
        self.inputs = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()
        io = io or {}
        if "tensors" in io:  # several named inputs/outputs, each with its own layout (a VOS subgraph)
            self.input_names, self.input_layouts = self._bind(self.inputs, io["tensors"]["inputs"], path)
            self.output_names, self.output_layouts = self._bind(self.outputs, io["tensors"]["outputs"], path)
        else:  # one image in, one logits tensor out
            self.input_names = [io.get("input", {}).get("name", d["name"]) for d in self.inputs]
            self.output_names = [io.get("output", {}).get("name", d["name"]) for d in self.outputs]
            self.input_layouts = [io.get("input", {}).get("layout", "NCHW")] * len(self.inputs)
            self.output_layouts = [io.get("output", {}).get("layout", "NCHW")] * len(self.outputs)
        self.info = SessionInfo(
            runtime.name, f"{runtime.package} {runtime.version()}", str(path), load_seconds, threads,
            {"xnnpack": runtime.xnnpack, "input_dtype": np.dtype(self.inputs[0]["dtype"]).name},
        )  # fmt: skip

    @staticmethod
    def _bind(details: list[dict], named: dict[str, dict], path: Path) -> tuple[list[str], list[str]]:
        """Graph names and layouts in the order of the interpreter's tensors, from ``{name: {tensor, layout}}``."""
        by_tensor = {spec["tensor"]: (name, spec["layout"]) for name, spec in named.items()}
        missing = [d["name"] for d in details if d["name"] not in by_tensor]
        if missing:
            raise ArtifactError(f"{path}: the manifest names no graph tensor for {', '.join(missing)}; re-export")
        pairs = [by_tensor[d["name"]] for d in details]
        return [n for n, _ in pairs], [layout for _, layout in pairs]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, layout, detail in zip(self.input_names, self.input_layouts, self.inputs):
            array = to_model_layout(np.asarray(inputs[name]), layout)
            if np.issubdtype(np.dtype(detail["dtype"]), np.integer):
                array = quantize(array, detail)
            else:
                array = array.astype(detail["dtype"], copy=False)
            self.interpreter.set_tensor(detail["index"], np.ascontiguousarray(array))
        self.interpreter.invoke()
        return {
            name: to_nchw(dequantize(self.interpreter.get_tensor(detail["index"]), detail), layout)
            for name, layout, detail in zip(self.output_names, self.output_layouts, self.outputs)
        }


class TfliteRuntime(Runtime):
    target = "tflite"

    def __init__(self, name: str, package: str, module: str, xnnpack: bool):
        self.name = name
        self.package = package.replace("-", "_")
        self.distribution = package
        self.module = module
        self.xnnpack = xnnpack

    def version(self) -> str:
        from importlib import metadata

        try:
            return metadata.version(self.distribution)
        except metadata.PackageNotFoundError:
            return "?"

    def unavailable_reason(self) -> str | None:
        reason = super().unavailable_reason()
        if reason:
            return reason
        if self.package == "tflite_runtime" and int(np.__version__.split(".")[0]) >= 2:
            return "tflite-runtime 2.14 was built against NumPy 1.x and cannot run with NumPy 2"
        return None

    def load(self, path: Path, threads: int | None = 1, io: dict | None = None) -> Session:
        self.require()
        return TfliteSession(self, Path(path), threads, io)


TFLITE_RUNTIMES = (
    TfliteRuntime("litert", "ai-edge-litert", "ai_edge_litert.interpreter", xnnpack=True),
    TfliteRuntime("litert-noxnn", "ai-edge-litert", "ai_edge_litert.interpreter", xnnpack=False),
    TfliteRuntime("tflite-runtime", "tflite-runtime", "tflite_runtime.interpreter", xnnpack=True),
    TfliteRuntime("tflite-runtime-noxnn", "tflite-runtime", "tflite_runtime.interpreter", xnnpack=False),
)


# ---- binding a file's tensors to a graph's names (files written by onnx2tf, or by another tool) -----------


def _layouts(array: np.ndarray) -> tuple[str, ...]:
    """The TFLite runner's layouts a tensor of this rank can be in (``channels_last`` moves axis 1 last)."""
    return ("channels_last", "as_is") if array.ndim in (3, 4) else ("as_is",)


def bind_tensors(path: Path, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray], name: str) -> dict:
    """Map the TFLite file's tensors to the graph's named inputs and outputs, with real NCHW ``inputs`` and
    the reference ``outputs`` they give (onnx2tf moves the channel axis last, but not always, and names
    outputs ``Identity_N``). Inputs match by name, or by position when the file's names are another tool's.

    An input whose channel-last shape equals its own shape (a square ``[1, 64, 64]``) cannot be told by
    shape: each reading is tried on the real tensors and the one that reproduces the reference is kept.
    """
    import itertools

    from ai_edge_litert.interpreter import Interpreter

    with captured_output(os.devnull):
        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
    choices = {}
    details = interpreter.get_input_details()
    for position, detail in enumerate(details):
        key = detail["name"].removeprefix("serving_default_").split(":")[0]
        if key not in inputs and len(details) == len(inputs):
            key = list(inputs)[position]
        if key not in inputs:
            raise ExportError(f"{name}: tflite input {detail['name']} matches no graph input ({', '.join(inputs)})")
        value = inputs[key]
        fits = [layout for layout in _layouts(value) if list(to_model_layout(value, layout).shape) == list(detail["shape"])]
        if not fits:
            raise ExportError(f"{name}: tflite input {key} has shape {list(detail['shape'])}, not a layout of {list(value.shape)}")
        choices[key] = (detail, fits)
    best = None
    for layouts in itertools.product(*(fits for _, fits in choices.values())):
        for (key, (detail, _)), layout in zip(choices.items(), layouts):
            interpreter.set_tensor(detail["index"], np.ascontiguousarray(to_model_layout(inputs[key], layout), dtype=np.float32))
        interpreter.invoke()
        matched, total = _match_outputs(interpreter, outputs, name)
        if best is None or total < best[0]:
            best = (total, dict(zip(choices, layouts)), matched)
    _, input_layouts, matched = best
    return {
        "inputs": {key: {"tensor": choices[key][0]["name"], "layout": input_layouts[key]} for key in choices},
        "outputs": matched,
    }


def _match_outputs(interpreter, outputs: dict[str, np.ndarray], name: str) -> tuple[dict, float]:
    """Each output tensor → (graph output, layout) by shape and least relative error; and the summed error."""
    record, total = {}, 0.0
    for detail in interpreter.get_output_details():
        produced = interpreter.get_tensor(detail["index"])
        candidates = []
        for key, expected in outputs.items():
            for layout in _layouts(produced):
                value = to_nchw(produced, layout)
                if value.shape == expected.shape and key not in record:
                    error = float(np.abs(value - expected).max() / max(float(np.abs(expected).max()), 1e-12))
                    candidates.append((error, key, layout))
        if not candidates:
            raise ExportError(f"{name}: tflite output {detail['name']} {list(detail['shape'])} matches no graph output")
        error, key, layout = min(candidates)
        record[key] = {"tensor": detail["name"], "layout": layout}
        total += error
    missing = [k for k in outputs if k not in record]
    if missing:
        raise ExportError(f"{name}: tflite file has no output for {', '.join(missing)}")
    return record, total
