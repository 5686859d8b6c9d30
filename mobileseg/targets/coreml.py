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

        from mobileseg.export.coreml import convert_graph, stable_package_identifiers

        tensors = {name: torch.from_numpy(examples[name]) for name in graph.input_names}
        details = {}
        for precision, path in files.items():
            mlmodel = convert_graph(graph.module, tensors, graph.output_names, precision, options, label)
            if description:
                mlmodel.short_description = description
            mlmodel.user_defined_metadata.update({**(metadata or {}), "mobileseg.precision": precision})
            mlmodel.save(str(path))
            stable_package_identifiers(path)  # coremltools names the package's items with random UUIDs
            details[precision] = {"io": graph.io_record(), "format": "mlprogram"}
        return details

    def calibration_count(self, options):
        from mobileseg.quantize.coreml_fallback import SAMPLES

        return SAMPLES if options.float_fallback and "fp16" in options.precisions else 0

    def export_picture_model(self, job):
        import time

        from mobileseg.export.coreml import export_coreml
        from mobileseg.runtimes.coreml_support import coremltools_notes

        options, recipe = job.options["coreml"], job.recipe
        calibration = job.calibration(self.calibration_count(options)) if self.calibration_count(options) else None
        job.say("converting to Core ML")
        started = time.perf_counter()
        shape = (recipe.batch, 3, *recipe.input_size)
        entries = export_coreml(job.exported.model, shape, job.staging, options, model_card(recipe), calibration)
        job.notes += coremltools_notes()
        job.timings["coreml"] = time.perf_counter() - started
        return entries


def model_card(recipe):
    """What the Core ML model card says about a zoo export (`export.coreml.CoreMLModelInfo`)."""
    from mobileseg import zoo
    from mobileseg.export.coreml import CoreMLModelInfo

    spec = zoo.spec(recipe.model)
    return CoreMLModelInfo(
        name=recipe.model, description=spec.description, classes=tuple(spec.class_names),
        output_kind=spec.output_kind, normalization=recipe.normalization, input_format=recipe.input_format,
        checkpoint_source=spec.checkpoint.source if spec.checkpoint else "structure only (seeded, calibrated; no trained weights)",
        license=f"weights: {spec.checkpoint.license} (the authors' checkpoint)" if spec.checkpoint else "weights: structure only",
    )  # fmt: skip
