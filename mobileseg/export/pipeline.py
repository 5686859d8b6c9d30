"""The recipe-driven export pipeline: one call exports a zoo model to every requested target,
checks parity against PyTorch and writes the artifact folder atomically.

Everything the request can get wrong (model, sizes, paths, recipe, options) is checked, and an up-to-date
folder is returned, before PyTorch or a converter is imported: those load in `_export`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mobileseg import targets as target_registry
from mobileseg import zoo
from mobileseg.artifact import MANIFEST, check_hashes, read_manifest, tool_versions, write_json, write_manifest
from mobileseg.errors import MobilesegError, RecipeError
from mobileseg.export.options import OnnxOptions
from mobileseg.hashing import sha256_file
from mobileseg.outputs import check_destination, reading, scratch, staging_folder
from mobileseg.recipes import Recipe, load_recipe, resolve_weights, validate
from mobileseg.user_model import is_model_source
from mobileseg.verify.results import ParityReport

if TYPE_CHECKING:
    from torch import nn

    from mobileseg.export.graphs import UserPlan

DEFAULT_ARTIFACTS_DIR = Path("artifacts")


@dataclass
class ExportRequest:
    """What the user asked for; ``None`` fields keep the recipe's value."""

    model: str
    targets: list[str] | None = None  # "all" = every known target
    precisions: list[str] | None = None  # keep only these precisions (of the targets that have them)
    weights: Path | None = None
    random_weights: bool = False
    input_size: tuple[int, int] | None = None
    input_format: str | None = None
    dynamic_batch: bool | None = None
    opset: int | None = None
    coreml_input: str | None = None  # "tensor" | "image"
    keep_nchw: bool | None = None
    int8_io: bool | None = None
    calibration: Path | None = None
    float_fallback: bool | None = None  # coreml fp16, tflite fp16/dynamic: keep the ops they wreck in float32
    bias_correction: bool | None = None  # tflite int8: correct the convolutions' biases (quantize/bias.py)
    out: Path | None = None
    force: bool = False
    use_cache: bool = True
    recipe: Path | None = None
    threads: int | None = 1
    lean: bool = True  # float files convert the lean module (export/lean.py): no denormals, dead channels frozen
    options: dict[str, dict] = field(default_factory=dict)  # target → recipe option → value (`--set`)

    def option_overrides(self, targets: list[str]) -> dict[str, dict]:
        """Target options this request sets for ``targets``: the named flags' and ``options`` (whose targets
        must be among them), unset ones left out."""
        not_exported = sorted(set(self.options) - set(targets))
        if not_exported:
            raise RecipeError(f"--set names {', '.join(not_exported)}, which this export does not write (targets: {', '.join(targets)})")
        named = {
            "onnx": {"opset": self.opset},
            "coreml": {"input_type": self.coreml_input, "float_fallback": self.float_fallback},
            "tflite": {"keep_nchw": self.keep_nchw, "int8_io": self.int8_io, "float_fallback": self.float_fallback,
                       "bias_correction": self.bias_correction, "calibration": str(self.calibration) if self.calibration else None},
        }  # fmt: skip
        overrides = {t: {k: v for k, v in values.items() if v is not None} for t, values in named.items()}
        for target, values in self.options.items():
            overrides.setdefault(target, {}).update(values)
        return overrides


@dataclass
class ExportResult:
    folder: Path
    manifest: dict
    report: ParityReport
    recipe: Recipe = field(repr=False)
    reference: nn.Module | None = field(default=None, repr=False)  # the wrapped PyTorch model (None on a cache hit)
    cached: bool = False  # the folder was already up to date: nothing was exported
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage (empty on a cache hit)


def weights_record(recipe: Recipe, weights: Path | None) -> dict:
    spec = zoo.spec(recipe.model)
    if weights is None and spec.structure_only:
        from mobileseg.zoo.structure_only import CALIBRATION_PHOTOS, SEED

        return {"path": None, "sha256": None, "official": False, "structure_only": True,
                "init": f"seed {SEED}, statistics calibrated on {CALIBRATION_PHOTOS} crops of the bundled photos at "
                        f"{'x'.join(map(str, spec.calibration_size or spec.input_size))} (no trained weights exist here)"}  # fmt: skip
    if weights is None:
        return {"path": None, "sha256": None, "official": False, "random_init_seed": recipe.seed}
    digest = sha256_file(weights)
    official = spec.checkpoint is not None and digest == spec.checkpoint.sha256
    return {"path": str(weights.resolve()), "sha256": digest, "official": official}


