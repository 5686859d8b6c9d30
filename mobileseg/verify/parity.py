"""Parity of exported artifacts against the PyTorch reference, on real photos and seeded random images."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobileseg.images import photo, random_image, resize_rgb01
from mobileseg.recipes import Recipe
from mobileseg.runtimes import get_runtime, runtimes_for
from mobileseg.runtimes.torch_runtime import TorchRuntime
from mobileseg.verify.metrics import compare, check

REFERENCE_NOTE = "reference: PyTorch eager (float32, CPU) on the same inputs, preprocessing included"


@dataclass
class ParityInput:
    label: str  # e.g. "photo:astronaut", "random:seed=0"
    array: np.ndarray  # NCHW in the artifact's input format


def parity_inputs(recipe: Recipe) -> list[ParityInput]:
    """The recipe's parity inputs in its input format: real photos resized to the input, then seeded random images."""
    height, width = recipe.input_size
    images = [(f"photo:{name}", resize_rgb01(photo(name), height, width)) for name in recipe.parity_photos]
    images += [
        (f"random:seed={recipe.seed + i}", random_image(recipe.seed + i, height, width))
        for i in range(recipe.parity_random)
    ]
    cases = []
    for label, rgb01 in images:
        nchw = np.repeat(rgb01.transpose(2, 0, 1)[None], recipe.batch, axis=0)
        if recipe.input_format == "uint8":
            array = np.round(nchw * 255).astype(np.uint8)
        elif recipe.input_format == "normalized":
            array = recipe.normalization.apply(torch.from_numpy(nchw)).numpy()
        else:
            array = nchw.astype(np.float32)
        cases.append(ParityInput(label, array))
    return cases


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

    def worst(self) -> dict[str, float]:
        """The worst value of each metric over all cases."""
        worst: dict[str, float] = {}
        for case in self.cases:
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
            "worst": _json_safe(self.worst()), "cases": [{**c, "metrics": _json_safe(c["metrics"])} for c in self.cases],
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
            "model": self.model,
            "input_format": self.input_format,
            "inputs": self.inputs,
            "reference": self.reference,
            "note": REFERENCE_NOTE,
            "passed": self.passed,
            "results": [r.to_dict() for r in self.results],
        }


def _json_safe(metrics: dict[str, float]) -> dict[str, float | str]:
    return {k: (("inf" if v > 0 else "-inf") if isinstance(v, float) and math.isinf(v) else v) for k, v in metrics.items()}


def run_parity(
    reference: nn.Module,
    recipe: Recipe,
    folder: Path,
    artifacts: list[dict],
    output_kind: str,
    runtime_names: list[str] | None = None,
    threads: int | None = None,
) -> ParityReport:
    """Run every artifact on every available runtime for its target and compare with ``reference``.

    ``artifacts`` are manifest entries ``{"target", "precision", "file", ...}``; ``runtime_names``
    restricts the runtimes tried (default: all of them).
    """
    cases = parity_inputs(recipe)
    input_name = "image"
    torch_session = TorchRuntime().from_module(reference, [input_name], ["logits"], threads)
    expected = [torch_session.run({input_name: case.array})["logits"] for case in cases]
    results = []
    for artifact in artifacts:
        tolerance = recipe.tolerance(artifact["target"], artifact["precision"])
        for runtime in runtimes_for(artifact["target"]):
            if runtime_names and runtime.name not in runtime_names:
                continue
            result = ArtifactResult(
                artifact["target"], artifact["precision"], artifact["file"], runtime.name, "pass", tolerance=tolerance
            )
            results.append(result)
            reason = runtime.unavailable_reason()
            if reason:
                result.status, result.reason = "skipped", reason
                continue
            try:
                session = runtime.load(folder / artifact["file"], threads=threads)
                result.version = session.info.version
                outputs = [session.run({session.input_names[0]: case.array}) for case in cases]
            except Exception as exc:  # a runtime crash is a parity failure, reported, not raised
                result.status, result.reason = "error", f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                continue
            for case, ref, out in zip(cases, expected, outputs):
                candidate = next(iter(out.values()))
                try:
                    metrics = compare(ref, candidate, output_kind)
                    failures = check(metrics, tolerance)
                except ValueError as exc:
                    metrics, failures = {}, [str(exc)]
                result.cases.append({"input": case.label, "output": "logits", "metrics": metrics, "failures": failures})
                if failures:
                    result.status = "fail"
            if result.status == "fail":
                result.reason = "; ".join(sorted({f for c in result.cases for f in c["failures"]}))
    return ParityReport(
        model=recipe.model,
        input_format=recipe.input_format,
        inputs=[c.label for c in cases],
        results=results,
        reference={"runtime": "torch", "version": torch.__version__},
    )


def get_runtime_names(names: list[str] | None) -> list[str] | None:
    """Validate user-given runtime names (unknown → one clear error)."""
    if names:
        for name in names:
            get_runtime(name)
    return names
