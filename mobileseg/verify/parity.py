"""Parity of the zoo's exported picture models against the PyTorch reference, on real photos and seeded
random images (the judging loop is `verify/judge.py`)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobileseg.preprocess import format_input
from mobileseg.images import photo, quantize_pixels, random_image, resize_rgb01
from mobileseg.recipes import Recipe
from mobileseg.runtimes.torch_runtime import TorchRuntime
from mobileseg.verify.judge import file_row, runtime_rows
from mobileseg.verify.metrics import JUDGED_ON_KEY, check, compare, widened
from mobileseg.verify.noise_floor import ROUNDING_METRICS, ROUNDING_SIGMA, NoiseFloor, judge_by_floor, noise_floor
from mobileseg.verify.results import ParityReport, json_safe  # noqa: F401  (ParityReport re-exported)


class Float64Reference:
    """The reference network evaluated in float64, per parity input, on demand.

    PyTorch's own float32 result is not exact: on SINet-Cityscapes at 1024×2048 it is 2.1e-3 (max rel)
    from the float64 result, while LiteRT's XNNPACK kernels are 2.8e-5 from it. An fp32 artifact that
    misses the tolerance against PyTorch float32 but meets it against float64 computes the function
    more exactly than the reference does; it passes, and its case records ``"reference": "float64"``.

    The tolerance against float64 is widened to PyTorch float32's own metrics against float64 on the
    same input (its ``"float32_floor"``): an artifact no further from the exact result than the reference
    is, is as exact as float32 allows on that network. On well-conditioned networks the floor is ~1e-6 and
    changes nothing; on SINet-Cityscapes tflite-runtime's XNNPACK is 3.7e-4 from float64 (PyTorch: 2.1e-3).
    """

    def __init__(self, reference: nn.Module):
        self.reference = reference
        self.model: nn.Module | None = None
        self.outputs: dict[int, np.ndarray | None] = {}

    def __call__(self, index: int, image: np.ndarray) -> np.ndarray | None:
        """The float64 output for parity input ``index`` (None if the network cannot run in float64)."""
        if index not in self.outputs:
            try:
                if self.model is None:
                    self.model = copy.deepcopy(self.reference).double().eval()
                tensor = torch.from_numpy(np.ascontiguousarray(image))
                with torch.no_grad():
                    output = self.model(tensor.double() if tensor.is_floating_point() else tensor)
                self.outputs[index] = output.numpy()
            except (RuntimeError, TypeError):  # an op without a float64 kernel: no second opinion
                self.outputs[index] = None
        return self.outputs[index]


@dataclass
class ParityInput:
    label: str  # e.g. "photo:astronaut", "random:seed=0"
    rgb01: np.ndarray  # (batch, 3, H, W) float32 RGB in [0, 1] on 8-bit levels

    def as_format(self, input_format: str, recipe: Recipe) -> np.ndarray:
        """The same picture as an artifact of ``input_format`` takes it (NCHW)."""
        return format_input(self.rgb01, input_format, recipe.normalization)


def parity_inputs(recipe: Recipe) -> list[ParityInput]:
    """The recipe's parity inputs: real photos resized to the input, then seeded random images; all are
    rounded to 8-bit levels so that every input format (float, uint8, pixels) carries the same picture."""
    height, width = recipe.input_size
    images = [(f"photo:{name}", resize_rgb01(photo(name), height, width)) for name in recipe.parity_photos]
    images += [
        (f"random:seed={recipe.seed + i}", random_image(recipe.seed + i, height, width))
        for i in range(recipe.parity_random)
    ]
    return [
        ParityInput(label, np.repeat(quantize_pixels(rgb01).transpose(2, 0, 1)[None], recipe.batch, axis=0))
        for label, rgb01 in images
    ]


def _float_input(rgb01: np.ndarray, recipe: Recipe) -> np.ndarray:
    """A picture off the 8-bit levels as the reference takes it: a uint8 model's preprocessing casts its
    input to float, so it takes 0..255 floats."""
    if recipe.input_format == "uint8":
        return (rgb01 * 255).astype(np.float32)
    return format_input(rgb01, recipe.input_format, recipe.normalization)


def mask_writer(folder: Path, output_kind: str):
    """A `judge.Observer` that writes each photo's label-map picture under ``folder/masks``."""
    from mobileseg.verify.judge import LABEL_KINDS
    from mobileseg.verify.masks import write_mask_picture
    from mobileseg.verify.metrics import labels

    def observe(row, label: str, name: str, reference: np.ndarray, candidate: np.ndarray) -> dict:
        if not label.startswith("photo:") or output_kind not in LABEL_KINDS or reference.ndim != 4:
            return {}
        stem = "-".join([row.target, row.precision, row.runtime, label.removeprefix("photo:")])
        relative = f"masks/{stem}.png"
        write_mask_picture(folder / relative, labels(reference, output_kind), labels(candidate, output_kind), reference.shape[1])
        return {"mask_png": relative}

    return observe


