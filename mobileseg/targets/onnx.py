"""ONNX: traced with the TorchScript exporter (or dynamo), simplified with onnxsim (`export/onnx.py`)."""

from __future__ import annotations

from pathlib import Path

from mobileseg.export.options import OnnxOptions
from mobileseg.targets.base import Target


class OnnxTarget(Target):
    name = "onnx"
    suffix = ".onnx"
    precisions = ("fp32",)
    graph_precisions = ("fp32",)
    options_type = OnnxOptions
    runtime = "onnxruntime"
    packages = ("onnx", "onnxsim")
    extra_recipe_keys = {"precisions": "names"}

    def options(self, values, **fixed):
        return super().options({k: v for k, v in values.items() if k != "precisions"}, **fixed)

    def export_graph(self, graph, examples, expected, files, options, label, metadata=None, description="", onnx_file=None):
        import torch

        from mobileseg.export.onnx import export_onnx_graph

        tensors = tuple(torch.from_numpy(examples[name]) for name in graph.input_names)
        info = export_onnx_graph(graph.module, tensors, Path(files["fp32"]), graph.input_names, graph.output_names,
                                 options, metadata)  # fmt: skip
        return {"fp32": {"io": graph.io_record(), "opset": info.opset, "nodes": info.nodes_after, "ops": info.op_counts}}

    def check_picture_options(self, options, recipe, values):
        options.validate()

    def export_picture_model(self, job):
        _, info = job.onnx_file()
        return [{
            "target": "onnx", "precision": "fp32", "file": "model.onnx", "opset": info.opset,
            "exporter": info.exporter, "simplified": info.simplified,
            "nodes": {"exported": info.nodes_before, "final": info.nodes_after}, "ops": info.op_counts,
            "io": {"input": {"name": "image", "format": job.recipe.input_format, "layout": "NCHW"},
                   "output": {"name": "logits", "layout": "NCHW"}},
            "options": job.onnx_options.to_dict(),
        }]  # fmt: skip
