"""``make parity``: the parity matrix of the whole zoo (model × target × precision × runtime → metrics).

Exports every zoo model with its recipe (official weights, default input size) to every target into
``artifacts/<model>`` (up-to-date folders are reused through their manifest fingerprint), then writes
one JSON and one Markdown table. ``--precision`` adds precisions beyond the recipes' defaults (e.g. int8).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from mobileseg import zoo
from mobileseg.outputs import MARKDOWN_MARK, check_replaceable_file, write_file, write_json_file
from mobileseg.recipes import load_recipe, precisions
from mobileseg.verify.metrics import fmt

COLUMNS = ("model", "input", "target", "precision", "runtime", "status", "max_rel", "cosine", "psnr_db", "argmax_agreement", "miou")


def matrix_rows(reports: dict[str, dict]) -> list[dict]:
    rows = []
    for model, entry in reports.items():
        for result in entry["report"]["results"]:
            if result["status"] == "skipped":
                continue
            worst = result["worst"]
            rows.append({
                "model": model, "input": entry["input"], "target": result["target"], "precision": result["precision"],
                "runtime": result["runtime"], "status": result["status"], "reason": result["reason"],
                **{k: worst.get(k) for k in COLUMNS[6:]},
            })  # fmt: skip
    return rows


def to_markdown(rows: list[dict], skipped: list[str]) -> str:
    lines = [
        MARKDOWN_MARK,
        "| model | input | target | precision | runtime | status | max rel | cosine | PSNR dB | argmax agree | mIoU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        values = [fmt(float(row[k])) if row[k] is not None else "-" for k in COLUMNS[6:]]
        lines.append("| " + " | ".join([row["model"], row["input"], row["target"], row["precision"], row["runtime"],
                                         row["status"].upper(), *values]) + " |")  # fmt: skip
    if skipped:
        lines.append("")
        lines += [f"Not run here: {s}" for s in skipped]
    return "\n".join(lines) + "\n"


def export_one(name: str, extra_precisions: list[str], artifacts: str, threads: int | None = None, use_cache: bool = True) -> dict:
    """Export zoo model ``name`` with its recipe to every target (+ ``extra_precisions``) and check parity;
    returns its entry of the matrix document. ``threads`` caps PyTorch's threads (one worker of several)."""
    from mobileseg.export.pipeline import ExportRequest, export_model
    from mobileseg.memory import retain_freed_memory

    retain_freed_memory()
    if threads:
        import torch

        torch.set_num_threads(threads)
        # TensorFlow (onnx2tf, the TFLite converter) reads these when it starts, after this point.
        os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)
    recipe = load_recipe(name)
    wanted = sorted({p for t, o in recipe.targets.items() for p in precisions(t, o)} | set(extra_precisions))
    started = time.perf_counter()
    result = export_model(ExportRequest(model=name, targets=["all"], precisions=wanted, out=Path(artifacts) / name,
                                        force=True, use_cache=use_cache))  # fmt: skip
    return {"input": "x".join(map(str, recipe.input_size)), "report": result.report.to_dict(), "cached": result.cached,
            "seconds": round(time.perf_counter() - started, 2), "folder": str(result.folder)}  # fmt: skip


def _costliest_first(names: list[str]) -> list[str]:
    """Models by input pixels, largest first: a worker pool then ends with the small ones."""
    pixels = {n: load_recipe(n).input_size[0] * load_recipe(n).input_size[1] for n in names}
    return sorted(names, key=lambda n: -pixels[n])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="results/parity.json")
    parser.add_argument("--markdown", default="results/parity.md")
    parser.add_argument("--artifacts", default="artifacts")
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--precision", nargs="*", default=[], help="extra precisions, e.g. int8")
    parser.add_argument("--jobs", type=int, default=1, help="models exported at once, one process each (default 1)")
    parser.add_argument("--no-cache", action="store_true", help="export even the folders that are up to date")
    args = parser.parse_args(argv)
    for path in (args.out, args.markdown):
        check_replaceable_file(Path(path))

    names = args.models or zoo.names()
    reports: dict[str, dict] = {}
    started = time.perf_counter()

    def done(name: str, entry: dict) -> None:
        reports[name] = entry
        print(f"{name}: {'up to date' if entry['cached'] else 'exported'} in {entry['seconds']:.1f} s, "
              f"parity {'PASS' if entry['report']['passed'] else 'FAIL'}", flush=True)  # fmt: skip

    if args.jobs > 1 and len(names) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        context = multiprocessing.get_context("spawn")  # no forked copies of PyTorch / TensorFlow state
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
            futures = {pool.submit(export_one, n, args.precision, args.artifacts, threads, not args.no_cache): n
                       for n in _costliest_first(names)}  # fmt: skip
            for future in as_completed(futures):
                done(futures[future], future.result())
        reports = {name: reports[name] for name in names}
    else:
        for name in names:
            done(name, export_one(name, args.precision, args.artifacts, None, not args.no_cache))
    skipped = {f"{r['runtime']} ({r['reason']})" for e in reports.values() for r in e["report"]["results"] if r["status"] == "skipped"}
    rows = matrix_rows(reports)
    document = {
        "schema": "mobileseg.parity-matrix/1",
        "host": {"machine": platform.machine(), "system": platform.system(), "python": platform.python_version()},
        "seconds": round(time.perf_counter() - started, 2),
        "jobs": args.jobs,
        "rows": rows,
        "not_run": sorted(skipped),
        "models": reports,
    }
    write_json_file(Path(args.out), document)
    write_file(Path(args.markdown), to_markdown(rows, sorted(skipped)))
    failed = [r for r in rows if r["status"] != "pass"]
    print(f"{len(rows)} rows, {len(failed)} not passing; wrote {args.out} and {args.markdown}")
    for row in failed:
        print(f"  {row['status'].upper()} {row['model']} {row['target']} {row['precision']} {row['runtime']}: {row['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
