"""What the TFLite and Core ML float fallbacks share: the local error of an op, the prefix search, the record.

Both fallbacks answer the same question for a reduced-precision artifact: which ops must compute in (or
read weights in) float32 so that the label map agrees with the float32 artifact on calibration pictures?
Both measure each candidate op's *local* error first (the op run on the float artifact's exact inputs,
its output compared with the float op's, channel by channel, relative to each channel's spread), send
the ops past a limit to float32 at once, and then, if the goal is still missed, find the shortest
network-order prefix of the remaining candidates that reaches it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mobileseg.verify.metrics import labels


class ChannelErrors:
    """Per key (an op), running per-channel statistics of a reference tensor and of the error of a
    produced one; `relative` gives each key's worst channel: RMS error / the channel's standard deviation."""

    def __init__(self) -> None:
        self._sums: dict[Hashable, list[np.ndarray]] = {}

    def add(self, key: Hashable, reference: np.ndarray, produced: np.ndarray, channel_axis: int | None) -> None:
        """Accumulate one pair of tensors; ``channel_axis`` None treats the tensor as a single channel."""
        ref = np.asarray(reference)
        # (before, channels, after) views: the channel sums reduce contiguous runs instead of moving the axis
        if channel_axis is None:
            shape = (1, 1, -1)
        else:
            axis = channel_axis % ref.ndim
            shape = (int(np.prod(ref.shape[:axis])), ref.shape[axis], -1)
        ref = ref.reshape(shape).astype(np.float64)  # float64: E[x²] − E[x]² of a tiny spread on a large mean
        diff = np.subtract(np.asarray(produced).reshape(shape), ref, dtype=np.float64)
        parts = [
            np.full(ref.shape[1], ref.shape[0] * ref.shape[2], np.float64), ref.sum((0, 2)),
            np.einsum("bcx,bcx->c", ref, ref), np.einsum("bcx,bcx->c", diff, diff),
        ]  # fmt: skip
        previous = self._sums.get(key)
        self._sums[key] = parts if previous is None else [a + b for a, b in zip(previous, parts)]

    def relative(self) -> dict[Hashable, float]:
        errors = {}
        for key, (count, total, squares, squared_error) in self._sums.items():
            mean = total / count
            std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
            rms = np.sqrt(squares.sum() / count.sum())
            # A constant channel is judged against a thousandth of the tensor's RMS instead of its zero spread.
            relative = np.sqrt(squared_error / count) / np.maximum(std, 1e-3 * rms + 1e-30)
            errors[key] = float(np.nan_to_num(relative, nan=np.inf).max())
        return errors


def shortest_prefix(items: Sequence, score: Callable[[Sequence], float], goal: float) -> tuple[int, float | None]:
    """The smallest ``n`` for which ``score(items[:n]) >= goal``, found by bisection (the score is taken to
    grow with ``n``), and that score; ``(len(items), None)`` if not even all items reach the goal."""
    low, high, best = 0, len(items), None
    while low < high:
        middle = (low + high) // 2
        value = score(items[:middle])
        if value >= goal:
            high, best = middle, value
        else:
            low = middle + 1
    return high, best


def label_map(output: np.ndarray) -> np.ndarray:
    """The (N, H, W) labels of an NCHW output: argmax over the channels (the sign of a single channel)."""
    return labels(output, "")


def label_agreement(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> float:
    """Share of pixels, over all ``(produced, expected)`` pairs of an NCHW output and the `label_map` it
    should have (computed once by the caller: a search compares many outputs with the same maps), whose
    label is the same in both."""
    agreeing = total = 0
    for produced, expected in pairs:
        same = label_map(produced) == expected
        agreeing, total = agreeing + int(same.sum()), total + same.size
    return agreeing / total


def keep_enough(
    candidates: Sequence[str],
    agreement_keeping: Callable[[set[str]], float],
    goal: float,
    keep: set[str],
    agreement: float,
    local_errors: Callable[[], Mapping[str, float]],
    local_limit: float,
) -> tuple[set[str], float]:
    """The ops to keep in float, starting from ``keep`` (whose agreement is ``agreement``), and their agreement.

    If the goal is missed, every candidate whose local error (``local_errors()``, computed only then)
    passes ``local_limit`` is added; if it is still missed, the shortest network-order prefix of the
    remaining candidates that reaches it: errors of well-conditioned early layers are what the amplifying
    layers downstream enlarge. ``agreement_keeping(ops)`` measures the artifact with ``ops`` in float.
    """
    if agreement < goal:
        errors = local_errors()
        keep = keep | {n for n in candidates if errors.get(n, 0.0) > local_limit}
        agreement = agreement_keeping(keep)
    if agreement < goal:
        rest = [n for n in candidates if n not in keep]
        count, score = shortest_prefix(rest, lambda prefix: agreement_keeping(keep | set(prefix)), goal)
        keep = keep | set(rest[:count])
        agreement = score if score is not None else agreement_keeping(keep)
    return keep, agreement


@dataclass(frozen=True)
class Fallback:
    """What a float fallback did: label agreement with the float32 artifact before and after, and the ops
    kept in float32 (by name)."""

    goal: float
    agreement_before: float
    agreement: float
    float_ops: tuple[str, ...]
    candidates: int  # ops that could have been reduced
    forced: tuple[str, ...] = ()  # op types always kept float (compatibility)

    def to_dict(self) -> dict:
        return {
            "goal": self.goal, "agreement_before": round(self.agreement_before, 6), "agreement": round(self.agreement, 6),
            "float_ops": len(self.float_ops), "quantised_ops": self.candidates - len(self.float_ops),
            "forced_float_op_types": list(self.forced),
        }  # fmt: skip