def run_parity(
    reference: nn.Module,
    recipe: Recipe,
    folder: Path,
    artifacts: list[dict],
    output_kind: str,
    runtime_names: list[str] | None = None,
    threads: int | None = None,
    masks: bool = False,
) -> ParityReport:
    """Run every artifact on every available runtime for its target and compare with ``reference``, through
    the one parity loop (`verify/judge.py`); fp32 files that miss get the float64 second opinion.

    ``artifacts`` are manifest entries ``{"target", "precision", "file", ...}``; ``runtime_names``
    restricts the runtimes tried (default: all of them). With ``masks``, each photo's label maps are
    written to ``folder/masks/`` (`verify/masks.py`) and the case records their path.
    """
    cases = parity_inputs(recipe)
    input_name = "image"
    torch_session = TorchRuntime().from_module(reference, [input_name], ["logits"], threads)
    expected = [torch_session.run({input_name: case.as_format(recipe.input_format, recipe)})["logits"] for case in cases]
    float64_reference = Float64Reference(reference)
    float32_floors: dict[int, dict[str, float]] = {}

    def second_opinion(index: int, name: str, candidate: np.ndarray, tolerance: dict):
        exact = float64_reference(index, cases[index].as_format(recipe.input_format, recipe))
        if exact is None:
            return None
        if index not in float32_floors:  # PyTorch float32 against float64: the same for every artifact
            float32_floors[index] = compare(exact, expected[index], output_kind)
        exact_metrics = compare(exact, candidate, output_kind)
        if check(exact_metrics, widened(tolerance, float32_floors[index])):
            return None
        return exact_metrics, {"reference": "float64", "float32_floor": json_safe(float32_floors[index])}

    def judged(tolerance: dict):
        return lambda label: tolerance.get(JUDGED_ON_KEY, "all") == "all" or label.startswith("photo:")

    noise_floors: dict[str, NoiseFloor] = {}

    def pixel_noise_floors() -> dict[str, NoiseFloor]:  # made once, for the first reduced-precision file
        if not noise_floors:
            for case, clean in zip(cases, expected):
                if case.label.startswith("photo:"):
                    noise_floors[case.label] = noise_floor(
                        lambda image: torch_session.run({input_name: image})["logits"], case.rgb01, clean,
                        lambda rgb01: _float_input(rgb01, recipe), output_kind,
                    )  # fmt: skip
        return noise_floors

    rounding: dict[str, NoiseFloor] = {}

    def rounding_floors() -> dict[str, NoiseFloor]:  # fp32 cases that missed: every input, made once
        if not rounding:
            for case, clean in zip(cases, expected):
                rounding[case.label] = noise_floor(
                    lambda image: torch_session.run({input_name: image})["logits"], case.rgb01, clean,
                    lambda rgb01: _float_input(rgb01, recipe), output_kind, sigma=ROUNDING_SIGMA, metrics=ROUNDING_METRICS,
                )  # fmt: skip
        return rounding

    results = []
    for artifact in artifacts:
        tolerance = recipe.tolerance(artifact["target"], artifact["precision"])
        input_format = artifact.get("io", {}).get("input", {}).get("format", recipe.input_format)
        formatted = [(case.label, {input_name: case.as_format(input_format, recipe)}, {"logits": out})
                     for case, out in zip(cases, expected)]  # fmt: skip
        opinion = second_opinion if artifact["precision"] == "fp32" else None
        rows = runtime_rows(artifact, lambda runtime: file_row(
            folder, artifact, runtime, formatted, tolerance, {"logits": output_kind}, threads, judged(tolerance), opinion,
            mask_writer(Path(folder), output_kind) if masks else None,
        ), runtime_names, tolerance)  # fmt: skip
        if artifact["precision"] != "fp32" and tolerance.get(JUDGED_ON_KEY) == "photos":
            for row in rows:
                judge_by_floor(row, pixel_noise_floors())
        if artifact["precision"] == "fp32":
            for row in rows:
                if row.status == "fail":
                    judge_by_floor(row, rounding_floors(), rule="rounding floor")
        results += rows
    return ParityReport(
        model=recipe.model,
        input_format=recipe.input_format,
        inputs=[c.label for c in cases],
        results=results,
        reference={"runtime": "torch", "version": torch.__version__},
    )
