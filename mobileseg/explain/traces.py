"""The tensors an exported file computes, and its ops run alone, for `explain/__init__.py`: one trace per
target, each with ``tensors(image) -> [ArtifactTensor]`` (in execution order, NCHW float values) and
``local(name, references) -> value | None`` (the ops that write tensor ``name`` from the matched tensors
before it, run on ``references``' values for those; values and results in the layout the file stores)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mobileseg.explain import ArtifactTensor


def onnx_scope(name: str) -> str | None:
    """The PyTorch module path in a TorchScript-exporter tensor name: ``/model/enc/conv/Conv_output_0`` →
    ``model.enc.conv`` (QDQ tensors carry their source's name, so the same scope); None when unscoped."""
    if not name.startswith("/"):
        return None
    parts = name.split("/")[1:-1]
    return ".".join(parts) if parts else None


class OnnxTrace:
    """An ONNX file run by onnxruntime with every node output kept; ``local`` runs the nodes between the
    matched tensors (or the graph input) and the tensor asked for, as a model of their own."""

    def __init__(self, path: Path):
        import onnx

        self.model = onnx.load(str(path))
        self.graph = self.model.graph
        self.input_name = self.graph.input[0].name
        self.producer = {out: node for node in self.graph.node for out in node.output}
        self.initializers = {init.name: init for init in self.graph.initializer}
        self.values: dict[str, np.ndarray] = {}

    def _session(self, model):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def tensors(self, image: np.ndarray) -> list[ArtifactTensor]:
        import copy

        import onnx

        model = copy.deepcopy(self.model)
        known = {o.name for o in model.graph.output}
        for node in model.graph.node:
            for out in node.output:
                if out and out not in known:
                    model.graph.output.append(onnx.ValueInfoProto(name=out))
                    known.add(out)
        session = self._session(model)
        names = [o.name for o in session.get_outputs()]
        self.values = dict(zip(names, session.run(None, {self.input_name: image})))
        self.values[self.input_name] = image
        tensors, scopes = [], {}
        for node in self.graph.node:
            # the node's name scopes it; a Q/DQ node named after an unscoped tensor (the graph output) takes
            # the scope of what it quantises
            scope = onnx_scope(node.name) or onnx_scope(node.output[0]) or next((scopes[i] for i in node.input[:1] if scopes.get(i)), None)
            for out in node.output:
                scopes[out] = scope
                value = self.values.get(out)
                if value is not None and value.dtype.kind == "f" and value.ndim >= 2:
                    tensors.append(ArtifactTensor(out, node.op_type, value.astype(np.float32), scope))
        return tensors

    def local(self, name: str, references: dict[str, np.ndarray]) -> np.ndarray | None:
        from onnx import TensorProto, helper

        cone, boundary, stack, seen = [], [], [name], set()
        while stack:
            tensor = stack.pop()
            if tensor in seen or tensor in self.initializers or not tensor:
                continue
            seen.add(tensor)
            if (tensor != name and tensor in references) or tensor == self.input_name or tensor not in self.producer:
                boundary.append(tensor)
                continue
            node = self.producer[tensor]
            if node not in cone:
                cone.append(node)
                stack.extend(node.input)
        order = {id(node): index for index, node in enumerate(self.graph.node)}
        cone.sort(key=lambda node: order[id(node)])
        feeds = {}
        for tensor in boundary:
            value = references.get(tensor, self.values.get(tensor))
            if value is None:
                return None
            feeds[tensor] = value.reshape(self.values[tensor].shape).astype(self.values[tensor].dtype)
        used = {i for node in cone for i in node.input}
        graph = helper.make_graph(
            cone, "local",
            [helper.make_tensor_value_info(t, helper.np_dtype_to_tensor_dtype(feeds[t].dtype), feeds[t].shape) for t in boundary],
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, None)],
            [init for key, init in self.initializers.items() if key in used],
        )  # fmt: skip
        model = helper.make_model(graph, opset_imports=self.model.opset_import, ir_version=self.model.ir_version)
        return self._session(model).run(None, feeds)[0].astype(np.float32)


