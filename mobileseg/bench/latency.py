"""Latency measurement: warm-up, measured iterations, optional wait between runs, robust statistics.

Timing uses ``time.perf_counter_ns`` (monotonic, high resolution) around the runtime call only.
The first run (which may include lazy initialisation) is reported apart from the measured runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np

from mobileseg.errors import MobilesegError


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

    def summary_ms(self) -> dict:
        """The measured-run statistics alone (no first run, no samples): a result's ``stats_ms``."""
        data = self.to_dict(with_samples=False)
        data.pop("first_ms")
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


def interleaved(runs: dict[str, Callable[[], object]], rounds: int, per_round: int, warmup: int) -> dict[str, LatencyStats]:
    """Measure several callables in alternating rounds so that machine noise affects them alike."""
    first = {}
    for name, run in runs.items():
        first[name] = time_ms(run)
        for _ in range(warmup):
            run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            samples[name].extend(time_ms(run) for _ in range(per_round))
    return {name: summarize(samples[name], first[name]) for name in runs}


def measure(
    run: Callable[[], object],
    iterations: int,
    warmup: int = 5,
    wait_s: float = 0.0,
    min_time_s: float = 0.0,
    progress: Callable[[int], None] | None = None,
) -> LatencyStats:
    """Time ``run()``: one first run, ``warmup`` untimed runs, then at least ``iterations`` timed runs
    (more until ``min_time_s`` of measured time) separated by ``wait_s`` seconds of sleep outside the
    timed region. ``progress(i)`` is called after each measured run."""
    if iterations < 1:
        raise ValueError("iterations must be >= 1")
    if warmup < 0 or wait_s < 0 or min_time_s < 0:
        raise ValueError("warmup, wait and minimum time must not be negative")
    first_ms = time_ms(run)
    for _ in range(warmup):
        run()
    samples: list[float] = []
    measured_ms = 0.0
    while len(samples) < iterations or measured_ms < min_time_s * 1e3:
        if wait_s and samples:
            time.sleep(wait_s)
        sample = time_ms(run)
        samples.append(sample)
        measured_ms += sample
        if progress:
            progress(len(samples))
    return summarize(samples, first_ms)


class ProtocolError(MobilesegError, ValueError):
    """A measurement protocol that cannot be run (a negative wait, no iterations, ...)."""


@dataclass(frozen=True)
class Protocol:
    """How a latency is measured: the device profiles' ``protocol:`` block, overridable from the CLI."""

    warmup: int = 10
    iterations: int = 100
    wait_s: float = 0.0  # sleep between measured runs (the iPhone XS protocol: 2 s, to stay cool)
    min_time_s: float = 0.0  # keep measuring past ``iterations`` until this much measured time
    threads: int | None = 1  # None: the runtime's default
    input: str = "random"  # "random" (seeded) or a bundled photo name (e.g. "astronaut")
    seed: int = 0

    def validate(self) -> None:
        if self.iterations < 1:
            raise ProtocolError(f"iterations must be positive, got {self.iterations}")
        if self.warmup < 0:
            raise ProtocolError(f"warm-up runs must not be negative, got {self.warmup}")
        if self.wait_s < 0 or self.min_time_s < 0:
            raise ProtocolError("the wait and the minimum time must not be negative")
        if self.threads is not None and self.threads < 1:
            raise ProtocolError(f"threads must be positive, got {self.threads}")

    def with_overrides(self, **overrides) -> Protocol:
        """This protocol with the given non-None values replaced, validated (`ProtocolError` if not valid)."""
        protocol = replace(self, **{k: v for k, v in overrides.items() if v is not None})
        protocol.validate()
        return protocol

    def to_dict(self) -> dict:
        return asdict(self)
