"""Latency results: the JSON schema (``mobileseg/bench/latency.schema.json``, documented in docs/latency.md),
validation, table rows and the sweep plot, so that a saved result re-renders without re-running."""

from __future__ import annotations

import json
from pathlib import Path

from mobileseg.errors import MobilesegError
from mobileseg.outputs import save_figure

SCHEMA_PATH = Path(__file__).with_name("latency.schema.json")
_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
          "integer": int, "number": (int, float)}  # fmt: skip


class ResultError(MobilesegError):
    """A results file that is not a mobileseg latency result."""


def _check(value, schema: dict, where: str, errors: list[str]) -> None:
    """A small JSON Schema subset: type (one or a list), enum, required, properties, items."""
    types = schema.get("type")
    if types:
        names = types if isinstance(types, list) else [types]
        ok = any(isinstance(value, _TYPES[t]) and not (t in ("integer", "number") and isinstance(value, bool)) for t in names)
        if not ok:
            errors.append(f"{where}: expected {' or '.join(names)}, got {type(value).__name__}")
            return
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{where}: missing {key!r}")
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                _check(value[key], sub, f"{where}.{key}", errors)
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _check(item, schema["items"], f"{where}[{i}]", errors)


def schema_errors(result: dict) -> list[str]:
    schema = json.loads(SCHEMA_PATH.read_text())
    errors: list[str] = []
    _check(result, schema, "result", errors)
    kind = result.get("kind") if isinstance(result, dict) else None
    if kind in schema.get("kinds", {}):
        _check(result, schema["kinds"][kind], "result", errors)
    return errors


def load_result(path: Path) -> dict:
    if not Path(path).is_file():
        raise ResultError(f"results file not found: {path}")
    try:
        result = json.loads(Path(path).read_bytes())
    except json.JSONDecodeError as exc:
        raise ResultError(f"{path} is not JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, ValueError) as exc:  # unreadable, or not UTF-8
        raise ResultError(f"{path} is not readable JSON: {str(exc).splitlines()[0]}") from None
    errors = schema_errors(result)
    if errors:
        raise ResultError(f"{path} is not a mobileseg latency result: {errors[0]}" + (f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""))
    return result


def _ms(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def profile_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    stats = result["stats_ms"]
    keys = [k for k in result["device"].get("report") or ["min", "median", "mean", "max"] if k in stats]
    header = ["device", "measured on", "runtime", "artifact", "load ms", "first ms", *[f"{k} ms" for k in keys], "cv", "n"]
    where = result["measured_on"] + (" (fallback)" if result["fallback"] else "")
    row = [result["device"]["name"], where, f"{result['runtime']['name']} {result['runtime'].get('version') or ''}".strip(),
           f"{result['artifact']['target']} {result['artifact'].get('precision') or ''}".strip(),
           _ms(result.get("load_ms")), _ms(result.get("first_ms")), *[_ms(stats[k]) for k in keys],
           f"{stats.get('cv', 0):.3f}", str(stats["count"])]  # fmt: skip
    probe = result.get("denormals") or {}
    if probe.get("supported"):
        header.append("denormals")
        row.append(f"{probe['ratio']:.2f}× {'bound' if probe['bound'] else 'ok'}")
    return header, [row]


def op_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """The profile's breakdown by op type (``--ops``): ms per run, share, count; empty when it has none."""
    ops = result.get("ops") or {}
    if "by_type_ms" not in ops:
        return [], []
    total = sum(ms for ms in ops["by_type_ms"].values() if ms > 0) or 1.0
    rows = [[op, f"{ms:.3f}", f"{max(ms, 0) / total:.0%}", str(ops["counts"].get(op, ""))] for op, ms in ops["by_type_ms"].items()]
    return ["op", "ms per run", "share", "count"], rows


def sweep_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    header = ["rate", "RF", "MMACs", "target", "runtime", "median ms", "min ms", "mean ms", "max ms", "cv", "graph", "iPhone XS ms (quoted)"]
    rows = []
    for r in result["rows"]:
        s = r["stats_ms"]
        rows.append([str(r["rate"]), str(r["receptive_field"]), f"{r['macs'] / 1e6:.1f}", r["target"], r["runtime"],
                     _ms(s["median"]), _ms(s["min"]), _ms(s["mean"]), _ms(s["max"]), f"{s['cv']:.3f}",
                     r["graph"]["dilation"], _ms(r.get("quoted_iphone_xs_ms"))])  # fmt: skip
    return header, rows


def to_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def plot_sweep(result: dict, path: Path) -> Path:
    """Latency (median, min–max bar) vs dilation per runtime; MACs per rate on the second axis; the quoted
    iPhone XS figures dashed and labelled as quoted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for runtime in sorted({r["runtime"] for r in rows}):
        mine = sorted((r for r in rows if r["runtime"] == runtime), key=lambda r: r["rate"])
        rates = [r["rate"] for r in mine]
        median = [r["stats_ms"]["median"] for r in mine]
        low = [m - r["stats_ms"]["min"] for m, r in zip(median, mine)]
        high = [r["stats_ms"]["max"] - m for m, r in zip(median, mine)]
        ax.errorbar(rates, median, yerr=[low, high], marker="o", capsize=3, label=f"{runtime} (measured, {result['measured_on']})")
    quoted = [(r["rate"], r["quoted_iphone_xs_ms"]) for r in rows if r.get("quoted_iphone_xs_ms") is not None]
    if quoted:
        rates, ms = zip(*sorted(set(quoted)))
        ax.plot(rates, ms, "k--", marker="s", label="iPhone XS, Core ML (quoted, dissertation Table 4.4)")
    sweep = result["sweep"]
    ax.set_xlabel("dilation rate")
    ax.set_ylabel("latency, ms")
    ax.set_title(f"{sweep['block']} on {'×'.join(str(v) for v in sweep['input'])}")
    ax.set_xticks(sorted({r["rate"] for r in rows}))
    ax2 = ax.twinx()
    macs = sorted({(r["rate"], r["macs"]) for r in rows})
    ax2.plot([m[0] for m in macs], [m[1] / 1e6 for m in macs], ":", color="grey", marker="x", label="MMACs")
    ax2.set_ylabel("MMACs")
    ax2.set_ylim(0, max(m[1] for m in macs) / 1e6 * 1.3)
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax.legend(lines, labels, fontsize=7, loc="upper left")
    return save_figure(fig, path)


def write_result(result: dict, path: Path) -> Path:
    """Write atomically, replacing only a file mobileseg wrote (`outputs.write_json_file`)."""
    from mobileseg.outputs import write_json_file

    return write_json_file(path, result)
