"""The recipe-driven export pipeline: one call exports a zoo model to every requested target,
checks parity against PyTorch and writes the artifact folder atomically."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from mobileseg import zoo
from mobileseg.errors import CheckpointError, RecipeError
from mobileseg.export.artifact import check_destination, staging_folder, tool_versions, write_json, write_manifest
from mobileseg.export.onnx import OnnxOptions, export_onnx
from mobileseg.export.preprocess import INPUT_DTYPES, WithPreprocessing, example_input
from mobileseg.recipes import KNOWN_TARGETS, Recipe, load_recipe, validate
from mobileseg.verify.parity import ParityReport, run_parity
from mobileseg.verify.report import to_markdown
from mobileseg.zoo.checkpoint import sha256_file

WEIGHTS_DIR_ENV = "MOBILESEG_WEIGHTS_DIR"
DEFAULT_ARTIFACTS_DIR = Path("artifacts")


@dataclass
class ExportRequest:
    """What the user asked for; ``None`` fields keep the recipe's value."""

    model: str
    targets: list[str] | None = None
    weights: Path | None = None
    random_weights: bool = False
    input_size: tuple[int, int] | None = None
    input_format: str | None = None
    dynamic_batch: bool | None = None
    opset: int | None = None
    out: Path | None = None
    force: bool = False
    recipe: Path | None = None
    threads: int | None = 1


@dataclass
class ExportResult:
    folder: Path
    manifest: dict
    report: ParityReport
    recipe: Recipe = field(repr=False)
    reference: nn.Module = field(repr=False)  # the wrapped PyTorch model the parity was checked against


def resolve_weights(recipe: Recipe, explicit: Path | None, random_weights: bool) -> Path | None:
    """The checkpoint to load: ``--weights``, else the official file in $MOBILESEG_WEIGHTS_DIR; None = random init."""
    if explicit is not None:
        if random_weights:
            raise CheckpointError("--weights and --random-weights contradict each other")
        return Path(explicit)
    if random_weights:
        return None
    spec = zoo.spec(recipe.model)
    directory = os.environ.get(WEIGHTS_DIR_ENV)
    if directory and recipe.weights and (Path(directory) / recipe.weights).is_file():
        return Path(directory) / recipe.weights
    raise CheckpointError(
        f"no weights for {recipe.model}: pass --weights PATH to the authors' checkpoint "
        f"({spec.checkpoint.filename} from {spec.checkpoint.source.split('@')[0]}), set {WEIGHTS_DIR_ENV} "
        f"to the folder holding it, or pass --random-weights for a structural export"
    )


def build_reference(recipe: Recipe, weights: Path | None) -> nn.Module:
    """The zoo model with weights (seeded random init when none), wrapped with the recipe's preprocessing."""
    torch.manual_seed(recipe.seed)
    model = zoo.build(recipe.model, weights)
    return WithPreprocessing(model, recipe.normalization, recipe.input_format).eval()


def weights_record(recipe: Recipe, weights: Path | None) -> dict:
    if weights is None:
        return {"path": None, "sha256": None, "official": False, "random_init_seed": recipe.seed}
    digest = sha256_file(weights)
    return {"path": str(weights.resolve()), "sha256": digest, "official": digest == zoo.spec(recipe.model).checkpoint.sha256}


def io_spec(recipe: Recipe) -> tuple[list[dict], list[dict]]:
    spec = zoo.spec(recipe.model)
    height, width = recipe.input_size
    batch = "batch" if recipe.dynamic_batch else recipe.batch
    value_range = {"rgb01": [0.0, 1.0], "uint8": [0, 255], "normalized": None}[recipe.input_format]
    inputs = [{
        "name": "image", "shape": [batch, 3, height, width], "dtype": INPUT_DTYPES[recipe.input_format],
        "layout": "NCHW", "format": recipe.input_format, "color": "RGB", "range": value_range,
        "normalization": recipe.normalization.to_dict(),
        "normalization_in_graph": recipe.input_format != "normalized",
    }]  # fmt: skip
    outputs = [{
        "name": "logits", "shape": [batch, *spec.output_shape(height, width)[1:]],
        "dtype": "float32", "layout": "NCHW", "kind": spec.output_kind, "classes": list(spec.class_names),
    }]  # fmt: skip
    return inputs, outputs


