"""TFLite (LiteRT) flatbuffers, converted from the ONNX export by onnx2tf and TensorFlow's converter
(`export/tflite.py`). Any graph exports fp32 and fp16; the zoo's picture models also dynamic and int8."""

from __future__ import annotations

from pathlib import Path

from mobileseg.export.options import TfliteOptions
from mobileseg.targets.base import Target


class TfliteTarget(Target):
    name = "tflite"
    suffix = ".tflite"
    precisions = ("fp32", "fp16", "dynamic", "int8", "a16w8")
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
        from mobileseg.zoo.unpooling import has_unpooling

        with scratch("graph-") as tmp:
            # the onnx target's file keeps ONNX's own MaxUnpool: onnx2tf converts the builtin-only lowering
            if onnx_file is None or not Path(onnx_file).is_file() or has_unpooling(graph.module):
                onnx_file = Path(tmp) / f"{graph.name}.onnx"
                tensors = tuple(torch.from_numpy(examples[name]) for name in graph.input_names)
                export_onnx_graph(graph.module, tensors, onnx_file, graph.input_names, graph.output_names,
                                  OnnxOptions(unpooling="portable"), metadata)  # fmt: skip
            records = convert_graph(Path(onnx_file), files, {k: examples[k] for k in graph.input_names}, expected, label)
        return {p: {"io": {**graph.io_record(), "tensors": r}, "converter": "onnx2tf"} for p, r in records.items()}

    def check_picture_options(self, options, recipe, values):
        from mobileseg.errors import RecipeError

        options.validate(recipe.input_format)
        folder = values.get("calibration")
        if folder and set(INTEGER) & set(options.precisions) and not Path(folder).is_dir():
            raise RecipeError(f"calibration folder not found: {folder}")

    def calibration_count(self, options):
        from mobileseg.export.tflite import FALLBACK_SAMPLES

        return options.calibration_samples if set(INTEGER) & set(options.precisions) else FALLBACK_SAMPLES

    def export_picture_model(self, job):
        import time

        options = job.options["tflite"]
        onnx_path, _ = job.onnx_file(portable=True)
        job.say("converting to TFLite (onnx2tf)")
        started = time.perf_counter()
        entries = _picture_files(job, options, onnx_path, self.calibration_count(options))
        job.notes += sorted({entry.pop("note") for entry in entries if "note" in entry})
        job.timings["tflite"] = time.perf_counter() - started
        return entries


def _picture_files(job, options: TfliteOptions, onnx_path: Path, calibration_count: int) -> list[dict]:
    """The float files from the ONNX artifact's graph, and int8 from the rewritten one."""
    from dataclasses import replace

    from mobileseg import zoo
    from mobileseg.preprocess import example_input, format_input

    recipe = job.recipe
    calibration = format_input(job.calibration(calibration_count), recipe.input_format, recipe.normalization)
    output_shape = zoo.spec(recipe.model).output_shape(*recipe.input_size, batch=recipe.batch)
    example = example_input(recipe.input_format, recipe.batch, *recipe.input_size)
    float_precisions = tuple(p for p in options.precisions if p not in INTEGER)
    entries = []
    if float_precisions:
        entries += _convert(job, job.exported, onnx_path, example, replace(options, precisions=float_precisions),
                            calibration, output_shape, job.scratch / "float")  # fmt: skip
    for precision in INTEGER:
        if precision in options.precisions:
            entries += _integer(job, example, replace(options, precisions=(precision,)), calibration, output_shape)
    return entries


INTEGER = ("int8", "a16w8")
# TFLite's 16×8 mode has no PRELU kernel: onnx2tf writes each PReLU as relu(x) + (x − |x|)·α/2 (RELU, ABS, SUB,
# MUL, ADD), inside its own layout tracking (a PReLU rewritten in PyTorch lost the layout: C3Net at 512×1024)
A16W8_PSEUDO_OPERATORS = ("prelu",)  # onnx2tf matches the lower-case name  # converted from the network rewritten to quantise well, each with its own onnx2tf run


def _integer(job, example, options, calibration, output_shape) -> list[dict]:
    """int8 (and a16w8) convert the same function rewritten to quantise well (exact to ~1e-5; see
    quantize/int8.py); for a16w8 onnx2tf writes PReLUs in ops TFLite's 16×8 mode takes. Float precisions keep the graph of the ONNX artifact; the extra onnx2tf run this
    costs is paid only when asked for."""
    from dataclasses import replace

    from mobileseg.quantize.a16w8 import split_wide_average_pools
    from mobileseg.quantize.int8 import A16W8_CHANNEL_EQUALIZATION, batchnorms_as_depthwise_convs, int8_module
    from mobileseg.export.onnx import export_onnx

    (precision,) = options.precisions
    equalization = options.channel_equalization if precision == "int8" else A16W8_CHANNEL_EQUALIZATION
    int8_reference, rewrites = int8_module(job.reference, calibration, equalization)
    pseudo = A16W8_PSEUDO_OPERATORS if precision == "a16w8" else ()
    if pseudo:
        rewrites["onnx2tf_pseudo_operators"] = list(pseudo)
    int8_onnx = job.scratch / f"model_{precision}.onnx"
    export_onnx(int8_reference, example, int8_onnx, replace(job.onnx_options, unpooling="portable"))

    def onnx_rewrite(path: Path) -> dict[str, int]:
        done = {"batchnorms_as_depthwise_convs": batchnorms_as_depthwise_convs(path)}
        if precision == "a16w8":
            done["wide_average_pools_split"] = split_wide_average_pools(path)
        return done

    rewrites.update(onnx_rewrite(int8_onnx))
    entries = _convert(job, int8_reference, int8_onnx, example, options, calibration, output_shape, job.scratch / precision,
                       onnx_rewrite, pseudo)  # fmt: skip
    for entry in entries:
        entry["int8_rewrites"] = rewrites
    return entries


def _convert(job, module, onnx_path: Path, example, options: TfliteOptions, calibration, output_shape, scratch: Path,
             onnx_rewrite=None, pseudo_operators: tuple[str, ...] = ()) -> list[dict]:  # fmt: skip
    """TFLite files of ``module`` (exported as ``onnx_path``, then ``onnx_rewrite``); the graph with symbolic
    height and width is converted first where a channel count equals a spatial size, and as the fallback of
    a static graph onnx2tf cannot convert."""
    from dataclasses import replace

    from mobileseg.export.onnx import export_onnx
    from mobileseg.export.symbolic import for_symbolic_shapes
    from mobileseg.export.tflite import ambiguous_tensors, export_tflite

    def symbolic_onnx() -> Path:
        scratch.mkdir(parents=True, exist_ok=True)
        path = scratch / "model_symbolic.onnx"
        export_onnx(for_symbolic_shapes(module, example), example, path, replace(job.onnx_options, dynamic_spatial=True, unpooling="portable"))
        if onnx_rewrite is not None:
            onnx_rewrite(path)
        return path

    recipe = job.recipe
    return export_tflite(
        onnx_path, job.staging, options, calibration, recipe.input_format, output_shape, recipe.model, symbolic_onnx,
        symbolic_first=bool(ambiguous_tensors(onnx_path)), pseudo_operators=pseudo_operators,
    )  # fmt: skip
