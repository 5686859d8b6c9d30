"""Parity of exported graph files (the VOS subgraphs, users' models, a single file made anywhere) against
PyTorch, through the one parity loop (`verify/judge.py`): each output compared by name on the real inputs
of the parity cases, the worst case per output kept."""

from __future__ import annotations

from pathlib import Path

from mobileseg.verify.judge import Case, file_row, runtime_rows
from mobileseg.verify.results import ArtifactResult, ParityReport

REPORTED = ("max_rel", "max_abs", "cosine")


def _worst(metrics: dict | None, new: dict) -> dict:
    if metrics is None:
        return new
    worse = {"max_rel": max, "max_abs": max, "cosine": min, "argmax_agreement": min}
    return {k: worse[k](metrics[k], new[k]) if k in worse and k in metrics else new[k] for k in new}


def summary(row: ArtifactResult, graph: str) -> dict:
    """A file's row as a graph's parity record: per output the worst metrics over the cases (``REPORTED``, and
    label agreement where judged), the failures as ``OUTPUT on CASE: ...``; an error row keeps its reason."""
    result = {"graph": graph, "target": row.target, "precision": row.precision, "runtime": row.runtime}
    if row.status == "error":
        return {**result, "passed": False, "error": row.reason.split(": ", 1)[-1] or row.reason}
    metrics: dict[str, dict] = {}
    for case in row.cases:
        if case["metrics"]:
            kept = {k: case["metrics"][k] for k in REPORTED + ("argmax_agreement",) if k in case["metrics"]}
            metrics[case["output"]] = _worst(metrics.get(case["output"]), kept)
    failures = [f"{case['output']} on {case['input']}: {f}" for case in row.cases for f in case["failures"]]
    return {**result, "passed": not failures, "metrics": metrics, "failures": failures, "tolerance": dict(row.tolerance)}


def graph_cases(entry: dict, cases: list[Case]) -> list[Case]:
    """``cases`` restricted to the inputs and outputs ``entry``'s file has."""
    io = entry["io"]
    return [(label, {n: inputs[n] for n in io["inputs"]}, {n: expected[n] for n in io["outputs"]}) for label, inputs, expected in cases]


def graph_parity(
    folder: Path, entry: dict, runtime: str, cases: list[Case], tolerance: dict,
    output_kinds: dict[str, str] | None = None, threads: int | None = 1,
) -> dict:  # fmt: skip
    """The `summary` of the file of manifest ``entry`` run on ``runtime`` with every case's inputs
    (``output_kinds`` adds label agreement for logits and probabilities with a channel axis)."""
    from mobileseg.runtimes import get_runtime

    graph = entry.get("graph", entry.get("subgraph"))
    row = file_row(folder, entry, get_runtime(runtime), graph_cases(entry, cases), tolerance, output_kinds, threads)
    return summary(row, graph)


def artifact_result(result: dict, file: str, version: str = "") -> ArtifactResult:
    """A graph parity result as the `ArtifactResult` reports and tables show (one case per output)."""
    status = "error" if "error" in result else "pass" if result["passed"] else "fail"
    reason = result.get("error") or "; ".join(result.get("failures", []))
    cases = [{"input": f"{result['graph']}.{name}", "metrics": dict(m)} for name, m in result.get("metrics", {}).items()]
    return ArtifactResult(result["target"], result["precision"], file, result["runtime"], status, reason, version,
                          result.get("tolerance", {}), cases)  # fmt: skip


def graph_rows(
    folder: Path, entry: dict, cases: list[Case], tolerance: dict, output_kinds: dict[str, str],
    runtimes: list[str] | None = None, threads: int | None = 1,
) -> list[ArtifactResult]:  # fmt: skip
    """One row per runtime of ``entry``'s target (only ``runtimes`` when given): skipped where that runtime is
    not here, else the graph's parity on ``cases`` (one case per output, its worst)."""
    graph = entry.get("graph", entry.get("subgraph"))

    def row(runtime) -> ArtifactResult:
        judged = file_row(folder, entry, runtime, graph_cases(entry, cases), tolerance, output_kinds, threads)
        return artifact_result(summary(judged, graph), entry["file"], judged.version)

    return runtime_rows(entry, row, runtimes, tolerance)


def graph_report(recipe, rows: list[ArtifactResult], inputs: list[str], reference: dict | None = None) -> ParityReport:
    """The `ParityReport` of a model declared by a `UserRecipe` (a user's, or a zoo model read as one)."""
    from mobileseg.artifact import REFERENCE_PROGRAM

    formats = sorted({s.pixel_format or "tensor" for s in recipe.inputs})
    reference = reference or {"kind": "torch.export program", "file": REFERENCE_PROGRAM}
    return ParityReport(recipe.name, "/".join(formats), inputs, rows, reference)
