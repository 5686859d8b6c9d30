"""Flush-to-zero and denormals-are-zero (FTZ/DAZ) on the calling thread.

x86 CPUs compute with denormal floats (0 < |x| < 1.18e-38) on a slow path unless the MXCSR register of
the computing thread says to flush them; on an Intel Xeon an onnxruntime run of SINet's plain export took
3.3× longer without. The register is per thread: runtimes at one thread compute on the calling thread,
so setting it here reaches them (onnxruntime's ``session.set_denormal_as_zero`` reaches only its pool
threads). PyTorch's `torch.set_flush_denormal` is the portable switch; on CPUs without it nothing changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

BOUND_RATIO = 1.2  # a run this much slower with denormals allowed than flushed is denormal-bound


@contextmanager
def flushing(enabled: bool = True) -> Iterator[bool]:
    """FTZ/DAZ on the calling thread inside the block (restored to off after); yields whether it is set."""
    if not enabled:
        yield False
        return
    import torch

    supported = torch.set_flush_denormal(True)
    try:
        yield supported
    finally:
        if supported:
            torch.set_flush_denormal(False)


def denormal_probe(run: Callable[[], object], runs: int = 10, warmup: int = 2) -> dict:
    """Time ``run`` with denormals allowed and flushed, alternately (so drift hits both alike); the ratio of
    the medians says whether the run is denormal-bound (``bound``: at least ``BOUND_RATIO``)."""
    with flushing() as supported:
        pass
    if not supported:
        return {"supported": False}
    times: dict[bool, list[float]] = {False: [], True: []}
    for flush in (False, True):
        with flushing(flush):
            for _ in range(warmup):
                run()
    for _ in range(runs):
        for flush in (False, True):
            with flushing(flush):
                start = time.perf_counter_ns()
                run()
                times[flush].append((time.perf_counter_ns() - start) / 1e6)
    allowed, flushed = float(np.median(times[False])), float(np.median(times[True]))
    ratio = allowed / flushed if flushed > 0 else 1.0
    return {"supported": True, "runs": runs, "allowed_median_ms": allowed, "flushed_median_ms": flushed,
            "ratio": ratio, "bound": ratio >= BOUND_RATIO}  # fmt: skip