def _nchw(value: np.ndarray) -> np.ndarray:
    return value.transpose(0, 3, 1, 2) if value.ndim == 4 else value


class TfliteTrace:
    """A TFLite file run by LiteRT's built-in kernels (a delegate would hide the intermediate tensors) with
    every tensor kept, dequantized and moved to NCHW; ``local`` runs the one op that writes a tensor, cut out
    of the file (quantize/tflite_fallback.py), its quantised inputs quantised at the file's scales."""

    def __init__(self, path: Path, io: dict):
        from mobileseg.quantize.tflite_fallback import read_model

        self.data = Path(path).read_bytes()
        self.model = read_model(self.data)
        self.io = io
        self.raw: dict[str, np.ndarray] = {}

    def tensors(self, image: np.ndarray) -> list[ArtifactTensor]:
        from mobileseg.quantize.tflite_fallback import tflite_interpreter
        from mobileseg.runtimes.tflite import dequantize, quantize, to_model_layout

        interpreter = tflite_interpreter(self.data, keep_all=True)
        (detail,) = interpreter.get_input_details()
        layout = self.io.get("input", {}).get("layout", "NHWC")
        fed = quantize(to_model_layout(image, layout), detail)
        interpreter.set_tensor(detail["index"], fed)
        interpreter.invoke()
        details = {d["index"]: d for d in interpreter.get_tensor_details()}
        tensors = []
        self.writer: dict[str, int] = {}
        self.index_of: dict[str, int] = {}  # the trace's (unique) tensor name → tensor index
        self.unique_of: dict[int, str] = {detail["index"]: "<input>"}
        self.raw["<input>"] = fed
        for number, op in enumerate(interpreter._get_ops_details()):  # noqa: SLF001 (no public op listing)
            for index in op["outputs"]:
                detail = details.get(index)
                if detail is None:
                    continue
                raw = interpreter.get_tensor(index)
                value = dequantize(raw, detail)
                if value.dtype.kind != "f" or value.ndim < 2:
                    continue
                name = detail["name"] if detail["name"] not in self.raw else f"{detail['name']}#{index}"
                self.raw[name] = raw
                self.writer[name] = number
                self.index_of[name], self.unique_of[index] = index, name
                value = value.astype(np.float32)
                tensors.append(ArtifactTensor(name, op["op_name"], _nchw(value), as_stored=value if value.ndim == 4 else None))
        return tensors

    def local(self, name: str, references: dict[str, np.ndarray]) -> np.ndarray | None:
        import copy

        from mobileseg.quantize.tflite_fallback import _dequantized_constants, _is_constant, tflite_interpreter, write_model
        from mobileseg.runtimes.tflite import dequantize, quantize

        graph = self.model.subgraphs[0]
        target = self.index_of.get(name)
        if target is None:
            return None
        writer = {out: index for index, op in enumerate(graph.operators) for out in op.outputs}
        dequantized = _dequantized_constants(self.model)
        matched = {self.index_of[n] for n in references if n in self.index_of}
        cone, boundary, stack, seen = set(), [], [target], set()
        while stack:  # the ops between the matched tensors (or the model input) and the target
            tensor = stack.pop()
            if tensor < 0 or tensor in seen:
                continue
            seen.add(tensor)
            if tensor in dequantized:
                cone.add(dequantized[tensor])
                continue
            if _is_constant(self.model, graph.tensors[tensor]):
                continue
            if (tensor != target and tensor in matched) or tensor not in writer:
                boundary.append(tensor)
                continue
            cone.add(writer[tensor])
            stack.extend(graph.operators[writer[tensor]].inputs)
        model = copy.deepcopy(self.model)
        sub = model.subgraphs[0]
        sub.operators = [op for index, op in enumerate(sub.operators) if index in cone]
        sub.inputs, sub.outputs, model.signatureDefs = boundary, [target], []
        interpreter = tflite_interpreter(write_model(model))
        for detail in interpreter.get_input_details():
            source = self.unique_of.get(detail["index"])
            if source in references:
                value = quantize(references[source].reshape(detail["shape"]), detail)
            elif source in self.raw:
                value = self.raw[source]
            else:
                return None
            interpreter.set_tensor(detail["index"], np.asarray(value).astype(detail["dtype"]))
        interpreter.invoke()
        (detail,) = interpreter.get_output_details()
        return dequantize(interpreter.get_tensor(detail["index"]), detail).astype(np.float32)  # as the file stores it