def io_spec(recipe: Recipe) -> tuple[list[dict], list[dict]]:
    from mobileseg.preprocess import INPUT_DTYPES

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


def _targets_and_options(request: ExportRequest, recipe: Recipe) -> tuple[list[str], dict[str, dict]]:
    """The targets to export and each one's options: the recipe's, overridden by the request."""
    targets = target_registry.select(request.targets, list(recipe.targets))
    options = {t: dict(recipe.targets.get(t, {})) for t in targets}
    overrides = request.option_overrides(targets)
    for target in targets:
        options[target].update(overrides.get(target, {}))
    if request.precisions:
        matched = set()
        for target in targets:
            chosen = [p for p in target_registry.get(target).precisions if p in request.precisions]
            matched.update(chosen)
            if not chosen:
                raise RecipeError(f"{target} has none of the precisions {', '.join(request.precisions)} "
                                  f"(it has {', '.join(target_registry.get(target).precisions)})")  # fmt: skip
            options[target]["precisions"] = chosen
        missing = [p for p in request.precisions if p not in matched]
        if missing:
            raise RecipeError(f"no requested target has precision {', '.join(missing)}")
    return targets, options


def source_digest() -> str:
    """sha256 over mobileseg's own source files: a changed exporter invalidates cached artifacts."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent.parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def export_fingerprint_of(identity: dict, versions: dict) -> str:
    """sha256 of what determines a folder's content: ``identity``, tool versions and mobileseg's code."""
    document = {**identity, "versions": versions, "source": source_digest()}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def export_fingerprint(recipe: Recipe, weights: dict, versions: dict, threads: int | None, lean: bool = True) -> str:
    """What determines an artifact folder's content: recipe, weights, tool versions, mobileseg's code."""
    identity = {"recipe": recipe.to_dict(), "weights": weights.get("sha256") or weights.get("init") or weights.get("random_init_seed"),
                "threads": threads}  # fmt: skip
    return export_fingerprint_of(identity if lean else {**identity, "lean": False}, versions)


def _cached(out: Path, fingerprint: str, recipe: Recipe) -> ExportResult | None:
    """The existing artifact folder if it was exported with the same fingerprint and is intact (every file
    as its manifest records it, and nothing else in the folder)."""
    if not (out / MANIFEST).is_file():
        return None
    try:
        with reading(out):
            manifest = read_manifest(out)
            if manifest.get("fingerprint") != fingerprint or check_hashes(out, manifest):
                return None
            report = ParityReport.from_dict(json.loads((out / manifest["parity"]["report"]).read_text()))
    except (MobilesegError, OSError, KeyError, TypeError, ValueError):
        return None
    return ExportResult(out, manifest, report, recipe, None, cached=True)


@dataclass
class ExportPlan:
    """A checked zoo export: what `_export` makes."""

    recipe: Recipe
    targets: list[str]  # in the registry's order
    target_options: dict[str, dict]  # as the recipe and the request give them
    options: dict[str, Any]  # target → its typed options
    onnx: OnnxOptions  # of the ONNX file (the onnx artifact, and what tflite converts)
    out: Path
    weights: Path | None
    weights_info: dict
    versions: dict
    fingerprint: str


def plan_export(request: ExportRequest) -> ExportPlan | UserPlan:
    """Check everything the request can get wrong, without PyTorch or a converter; `MobilesegError` names it.
    A zoo name plans a zoo export; ``file.py:factory``, ``module:factory`` or ``x.pt2`` a user's model."""
    if is_model_source(request.model):
        from mobileseg.export.graphs import plan_user_export

        return plan_user_export(request)
    recipe = load_recipe(request.recipe or request.model)
    if recipe.model != request.model:
        raise RecipeError(f"recipe {recipe.source} is for {recipe.model}, not {request.model}")
    targets, target_options = _targets_and_options(request, recipe)
    recipe = recipe.with_overrides(
        input_size=request.input_size, input_format=request.input_format,
        dynamic_batch=request.dynamic_batch, targets=target_options,
    )  # fmt: skip
    validate(recipe)
    if recipe.dynamic_batch and set(targets) - {"onnx"}:
        raise RecipeError("a dynamic batch axis is for the onnx target only; export coreml/tflite with a static batch")
    zoo.spec(recipe.model).check_input_size(*recipe.input_size)
    targets = [t for t in target_registry.names() if t in targets]
    options = {}
    for name in targets:
        target = target_registry.get(name)
        target.require_packages()
        fixed = {"dynamic_batch": recipe.dynamic_batch} if name == "onnx" else {}
        options[name] = target.options(target_options[name], **fixed)
        target.check_picture_options(options[name], recipe, target_options[name])
    onnx_options = options.get("onnx") or target_registry.get("onnx").options({}, dynamic_batch=recipe.dynamic_batch)
    out = Path(request.out or DEFAULT_ARTIFACTS_DIR / recipe.model)
    weights = resolve_weights(recipe, request.weights, request.random_weights)
    weights_info = weights_record(recipe, weights)
    versions = tool_versions()
    fingerprint = export_fingerprint(recipe, weights_info, versions, request.threads, request.lean)
    return ExportPlan(recipe, targets, target_options, options, onnx_options, out, weights, weights_info, versions, fingerprint)


