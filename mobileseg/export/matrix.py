"""``mobileseg matrix`` (``make parity``): the parity matrix of the whole zoo (model × target × precision × runtime → metrics).

Exports every zoo model with its recipe (official weights, default input size) to every target into
``artifacts/<model>`` (up-to-date folders are reused through their manifest fingerprint), then writes
one JSON and one Markdown table. ``--precision`` adds precisions beyond the recipes' defaults (e.g. int8).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

from mobileseg import zoo
from mobileseg.outputs import MARKDOWN_MARK, write_file, write_json_file
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
            floors = [c["noise_floor"]["argmax_agreement"]["min"] for c in result["cases"] if "argmax_agreement" in c.get("noise_floor", {})]
            rows.append({
                "model": model, "input": entry["input"], "target": result["target"], "precision": result["precision"],
                "runtime": result["runtime"], "status": result["status"], "reason": result["reason"],
                **{k: worst.get(k) for k in COLUMNS[6:]},
                # the lowest label agreement of float with itself under σ = 0.5/255 pixel noise (verify/noise_floor.py)
                "label_floor": min(floors) if floors else None, "passed_by": result.get("rule", "") if result["status"] == "pass" else "",
            })  # fmt: skip
    return rows


def to_markdown(rows: list[dict], skipped: list[str]) -> str:
    lines = [
        MARKDOWN_MARK,
        "label floor: the lowest label agreement of the float network with itself under pixel noise of half a grey "
        "level (5 seeds, worst photo); a reduced-precision row under its bar but at its floor passes \"noise floor\".",
        "",
        "| model | input | target | precision | runtime | status | max rel | cosine | PSNR dB | argmax agree | mIoU | label floor | passed by |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        values = [fmt(float(row[k])) if row[k] is not None else "-" for k in (*COLUMNS[6:], "label_floor")]
        lines.append("| " + " | ".join([row["model"], row["input"], row["target"], row["precision"], row["runtime"],
                                         row["status"].upper(), *values, row.get("passed_by") or "-"]) + " |")  # fmt: skip
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


def folder_entry(folder: Path, threads: int | None = 1) -> dict:
    """The matrix entry of an artifact folder of any kind `verify` reads (a zoo model's, a user's model's):
    its parity on every runtime here, re-checked now."""
    from mobileseg.artifact import read_manifest
    from mobileseg.verify.artifact import verify_artifact

    started = time.perf_counter()
    manifest = read_manifest(folder)
    report = verify_artifact(folder, threads=threads)
    specs = manifest.get("inputs") or (manifest.get("graphs") or [{}])[0].get("inputs", [])
    shapes = ", ".join("x".join(map(str, spec["shape"][2:] if len(spec["shape"]) == 4 else spec["shape"])) for spec in specs)
    return {"input": shapes, "report": report.to_dict(), "cached": False, "rechecked": True,
            "seconds": round(time.perf_counter() - started, 2), "folder": str(folder)}  # fmt: skip


def run_matrix(
    names: list[str] | None = None, extra_precisions: list[str] | None = None, artifacts: str | Path = "artifacts",
    jobs: int = 1, use_cache: bool = True, on_model: Callable[[str, dict], None] | None = None,
    folders: list[Path] | None = None,
) -> dict:  # fmt: skip
    """Export and check zoo models (``names``: all by default, none when only ``folders`` are given), ``jobs``
    at once (one process each), then re-check each artifact folder of ``folders`` (any model: a user's
    too); ``on_model(name, entry)`` as each finishes. Returns the matrix document (rows, not_run, models)."""
    names = names if names is not None else ([] if folders else zoo.names())
    extra_precisions = list(extra_precisions or [])
    reports: dict[str, dict] = {}
    started = time.perf_counter()

    def done(name: str, entry: dict) -> None:
        reports[name] = entry
        if on_model:
            on_model(name, entry)

    if jobs > 1 and len(names) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = max(1, (os.cpu_count() or 1) // jobs)
        context = multiprocessing.get_context("spawn")  # no forked copies of PyTorch / TensorFlow state
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = {pool.submit(export_one, n, extra_precisions, str(artifacts), threads, use_cache): n
                       for n in _costliest_first(names)}  # fmt: skip
            for future in as_completed(futures):
                done(futures[future], future.result())
        reports = {name: reports[name] for name in names}
    else:
        for name in names:
            done(name, export_one(name, extra_precisions, str(artifacts), None, use_cache))
    for folder in folders or []:
        entry = folder_entry(Path(folder))
        model = entry["report"]["model"]
        done(model if model not in reports else f"{model} ({folder})", entry)
    skipped = {f"{r['runtime']} ({r['reason']})" for e in reports.values() for r in e["report"]["results"] if r["status"] == "skipped"}
    return {
        "schema": "mobileseg.parity-matrix/1",
        "host": {"machine": platform.machine(), "system": platform.system(), "python": platform.python_version()},
        "seconds": round(time.perf_counter() - started, 2),
        "jobs": jobs,
        "rows": matrix_rows(reports),
        "not_run": sorted(skipped),
        "models": reports,
    }


def write_matrix(document: dict, out: Path, markdown: Path) -> None:
    """The matrix as JSON and as a Markdown table (each replaced only if mobileseg wrote it)."""
    write_json_file(Path(out), document)
    write_file(Path(markdown), to_markdown(document["rows"], document["not_run"]))
