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
        if result.rule in ("noise floor", "rounding floor"):
            status += f" (at {result.rule})"
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
    lines += floor_lines(report)
    lines += mask_lines(report)
    failures = [r for r in report.results if r.status == "fail"]
    for r in failures:
        lines.append(f"\nFAIL {r.target} {r.precision} on {r.runtime}: {r.reason}")
    lines.append(f"\nOverall: {'PASS' if report.passed else 'FAIL'}")
    return "\n".join(lines) + "\n"


FLOOR_COLUMNS = (("argmax_agreement", "min_argmax_agreement", "label agreement"), ("cosine", "min_cosine", "cosine"))


def floor_lines(report: ParityReport) -> list[str]:
    """The reduced-precision cases beside their noise floor: bar, floor (lowest over the seeds, with the
    mean), value, and the rule that passed them (verify/noise_floor.py)."""
    rows = []
    for result in report.results:
        for case in result.cases:
            floor = case.get("noise_floor")
            if not floor:
                continue
            cells = [result.target, result.precision, result.runtime, case["input"].removeprefix("photo:")]
            for metric, key, _ in FLOOR_COLUMNS:
                bar = result.tolerance.get(key)
                spread = floor.get(metric, {})
                cells += [fmt(bar), f"{fmt(spread.get('min'))} (mean {fmt(spread.get('mean'))})" if spread else "", fmt(case["metrics"].get(metric))]
            rule = "fail" if case["failures"] else case.get("rule", "bar")
            rows.append(cells + [rule])
    if not rows:
        return []
    sigma = next(c["noise_floor"] for r in report.results for c in r.cases if c.get("noise_floor"))
    headers = ["target", "precision", "runtime", "photo"]
    for _, _, name in FLOOR_COLUMNS:
        headers += [f"{name} bar", f"{name} floor", name]
    return [
        "",
        "## Reduced precisions against the noise floor",
        "",
        f"Floor: the float network against itself with Gaussian pixel noise of σ = {fmt(sigma['sigma_255'])}/255 "
        f"({sigma['seeds']} seeds): the lowest value over the seeds (mean in brackets). A case that misses its bar "
        "but is at or above the floor on every missed metric passes \"at noise floor\".",
        "",
        "| " + " | ".join(headers + ["passed by"]) + " |",
        "|" + "---|" * (len(headers) + 1),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def mask_lines(report: ParityReport) -> list[str]:
    """Links to the label-map pictures of each photo (reference, artifact, disagreeing pixels)."""
    links = [
        f"- {r.target} {r.precision} on {r.runtime}, {c['input'].removeprefix('photo:')}: [{c['mask_png']}]({c['mask_png']})"
        f" ({fmt(c['metrics'].get('argmax_agreement'))} agreement)"
        for r in report.results for c in r.cases if c.get("mask_png")
    ]  # fmt: skip
    if not links:
        return []
    return ["", "## Label maps", "", "Per photo: PyTorch's labels, the artifact's, and in red the pixels where they differ.", "", *links]
