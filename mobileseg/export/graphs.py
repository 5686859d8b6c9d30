"""The one export loop for deployables made of named graphs: every graph × target × precision into an
artifact folder being staged, each file checked against PyTorch on its target's parity runtime.

The zoo's picture models (one graph with a picture input) take the same targets with their picture
options (`export/pipeline.py`); the VOS subgraphs and users' models come through here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobileseg import targets as target_registry
from mobileseg.artifact import GRAPHS_KIND, REFERENCE_PROGRAM
from mobileseg.core import Deployable, ParityCases
from mobileseg.errors import ExportError, RecipeError
from mobileseg.user_model import (
    ModelSource, UserRecipe, graph_of, load_module, load_program, load_user_recipe, parity_cases, parity_inputs,
    parse_model_source, run_declared, save_program,
)  # fmt: skip
from mobileseg.verify.graphs import artifact_result, graph_parity, graph_report

def check_graph_precisions(precisions: dict[str, list[str]]) -> None:
    """`ExportError` for a precision a target does not export for arbitrary graphs."""
    for target, wanted in precisions.items():
        supported = target_registry.get(target).graph_precisions
        bad = [p for p in wanted if p not in supported]
        if bad:
            raise ExportError(f"{target} exports these graphs as {', '.join(supported)}, not {', '.join(bad)} "
                              "(dynamic and int8 are for the zoo's picture models)")  # fmt: skip


def export_graphs(
    deployable: Deployable, cases: ParityCases, precisions: dict[str, list[str]], options: dict[str, Any],
    staging: Path, metadata: Callable[[str], dict[str, str]], description: Callable[[str], str] = lambda _: "",
    say: Callable[[str], None] = lambda _: None, output_kinds: dict[str, dict[str, str]] | None = None,
    lean: bool = True,
) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """Write ``TARGET/GRAPH_PRECISION.SUFFIX`` for every graph of ``deployable`` and every target of
    ``precisions`` (in order; tflite converts the onnx file when onnx came first) into ``staging``;
    returns the manifest entries and the parity result of each file. With ``lean``, a graph with denormal
    or tiny constants, dead channels or a place for an exact rewrite is exported lean (`export/lean.py`)
    once proven on its cases."""
    check_graph_precisions(precisions)
    onnx = target_registry.get("onnx")
    entries, parity = [], []
    leaner, records = {}, {}
    if lean:
        fp32 = deployable.tolerances.get("fp32") or target_registry.get("onnx").default_tolerances["fp32"]
        for graph in deployable.graphs:
            lean_graph, record = lean_graph_of(graph, cases[graph.name], fp32, (output_kinds or {}).get(graph.name))
            if record is not None:
                records[graph.name] = record.to_dict()
                if lean_graph is not None:
                    leaner[graph.name] = lean_graph
    for name, wanted in precisions.items():
        target = target_registry.get(name)
        (staging / name).mkdir(exist_ok=True)
        runtime = target.parity_runtime()
        for graph in [leaner.get(g.name, g) for g in deployable.graphs]:
            files = {p: target.file_name(graph.name, p, f"{name}/") for p in wanted}
            say(f"{name} {', '.join(files)}: {graph.name}")
            label, examples, expected = cases[graph.name][0]
            details = target.export_graph(
                graph, examples, expected, {p: staging / f for p, f in files.items()}, options[name],
                label=f"{deployable.name}/{graph.name}", metadata=metadata(graph.name), description=description(graph.name),
                onnx_file=staging / onnx.file_name(graph.name, "fp32", "onnx/"),
            )  # fmt: skip
            for precision, file in files.items():
                entry = {"graph": graph.name, "target": name, "precision": precision, "file": file, **details[precision]}
                if graph.name in records:
                    entry["lean"] = records[graph.name]
                entries.append(entry)
                parity.append(graph_parity(staging, entry, runtime, cases[graph.name], deployable.tolerances[precision],
                                           (output_kinds or {}).get(graph.name)))  # fmt: skip
    from mobileseg.export.rewrites import count_layout_ops

    count_layout_ops(entries)
    return entries, parity


def lean_graph_of(graph, cases, tolerance: dict, kinds: dict[str, str] | None):
    """(the graph with its lean module or None, the `LeanRecord` or None): None, None when the lean module
    would change nothing; the record says why a lean module that misses ``tolerance`` on the cases is not used."""
    import dataclasses

    import torch

    from mobileseg.export.lean import lean_module, prove
    from mobileseg.verify.judge import LABEL_KINDS

    def run(module, inputs):
        with torch.no_grad():
            outputs = module(*[torch.from_numpy(inputs[n]) for n in graph.input_names])
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        return {n: o.numpy() for n, o in zip(graph.output_names, outputs)}

    samples = [tuple(torch.from_numpy(inputs[n]) for n in graph.input_names) for _, inputs, _ in cases]
    lean, record = lean_module(graph.module, samples)
    if not (record.denormal_constants or record.tiny_constants or record.dead_channels or record.rewrites):
        return None, None
    outputs = [run(lean, inputs) for _, inputs, _ in cases]
    applied = True
    for name in graph.output_names:
        kind = (kinds or {}).get(name)
        labelled = kind in LABEL_KINDS and cases[0][2][name].ndim == 4  # the rule the parity loop judges by
        applied &= prove(record, {f"{label}.{name}": expected[name] for label, _, expected in cases},
                         {f"{label}.{name}": out[name] for (label, _, _), out in zip(cases, outputs)}, tolerance,
                         kind if labelled else None)  # fmt: skip
    return (dataclasses.replace(graph, module=lean) if applied else None), record


# ---- a user's model: plan (no PyTorch), then export ---------------------------------------------------

ZOO_ONLY_FIELDS = ("weights", "random_weights", "input_size", "input_format", "dynamic_batch", "coreml_input",
                   "keep_nchw", "int8_io", "calibration", "bias_correction")  # fmt: skip


@dataclass
class UserPlan:
    """A checked export of a user's model."""

    source: ModelSource
    recipe: UserRecipe
    precisions: dict[str, list[str]]
    options: dict[str, Any]
    out: Path
    versions: dict


