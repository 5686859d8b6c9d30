"""PyTorch → Core ML ML program (``.mlpackage``) with coremltools.

The model is traced (``torch.jit.trace``) with its preprocessing and converted to an ML program, once
per compute precision (fp16 is Core ML's default and what the Neural Engine runs; fp32 for parity
baselines). ``torch.export`` can be chosen as the source instead; on these networks both give the same
MIL ops, and tracing converts faster (see docs/dependencies.md).

Inputs:

* ``tensor``: an NCHW float32 multi-array in the recipe's input format (``rgb01`` or ``normalized``);
* ``image``: a picture (``CVPixelBuffer`` in an app). Core ML reorders it to the network's channel order
  (``color_layout``) and applies ``scale = 1/255`` and ``bias = −mean`` itself; only the per-channel
  ``1/std`` stays in the graph, because an image input has one scale for all channels.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import uuid
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobileseg.errors import ExportError
from mobileseg.quantize import coreml_fallback
from mobileseg.quantize.coreml_fallback import mil_name
from mobileseg.export.options import CoreMLOptions
from mobileseg.preprocess import WithPreprocessing, format_input
from mobileseg.outputs import scratch as scratch_folder
from mobileseg.runtimes.coreml_support import coreml_input_array, coremltools_log, import_coremltools
from mobileseg.runtimes.mil_reference import MilProgram, UnsupportedMilOpError
from mobileseg.zoo import Normalization

@dataclass
class CoreMLModelInfo:
    """What a caller needs to write the model's card (manifest entry)."""

    name: str
    description: str
    classes: tuple[str, ...]
    output_kind: str
    normalization: Normalization
    input_format: str
    checkpoint_source: str
    license: str


def export_coreml(
    model: nn.Module,
    shape: tuple[int, int, int, int],
    folder: Path,
    options: CoreMLOptions,
    info: CoreMLModelInfo,
    calibration: np.ndarray | None = None,
) -> list[dict]:
    """Convert ``model`` (the bare zoo network, NCHW ``shape``) once per precision into ``folder``;
    returns one manifest entry per written ``.mlpackage``.

    ``calibration`` (NCHW RGB in [0, 1], the model's size) enables the fp16 float fallback: its first
    pictures choose the ops kept in fp32 (see `coreml_fallback`)."""
    options.validate(info.input_format)
    ct = import_coremltools()
    norm = info.normalization
    if options.input_type == "image":
        wrapped = WithPreprocessing(model, norm, "centered").eval()
        coreml_input = ct.ImageType(
            name="image", shape=shape, scale=1.0 / 255.0, bias=[-m for m in norm.mean],
            color_layout=ct.colorlayout.BGR if norm.channel_order == "bgr" else ct.colorlayout.RGB,
        )  # fmt: skip
        input_spec = {
            "name": "image", "kind": "image", "shape": list(shape), "dtype": "uint8", "layout": "NCHW",
            "format": "pixels", "color": "RGB", "range": [0, 255],
            "color_layout": "BGR" if norm.channel_order == "bgr" else "RGB",
            "in_model": {"scale": 1.0 / 255.0, "bias": [-m for m in norm.mean], "graph_divides_by_std": list(norm.std)},
        }  # fmt: skip
    else:
        wrapped = WithPreprocessing(model, norm, info.input_format).eval()
        coreml_input = ct.TensorType(name="image", shape=shape, dtype=np.float32)
        input_spec = {"name": "image", "kind": "tensor", "shape": list(shape), "dtype": "float32", "layout": "NCHW",
                      "format": info.input_format}  # fmt: skip
    source = _source(wrapped, shape, options.source)
    fallback_feeds = None
    if options.float_fallback and "fp16" in options.precisions and calibration is not None:
        picture_format = "pixels" if options.input_type == "image" else info.input_format
        pictures = format_input(calibration[: coreml_fallback.SAMPLES], picture_format, norm)
        fallback_feeds = [{"image": coreml_input_array(picture[None], input_spec)} for picture in pictures]
    entries = {}
    with scratch_folder("coreml-") as scratch:
        for precision in sorted(options.precisions, key=lambda p: p != "fp32"):  # fp32 first: the fallback reads it
            file = f"model_{precision}.mlpackage"
            fallback, note = None, None
            if precision == "fp16" and fallback_feeds is not None:
                try:
                    if "fp32" in options.precisions:
                        float_program = MilProgram.from_package(folder / "model_fp32.mlpackage")
                    else:
                        float_mlmodel = _convert(ct, source, [coreml_input], ["logits"], "fp32", options, info.name)
                        float_mlmodel.save(str(Path(scratch) / "float.mlpackage"))
                        float_program = MilProgram.from_package(Path(scratch) / "float.mlpackage")
                    fallback, expected = coreml_fallback.choose_fp32_ops(float_program, fallback_feeds)
                except UnsupportedMilOpError as exc:  # the executor cannot run it: plain fp16, said so
                    note = f"float fallback not run: {exc}"
            mlmodel = _convert(
                ct, source, [coreml_input], ["logits"], precision, options, info.name, fallback.float_ops if fallback else ()
            )  # fmt: skip
            _describe(mlmodel, info, options, precision)
            try:
                mlmodel.save(str(folder / file))
            except Exception as exc:
                raise ExportError(f"coreml: cannot save {file}: {str(exc).splitlines()[0]}") from exc
            stable_package_identifiers(folder / file)
            spec = mlmodel.get_spec()
            entries[precision] = {
                "target": "coreml", "precision": precision, "file": file,
                "format": "mlprogram", "specification_version": spec.specificationVersion,
                "io": {"input": input_spec, "output": {"name": "logits", "layout": "NCHW", "dtype": "float32"}},
                "ops": mil_op_counts(spec), "options": options.to_dict(),
            }  # fmt: skip
            if fallback is not None:
                written = MilProgram.from_package(folder / file)
                measured = coreml_fallback.label_agreement(written, fallback_feeds, expected)
                entries[precision]["float_fallback"] = replace(fallback, agreement=measured).to_dict()
            if note:
                entries[precision]["note"] = note
    return [entries[p] for p in options.precisions]


