"""Latency measurement: warm-up, measured iterations, optional wait between runs, robust statistics.

Timing uses ``time.perf_counter_ns`` (monotonic, high resolution) around the runtime call only.
The first run (which may include lazy initialisation) is reported apart from the measured runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class LatencyStats:
    """Statistics in milliseconds over the measured iterations; ``samples_ms`` keeps the raw data."""

    count: int
    min: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    max: float
    std: float
    cv: float  # coefficient of variation, std / mean
    first_ms: float
    samples_ms: list[float]

    def to_dict(self, with_samples: bool = True) -> dict:
        data = asdict(self)
        if not with_samples:
            data.pop("samples_ms")
        return data


def summarize(samples_ms: list[float], first_ms: float) -> LatencyStats:
    a = np.asarray(samples_ms, dtype=np.float64)
    mean = float(a.mean())
    return LatencyStats(
        count=len(a), min=float(a.min()), mean=mean, median=float(np.median(a)),
        p90=float(np.percentile(a, 90)), p95=float(np.percentile(a, 95)), p99=float(np.percentile(a, 99)),
        max=float(a.max()), std=float(a.std()), cv=float(a.std() / mean) if mean else 0.0,
        first_ms=first_ms, samples_ms=[float(v) for v in a],
    )  # fmt: skip


def time_ms(run: Callable[[], object]) -> float:
    """Wall time of one ``run()`` in milliseconds (monotonic clock, only the call itself)."""
    start = time.perf_counter_ns()
    run()
    return (time.perf_counter_ns() - start) / 1e6


def measure(run: Callable[[], object], iterations: int, warmup: int = 5, wait_s: float = 0.0) -> LatencyStats:
    """Time ``run()``: one first run, ``warmup`` untimed runs, then ``iterations`` timed runs
    separated by ``wait_s`` seconds of sleep (outside the timed region)."""
    if iterations < 1:
        raise ValueError("iterations must be >= 1")
    first_ms = time_ms(run)
    for _ in range(warmup):
        run()
    samples = []
    for i in range(iterations):
        if wait_s and i:
            time.sleep(wait_s)
        samples.append(time_ms(run))
    return summarize(samples, first_ms)