def export_model(request: ExportRequest, progress: Callable[[str], None] | None = None) -> ExportResult:
    """Export, verify and write the artifact folder; raises a `MobilesegError` for any user mistake
    before anything is written, and leaves no partial folder behind on failure.

    An existing folder exported from the same recipe, weights, tool versions and mobileseg code, with
    every file matching its manifest hash and no other file, is returned as it is (``cached``) unless
    ``use_cache`` is off. The time each stage took is in the result (``timings``), not in the folder,
    so that two exports of the same inputs are identical to the byte.
    """
    say = progress or (lambda _msg: None)
    plan = plan_export(request)
    if not isinstance(plan, ExportPlan):
        from mobileseg.export.graphs import export_user_model

        check_destination(plan.out, request.force)
        return export_user_model(plan, request, say)
    if request.use_cache:
        cached = _cached(plan.out, plan.fingerprint, plan.recipe)
        if cached is not None:
            say("artifact is up to date")
            return cached
    check_destination(plan.out, request.force)
    return _export(plan, request, say)


def _export(plan: ExportPlan, request: ExportRequest, say: Callable[[str], None]) -> ExportResult:
    from mobileseg.export.rewrites import count_layout_ops
    from mobileseg.export.onnx import export_onnx
    from mobileseg.images import calibration_images
    from mobileseg.preprocess import build_reference, example_input
    from mobileseg.targets.base import PictureJob
    from mobileseg.verify.parity import run_parity
    from mobileseg.verify.report import to_markdown

    recipe, out = plan.recipe, plan.out
    spec = zoo.spec(recipe.model)
    say(f"building {recipe.model}")
    reference = build_reference(recipe, plan.weights)
    example = example_input(recipe.input_format, recipe.batch, *recipe.input_size)

    def calibration(count: int):
        # Pictures kept apart from parity. The crops are drawn in sequence, so a fallback sees the same first
        # pictures whatever the count; all of them are made only for int8 (16 at 1024×2048: ~5 s of resizing).
        return calibration_images(
            count, *recipe.input_size, exclude=recipe.parity_photos, seed=recipe.seed,
            folder=(plan.target_options.get("tflite") or {}).get("calibration"),
        ).transpose(0, 3, 1, 2)  # fmt: skip

    with staging_folder(out, request.force) as staging, scratch("export-") as scratch_dir:
        job = PictureJob(
            recipe, reference, reference, staging, scratch_dir, plan.options, plan.onnx,
            make_onnx=lambda path, unpooling=None: export_onnx(
                job.exported, example, path, replace(plan.onnx, unpooling=unpooling or plan.onnx.unpooling),
                metadata=_onnx_metadata(recipe)),
            make_calibration=calibration, say=say,
            precisions={name: target_registry.get(name).chosen_precisions(plan.target_options[name]) for name in plan.targets},
        )  # fmt: skip
        floats = [p for chosen in job.precisions.values() for p in chosen if p not in INTEGER_PRECISIONS]
        lean = _lean(job, request.lean, example) if floats else None
        if "tflite" in plan.targets:
            job.onnx_file()  # first, as TFLite converts it (the ONNX export's time is its own)
        artifacts = [entry for name in plan.targets for entry in target_registry.get(name).export_picture_model(job)]
        count_layout_ops(artifacts)  # export/rewrites.py
        say("checking parity against PyTorch")
        started = time.perf_counter()
        report = run_parity(reference, recipe, staging, artifacts, spec.output_kind, threads=request.threads, masks=True)
        job.timings["parity"] = time.perf_counter() - started
        write_json(staging / "parity.json", report.to_dict())
        (staging / "parity.md").write_text(to_markdown(report))
        inputs, outputs = io_spec(recipe)
        manifest = write_manifest(staging, {
            "model": {
                "name": recipe.model, "description": spec.description, "params": spec.params,
                "num_classes": spec.num_classes, "output_kind": spec.output_kind,
                "weights": plan.weights_info, "checkpoint_source": spec.checkpoint.source if spec.checkpoint else None,
                **({"structure_only": True} if spec.structure_only and plan.weights is None else {}),
            },
            "recipe": recipe.to_dict(),
            "inputs": inputs,
            "outputs": outputs,
            "artifacts": artifacts,
            "versions": plan.versions,
            "seed": recipe.seed,
            "fingerprint": plan.fingerprint,
            "notes": job.notes,
            "parity": {"passed": report.passed, "report": "parity.json"},
            **({"lean": lean.to_dict()} if lean else {}),
        })  # fmt: skip
    return ExportResult(out, manifest, report, recipe, reference, timings={k: round(v, 3) for k, v in job.timings.items()})