def mil_op_counts(spec) -> dict[str, int]:
    """Op type → count of an ML program's main function (nested blocks included; ``const`` ops, which hold
    the weights, left out)."""
    counts: dict[str, int] = {}

    def walk(block) -> None:
        for op in block.operations:
            if op.type != "const":
                counts[op.type] = counts.get(op.type, 0) + 1
            for inner in op.blocks:
                walk(inner)

    main = spec.mlProgram.functions["main"]
    walk(main.block_specializations[main.opset])
    return dict(sorted(counts.items()))


def stable_package_identifiers(package: Path) -> None:
    """Give the items of a saved ``.mlpackage`` identifiers derived from their paths.

    coremltools names each item of ``Manifest.json`` (the model specification, the weights folder) with a
    random UUID, so two saves of the same model differ in that file alone. Deriving them (UUID version 5
    of the item's path) makes an export reproducible byte for byte; the package format only asks that the
    identifiers be unique and that ``rootModelIdentifier`` name the specification's item."""
    manifest_path = package / "Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    items = manifest["itemInfoEntries"]
    renamed = {key: str(uuid.uuid5(uuid.NAMESPACE_URL, f"mobileseg:{item['path']}")) for key, item in items.items()}
    manifest["itemInfoEntries"] = {renamed[key]: item for key, item in items.items()}
    manifest["rootModelIdentifier"] = renamed[manifest["rootModelIdentifier"]]
    partial = manifest_path.with_name(manifest_path.name + ".partial")
    partial.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n")
    os.replace(partial, manifest_path)


def _source(wrapped: nn.Module, shape: tuple[int, ...], kind: str):
    example = torch.full(shape, 0.5)
    with warnings.catch_warnings(), torch.no_grad():
        # Tracer warnings about shapes recorded as constants are expected: the export is static by design.
        warnings.simplefilter("ignore")
        if kind == "export":
            return torch.export.export(wrapped, (example,)).run_decompositions({})
        return torch.jit.trace(wrapped, example)


