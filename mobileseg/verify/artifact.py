"""Verification of an artifact folder: integrity (manifest hashes) and numerical parity against PyTorch."""

from __future__ import annotations

from pathlib import Path

from mobileseg.errors import ArtifactError, CheckpointError, RuntimeUnavailableError
from mobileseg.artifact import GRAPHS_KIND, REFERENCE_PROGRAM, check_hashes, read_manifest
from mobileseg.hashing import sha256_file
from mobileseg.outputs import reading
from mobileseg.recipes import parse_recipe
from mobileseg.verify.results import ParityReport

__all__ = ["verify_artifact", "ParityReport"]


def verify_artifact(
    folder: str | Path,
    weights: str | Path | None = None,
    runtimes: list[str] | None = None,
    threads: int | None = 1,
) -> ParityReport:
    """Re-check an artifact folder: its files against the manifest, then every artifact on every available
    runtime against a freshly built PyTorch reference (with the weights recorded in the manifest, or
    ``weights``, which must have the same sha256). `RuntimeUnavailableError` when no runtime here can run
    any of them: that is not a parity failure."""
    folder = Path(folder)
    with reading(folder):
        if read_manifest(folder).get("kind") == GRAPHS_KIND:
            if weights:
                raise CheckpointError("this folder keeps its reference program; --weights applies to zoo models")
            report = verify_graphs_folder(folder, runtimes, threads)
        else:
            manifest, recipe, reference = reference_for(folder, weights, runtimes)
            from mobileseg.verify.parity import run_parity

            report = run_parity(
                reference, recipe, folder, manifest["artifacts"], manifest["model"]["output_kind"], runtimes, threads
            )
    _require_a_runtime(report, f"the artifacts of {folder}")
    return report


def _require_a_runtime(report: ParityReport, what: str) -> None:
    """`RuntimeUnavailableError` when no runtime here ran anything: that is not a parity failure."""
    if report.results and all(r.status == "skipped" for r in report.results):
        reasons = sorted({f"{r.runtime} ({r.reason})" for r in report.results})
        raise RuntimeUnavailableError(f"no runtime here can run {what}: {'; '.join(reasons)}")


def verify_graphs_folder(folder: Path, runtimes: list[str] | None = None, threads: int | None = 1) -> ParityReport:
    """Parity of a folder of named graphs (a user's model) against the ``torch.export`` program it keeps,
    on the parity inputs its recipe declares, on every runtime of each file's target (or ``runtimes``)."""
    from mobileseg.user_model import load_program, parity_cases, parse_user_recipe
    from mobileseg.verify.graphs import graph_report, graph_rows

    manifest = read_manifest(folder)
    problems = check_hashes(folder, manifest)
    if problems:
        raise ArtifactError(f"{folder} does not match its manifest: {'; '.join(problems)}")
    check_runtimes_apply(folder, manifest, runtimes)
    recipe = parse_user_recipe(manifest["recipe"], f"{folder}/manifest.json")
    if REFERENCE_PROGRAM not in manifest["files"]:
        raise ArtifactError(f"{folder} keeps no reference program ({REFERENCE_PROGRAM}); re-export it")
    cases = parity_cases(load_program(folder / REFERENCE_PROGRAM), recipe, f"the reference program of {folder}")
    kinds = {s.name: s.kind for s in recipe.outputs}
    rows = [row for entry in manifest["artifacts"]
            for row in graph_rows(folder, entry, cases, recipe.tolerance(entry["precision"]), kinds, runtimes, threads)]  # fmt: skip
    return graph_report(recipe, rows, [label for label, _, _ in cases])


