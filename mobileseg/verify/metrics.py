"""Parity metrics between a reference output (PyTorch) and a candidate output (an exported model).

All metrics are computed in float64 over the whole tensor:

* ``max_abs``    max |ref − out|
* ``max_rel``    max |ref − out| / max |ref|  (relative to the reference's largest magnitude, so it stays
  meaningful when trained logits reach 1e7 on unrealistic inputs)
* ``mean_abs``   mean |ref − out|
* ``cosine``     cosine similarity of the flattened tensors
* ``psnr_db``    20·log10(max |ref|) − 10·log10(MSE); ``inf`` when identical
* segmentation outputs only: ``argmax_agreement`` (fraction of pixels whose label agrees) and ``miou``
  (mean over classes present in either label map of |A∩B| / |A∪B|). Labels are the argmax over
  classes for ``softmax_logits`` and ``logit > 0`` for a single ``sigmoid_logit`` channel.
"""

from __future__ import annotations

import math

import numpy as np

METRIC_NAMES = ("max_abs", "max_rel", "mean_abs", "cosine", "psnr_db", "argmax_agreement", "miou")

# tolerance key → (metric, comparison); "max_*" bound from above, "min_*" from below
TOLERANCE_KEYS = {
    "max_abs": ("max_abs", "<="),
    "max_rel": ("max_rel", "<="),
    "mean_abs": ("mean_abs", "<="),
    "min_cosine": ("cosine", ">="),
    "min_psnr_db": ("psnr_db", ">="),
    "min_argmax_agreement": ("argmax_agreement", ">="),
    "min_miou": ("miou", ">="),
}
# Not a bound: which parity inputs the bounds gate, "all" (default) or "photos" (random images are still
# measured and reported). Reduced precisions are judged on real pictures: their error on noise says little.
JUDGED_ON_KEY = "judged_on"


def labels(output: np.ndarray, kind: str) -> np.ndarray:
    """(N, C, H, W) logits → (N, H, W) integer labels."""
    if kind == "sigmoid_logit" or output.shape[1] == 1:
        return (output[:, 0] > 0).astype(np.int64)
    return output.argmax(axis=1)


def mean_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mean intersection over union of two label maps (non-negative integers) over the classes present
    in either, from their confusion matrix."""
    classes = int(max(a.max(), b.max())) + 1
    confusion = np.bincount((a.astype(np.int64) * classes + b).ravel(), minlength=classes * classes).reshape(classes, classes)
    intersection = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    present = union > 0
    return float(np.mean(intersection[present] / union[present]))


def compare(
    reference: np.ndarray, candidate: np.ndarray, kind: str | None = None, reference_labels: np.ndarray | None = None
) -> dict[str, float]:
    """All metrics of ``candidate`` against ``reference``; ``kind`` enables the segmentation metrics, and
    ``reference_labels`` (``labels(reference, kind)``, when a caller compares many candidates with one
    reference) saves computing them again."""
    if reference.shape != candidate.shape:
        raise ValueError(f"output shape {candidate.shape} differs from the reference's {reference.shape}")
    finite = bool(np.isfinite(candidate).all())
    if finite:
        sums = _sums(reference, candidate)
        peak, max_abs = sums["peak"], sums["max_abs"]
        mean_abs, mse = sums["sum_abs"] / reference.size, sums["squared_error"] / reference.size
        norms = math.sqrt(sums["ref_ref"] * sums["out_out"])
        cosine = sums["ref_out"] / norms if norms > 0 else float(peak == 0)
    else:
        peak = float(np.abs(reference).max())
        max_abs = mean_abs = mse = math.inf
        cosine = 0.0
    metrics = {
        "max_abs": max_abs,
        "max_rel": max_abs / peak if peak > 0 else max_abs,
        "mean_abs": mean_abs,
        "cosine": cosine,
        "psnr_db": math.inf if mse == 0 else (20 * math.log10(peak) - 10 * math.log10(mse) if finite and peak > 0 else -math.inf),
    }
    if kind is not None:
        if finite:
            ref_labels = labels(reference, kind) if reference_labels is None else reference_labels
            out_labels = labels(candidate, kind)
            metrics["argmax_agreement"] = float(np.mean(ref_labels == out_labels))
            metrics["miou"] = mean_iou(ref_labels, out_labels)
        else:
            metrics["argmax_agreement"] = 0.0
            metrics["miou"] = 0.0
    return metrics


def _sums(reference: np.ndarray, candidate: np.ndarray, block: int = 1 << 18) -> dict[str, float]:
    """The float64 sums the metrics need, over blocks of the flattened tensors: a Cityscapes output is
    40 M values, and float64 copies of whole tensors (320 MB each) cost more than the arithmetic."""
    ref, out = reference.reshape(-1), candidate.reshape(-1)
    sums = dict.fromkeys(("max_abs", "sum_abs", "squared_error", "ref_ref", "out_out", "ref_out", "peak"), 0.0)
    for start in range(0, ref.size, block):
        r, o = ref[start : start + block].astype(np.float64), out[start : start + block].astype(np.float64)
        sums["ref_ref"] += float(r @ r)
        sums["out_out"] += float(o @ o)
        sums["ref_out"] += float(r @ o)
        sums["peak"] = max(sums["peak"], float(np.abs(r).max(initial=0.0)))
        np.subtract(r, o, out=o)
        sums["squared_error"] += float(o @ o)
        np.abs(o, out=o)
        sums["max_abs"] = max(sums["max_abs"], float(o.max(initial=0.0)))
        sums["sum_abs"] += float(o.sum())
    return sums


def check(metrics: dict[str, float], tolerance: dict[str, float]) -> list[str]:
    """Names of the tolerance bounds that ``metrics`` violate (empty when it passes)."""
    failures = []
    for key, bound in tolerance.items():
        if key == JUDGED_ON_KEY:
            continue
        metric, op = TOLERANCE_KEYS[key]
        value = metrics.get(metric)
        if value is None:
            continue
        ok = value <= bound if op == "<=" else value >= bound
        if not ok or (isinstance(value, float) and math.isnan(value)):
            failures.append(f"{metric} {fmt(value)} {'>' if op == '<=' else '<'} {fmt(bound)}")
    return failures


def widened(tolerance: dict[str, float], floor: dict[str, float]) -> dict[str, float]:
    """``tolerance`` with each bound widened to ``floor``'s value where that is worse: the bounds an artifact
    meets when it is no further from a reference than ``floor`` (another result's metrics) is."""
    result = dict(tolerance)
    for key, bound in tolerance.items():
        if key == JUDGED_ON_KEY or TOLERANCE_KEYS[key][0] not in floor:
            continue
        metric, op = TOLERANCE_KEYS[key]
        value = floor[metric]
        if not (isinstance(value, float) and math.isnan(value)):
            result[key] = max(bound, value) if op == "<=" else min(bound, value)
    return result


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if math.isnan(value):
        return "nan"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4):
        return f"{value:.2e}"
    return f"{value:.6g}" if abs(value) < 1 else f"{value:.2f}"
