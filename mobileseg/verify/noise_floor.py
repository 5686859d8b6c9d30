"""The model's own noise floor: how well the float network agrees with itself when its input picture
carries noise nobody can see (Gaussian, σ = half a grey level, several seeds).

A reduced-precision file cannot be asked to agree with float better than float agrees with itself under
such a perturbation. The Cityscapes checkpoints change 1–6 % of their labels on the judged photos under
σ = 0.5/255 (docs/precision.md), so a 0.97 label-agreement bar is stricter than the network itself is
there; the portrait models' floors are above their bars, so their bars decide.

Rule: a reduced-precision case that misses a bound of its recipe passes "at noise floor" when each
missed metric is at or above the *lowest* value the float network reached against itself over the seeds
(`NoiseFloor.bounds`); the report shows bar, floor (mean and range) and value side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NOISE_SIGMA = 0.5 / 255  # half a grey level, in RGB [0, 1] units
NOISE_SEEDS = 5
FLOOR_METRICS = ("argmax_agreement", "cosine")  # the metrics reduced precisions are judged on

# fp32 files: the same rule at float32's own resolution. A network that makes discrete choices inside
# (SegNet's max-pooling positions drive its unpooling) turns a different but equally exact summation order
# into a value moved by one pixel wherever two values of a window are within rounding of each other.
# Perturbing the input by ~8 float32 ulps (σ = 1e-6) makes such near-ties flip as a reordering does; on a
# network without such choices the floor is ~1e-6 from exact and changes no bar.
ROUNDING_SIGMA = 1e-6
ROUNDING_METRICS = ("argmax_agreement", "cosine", "max_rel", "psnr_db")
_LARGER_IS_WORSE = ("max_rel", "max_abs")


@dataclass
class NoiseFloor:
    """The float network against itself on one picture: per metric, its value under each seed's noise."""

    sigma: float
    values: dict[str, list[float]] = field(default_factory=dict)

    def bounds(self) -> dict[str, float]:
        """Per metric, the lowest value over the seeds: what `verify.metrics.widened` widens a bar to."""
        return {metric: max(values) if metric in _LARGER_IS_WORSE else min(values) for metric, values in self.values.items()}

    def to_dict(self) -> dict:
        return {
            "sigma_255": round(self.sigma * 255, 6), "seeds": len(next(iter(self.values.values()), [])),
            **{metric: {"mean": float(np.mean(v)), "min": float(min(v)), "max": float(max(v))} for metric, v in self.values.items()},
        }  # fmt: skip


def noise_floor(
    run, rgb01: np.ndarray, clean_output: np.ndarray, to_input, kind: str | None,
    sigma: float = NOISE_SIGMA, seeds: int = NOISE_SEEDS, metrics: tuple[str, ...] = FLOOR_METRICS,
) -> NoiseFloor:  # fmt: skip
    """The `NoiseFloor` of one picture.

    ``run`` maps a model input to the float network's output (NCHW); ``rgb01`` is the picture (N, 3, H, W)
    in [0, 1]; ``clean_output`` the network's output on it; ``to_input`` turns a float RGB picture into the
    model's input (the noisy picture is not rounded to 8-bit levels: half a level would mostly round away);
    ``kind`` the output kind for the label metric. Seeds 0..seeds-1 of NumPy's default generator.
    """
    from mobileseg.verify.metrics import compare

    floor = NoiseFloor(sigma, {metric: [] for metric in metrics})
    for seed in range(seeds):
        noise = np.random.default_rng(seed).normal(0.0, sigma, rgb01.shape).astype(np.float32)
        noisy = np.clip(rgb01 + noise, 0.0, 1.0)
        measured = compare(clean_output, run(to_input(noisy)), kind)
        for metric in floor.values:
            if metric in measured:
                floor.values[metric].append(float(measured[metric]))
    floor.values = {metric: values for metric, values in floor.values.items() if values}
    return floor


def judge_by_floor(row, floors: dict[str, NoiseFloor], rule: str = "noise floor") -> None:
    """Record each judged photo's floor in ``row``'s cases (an `ArtifactResult`) and pass, "at noise floor",
    the cases whose every missed bound is met at the floor; the row's ``rule`` says which rule passed it.
    A case with non-finite outputs or a missed bound the floor does not cover still fails."""
    from mobileseg.verify.metrics import check, widened

    if row.status not in ("pass", "fail"):
        return
    by_floor = False
    for case in row.cases:
        floor = floors.get(case["input"])
        if floor is None or not case.get("gated", True):
            continue
        case["noise_floor" if rule == "noise floor" else "rounding_floor"] = floor.to_dict()
        if not case["failures"] or any("non-finite" in failure for failure in case["failures"]):
            continue
        if not check(case["metrics"], widened(row.tolerance, floor.bounds())):
            case["failures"], case["rule"], by_floor = [], rule, True
    failures = sorted({failure for case in row.cases for failure in case["failures"]})
    row.status, row.reason = ("fail", "; ".join(failures)) if failures else ("pass", "")
    row.rule = rule if by_floor and not failures else "bar" if not failures else ""
