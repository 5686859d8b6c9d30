"""The MIL reference executor: runs a saved Core ML ``.mlpackage`` on Linux, op by op.

Apple's Core ML runtime exists only on macOS. To verify on Linux what the converter actually wrote,
the package's MIL program is loaded back from its protobuf and weight blob
(``coremltools.converters.mil.frontend.milproto.load``) and every operation is executed with the
PyTorch kernels of `mobileseg.runtimes.mil_ops`. Outputs whose MIL dtype is fp16 are rounded to
float16, which emulates an fp16 program's storage precision (arithmetic inside each op is float32).

This checks the converted graph (ops, attributes, weights, fp16 rounding), not Apple's kernels: the
CPU, GPU and Neural Engine may round differently, and only ``MLModel.predict`` on macOS shows that.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

import numpy as np

from mobileseg.errors import ArtifactError, ExportError
from mobileseg.runtimes.base import Runtime, Session, SessionInfo
from mobileseg.runtimes.coreml_support import coreml_input_array, import_coremltools
from mobileseg.runtimes.torch_runtime import torch_threads

NOTE = "MIL reference executor: checks the converted Core ML graph on Linux, not Apple's kernels"


class UnsupportedMilOpError(ExportError):
    """The program contains an op the reference executor has no kernel for."""


def load_program(path: Path):
    """The MIL program of a saved ``.mlpackage`` (weights included), without Apple's runtime."""
    ct = import_coremltools()
    from coremltools.converters.mil.frontend.milproto.load import load as load_milproto

    try:
        model = ct.models.MLModel(str(path), skip_model_load=True)
        spec = model.get_spec()
    except Exception as exc:
        raise ArtifactError(f"cannot read Core ML package {path}: {str(exc).splitlines()[0]}") from exc
    if spec.WhichOneof("Type") != "mlProgram":
        raise ArtifactError(f"{path} is a {spec.WhichOneof('Type')} model; the MIL reference runs ML programs only")
    try:
        program = load_milproto(spec, spec.specificationVersion, model.weights_dir)
    except Exception as exc:  # coremltools' own reader re-validates every op while it rebuilds the program
        raise ArtifactError(f"coremltools cannot read back the MIL program of {path}: {str(exc).splitlines()[0]}") from exc
    return program, spec