INTEGER_PRECISIONS = ("int8", "a16w8")  # converted from the network rewritten to quantise (quantize/int8.py), not the lean one
LEAN_SAMPLES = 4  # calibration pictures dead channels are judged on (a dead channel is constant on any)


def _lean(job, wanted: bool, example):
    """Make ``job.exported`` the lean module when it meets the fp32 tolerance against the plain one on the
    recipe's photos; returns its `LeanRecord` (None when not wanted), with the ONNX op counts of both graphs
    and, per photo, both graphs' distance to the plain network run in float64."""
    import torch

    from mobileseg.export.lean import lean_module, prove
    from mobileseg.export.onnx import export_onnx
    from mobileseg.preprocess import format_input
    from mobileseg.verify.metrics import compare
    from mobileseg.verify.parity import Float64Reference, parity_inputs

    if not wanted:
        return None
    recipe = job.recipe
    job.say("making the lean float graph (no denormals, dead channels frozen, exact rewrites)")
    started = time.perf_counter()
    samples = format_input(job.calibration(LEAN_SAMPLES), recipe.input_format, recipe.normalization)
    lean, record = lean_module(job.reference, torch.from_numpy(samples))
    cases = parity_inputs(recipe)
    photos = [case for case in cases if case.label.startswith("photo:")] or cases
    feeds = {case.label: case.as_format(recipe.input_format, recipe) for case in photos}
    with torch.no_grad():
        runs = {model: {label: model(torch.from_numpy(feed)).numpy() for label, feed in feeds.items()}
                for model in (job.reference, lean)}  # fmt: skip
    if prove(record, runs[job.reference], runs[lean], recipe.tolerance("onnx", "fp32"), zoo.spec(recipe.model).output_kind):
        job.exported = lean
        exact = Float64Reference(job.reference)
        for index, (label, feed) in enumerate(feeds.items()):
            truth = exact(index, feed)
            if truth is not None:
                record.proof[label]["max_rel_to_float64"] = {
                    name: compare(truth, runs[model][label])["max_rel"] for name, model in (("plain", job.reference), ("lean", lean))
                }  # fmt: skip
        record.graph_ops["plain"] = export_onnx(job.reference, example, job.scratch / "plain.onnx", job.onnx_options).op_counts
    else:
        job.notes.append(f"float files convert the plain network: {record.reason}")
    job.timings["lean"] = time.perf_counter() - started
    if record.applied:  # the lean graph's own ONNX file, timed as the ONNX export
        record.graph_ops["lean"] = job.onnx_file()[1].op_counts
    return record


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