def export_model(request: ExportRequest, progress: Callable[[str], None] | None = None) -> ExportResult:
    """Export, verify and write the artifact folder; raises a `MobilesegError` for any user mistake
    before anything is written, and leaves no partial folder behind on failure."""
    say = progress or (lambda _msg: None)
    recipe = load_recipe(request.recipe or request.model)
    if recipe.model != request.model:
        raise RecipeError(f"recipe {recipe.source} is for {recipe.model}, not {request.model}")
    targets = request.targets or list(recipe.targets)
    unknown = [t for t in targets if t not in KNOWN_TARGETS]
    if unknown:
        raise RecipeError(f"unknown target(s) {', '.join(unknown)}; known targets: {', '.join(KNOWN_TARGETS)}")
    target_options = {t: dict(recipe.targets.get(t, {})) for t in targets}
    if request.opset is not None:
        target_options.setdefault("onnx", {})["opset"] = request.opset
    recipe = recipe.with_overrides(
        input_size=request.input_size, input_format=request.input_format,
        dynamic_batch=request.dynamic_batch, targets=target_options,
    )  # fmt: skip
    validate(recipe)
    spec = zoo.spec(recipe.model)
    spec.check_input_size(*recipe.input_size)
    out = Path(request.out or DEFAULT_ARTIFACTS_DIR / recipe.model)
    check_destination(out, request.force)
    weights = resolve_weights(recipe, request.weights, request.random_weights)

    say(f"building {recipe.model}")
    reference = build_reference(recipe, weights)
    with staging_folder(out, request.force) as staging:
        artifacts = []
        if "onnx" in targets:
            say("exporting ONNX")
            options = OnnxOptions(
                opset=int(target_options["onnx"].get("opset", OnnxOptions.opset)),
                exporter=str(target_options["onnx"].get("exporter", OnnxOptions.exporter)),
                simplify=bool(target_options["onnx"].get("simplify", True)),
                dynamic_batch=recipe.dynamic_batch,
            )
            example = example_input(recipe.input_format, recipe.batch, *recipe.input_size)
            info = export_onnx(reference, example, staging / "model.onnx", options, metadata=_onnx_metadata(recipe))
            artifacts.append({
                "target": "onnx", "precision": "fp32", "file": "model.onnx", "opset": info.opset,
                "exporter": info.exporter, "simplified": info.simplified,
                "nodes": {"exported": info.nodes_before, "final": info.nodes_after}, "ops": info.op_counts,
                "options": options.to_dict(),
            })  # fmt: skip
        say("checking parity against PyTorch")
        report = run_parity(reference, recipe, staging, artifacts, spec.output_kind, threads=request.threads)
        write_json(staging / "parity.json", report.to_dict())
        (staging / "parity.md").write_text(to_markdown(report))
        inputs, outputs = io_spec(recipe)
        manifest = write_manifest(staging, {
            "model": {
                "name": recipe.model, "description": spec.description, "params": spec.params,
                "num_classes": spec.num_classes, "output_kind": spec.output_kind,
                "weights": weights_record(recipe, weights), "checkpoint_source": spec.checkpoint.source,
            },
            "recipe": recipe.to_dict(),
            "inputs": inputs,
            "outputs": outputs,
            "artifacts": artifacts,
            "versions": tool_versions(),
            "seed": recipe.seed,
            "parity": {"passed": report.passed, "report": "parity.json"},
        })  # fmt: skip
    return ExportResult(out, manifest, report, recipe, reference)


def _onnx_metadata(recipe: Recipe) -> dict[str, str]:
    spec = zoo.spec(recipe.model)
    norm = recipe.normalization
    return {
        "mobileseg.model": recipe.model,
        "mobileseg.input_format": recipe.input_format,
        "mobileseg.normalization": f"mean={list(norm.mean)} std={list(norm.std)} order={norm.channel_order}",
        "mobileseg.output_kind": spec.output_kind,
        "mobileseg.classes": ",".join(spec.class_names),
    }