class MilTrace:
    """A Core ML package's MIL program run by the reference executor (runtimes/mil_reference.py), every op's
    outputs kept; ``local`` runs one op's kernel on the given inputs (fp16 variables rounded as the
    program rounds them)."""

    def __init__(self, path: Path, io: dict):
        from mobileseg.runtimes.mil_reference import MilReferenceSession

        self.session = MilReferenceSession(Path(path), 1, io)
        self.values: dict[str, object] = {}
        self.ops: dict[str, object] = {}

    def tensors(self, image: np.ndarray) -> list[ArtifactTensor]:
        import torch

        from mobileseg.runtimes.coreml_support import coreml_input_array
        from mobileseg.runtimes.mil_reference import _is_fp16, to_fp16

        tensors = []

        def observe(op, _arguments, results):
            for var, value in zip(op.outputs, results):
                self.values[var.name] = value
                self.ops[var.name] = op
                if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() >= 2:
                    tensors.append(ArtifactTensor(var.name, op.op_type, value.float().numpy().copy()))

        program = self.session.program
        feeds = {name: coreml_input_array(image, self.session.io.get("input", {})) for name in program.input_names}
        program.run(feeds, observe=observe)
        for name, var in program.function.inputs.items():  # as the executor binds them
            tensor = torch.from_numpy(np.ascontiguousarray(feeds[name]))
            self.values[name] = to_fp16(tensor).float() if _is_fp16(var) else (tensor.float() if tensor.is_floating_point() else tensor)
        return tensors

    def local(self, name: str, references: dict[str, np.ndarray]) -> np.ndarray | None:
        import torch

        from mobileseg.runtimes.mil_reference import _is_fp16, to_fp16

        if name not in self.ops:
            return None
        operations = list(self.session.program.function.operations)
        position = {id(op): index for index, op in enumerate(operations)}
        cone, values, stack, seen = set(), {}, [name], set()
        while stack:  # the ops between the matched variables (or the inputs) and ``name``
            var_name = stack.pop()
            if var_name in seen:
                continue
            seen.add(var_name)
            op = self.ops.get(var_name)
            if var_name != name and var_name in references:
                tensor = torch.from_numpy(np.ascontiguousarray(references[var_name], dtype=np.float32))
                values[var_name] = to_fp16(tensor) if op is not None and _is_fp16(op.outputs[0]) else tensor
                continue
            if op is None:  # an input or a constant: the file's own value
                if var_name in self.values:
                    values[var_name] = self.values[var_name]
                continue
            cone.add(position[id(op)])
            for var in op.inputs.values():
                stack.extend(v.name for v in (var if isinstance(var, (list, tuple)) else [var]))

        def value(var):
            return values[var.name] if var.name in values else var.val

        with torch.inference_mode():
            for index in sorted(cone):
                op = operations[index]
                arguments = {key: [value(v) for v in var] if isinstance(var, (list, tuple)) else value(var) for key, var in op.inputs.items()}
                result = self.session.program.kernels[op](**arguments)
                for var, out in zip(op.outputs, result if isinstance(result, tuple) else (result,)):
                    values[var.name] = to_fp16(out) if _is_fp16(var) else out
        out = values.get(name)
        return out.float().numpy() if isinstance(out, torch.Tensor) else None
