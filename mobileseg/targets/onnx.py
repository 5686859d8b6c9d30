"""ONNX: traced with the TorchScript exporter (or dynamo), simplified with onnxsim (`export/onnx.py`)."""

from __future__ import annotations

from pathlib import Path

from mobileseg.export.options import OnnxOptions
from mobileseg.targets.base import Target


class OnnxTarget(Target):
    name = "onnx"
    suffix = ".onnx"
    precisions = ("fp32", "a16w8")
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
        chosen = job.precisions.get("onnx", ["fp32"])
        entries = _float_entry(job) if "fp32" in chosen else []
        if "a16w8" in chosen:
            entries.append(_a16w8_entry(job))
        return entries


A16W8_SAMPLES = 8  # calibration pictures of the a16w8 ranges (onnxruntime keeps every tensor of each in memory)


def _float_entry(job) -> list[dict]:
    _, info = job.onnx_file()
    return [{
        "target": "onnx", "precision": "fp32", "file": "model.onnx", "opset": info.opset,
        "exporter": info.exporter, "simplified": info.simplified,
        "nodes": {"exported": info.nodes_before, "final": info.nodes_after}, "ops": info.op_counts,
        "io": {"input": {"name": "image", "format": job.recipe.input_format, "layout": "NCHW"},
               "output": {"name": "logits", "layout": "NCHW"}},
        "options": job.onnx_options.to_dict(),
    }]  # fmt: skip


def _a16w8_entry(job) -> dict:
    """``model_a16w8.onnx``: QDQ with 16-bit activations and 8-bit weights (quantize/onnx_a16w8.py) of the
    network rewritten to quantise well (merge BNs folded, dead channels frozen, concatenations balanced;
    no channel equalisation: `quantize.int8.A16W8_CHANNEL_EQUALIZATION`)."""
    import time

    import onnx

    from mobileseg.export.onnx import export_onnx
    from mobileseg.preprocess import example_input, format_input
    from mobileseg.quantize.int8 import A16W8_CHANNEL_EQUALIZATION, batchnorms_as_depthwise_convs, int8_module
    from mobileseg.quantize.onnx_a16w8 import quantize_a16w8

    job.say("quantising ONNX to a16w8 (onnxruntime, QDQ)")
    started = time.perf_counter()
    recipe = job.recipe
    calibration = format_input(job.calibration(A16W8_SAMPLES), recipe.input_format, recipe.normalization)
    module, rewrites = int8_module(job.reference, calibration, A16W8_CHANNEL_EQUALIZATION)
    float_onnx = job.scratch / "a16w8_float.onnx"
    info = export_onnx(module, example_input(recipe.input_format, recipe.batch, *recipe.input_size), float_onnx, job.onnx_options)
    rewrites["batchnorms_as_depthwise_convs"] = batchnorms_as_depthwise_convs(float_onnx)
    target = job.staging / "model_a16w8.onnx"
    record = quantize_a16w8(float_onnx, target, calibration)
    job.timings["onnx_a16w8"] = time.perf_counter() - started
    ops: dict[str, int] = {}
    for node in onnx.load(str(target), load_external_data=False).graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {
        "target": "onnx", "precision": "a16w8", "file": target.name, "opset": info.opset, "exporter": info.exporter,
        "quantization": record, "int8_rewrites": rewrites, "ops": dict(sorted(ops.items())),
        "io": {"input": {"name": "image", "format": recipe.input_format, "layout": "NCHW"},
               "output": {"name": "logits", "layout": "NCHW"}},
        "options": job.onnx_options.to_dict(),
    }  # fmt: skip
