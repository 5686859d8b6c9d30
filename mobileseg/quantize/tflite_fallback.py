"""Float fallback for reduced-precision TFLite files: find the ops that their quantised weights alone
wreck, and give those ops back their float32 weights.

Some trained networks compute small signals on top of large constants. In the authors' Cityscapes
checkpoints a few channels of a batch norm see inputs like −108 ± 0.016 (a branch whose previous BN
scale trained to ~0) and multiply the difference by ~600; folded into the convolution before it, that
is a weight of ~13 000 and a bias of ~67 000 whose sum cancels to ±10. Rounding those weights to fp16
(steps of 8 and 32) or int8 leaves nothing of the signal, and a few such channels cost the whole label
map several points of agreement.

The damage is local, so it is measured locally, with TFLite's own kernels: every op that reads a
quantised constant is run on the float model's exact input tensors (taken from one run of the fp32
file with all tensors kept), and its output is compared with the fp32 op's output, channel by channel,
relative to each channel's spread. An op whose relative error passes the threshold gets float32 weights
in the written file (a float kernel), everything else stays quantised.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np

from mobileseg.quantize.fallback import ChannelErrors, Fallback, keep_enough, label_map
from mobileseg.quantize.fallback import label_agreement as pooled_agreement
from mobileseg.runtimes.tflite import layout_of, to_nchw

FLOAT32, FLOAT16, INT8 = 0, 1, 9  # tflite TensorType values


@dataclass(frozen=True)
class OpError:
    index: int  # operator index in the quantised file
    op: str  # builtin name, e.g. DEPTHWISE_CONV_2D
    output: str  # name of its output tensor (the same in the float file)
    error: float  # worst channel: RMS error / channel standard deviation


def read_model(data: bytes):
    """A ``.tflite`` file as the flatbuffer schema's mutable object model (a fresh copy on every call)."""
    import copy

    return copy.deepcopy(_parsed(data))


@functools.lru_cache(maxsize=4)
def _parsed(data: bytes):
    # The pure-Python flatbuffer reader takes ~0.3 s for a Cityscapes-sized file and a fallback search reads
    # the same two files over and over; a deep copy of the parsed object model takes ~0.04 s.
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.convert_bytearray_to_object(bytearray(data))


def write_model(model) -> bytes:
    """The object model serialised back to ``.tflite`` bytes."""
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def op_name_of(model, op) -> str:
    """The builtin operator name of ``op`` in a flatbuffer ``model`` (e.g. ``"CONV_2D"``)."""
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)


def _is_constant(model, tensor) -> bool:
    data = model.buffers[tensor.buffer].data
    return data is not None and len(data) > 0


def _dequantized_constants(model) -> dict[int, int]:
    """Output tensor → operator index of every DEQUANTIZE op that reads a constant (an fp16 weight)."""
    graph = model.subgraphs[0]
    return {
        op.outputs[0]: index for index, op in enumerate(graph.operators)
        if op_name_of(model, op) == "DEQUANTIZE" and _is_constant(model, graph.tensors[op.inputs[0]])
    }  # fmt: skip


def _quantised_inputs(model) -> dict[int, list[int]]:
    """Per operator, the input positions that read a quantised constant: an fp16 constant through a
    DEQUANTIZE op, or an int8 constant feeding a float op (a dynamic-range "hybrid" kernel)."""
    graph = model.subgraphs[0]
    dequantized = _dequantized_constants(model)
    found = {}
    for index, op in enumerate(graph.operators):
        if op_name_of(model, op) == "DEQUANTIZE":
            continue
        inputs = [i for i in op.inputs if i >= 0]
        float_op = any(graph.tensors[i].type == FLOAT32 and not _is_constant(model, graph.tensors[i]) for i in inputs)
        positions = [
            position for position, i in enumerate(op.inputs)
            if i >= 0 and (i in dequantized or (float_op and graph.tensors[i].type == INT8 and _is_constant(model, graph.tensors[i])))
        ]  # fmt: skip
        if positions:
            found[index] = positions
    return found


