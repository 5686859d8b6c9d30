"""The one parity loop of mobileseg: an exported file run on each runtime of its target, and every output
of every parity case judged against PyTorch's output on the same inputs. The zoo's picture models
(`verify/parity.py`, which adds the float64 second opinion), folders of named graphs and single files
(`verify/graphs.py`) and the VOS subgraphs all go through it. No PyTorch here.

A case is ``(label, inputs, expected)``: name → array for the file's inputs and PyTorch's outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from mobileseg.verify.metrics import check, compare
from mobileseg.verify.results import ArtifactResult

# Output kinds judged by their labels too (argmax over a channel axis), when the output is NCHW
LABEL_KINDS = ("logits", "probabilities", "softmax_logits", "sigmoid_logit")

Case = tuple[str, dict, dict]
# (case index, output name, candidate, tolerance) → (metrics, record) when a more exact reference passes the
# candidate that failed against PyTorch float32, else None
SecondOpinion = Callable[[int, str, np.ndarray, dict], "tuple[dict, dict] | None"]
# (row, case label, output name, reference, candidate) → fields the case record adds (e.g. a picture's path)
Observer = Callable[["ArtifactResult", str, str, np.ndarray, np.ndarray], dict]


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _feed(session, inputs: dict) -> dict:
    """``inputs`` by the session's names; a file with one input takes the one picture whatever its name."""
    names = list(getattr(session, "input_names", []) or [])
    if len(names) == 1 and len(inputs) == 1 and names[0] not in inputs:
        return {names[0]: next(iter(inputs.values()))}
    return inputs


def _output(outputs: dict, name: str, reference: np.ndarray) -> np.ndarray:
    """Output ``name`` (a file with one output: that one), as float32 in the reference's shape when it holds
    as many values (a runner may return a squeezed or flattened tensor)."""
    value = outputs[name] if name in outputs or len(outputs) != 1 else next(iter(outputs.values()))
    value = np.asarray(value)
    if value.dtype != np.float32 and np.issubdtype(value.dtype, np.floating):
        value = value.astype(np.float32)
    return value.reshape(reference.shape) if value.size == reference.size and value.shape != reference.shape else value


def judge_cases(
    session, cases: list[Case], tolerance: dict, output_kinds: dict[str, str] | None = None,
    judged: Callable[[str], bool] | None = None, second_opinion: SecondOpinion | None = None,
    observe: Callable[[str, str, np.ndarray, np.ndarray], dict] | None = None,
) -> list[dict]:  # fmt: skip
    """Run ``session`` on every case; one record per case and output: ``input`` (the case's label),
    ``output``, ``gated`` (whether ``tolerance`` judges this case: ``judged(label)``, default all),
    ``metrics`` and ``failures`` (non-finite values named first), plus what ``second_opinion`` adds."""
    records = []
    for index, (label, inputs, expected) in enumerate(cases):
        outputs = session.run(_feed(session, inputs))
        gated = judged is None or judged(label)
        for name, reference in expected.items():
            extra: dict = {}
            try:
                candidate = _output(outputs, name, reference)
                kind = (output_kinds or {}).get(name)
                metrics = compare(reference, candidate, kind if kind in LABEL_KINDS and reference.ndim == 4 else None)
                failures = check(metrics, tolerance) if gated else []
                if observe is not None:
                    extra.update(observe(label, name, reference, candidate))
                if failures and second_opinion is not None:
                    better = second_opinion(index, name, candidate, tolerance)
                    if better is not None:
                        (metrics, more), failures = better, []
                        extra.update(more)
                bad = int(np.size(candidate) - np.isfinite(candidate).sum())
                if bad:  # name the cause: a runtime bug (e.g. NaN from a delegate) reads better than "inf"
                    failures.insert(0, f"output has {bad} non-finite (NaN/inf) values")
            except ValueError as exc:
                metrics, failures = {}, [str(exc)]
            records.append({"input": label, "output": name, "gated": gated, "metrics": metrics, "failures": failures, **extra})
    return records


def file_row(
    folder: Path, entry: dict, runtime, cases: list[Case], tolerance: dict, output_kinds: dict[str, str] | None = None,
    threads: int | None = 1, judged: Callable[[str], bool] | None = None, second_opinion: SecondOpinion | None = None,
    observe: Observer | None = None,
) -> ArtifactResult:  # fmt: skip
    """The `ArtifactResult` of manifest ``entry``'s file on ``runtime`` (a `Runtime`): one case per parity
    input and output; a file the runtime cannot load or run is an ``error`` row with the reason."""
    row = ArtifactResult(entry["target"], entry["precision"], entry["file"], runtime.name, "pass", tolerance=tolerance)
    try:
        session = runtime.load(Path(folder) / entry["file"], threads=threads, io=entry.get("io", {}))
        row.version = session.info.version
        seen = (lambda *args: observe(row, *args)) if observe is not None else None
        row.cases = judge_cases(session, cases, tolerance, output_kinds, judged, second_opinion, seen)
    except Exception as exc:  # noqa: BLE001 (a runtime crash is a parity failure, reported, not raised)
        row.status, row.reason = "error", f"{type(exc).__name__}: {first_line(exc)}"
        return row
    if any(case["failures"] for case in row.cases):
        row.status = "fail"
        row.reason = "; ".join(sorted({f for case in row.cases for f in case["failures"]}))
    return row


def runtime_rows(
    entry: dict, make_row: Callable[[object], ArtifactResult], runtimes: list[str] | None = None, tolerance: dict | None = None,
) -> list[ArtifactResult]:  # fmt: skip
    """One row per runtime of ``entry``'s target (only ``runtimes`` when given): ``skipped`` with the reason
    where that runtime is not here, else ``make_row(runtime)``."""
    from mobileseg.runtimes import runtimes_for

    rows = []
    for runtime in runtimes_for(entry["target"]):
        if runtimes and runtime.name not in runtimes:
            continue
        reason = runtime.unavailable_reason()
        if reason:
            rows.append(ArtifactResult(entry["target"], entry["precision"], entry["file"], runtime.name, "skipped",
                                       reason, tolerance=dict(tolerance or {})))  # fmt: skip
        else:
            rows.append(make_row(runtime))
    return rows
