"""Parity results: per artifact and runtime, the cases and worst metrics; the report of a folder.
Plain data (no PyTorch), so a cached artifact's report reads back without the heavy libraries."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

PARITY_SCHEMA = "mobileseg.parity/1"
REFERENCE_NOTE = (
    "reference: PyTorch eager (float32, CPU) on the same inputs, preprocessing included; an fp32 artifact "
    "that misses the tolerance against it is judged against the same network in float64, with the tolerance "
    "widened to PyTorch float32's own error there"
)


@dataclass
class ArtifactResult:
    target: str
    precision: str
    file: str
    runtime: str
    status: str  # "pass" | "fail" | "skipped" | "error"
    reason: str = ""
    version: str = ""
    tolerance: dict = field(default_factory=dict)
    cases: list[dict] = field(default_factory=list)
    rule: str = ""  # what passed it: "bar" (the recipe's bounds), "noise floor" or "rounding floor" (verify/noise_floor.py)

    def worst(self) -> dict[str, float]:
        """The worst value of each metric over the cases the tolerance gates."""
        worst: dict[str, float] = {}
        for case in self.cases:
            if not case.get("gated", True):  # measured and reported, but not what this precision is judged on
                continue
            for name, value in case["metrics"].items():
                lower_is_worse = name in ("cosine", "psnr_db", "argmax_agreement", "miou")
                if name not in worst:
                    worst[name] = value
                elif lower_is_worse:
                    worst[name] = min(worst[name], value)
                else:
                    worst[name] = max(worst[name], value)
        return worst

    def to_dict(self) -> dict:
        return {
            "target": self.target, "precision": self.precision, "file": self.file, "runtime": self.runtime,
            "version": self.version, "status": self.status, "reason": self.reason, "tolerance": self.tolerance,
            "rule": self.rule, "worst": json_safe(self.worst()), "cases": [{**c, "metrics": json_safe(c["metrics"])} for c in self.cases],
        }  # fmt: skip


@dataclass
class ParityReport:
    model: str
    input_format: str
    inputs: list[str]
    results: list[ArtifactResult]
    reference: dict

    @property
    def passed(self) -> bool:
        return all(r.status in ("pass", "skipped") for r in self.results) and any(
            r.status == "pass" for r in self.results
        )

    def to_dict(self) -> dict:
        return {
            "schema": PARITY_SCHEMA,
            "model": self.model,
            "input_format": self.input_format,
            "inputs": self.inputs,
            "reference": self.reference,
            "note": REFERENCE_NOTE,
            "passed": self.passed,
            "results": [r.to_dict() for r in self.results],
        }

    @classmethod
    def from_dict(cls, data: dict) -> ParityReport:
        """A report read back from ``parity.json`` (infinite metrics were written as strings)."""
        results = []
        for r in data["results"]:
            cases = [{**c, "metrics": {k: float(v) for k, v in c["metrics"].items()}} for c in r["cases"]]
            results.append(ArtifactResult(
                r["target"], r["precision"], r["file"], r["runtime"], r["status"], r.get("reason", ""),
                r.get("version", ""), r.get("tolerance", {}), cases, r.get("rule", ""),
            ))  # fmt: skip
        return cls(data["model"], data["input_format"], data["inputs"], results, data["reference"])


def json_safe(metrics: dict[str, float]) -> dict[str, float | str]:
    """JSON has no inf/NaN: they are written as the strings float() reads back."""
    return {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