def verify_file(
    path: Path, reference: str, recipe_path: Path | None = None, precision: str = "fp32", weights: Path | None = None,
    runtimes: list[str] | None = None, threads: int | None = 1,
) -> ParityReport:  # fmt: skip
    """Parity of one artifact file made anywhere (another tool's .onnx, .tflite, .mlpackage) against
    ``reference``: a zoo model (its recipe, official or ``weights`` checkpoint) or a user's model with the
    recipe at ``recipe_path``. Inputs and outputs are matched by name (TFLite: by value, as onnx2tf renames
    them); the file is judged with the tolerances of ``precision``."""
    from mobileseg import targets
    from mobileseg.runtimes import get_runtime
    from mobileseg.user_model import is_model_source, load_user_recipe, parse_model_source, zoo_as_user_recipe

    path = Path(path)
    target = targets.for_suffix(path.suffix)
    if target is None or not path.exists():
        raise ArtifactError(f"{path}: not an artifact file (.onnx, .tflite or .mlpackage)" if path.exists() else f"not found: {path}")
    if precision not in ("fp32", "fp16"):
        raise ArtifactError(f"--precision {precision}: a file is judged as fp32 or fp16")
    for name in runtimes or []:
        if get_runtime(name).target != target.name:
            raise ArtifactError(f"runtime {name} runs {get_runtime(name).target} artifacts; {path} is {target.name}")
    if is_model_source(reference):
        source = parse_model_source(reference)
        recipe = load_user_recipe(recipe_path, source.name)
        if weights:
            raise CheckpointError("--weights applies to zoo references; your factory loads its own")
        zoo_recipe = checkpoint = None
    else:
        from mobileseg.recipes import load_recipe, resolve_weights

        zoo_recipe = load_recipe(recipe_path or reference)
        recipe = zoo_as_user_recipe(zoo_recipe, target.name)
        checkpoint = resolve_weights(zoo_recipe, weights, False)
    from mobileseg.preprocess import build_reference
    from mobileseg.user_model import graph_of, load_module, parity_cases
    from mobileseg.verify.graphs import graph_report, graph_rows

    module = load_module(source) if zoo_recipe is None else build_reference(zoo_recipe, checkpoint)
    cases = parity_cases(module, recipe, reference)
    graph = graph_of(module, recipe, cases[0][2])
    io = graph.io_record()
    if target.name == "tflite":
        from mobileseg.runtimes.tflite import bind_tensors

        io["tensors"] = bind_tensors(path, cases[0][1], cases[0][2], str(path))
    entry = {"graph": graph.name, "target": target.name, "precision": precision, "file": path.name, "io": io}
    kinds = {s.name: s.kind for s in recipe.outputs}
    rows = graph_rows(path.parent, entry, cases, recipe.tolerance(precision), kinds, runtimes, threads)
    report = graph_report(recipe, rows, [label for label, _, _ in cases],
                          {"kind": "zoo" if zoo_recipe is not None else "user model", "model": reference})  # fmt: skip
    _require_a_runtime(report, str(path))
    return report


def check_runtimes_apply(folder: Path, manifest: dict, runtimes: list[str] | None) -> None:
    """`ArtifactError` when a runtime asked for runs none of the folder's targets (a CI gate must not read
    an empty comparison as a parity failure)."""
    from mobileseg.runtimes import get_runtime, runtimes_for

    targets = sorted({entry["target"] for entry in manifest["artifacts"]})
    for name in runtimes or []:
        target = get_runtime(name).target
        if target not in targets:
            suitable = [r.name for t in targets for r in runtimes_for(t)]
            raise ArtifactError(f"runtime {name} runs {target} artifacts; {folder} has {', '.join(targets)} "
                                f"(runtimes for it: {', '.join(suitable)})")  # fmt: skip


def reference_for(folder: Path, weights: str | Path | None = None, runtimes: list[str] | None = None):
    """(manifest, recipe, PyTorch reference) of an artifact folder whose files match its manifest."""
    manifest = read_manifest(folder)
    if manifest.get("kind") is not None:
        raise ArtifactError(f"{folder} is a {manifest['kind']} artifact folder: use `mobileseg {manifest['kind']} verify`")
    problems = check_hashes(folder, manifest)
    if problems:
        raise ArtifactError(f"{folder} does not match its manifest: {'; '.join(problems)}")
    check_runtimes_apply(folder, manifest, runtimes)
    recipe = parse_recipe(manifest["recipe"], f"{folder}/manifest.json")
    record = manifest["model"]["weights"]
    path = Path(weights) if weights else (Path(record["path"]) if record["path"] else None)
    if record["sha256"]:
        if path is None or not path.is_file():
            raise CheckpointError(
                f"the weights this artifact was exported with are not at {path}; pass --weights PATH "
                f"(sha256 {record['sha256'][:12]}…)"
            )
        if sha256_file(path) != record["sha256"]:
            raise CheckpointError(f"{path} is not the checkpoint this artifact was exported with (sha256 differs)")
    elif weights:
        raise CheckpointError("this artifact was exported with random weights; --weights does not apply")
    from mobileseg.preprocess import build_reference  # PyTorch: only once the folder and the weights are checked

    return manifest, recipe, build_reference(recipe, path if record["sha256"] else None)