def plan_user_export(request) -> UserPlan:
    """Check an `ExportRequest` for ``--model``: source, recipe, targets, precisions, options; no PyTorch."""
    from mobileseg.artifact import tool_versions
    from mobileseg.export.pipeline import DEFAULT_ARTIFACTS_DIR

    source = parse_model_source(request.model)
    recipe = load_user_recipe(request.recipe, source.name)
    zoo_only = [f"--{name.replace('_', '-')}" for name in ZOO_ONLY_FIELDS if getattr(request, name) not in (None, False)]
    if zoo_only:
        raise RecipeError(f"{', '.join(zoo_only)} appl{'ies' if len(zoo_only) == 1 else 'y'} to zoo models; "
                          f"declare your model's inputs in {recipe.source}")  # fmt: skip
    targets = target_registry.select(request.targets, list(recipe.targets))
    precisions = {t: recipe.precisions(t) for t in targets}
    if request.precisions:
        precisions = {t: [p for p in target_registry.get(t).graph_precisions if p in request.precisions] for t in targets}
        empty = [t for t, chosen in precisions.items() if not chosen]
        if empty:
            raise RecipeError(f"{', '.join(empty)} export(s) your model as "
                              f"{', '.join(target_registry.get(empty[0]).graph_precisions)}, not {', '.join(request.precisions)}")  # fmt: skip
    check_graph_precisions(precisions)
    overrides = request.option_overrides(targets)
    options = {}
    for name in targets:
        target = target_registry.get(name)
        if name != "onnx" and any(s.dtype != "float32" for s in recipe.inputs):
            others = ", ".join(s.name for s in recipe.inputs if s.dtype != "float32")
            raise RecipeError(f"the {name} target takes float32 inputs; {others} are not (export them to onnx)")
        values = {**recipe.targets.get(name, {}), **overrides.get(name, {})}
        target.check_recipe_options(values, recipe.source)
        options[name] = target.options(values)
        if name == "onnx":  # the other targets' checks are about the zoo's picture input
            options[name].validate()
        target.require_packages()
    return UserPlan(source, recipe, precisions, options, Path(request.out or DEFAULT_ARTIFACTS_DIR / recipe.name), tool_versions())


def export_user_model(plan: UserPlan, request, say: Callable[[str], None]):
    """Load, check and export a user's model; the folder keeps its ``torch.export`` program as the reference."""
    from mobileseg.artifact import write_json, write_manifest
    from mobileseg.export.pipeline import ExportResult, export_fingerprint_of
    from mobileseg.hashing import sha256_file
    from mobileseg.outputs import staging_folder
    from mobileseg.verify.report import to_markdown

    recipe, where = plan.recipe, f"--model {plan.source.text}"
    say(f"loading {plan.source.text}")
    module = load_module(plan.source)
    inputs = parity_inputs(recipe)
    eager = run_declared(module, recipe, inputs[0][1], where)
    with staging_folder(plan.out, request.force) as staging:
        program_path = staging / REFERENCE_PROGRAM
        program_path.parent.mkdir()
        say("saving the reference program (torch.export)")
        save_program(module, inputs[0][1], recipe, program_path, where)
        reference = load_program(program_path)
        cases = parity_cases(reference, recipe, where, inputs)
        graph = graph_of(module, recipe, eager)
        deployable = Deployable(recipe.name, [graph], lambda: {graph.name: cases},
                                {p: recipe.tolerance(p) for ps in plan.precisions.values() for p in ps},
                                provenance=plan.source.to_dict())  # fmt: skip
        kinds = {graph.name: {s.name: s.kind for s in graph.outputs}}
        entries, results = export_graphs(
            deployable, deployable.parity_cases(), plan.precisions, plan.options, staging,
            metadata=lambda _: {"mobileseg.model": recipe.name, "mobileseg.source": plan.source.text},
            description=lambda _: f"{recipe.name} (mobileseg export --model {plan.source.text})", say=say, output_kinds=kinds,
            lean=request.lean,
        )  # fmt: skip
        rows = [artifact_result(result, entry["file"]) for entry, result in zip(entries, results)]
        report = graph_report(recipe, rows, [label for label, _ in inputs])
        write_json(staging / "parity.json", report.to_dict())
        (staging / "parity.md").write_text(to_markdown(report))
        program_digest = sha256_file(program_path)
        manifest = write_manifest(staging, {
            "kind": GRAPHS_KIND,
            "model": {"name": recipe.name, "source": plan.source.to_dict(),
                      "reference": {"file": REFERENCE_PROGRAM, "sha256": program_digest, "format": "torch.export"}},
            "recipe": recipe.to_dict(),
            "graphs": [{"name": graph.name, "inputs": [s.to_dict() for s in graph.inputs],
                        "outputs": [s.to_dict() for s in graph.outputs]}],  # fmt: skip
            "artifacts": entries,
            "versions": plan.versions,
            "fingerprint": export_fingerprint_of({"recipe": recipe.to_dict(), "program": program_digest,
                                                  "precisions": plan.precisions, "lean": request.lean}, plan.versions),  # fmt: skip
            "notes": [],
            "parity": {"passed": report.passed, "report": "parity.json"},
        })  # fmt: skip
    return ExportResult(plan.out, manifest, report, recipe, reference)
