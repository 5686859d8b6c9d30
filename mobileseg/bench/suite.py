"""``make bench``: the project's speed targets, measured within one run and written as JSON.

* the whole zoo exported to every target (with parity), then an unchanged re-run (cache hits);
* SINet at 224×224, one thread: PyTorch eager vs onnxruntime on the exported ONNX (target: onnxruntime
median ≤ 0.3× PyTorch eager). The two runtimes are measured in interleaved rounds so that machine
noise affects both alike; the ratio of medians is the figure of merit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mobileseg.bench.latency import summarize, time_ms


def _interleaved(runs: dict[str, Callable[[], object]], rounds: int, per_round: int, warmup: int) -> dict:
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


def bench_sinet_onnx_vs_torch(weights_dir: str | None, rounds: int = 10, per_round: int = 20) -> dict:
    from mobileseg import zoo
    from mobileseg.export.pipeline import ExportRequest, export_model
    from mobileseg.runtimes import get_runtime
    from mobileseg.runtimes.torch_runtime import TorchRuntime
    from mobileseg.verify.parity import parity_inputs

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(weights_dir) / zoo.spec("sinet").checkpoint.filename if weights_dir else None
        request = ExportRequest("sinet", targets=["onnx"], out=Path(tmp) / "sinet", weights=weights, random_weights=weights is None)
        result = export_model(request)
        image = parity_inputs(result.recipe)[0].as_format(result.recipe.input_format, result.recipe)
        torch_session = TorchRuntime().from_module(result.reference, ["image"], ["logits"], threads=1)
        ort_session = get_runtime("onnxruntime").load(result.folder / "model.onnx", threads=1)
        stats = _interleaved(
            {"torch_eager": lambda: torch_session.run({"image": image}), "onnxruntime": lambda: ort_session.run({"image": image})},
            rounds, per_round, warmup=10,
        )  # fmt: skip
    ratio = stats["onnxruntime"].median / stats["torch_eager"].median
    return {
        "benchmark": "sinet_224_onnxruntime_vs_torch_eager",
        "input": [1, 3, 224, 224],
        "threads": 1,
        "protocol": {"rounds": rounds, "per_round": per_round, "warmup": 10, "interleaved": True},
        "torch_eager_ms": stats["torch_eager"].to_dict(with_samples=False),
        "onnxruntime_ms": stats["onnxruntime"].to_dict(with_samples=False),
        "ratio_median": ratio,
        "target_ratio": 0.3,
        "meets_target": ratio <= 0.3,
        "onnxruntime_load_s": ort_session.info.load_seconds,
    }


def bench_export_zoo(artifacts: Path) -> dict:
    """Time to export the whole zoo (official weights, default sizes) to every target with its parity
    checks, from empty folders; then an unchanged re-run, which must be a cache hit (target <= 10 s).
    Target for the full export on the 2-core reference machine: <= 4 min."""
    import shutil

    from mobileseg.verify.matrix import main as parity_matrix

    shutil.rmtree(artifacts, ignore_errors=True)
    started = time.perf_counter()
    parity_matrix(["--artifacts", str(artifacts), "--out", str(artifacts / "parity.json"), "--markdown", str(artifacts / "parity.md")])
    full = time.perf_counter() - started
    started = time.perf_counter()
    parity_matrix(["--artifacts", str(artifacts), "--out", str(artifacts / "parity.json"), "--markdown", str(artifacts / "parity.md")])
    rerun = time.perf_counter() - started
    models = json.loads((artifacts / "parity.json").read_text())["models"]
    return {
        "benchmark": "export_zoo_all_targets",
        "models": {name: {"input": m["input"]} for name, m in models.items()},
        "full_export_s": round(full, 2),
        "target_full_export_s": 240,
        "meets_full_target": full <= 240,
        "cached_rerun_s": round(rerun, 2),
        "rerun_all_cached": all(m["cached"] for m in models.values()),
        "target_rerun_s": 10,
        "meets_rerun_target": rerun <= 10,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/bench.json")
    parser.add_argument("--weights-dir", default=os.environ.get("MOBILESEG_WEIGHTS_DIR"))
    parser.add_argument("--artifacts", default="results/bench-artifacts", help="scratch folder for the zoo export")
    args = parser.parse_args(argv)
    results = {
        "host": {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "benchmarks": [bench_sinet_onnx_vs_torch(args.weights_dir), bench_export_zoo(Path(args.artifacts))],
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    sinet, zoo_export = results["benchmarks"]
    print(f"export_zoo_all_targets: {zoo_export['full_export_s']:.1f} s (target <= 240 s), cached re-run "
          f"{zoo_export['cached_rerun_s']:.1f} s (target <= 10 s)")
    for b in [sinet]:
        print(f"{b['benchmark']}: torch eager median {b['torch_eager_ms']['median']:.2f} ms, onnxruntime median "
              f"{b['onnxruntime_ms']['median']:.2f} ms, ratio {b['ratio_median']:.3f} (target <= {b['target_ratio']}) "
              f"{'OK' if b['meets_target'] else 'MISSED'}")  # fmt: skip
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
