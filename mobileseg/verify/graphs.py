"""Parity of one exported graph file against PyTorch, on the real inputs of its parity cases: each output
compared by name, the worst case per output kept. Used for every deployable with named graphs (the VOS
subgraphs, users' models); the zoo's picture models add float64 references and label metrics on top
(`verify/parity.py`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mobileseg.verify.metrics import check, compare
from mobileseg.verify.results import ArtifactResult, ParityReport

REPORTED = ("max_rel", "max_abs", "cosine")
LABEL_KINDS = ("logits", "probabilities", "softmax_logits", "sigmoid_logit")


def _worst(metrics: dict | None, new: dict) -> dict:
    if metrics is None:
        return new
    worse = {"max_rel": max, "max_abs": max, "cosine": min, "argmax_agreement": min}
    return {k: worse[k](metrics[k], new[k]) if k in worse and k in metrics else new[k] for k in new}


def graph_parity(
    folder: Path, entry: dict, runtime: str, cases: list[tuple[str, dict, dict]], tolerance: dict,
    output_kinds: dict[str, str] | None = None, threads: int | None = 1,
) -> dict:  # fmt: skip
    """Run the file of manifest ``entry`` on ``runtime`` with every case's inputs; per output, the worst
    metrics over the cases against PyTorch's (``output_kinds`` adds label agreement for logits and
    probabilities with a channel axis). A file a runtime cannot load or run fails, with the reason."""
    from mobileseg.runtimes import get_runtime

    graph = entry.get("graph", entry.get("subgraph"))
    result = {"graph": graph, "target": entry["target"], "precision": entry["precision"], "runtime": runtime}
    io = entry["io"]
    metrics: dict[str, dict] = {}
    failures: list[str] = []
    try:
        session = get_runtime(runtime).load(Path(folder) / entry["file"], threads=threads, io=io)
        for label, inputs, expected in cases:
            outputs = session.run({name: inputs[name] for name in io["inputs"]})
            for name in io["outputs"]:
                reference = expected[name]
                got = np.asarray(outputs[name], dtype=np.float32).reshape(reference.shape)
                kind = (output_kinds or {}).get(name)
                labelled = kind in LABEL_KINDS and reference.ndim == 4
                m = compare(reference, got, kind if labelled else None)
                kept = {k: m[k] for k in REPORTED + (("argmax_agreement",) if labelled else ())}
                metrics[name] = _worst(metrics.get(name), kept)
                failures += [f"{name} on {label}: {f}" for f in check(m, tolerance)]
    except Exception as exc:  # noqa: BLE001 (a runtime that cannot load or run a file is a parity failure)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return {**result, "passed": False, "error": message}
    return {**result, "passed": not failures, "metrics": metrics, "failures": failures, "tolerance": dict(tolerance)}


def artifact_result(result: dict, file: str, version: str = "") -> ArtifactResult:
    """A graph parity result as the `ArtifactResult` reports and tables show (one case per output)."""
    status = "error" if "error" in result else "pass" if result["passed"] else "fail"
    reason = result.get("error") or "; ".join(result.get("failures", []))
    cases = [{"input": f"{result['graph']}.{name}", "metrics": dict(m)} for name, m in result.get("metrics", {}).items()]
    return ArtifactResult(result["target"], result["precision"], file, result["runtime"], status, reason, version,
                          result.get("tolerance", {}), cases)  # fmt: skip


def runtime_rows(
    folder: Path, entry: dict, cases: list[tuple[str, dict, dict]], tolerance: dict, output_kinds: dict[str, str],
    runtimes: list[str] | None = None, threads: int | None = 1,
) -> list[ArtifactResult]:  # fmt: skip
    """One row per runtime of ``entry``'s target (only ``runtimes`` when given): skipped where that runtime is
    not here, else its `graph_parity` on ``cases``."""
    from mobileseg.runtimes import runtimes_for

    rows = []
    for runtime in runtimes_for(entry["target"]):
        if runtimes and runtime.name not in runtimes:
            continue
        reason = runtime.unavailable_reason()
        if reason:
            rows.append(ArtifactResult(entry["target"], entry["precision"], entry["file"], runtime.name, "skipped", reason))
        else:
            result = graph_parity(folder, entry, runtime.name, cases, tolerance, output_kinds, threads)
            rows.append(artifact_result(result, entry["file"]))
    return rows


def graph_report(recipe, rows: list[ArtifactResult], inputs: list[str], reference: dict | None = None) -> ParityReport:
    """The `ParityReport` of a model declared by a `UserRecipe` (a user's, or a zoo model read as one)."""
    from mobileseg.artifact import REFERENCE_PROGRAM

    formats = sorted({s.pixel_format or "tensor" for s in recipe.inputs})
    reference = reference or {"kind": "torch.export program", "file": REFERENCE_PROGRAM}
    return ParityReport(recipe.name, "/".join(formats), inputs, rows, reference)
