"""Rendering parity reports as Markdown (files, README) — the CLI renders the same rows with rich."""

from __future__ import annotations

from mobileseg.verify.metrics import fmt
from mobileseg.verify.results import ParityReport

COLUMNS = ("target", "precision", "runtime", "status", "max_rel", "max_abs", "cosine", "psnr_db", "argmax_agreement", "miou")
HEADERS = ("target", "precision", "runtime", "status", "max rel", "max abs", "cosine", "PSNR dB", "argmax agree", "mIoU")


def report_rows(report: ParityReport) -> list[list[str]]:
    """One row per artifact × runtime with the worst value of each metric over all inputs."""
    rows = []
    for result in report.results:
        worst = result.worst()
        status = result.status.upper() + (f" ({result.reason})" if result.status in ("skipped", "error") else "")
        if any(case.get("reference") == "float64" for case in result.cases):
            status += " (vs float64)"
        rows.append(
            [result.target, result.precision, result.runtime, status]
            + [fmt(worst.get(metric)) for metric in COLUMNS[4:]]
        )
    return rows


def to_markdown(report: ParityReport) -> str:
    lines = [
        f"# Parity: {report.model}",
        "",
        f"Input format `{report.input_format}`; inputs: {', '.join(report.inputs)}.",
        "Worst value over the inputs each precision is judged on (reduced precisions: the photos); "
        "reference: PyTorch eager, float32 (\"vs float64\": an fp32 artifact that misses the tolerance against it, "
        "judged against the float64 network with each bound widened to PyTorch float32's own error there). mil-reference executes the converted Core ML program on Linux "
        "(it checks the converted graph, not Apple's kernels).",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in report_rows(report)]
    failures = [r for r in report.results if r.status == "fail"]
    for r in failures:
        lines.append(f"\nFAIL {r.target} {r.precision} on {r.runtime}: {r.reason}")
    lines.append(f"\nOverall: {'PASS' if report.passed else 'FAIL'}")
    return "\n".join(lines) + "\n"
