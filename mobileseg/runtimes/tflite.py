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
