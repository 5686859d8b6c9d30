"""Empirical bias correction for full-integer TFLite files.

Rounding weights and activations to 8 bits does not only add noise: it shifts each output channel's mean
(a rounded depthwise kernel no longer sums to what it did, a clipped activation loses its tail), and
the shifts add up through the network. The calibration pictures measure that shift: each convolution's
int8 output, dequantised, is compared with the float model's output channel by channel, and the mean
difference is taken out of the convolution's int32 bias (in steps of ``input scale × weight scale``).

The correction runs in waves along the network: a convolution is corrected after every convolution
upstream of it, so that its measured shift includes their corrections; convolutions of one wave do not
depend on each other and are measured in one pass on TFLite's built-in kernels (shifts measured through
XNNPACK corrected SINet less well: worst photo 0.949). A pass runs only the ops whose int8 outputs it does
not hold yet, fed with the tensors earlier passes computed (`_Regions`): each op runs once, a corrected
convolution twice, instead of the file up to the wave's outputs once per wave (SINet: 45 waves).

Convolutions with a fused activation are left alone: their output mean is taken after the activation,
where a shift is no longer a bias. The worst photo's label agreement with PyTorch, over the four
interpreters, went from 0.956–0.968 to 0.961–0.973 on SINet and from 0.928–0.943 to 0.963–0.977 on
ExtremeC3Net (README, int8).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np

from mobileseg.quantize.tflite_fallback import INT8, op_name_of, read_model, tflite_interpreter, write_model
from mobileseg.runtimes.tflite import quantize

CORRECTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")
PIXELS = 1 << 20  # calibration pixels a channel mean is taken over: all 16 crops at 224², one at 1024×2048


def correct_biases(quantized: bytes, calibrated: bytes, samples: np.ndarray) -> tuple[bytes, dict]:
    """``quantized`` with the bias of each convolution shifted by its mean output error on ``samples``
    (in the model's input layout, float), against ``calibrated``, the float model it was quantised from
    (the converter's calibrated file, whose tensors carry the same names). Returns the file and a record."""
    pixels = samples[0].size // 3
    samples = samples[: max(1, -(-PIXELS // pixels))]  # enough pictures for PIXELS pixels
    model = read_model(quantized)
    graph = model.subgraphs[0]
    reference = tflite_interpreter(calibrated, keep_all=True)
    float_index = {detail["name"].encode(): detail["index"] for detail in reference.get_tensor_details()}
    convolutions, fused = [], 0
    for index, op in enumerate(graph.operators):
        if op_name_of(model, op) not in CORRECTED_OPS or len(op.inputs) < 3 or op.inputs[2] < 0:
            continue
        output = graph.tensors[op.outputs[0]]
        if output.type != INT8 or output.name not in float_index:
            continue
        if op.builtinOptions is not None and op.builtinOptions.fusedActivationFunction:
            fused += 1
            continue
        convolutions.append(index)
    _own_bias_buffers(model, convolutions)

    float_means = _float_channel_means(reference, samples, [float_index[graph.tensors[graph.operators[i].outputs[0]].name] for i in convolutions])
    del reference
    float_mean = dict(zip(convolutions, float_means))
    waves = _waves(graph, convolutions)
    regions = _Regions(model, samples, convolutions)
    shifts = []
    for wave in waves:
        for index, mean in zip(wave, regions.channel_means(wave)):
            op = graph.operators[index]
            bias_tensor = graph.tensors[op.inputs[2]]
            buffer = model.buffers[bias_tensor.buffer]
            bias = np.frombuffer(bytes(bytearray(buffer.data)), np.int32).astype(np.int64)
            steps = np.round((mean - float_mean[index]) / np.asarray(bias_tensor.quantization.scale, np.float64))
            buffer.data = np.frombuffer(np.clip(bias - steps, -(2**31), 2**31 - 1).astype(np.int32).tobytes(), np.uint8).copy()
            shifts.append(_in_output_steps(graph, index, mean - float_mean[index]))
        regions.forget(wave)  # their outputs change with the new biases
    record = {
        "convolutions": len(convolutions), "waves": len(waves), "skipped_fused_activation": fused, "samples": len(samples),
        "mean_shift_output_steps": round(float(np.mean(shifts)), 4) if shifts else 0.0,
    }  # fmt: skip
    if convolutions:  # what is left, measured on the corrected file
        means = regions.channel_means(convolutions)
        left = [_in_output_steps(graph, i, mean - float_mean[i]) for i, mean in zip(convolutions, means)]
        record["mean_shift_after_output_steps"] = round(float(np.mean(left)), 4)
    return write_model(model), record


class _Regions:
    """The int8 file run on the samples a region of ops at a time: the outputs of every op run so far are
    kept (raw int8, per sample) and fed to later regions, so asking for some convolutions' outputs runs
    only the ops between what is known and them. Integer kernels give the same values either way."""

    def __init__(self, model, samples: np.ndarray, convolutions: list[int]):
        self.model, self.graph = model, model.subgraphs[0]
        self.measured = {self.graph.operators[i].outputs[0] for i in convolutions}  # kept until forgotten
        self.producer = {o: index for index, op in enumerate(self.graph.operators) for o in op.outputs}
        self.consumers: dict[int, list[int]] = {}
        for index, op in enumerate(self.graph.operators):
            for tensor in op.inputs:
                if tensor >= 0:
                    self.consumers.setdefault(tensor, []).append(index)
        (model_input,) = tflite_interpreter(write_model(model)).get_input_details()
        self.values: dict[int, list[np.ndarray]] = {model_input["index"]: _as_input(samples, model_input)}
        self.samples = len(samples)
        self.ran: set[int] = set()  # ops whose outputs are current (in ``values`` while a reader has not run)

    def channel_means(self, convolutions: list[int]) -> list[np.ndarray]:
        """The dequantised channel means of the ``convolutions``' outputs (NHWC) over the samples."""
        outputs = [self.graph.operators[i].outputs[0] for i in convolutions]
        self._run(outputs)
        means = []
        for tensor in outputs:
            total, rows = 0.0, 0
            for values in self.values[tensor]:
                values = values.reshape(-1, values.shape[-1])
                total, rows = total + values.sum(0, dtype=np.float64), rows + len(values)
            quantization = self.graph.tensors[tensor].quantization
            means.append((total / rows - int(quantization.zeroPoint[0])) * float(quantization.scale[0]))
        return means

    def forget(self, ops: list[int]) -> None:
        """The outputs of ``ops`` are stale (their constants changed)."""
        for index in ops:
            self.ran.discard(index)
            for tensor in self.graph.operators[index].outputs:
                self.values.pop(tensor, None)

    def _run(self, wanted: list[int]) -> None:
        graph = self.graph
        region, pending = set(), [t for t in wanted if t not in self.values]
        while pending:
            index = self.producer.get(pending.pop())  # None: a constant
            if index is not None and index not in region:
                region.add(index)
                pending += [t for t in graph.operators[index].inputs if t >= 0 and t not in self.values]
        if not region:
            return
        ops = sorted(region)  # operators are stored in execution order
        produced = [t for index in ops for t in graph.operators[index].outputs]
        fed = sorted({t for index in ops for t in graph.operators[index].inputs if t in self.values})
        operators, inputs, outputs, signatures = graph.operators, graph.inputs, graph.outputs, self.model.signatureDefs
        graph.operators, graph.inputs, graph.outputs, self.model.signatureDefs = [operators[i] for i in ops], fed, produced, []
        try:
            data = write_model(self.model)
        finally:
            graph.operators, graph.inputs, graph.outputs, self.model.signatureDefs = operators, inputs, outputs, signatures
        interpreter = tflite_interpreter(data)  # the file keeps every tensor, so tensor indices are the model's
        results: dict[int, list[np.ndarray]] = {t: [] for t in produced}
        for sample in range(self.samples):
            for tensor in fed:
                interpreter.set_tensor(tensor, self.values[tensor][sample])
            interpreter.invoke()
            for tensor in produced:
                results[tensor].append(interpreter.get_tensor(tensor))
        self.values.update(results)
        self.ran |= region
        # what no reader will run on again: every reader has run, none is a convolution measured now (run
        # again once its bias changes); measured outputs and the model's input stay
        kept = set(graph.inputs) | self.measured | {t for w in wanted for t in graph.operators[self.producer[w]].inputs}
        for tensor in [t for t in self.values if t not in kept and all(c in self.ran for c in self.consumers.get(t, [-1]))]:
            del self.values[tensor]


def _in_output_steps(graph, index: int, shift: np.ndarray) -> float:
    """The mean |shift| of a convolution's channels in steps of its int8 output."""
    return float(np.abs(shift).mean() / float(graph.tensors[graph.operators[index].outputs[0]].quantization.scale[0]))


def _own_bias_buffers(model, convolutions: Iterable[int]) -> None:
    """Give each convolution a bias tensor and buffer of its own: the converter shares identical constants
    (every all-zero bias of a width is one buffer), and a correction must not move the others."""
    from tensorflow.lite.python import schema_py_generated as schema

    graph = model.subgraphs[0]
    readers: dict[int, int] = {}
    for tensor in graph.tensors:
        readers[tensor.buffer] = readers.get(tensor.buffer, 0) + 1
    for op in graph.operators:
        for i in op.inputs:
            if i >= 0:
                readers[graph.tensors[i].buffer] = readers.get(graph.tensors[i].buffer, 0) + 1
    claimed = set()
    for index in convolutions:
        op = graph.operators[index]
        bias = graph.tensors[op.inputs[2]]
        # one tensor entry plus one reader is a bias of its own
        if readers[bias.buffer] <= 2 and bias.buffer not in claimed:
            claimed.add(bias.buffer)
            continue
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(bytes(bytearray(model.buffers[bias.buffer].data)), np.uint8).copy()
        model.buffers.append(buffer)
        own = copy.deepcopy(bias)
        own.buffer, own.name = len(model.buffers) - 1, bias.name + b"/bias_corrected_%d" % index
        graph.tensors.append(own)
        op.inputs[2] = len(graph.tensors) - 1
        claimed.add(own.buffer)


def _waves(graph, convolutions: list[int]) -> list[list[int]]:
    """``convolutions`` grouped by how many of them lie on the longest path from the input to each (the
    operators are stored in execution order)."""
    chosen, depth, wave_of = set(convolutions), {}, {}
    for index, op in enumerate(graph.operators):
        level = max([depth.get(i, 0) for i in op.inputs if i >= 0] or [0])
        if index in chosen:
            level += 1
            wave_of[index] = level
        for output in op.outputs:
            depth[output] = level
    waves: dict[int, list[int]] = {}
    for index in convolutions:
        waves.setdefault(wave_of[index], []).append(index)
    return [waves[level] for level in sorted(waves)]


def _float_channel_means(interpreter, samples: np.ndarray, tensors: list[int]) -> list[np.ndarray]:
    """Per tensor (NHWC) of the float file ``interpreter`` runs, the mean of each channel over ``samples``."""
    (model_input,) = interpreter.get_input_details()
    sums, rows = [0.0] * len(tensors), [0] * len(tensors)
    for value in _as_input(samples, model_input):
        interpreter.set_tensor(model_input["index"], value)
        interpreter.invoke()
        for position, tensor in enumerate(tensors):
            values = interpreter.get_tensor(tensor)
            values = values.reshape(-1, values.shape[-1])
            sums[position] = sums[position] + values.sum(0, dtype=np.float64)
            rows[position] += len(values)
    return [total / count for total, count in zip(sums, rows)]


def _as_input(samples: np.ndarray, model_input: dict) -> list[np.ndarray]:
    """Each sample as the model's input tensor takes it (batch of one; quantised where the input is integer)."""
    prepared = []
    for sample in samples:
        value = sample[None].astype(np.float32)
        if model_input["dtype"] != np.float32:
            value = quantize(value, model_input)
        prepared.append(np.ascontiguousarray(value, dtype=model_input["dtype"]))
    return prepared