def _convert(
    ct,
    source,
    coreml_inputs: list,
    output_names: list[str],
    precision: str,
    options: CoreMLOptions,
    model_name: str,
    fp32_ops: tuple[str, ...] = (),
):
    """``fp32_ops``: in an fp16 conversion, the ops (by their name in the saved program) kept in fp32."""
    messages: list[str] = []
    if precision == "fp16" and fp32_ops:
        kept = frozenset(fp32_ops)
        compute_precision = ct.transform.FP16ComputePrecision(op_selector=lambda op: mil_name(op.name) not in kept)
    else:
        compute_precision = ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
    try:
        with coremltools_log(logging.ERROR) as messages, contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the stderr redirect hides the converter's per-pass progress bars
            return ct.convert(
                source,
                inputs=coreml_inputs,
                outputs=[ct.TensorType(name=name) for name in output_names],
                convert_to="mlprogram",
                compute_precision=compute_precision,
                minimum_deployment_target=getattr(ct.target, options.minimum_deployment_target),
            )
    except Exception as exc:
        where = ""
        for message in messages:
            found = re.search(r"converting '([^']+)' op \(located at: '([^']*)'\)", message)
            if found:
                where = f" at op {found.group(1)} ({found.group(2)})"
        unsupported = re.search(r"convert function for op '([^']+)' not implemented", str(exc))
        if unsupported and not where:
            where = f" at op {unsupported.group(1)} (no Core ML converter for it)"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"cannot convert {model_name} to coreml {precision}{where}: {detail}") from exc


def convert_graph(
    module: nn.Module,
    examples: dict[str, torch.Tensor],
    output_names: list[str],
    precision: str,
    options: CoreMLOptions,
    model_name: str,
):
    """Trace a module of several named float32 tensor inputs (in call order) and convert it to an ML program
    with the given output names; returns the ``MLModel`` (not saved)."""
    ct = import_coremltools()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about constant shapes: static by design
        traced = torch.jit.trace(module.eval(), tuple(examples.values()))
    inputs = [ct.TensorType(name=name, shape=tuple(value.shape), dtype=np.float32) for name, value in examples.items()]
    return _convert(ct, traced, inputs, output_names, precision, options, model_name)


def _describe(mlmodel, info: CoreMLModelInfo, options: CoreMLOptions, precision: str) -> None:
    """The model card Xcode shows: description, author, licence, I/O descriptions, user metadata."""
    from mobileseg import __version__

    norm = info.normalization
    mlmodel.short_description = info.description
    mlmodel.author = f"mobileseg {__version__}; weights: {info.checkpoint_source}"
    mlmodel.license = info.license
    mlmodel.version = __version__
    if options.input_type == "image":
        mlmodel.input_description["image"] = (
            f"RGB picture; Core ML feeds it to the network as {norm.channel_order.upper()}, x/255 − mean, then the graph divides by std"
        )
    else:
        mlmodel.input_description["image"] = f"NCHW float32 image, input format {info.input_format}"
    mlmodel.output_description["logits"] = (
        f"NCHW float32 {info.output_kind} of classes {', '.join(info.classes)} (argmax over channels = label map)"
    )
    metadata = {
        "mobileseg.model": info.name,
        "mobileseg.version": __version__,
        "mobileseg.precision": precision,
        "mobileseg.input_type": options.input_type,
        "mobileseg.input_format": "pixels" if options.input_type == "image" else info.input_format,
        "mobileseg.normalization": json.dumps(norm.to_dict()),
        "mobileseg.output_kind": info.output_kind,
        "mobileseg.classes": ",".join(info.classes),
    }
    if options.input_type == "image":  # Xcode's model preview then shows the segmentation of a dropped picture
        metadata["com.apple.coreml.model.preview.type"] = "imageSegmenter"
        metadata["com.apple.coreml.model.preview.params"] = json.dumps({"labels": list(info.classes)})
    mlmodel.user_defined_metadata.update(metadata)