def to_fp16(value):
    """``value`` rounded to float16 and back (tensors, float arrays and python floats; anything else as is):
    what a cast to fp16 does to an op's input or output."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(torch.float16).float() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(to_fp16(v) for v in value)
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return value.astype(np.float16).astype(np.float32)
    if isinstance(value, (float, np.floating)):
        return float(np.float16(value))
    return value


Observer = Callable[[object, dict, tuple], None]


def _cannot_run(op, kernel) -> str | None:
    """Why the executor cannot compute ``op`` (no kernel, a mode its kernel lacks, nested blocks), or None."""
    from mobileseg.runtimes.mil_ops import CHECKS

    if op.blocks:
        return "control flow (nested blocks) is not supported"
    if kernel is None:
        return "no kernel for this op type"
    check = CHECKS.get(op.op_type)
    return check(op) if check is not None else None


def _origin(op) -> str:
    """The op's name in the program and, where the converter kept its scopes (an in-memory program; a
    saved package does not keep them), the PyTorch module and op it came from."""
    from coremltools.converters.mil.mil.scope import ScopeSource

    scopes = getattr(op, "scopes", None) or {}
    names = [n for n in scopes.get(ScopeSource.TORCHSCRIPT_MODULE_NAME, []) if n]
    kinds = [k for k in scopes.get(ScopeSource.TORCHSCRIPT_MODULE_TYPE, []) if k]
    if not kinds:
        return op.name
    module = ".".join(names[:-1]) or "the top-level module"
    module_type = f" ({kinds[-2]})" if len(kinds) > 1 else ""
    return f"{op.name}, from torch module {module}{module_type}, op {kinds[-1]}"


def _is_fp16(var) -> bool:
    from coremltools.converters.mil.mil import types

    dtype = getattr(var, "dtype", None)
    return dtype is types.fp16


class MilProgram:
    """A loaded MIL ``main`` function that can be run on named numpy inputs."""

    def __init__(self, program, function: str = "main"):
        from mobileseg.runtimes.mil_ops import kernel_for  # PyTorch kernels: loaded with the first program

        self.function = program.functions[function]
        opset = getattr(self.function, "opset_version", None)
        self.opset = None if opset is None else int(opset)
        self.kernels = {}
        refused = []  # (op, why), in program order
        for op in self.function.operations:
            if op.op_type == "const":
                continue
            self.kernels[op] = kernel_for(op.op_type, self.opset)
            why = _cannot_run(op, self.kernels[op])
            if why is not None:
                refused.append((op, why))
        if refused:
            op, why = refused[0]
            others = sorted({o.op_type for o, _ in refused[1:]} - {op.op_type})
            also = f"; also cannot run: {', '.join(others)}" if others else ""
            raise UnsupportedMilOpError(f"the MIL reference executor cannot run op {op.op_type} ({_origin(op)}): {why}{also}")
        self.input_names = list(self.function.inputs)
        self.output_names = [var.name for var in self.function.outputs]
        self.op_counts: dict[str, int] = {}
        for op in self.function.operations:
            self.op_counts[op.op_type] = self.op_counts.get(op.op_type, 0) + 1

    @classmethod
    def from_package(cls, path: Path) -> MilProgram:
        """The ``main`` function of a saved ``.mlpackage``."""
        return cls(load_program(path)[0])

    def run(
        self, inputs: Mapping[str, np.ndarray], half: Collection[str] = (), observe: Observer | None = None
    ) -> dict[str, np.ndarray]:
        """The program's outputs for named numpy ``inputs``.

        ``half`` names ops of a float32 program to run as an fp16 program would (float inputs, constants
        included, and outputs rounded to float16); ``observe(op, arguments, results)`` is called after every
        op with its resolved inputs and its outputs (before any rounding of the outputs).
        """
        import torch

        from mobileseg.runtimes.mil_ops import as_tensor

        values: dict[str, object] = {}
        half = frozenset(half)
        for name, var in self.function.inputs.items():
            tensor = as_tensor(np.ascontiguousarray(inputs[name]))
            if _is_fp16(var):
                tensor = tensor.to(torch.float16)
            values[name] = tensor.float() if tensor.is_floating_point() else tensor
        with torch.inference_mode():
            for op in self.function.operations:
                if op.op_type == "const":
                    values[op.outputs[0].name] = op.outputs[0].val
                    continue
                arguments = {}
                for key, var in op.inputs.items():
                    if isinstance(var, (list, tuple)):
                        arguments[key] = [self._value(v, values) for v in var]
                    else:
                        arguments[key] = self._value(var, values)
                in_half = op.name in half
                if in_half:
                    arguments = {key: to_fp16(value) for key, value in arguments.items()}
                try:
                    result = self.kernels[op](**arguments)
                except Exception as exc:
                    raise ExportError(f"MIL op {op.op_type} ({op.name}) failed in the reference executor: {exc}") from exc
                results = result if isinstance(result, tuple) else (result,)
                if observe is not None:
                    observe(op, arguments, results)
                for var, value in zip(op.outputs, results):
                    values[var.name] = to_fp16(value) if in_half or _is_fp16(var) else value
        outputs = {}
        for var in self.function.outputs:
            value = values[var.name]
            array = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            outputs[var.name] = array.astype(np.float32) if array.dtype.kind == "f" else array
        return outputs

    @staticmethod
    def _value(var, values: dict):
        if var.val is not None and var.name not in values:
            return var.val
        return values[var.name]


class MilReferenceSession(Session):
    def __init__(self, path: Path, threads: int | None, io: dict | None):
        self.threads = threads
        start = time.perf_counter()
        program, spec = load_program(path)
        self.program = MilProgram(program)
        load_seconds = time.perf_counter() - start
        self.io = io or {}
        self.input_names = self.program.input_names
        self.output_names = self.program.output_names
        import coremltools

        self.info = SessionInfo(
            "mil-reference", f"coremltools {coremltools.__version__}", str(path), load_seconds, threads,
            {"note": NOTE, "ops": self.program.op_counts, "specification_version": spec.specificationVersion},
        )  # fmt: skip

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {name: coreml_input_array(inputs[name], self.io.get("input", {})) for name in self.input_names}
        with torch_threads(self.threads):
            return self.program.run(feeds)


class MilReferenceRuntime(Runtime):
    name = "mil-reference"
    target = "coreml"
    package = "coremltools"

    def load(self, path: Path, threads: int | None = 1, io: dict | None = None) -> Session:
        self.require()
        return MilReferenceSession(Path(path), threads, io)
