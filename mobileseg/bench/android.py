"""TFLite on an Android device: push the model and TFLite's ``benchmark_model`` over adb, map the protocol
onto its flags, and parse its summary into the same statistics as a host measurement.

``benchmark_model`` prints summary statistics only (no per-run samples), in microseconds, e.g.::

    Running benchmark for at least 100 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
    count=100 first=25120 curr=24410 min=24090 max=27511 avg=24630.8 std=512
    Inference timings in us: Init: 35114, First inference: 31210, Warmup (avg): 25821.2, Inference (avg): 24630.8
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from mobileseg.bench.devices import BENCHMARK_MODEL_ENV, Device, DeviceError
from mobileseg.bench.latency import Protocol

_RUN_LINE = re.compile(r"count=(\d+)\s+first=([\d.]+)\s+curr=([\d.]+)\s+min=([\d.]+)\s+max=([\d.]+)\s+avg=([\d.]+)\s+std=([\d.]+)")
_TIMINGS = re.compile(r"Inference timings in us:\s*Init:\s*([\d.]+),\s*First inference:\s*([\d.]+),\s*"
                      r"Warmup \(avg\):\s*([\d.]+),\s*Inference \(avg\):\s*([\d.]+)")  # fmt: skip


def benchmark_flags(protocol: Protocol, remote_model: str) -> list[str]:
    """The protocol as ``benchmark_model`` flags (``--run_delay`` is in seconds, like ``wait_s``)."""
    flags = [
        f"--graph={remote_model}",
        f"--warmup_runs={protocol.warmup}",
        f"--num_runs={protocol.iterations}",
        f"--min_secs={protocol.min_time_s:g}",
        f"--run_delay={protocol.wait_s:g}",
    ]
    if protocol.threads:
        flags.append(f"--num_threads={protocol.threads}")
    return flags


def parse_benchmark_output(text: str) -> dict:
    """The measured-run statistics (ms) from ``benchmark_model``'s output; the last ``count=`` line is the
    measured phase (the first one, when two are printed, is the warm-up)."""
    runs = _RUN_LINE.findall(text)
    if not runs:
        raise DeviceError("benchmark_model printed no timing line (count=… min=… avg=…); see its output above")
    count, first, _curr, low, high, avg, std = (float(v) for v in runs[-1])
    stats = {"count": int(count), "min": low / 1e3, "mean": avg / 1e3, "max": high / 1e3, "std": std / 1e3,
             "cv": std / avg if avg else 0.0, "median": None, "p90": None, "p95": None, "p99": None}  # fmt: skip
    timings = _TIMINGS.search(text)
    init_ms = float(timings.group(1)) / 1e3 if timings else None
    first_ms = float(timings.group(2)) / 1e3 if timings else first / 1e3
    return {"stats": stats, "init_ms": init_ms, "first_ms": first_ms}


def run_benchmark_model(device: Device, artifact, protocol: Protocol, benchmark_model: str | None) -> dict:
    """Push and run; returns the measurement part of a profile result."""
    adb = shutil.which("adb")
    binary = Path(benchmark_model or os.environ.get(BENCHMARK_MODEL_ENV, ""))
    remote_dir = device.remote_dir
    remote_model = f"{remote_dir}/{artifact.path.name}"
    remote_binary = f"{remote_dir}/benchmark_model"

    def adb_run(*args: str, timeout: float = 120) -> str:
        done = subprocess.run([adb, *args], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise DeviceError(f"adb {' '.join(args[:2])} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
        return done.stdout + done.stderr

    adb_run("shell", "mkdir", "-p", remote_dir)
    adb_run("push", str(binary), remote_binary)
    adb_run("shell", "chmod", "755", remote_binary)
    adb_run("push", str(artifact.path), remote_model)
    budget = 120 + protocol.iterations * (protocol.wait_s + 5)
    output = adb_run("shell", remote_binary, *benchmark_flags(protocol, remote_model), timeout=budget)
    parsed = parse_benchmark_output(output)
    return {
        "runtime": {"name": "benchmark_model", "version": None, "threads": protocol.threads, "details": {"adb": True}},
        "load_ms": parsed["init_ms"],
        "first_ms": parsed["first_ms"],
        "stats_ms": parsed["stats"],
        "samples_ms": [],  # benchmark_model prints summary statistics only
        "wall_s": None,
        "measured_on": "device",
    }
