"""Core ML ML programs (``.mlpackage``) with coremltools (`export/coreml.py`). Parity is checked with the
Core ML runtime on a Mac and with mobileseg's MIL reference executor elsewhere."""

from __future__ import annotations

from mobileseg.export.options import COREML_PRECISIONS, CoreMLOptions
from mobileseg.targets.base import Target


class CoreMLTarget(Target):
    name = "coreml"
    suffix = ".mlpackage"
    precisions = ("fp16", "fp32")
    graph_precisions = COREML_PRECISIONS
    options_type = CoreMLOptions
    runtime = "coreml"
    reference_runtime = "mil-reference"
    packages = ("coremltools",)

    def export_graph(self, graph, examples, expected, files, options, label, metadata=None, description="", onnx_file=None):
        import torch

        from mobileseg.export.coreml import convert_graph

        tensors = {name: torch.from_numpy(examples[name]) for name in graph.input_names}
        details = {}
        for precision, path in files.items():
            mlmodel = convert_graph(graph.module, tensors, graph.output_names, precision, options, label)
            if description:
                mlmodel.short_description = description
            mlmodel.user_defined_metadata.update({**(metadata or {}), "mobileseg.precision": precision})
            mlmodel.save(str(path))
            details[precision] = {"io": graph.io_record(), "format": "mlprogram"}
        return details
