"""TFLite (LiteRT) flatbuffers, converted from the ONNX export by onnx2tf and TensorFlow's converter
(`export/tflite.py`). Any graph exports fp32 and fp16; the zoo's picture models also dynamic and int8."""

from __future__ import annotations

from pathlib import Path

from mobileseg.export.options import TfliteOptions
from mobileseg.targets.base import Target


class TfliteTarget(Target):
    name = "tflite"
    suffix = ".tflite"
    precisions = ("fp32", "fp16", "dynamic", "int8")
    graph_precisions = ("fp32", "fp16")
    options_type = TfliteOptions
    runtime = "litert"
    packages = ("onnx2tf", "tensorflow")
    extra_recipe_keys = {"calibration": "text"}  # a folder of pictures; the pipeline reads it

    def export_graph(self, graph, examples, expected, files, options, label, metadata=None, description="", onnx_file=None):
        import torch

        from mobileseg.export.onnx import OnnxOptions, export_onnx_graph
        from mobileseg.export.tflite import convert_graph
        from mobileseg.outputs import scratch

        with scratch("graph-") as tmp:
            if onnx_file is None or not Path(onnx_file).is_file():
                onnx_file = Path(tmp) / f"{graph.name}.onnx"
                tensors = tuple(torch.from_numpy(examples[name]) for name in graph.input_names)
                export_onnx_graph(graph.module, tensors, onnx_file, graph.input_names, graph.output_names, OnnxOptions(), metadata)
            records = convert_graph(Path(onnx_file), files, {k: examples[k] for k in graph.input_names}, expected, label)
        return {p: {"io": {**graph.io_record(), "tensors": r}, "converter": "onnx2tf"} for p, r in records.items()}