def tflite_interpreter(data: bytes, keep_all: bool = False, delegates: bool = False):
    """A LiteRT interpreter on ``data``, tensors allocated; the built-in kernels unless ``delegates`` (a delegate would hide the
    intermediate tensors that ``keep_all`` keeps)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # keeping every tensor is documented as a debugging aid: it is what we need
        interpreter = Interpreter(
            model_content=data, experimental_preserve_all_tensors=keep_all, experimental_op_resolver_type=resolver
        )
    interpreter.allocate_tensors()
    return interpreter


def _isolated(model, ops: list[int]) -> tuple[bytes, dict[str, str]]:
    """The quantised file cut down to ``ops`` (and the DEQUANTIZE ops of their constants): every activation
    an op reads becomes a model input of its own, every output a model output. Returns the file and, per
    model input name, the tensor of the float file that feeds it."""
    import copy

    model = copy.deepcopy(model)
    graph = model.subgraphs[0]
    dequantized = _dequantized_constants(model)
    keep, inputs, outputs, feeds = set(ops), [], [], {}
    for index in ops:
        op = graph.operators[index]
        for position, i in enumerate(op.inputs):
            if i < 0 or _is_constant(model, graph.tensors[i]):
                continue
            if i in dequantized:
                keep.add(dequantized[i])
                continue
            fed = copy.deepcopy(graph.tensors[i])
            fed.name = b"%d:%d" % (index, position)
            graph.tensors.append(fed)
            op.inputs[position] = len(graph.tensors) - 1
            inputs.append(len(graph.tensors) - 1)
            feeds[fed.name.decode()] = graph.tensors[i].name.decode()
        outputs += [o for o in op.outputs if o not in outputs]
    graph.operators = [op for index, op in enumerate(graph.operators) if index in keep]
    graph.inputs, graph.outputs, model.signatureDefs = inputs, outputs, []
    return write_model(model), feeds


def local_errors(quantized: bytes, reference: bytes, samples: np.ndarray, budget_bytes: int = 1 << 29) -> list[OpError]:
    """The local error of every op of ``quantized`` that reads a quantised constant, on ``samples``
    (in the model's input layout), against the float file ``reference`` it was converted alongside."""
    model = read_model(quantized)
    graph = model.subgraphs[0]
    candidates = _quantised_inputs(model)
    if not candidates:
        return []
    # Chunks of ops whose tensors fit the memory budget; each chunk is one small interpreter.
    chunks, current, size = [], [], 0
    for index in candidates:
        op = graph.operators[index]
        nbytes = sum(4 * int(np.prod(graph.tensors[i].shape)) for i in [*op.inputs, *op.outputs] if i >= 0)
        if current and size + nbytes > budget_bytes:
            chunks.append(current)
            current, size = [], 0
        current.append(index)
        size += nbytes
    chunks.append(current)
    names = [t.name.decode() for t in graph.tensors]
    stats = ChannelErrors()
    float_interpreter = tflite_interpreter(reference, keep_all=True)
    float_tensors = {d["name"]: d["index"] for d in float_interpreter.get_tensor_details()}
    (float_input,) = float_interpreter.get_input_details()
    isolated = [(chunk, *_isolated(model, chunk)) for chunk in chunks]
    for sample in samples:
        float_interpreter.set_tensor(float_input["index"], np.ascontiguousarray(sample[None], dtype=float_input["dtype"]))
        float_interpreter.invoke()
        for chunk, data, feeds in isolated:
            interpreter = tflite_interpreter(data)
            fed = [(detail, float_interpreter.get_tensor(float_tensors[feeds[detail["name"]]])) for detail in interpreter.get_input_details()]
            if any(tuple(value.shape) != tuple(detail["shape"]) for detail, value in fed):
                continue  # a name the two files give different tensors (the converter folded them apart): not judged
            for detail, value in fed:
                interpreter.set_tensor(detail["index"], value)
            interpreter.invoke()
            by_name = {d["name"]: d["index"] for d in interpreter.get_output_details()}
            for index in chunk:
                output = names[graph.operators[index].outputs[0]]
                if output not in float_tensors:
                    continue
                reference_tensor = float_interpreter.get_tensor(float_tensors[output])
                stats.add(index, reference_tensor, interpreter.get_tensor(by_name[output]), -1 if reference_tensor.ndim == 4 else None)
            del interpreter
    errors = []
    for index, error in stats.relative().items():
        op = graph.operators[index]
        errors.append(OpError(index, op_name_of(model, op), names[op.outputs[0]], error))
    return errors


def keep_float(quantized: bytes, reference: bytes, outputs: set[str]) -> bytes:
    """``quantized`` with float32 weights (from ``reference``) for the ops whose output tensor is named in
    ``outputs``: fp16 constants lose their DEQUANTIZE op, int8 constants become float32 tensors."""
    model, float_model = read_model(quantized), read_model(reference)
    graph, float_graph = model.subgraphs[0], float_model.subgraphs[0]
    float_ops = {float_graph.tensors[op.outputs[0]].name: op for op in float_graph.operators}
    quantised = _quantised_inputs(model)
    producer = {out: index for index, op in enumerate(graph.operators) for out in op.outputs}
    from tensorflow.lite.python import schema_py_generated as schema

    dropped = set()
    for index, positions in quantised.items():
        op = graph.operators[index]
        name = graph.tensors[op.outputs[0]].name
        if name.decode() not in outputs:
            continue
        float_op = float_ops[name]
        for position in positions:
            source = float_graph.tensors[float_op.inputs[position]]
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(bytes(float_model.buffers[source.buffer].data), np.uint8).copy()
            model.buffers.append(buffer)
            weight = schema.TensorT()
            weight.name = source.name + b"/float_fallback"
            weight.shape, weight.type, weight.buffer = source.shape, FLOAT32, len(model.buffers) - 1
            graph.tensors.append(weight)
            previous = op.inputs[position]
            op.inputs[position] = len(graph.tensors) - 1
            if previous in producer and op_name_of(model, graph.operators[producer[previous]]) == "DEQUANTIZE":
                dropped.add(producer[previous])
    still_read = {i for op in graph.operators for i in op.inputs}
    graph.operators = [
        op for index, op in enumerate(graph.operators) if not (index in dropped and op.outputs[0] not in still_read)
    ]  # fmt: skip
    # The quantised constants no op reads any more keep their tensor entry but lose their data.
    used = {i for op in graph.operators for i in [*op.inputs, *op.outputs]}
    used_buffers = {graph.tensors[i].buffer for i in used if i >= 0}
    for tensor in graph.tensors:
        if tensor.buffer not in used_buffers and _is_constant(model, tensor):
            model.buffers[tensor.buffer].data = None
    return write_model(model)


def label_agreement(data: bytes, expected: list[np.ndarray], samples: np.ndarray, layout: str) -> float:
    """`fallback.label_agreement` of ``data`` with ``expected`` (the label maps of the float file's outputs
    on ``samples``); the file's outputs are in ``layout``."""
    return pooled_agreement((to_nchw(produced, layout), labels) for produced, labels in zip(_outputs(data, samples), expected))


def _outputs(data: bytes, samples: np.ndarray) -> list[np.ndarray]:
    """The model's output on each sample (with LiteRT's default XNNPACK delegate, as apps run it)."""
    interpreter = tflite_interpreter(data, delegates=True)
    (model_input,), (model_output,) = interpreter.get_input_details(), interpreter.get_output_details()
    values = []
    for sample in samples:
        interpreter.set_tensor(model_input["index"], np.ascontiguousarray(sample[None], dtype=model_input["dtype"]))
        interpreter.invoke()
        values.append(interpreter.get_tensor(model_output["index"]).copy())
    return values


def with_float_fallback(
    quantized: bytes,
    reference: bytes,
    samples: np.ndarray,
    output_nchw: tuple[int, ...],
    goal: float,
    local_limit: float,
    forced: tuple[str, ...] = (),
) -> tuple[bytes, Fallback]:
    """``quantized`` with the fewest float32-weight ops found that bring its label agreement with the float
    file ``reference`` on ``samples`` to ``goal``; ``output_nchw`` is the logits' NCHW shape (the files'
    output may be NHWC, and need not have the input's spatial size).

    Ops of the types in ``forced`` are float first (a compatibility choice); then `fallback.keep_enough`
    adds the ops whose local error (`local_errors`) passes ``local_limit``, then a network-order prefix.
    """
    model = read_model(quantized)
    graph = model.subgraphs[0]
    candidates = sorted(_quantised_inputs(model))
    output_of = {index: graph.tensors[graph.operators[index].outputs[0]].name.decode() for index in candidates}
    keep = {output_of[i] for i in candidates if op_name_of(model, graph.operators[i]) in forced}

    built: dict[frozenset[str], bytes] = {}

    def build(names: set[str]) -> bytes:
        key = frozenset(names)
        if key not in built:
            built[key] = keep_float(quantized, reference, names) if names else quantized
        return built[key]

    outputs = _outputs(reference, samples)
    layout = layout_of(outputs[0].shape, output_nchw)
    expected = [label_map(to_nchw(output, layout)) for output in outputs]

    def agreement_keeping(names: set[str]) -> float:
        return label_agreement(build(names), expected, samples, layout)

    def errors() -> dict[str, float]:
        return {output_of[e.index]: e.error for e in local_errors(quantized, reference, samples)}

    before = agreement_keeping(keep)
    keep, agreement = keep_enough([output_of[i] for i in candidates], agreement_keeping, goal, keep, before, errors, local_limit)
    return build(keep), Fallback(goal, before, agreement, tuple(sorted(keep)), len(candidates), forced)
