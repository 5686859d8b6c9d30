"""The ``mobileseg`` command line: parse, call the library, render with rich. Nothing imports this module.

Exit codes: 0 success; 1 a parity check failed; 2 a user error (one red line on stderr).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from mobileseg.errors import MobilesegError

app = typer.Typer(
    name="mobileseg",
    help="Efficient segmentation networks from PyTorch to on-device runtimes, with proof of parity.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
# Piped output (CI logs) gets wide tables instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def parse_size(value: Optional[str]) -> Optional[tuple[int, int]]:
    if value is None:
        return None
    try:
        height, width = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not HxW (e.g. 224x224)") from None
    if height <= 0 or width <= 0:
        raise typer.BadParameter(f"{value!r}: height and width must be positive")
    return height, width


def version_callback(value: bool) -> None:
    if value:
        from mobileseg import __version__

        out.print(f"mobileseg {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Show the version.")] = False,
) -> None:
    """mobileseg: export SINet, ExtremeC3Net and C3 networks to ONNX and prove they compute the same thing."""


@app.command()
def models(as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False) -> None:
    """List the zoo: parameters, MACs at the default input, input size, classes."""
    from mobileseg import zoo
    from mobileseg.zoo.macs import count_macs

    rows = []
    for name in zoo.names():
        spec = zoo.spec(name)
        macs = count_macs(zoo.build(name), spec.default_input_shape)
        rows.append({
            "name": name, "params": spec.params, "gmacs": round(macs / 1e9, 4),
            "input": "x".join(map(str, spec.default_input_shape)), "size_multiple": spec.size_multiple,
            "classes": spec.num_classes, "output": spec.output_kind, "description": spec.description,
        })  # fmt: skip
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="mobileseg zoo (MACs: Conv/ConvTranspose/Linear multiply-accumulates, as the dissertation)")
    for column in ("model", "params", "GMACs", "input (NCHW)", "multiple of", "classes", "output"):
        table.add_column(column, justify="right" if column in ("params", "GMACs", "classes", "multiple of") else "left", no_wrap=True)
    for r in rows:
        table.add_row(r["name"], f"{r['params']:,}", f"{r['gmacs']:.4f}", r["input"], str(r["size_multiple"]),
                      str(r["classes"]), r["output"])  # fmt: skip
    out.print(table)


def render_report(report, title: str) -> None:
    from mobileseg.verify.report import HEADERS, report_rows

    table = Table(title=title)
    for header in HEADERS:
        table.add_column(header, justify="left" if header in HEADERS[:4] else "right", no_wrap=header != "status")
    for row in report_rows(report):
        style = "green" if row[3] == "PASS" else ("yellow" if row[3].startswith("SKIPPED") else "red")
        table.add_row(*row[:3], f"[{style}]{row[3]}[/{style}]", *row[4:])
    out.print(table)
    out.print(f"inputs: {', '.join(report.inputs)}; worst value over the inputs each precision is judged on; "
              "reference: PyTorch eager fp32")
    for result in report.results:
        if result.status == "fail":
            out.print(f"[red]FAIL[/red] {result.target} {result.precision} on {result.runtime}: {result.reason}")
    out.print("[bold green]parity: PASS[/bold green]" if report.passed else "[bold red]parity: FAIL[/bold red]")


@app.command()
def export(
    model: Annotated[str, typer.Argument(help="Zoo model name (see `mobileseg models`).")],
    target: Annotated[list[str], typer.Option("--target", "-t", help="onnx | coreml | tflite | all (repeatable); default: the recipe's.")] = None,
    precision: Annotated[list[str], typer.Option("--precision", "-p", help="Only these precisions: fp32 fp16 dynamic int8 (repeatable).")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="The authors' checkpoint (.pth). Default: $MOBILESEG_WEIGHTS_DIR/<official file>.")] = None,
    random_weights: Annotated[bool, typer.Option("--random-weights", help="Export with seeded random weights (structure only).")] = False,
    input_size: Annotated[Optional[str], typer.Option("--input-size", help="HxW, e.g. 224x224.")] = None,
    input_format: Annotated[Optional[str], typer.Option("--input-format", help="rgb01 | uint8 | normalized.")] = None,
    dynamic_batch: Annotated[Optional[bool], typer.Option("--dynamic-batch/--static-batch", help="Dynamic batch axis (ONNX).")] = None,
    opset: Annotated[Optional[int], typer.Option(help="ONNX opset (11-21; default 17).")] = None,
    coreml_input: Annotated[Optional[str], typer.Option("--coreml-input", help="tensor | image (a pixel buffer; Core ML applies scale, bias, channel order).")] = None,
    keep_nchw: Annotated[Optional[bool], typer.Option("--keep-nchw/--nhwc", help="TFLite input layout (default NHWC).")] = None,
    int8_io: Annotated[Optional[bool], typer.Option("--int8-io/--float-io", help="TFLite int8 models with int8 input/output tensors.")] = None,
    calibration: Annotated[Optional[Path], typer.Option(help="Folder of images to calibrate TFLite int8 with (default: bundled photos).")] = None,
    recipe: Annotated[Optional[Path], typer.Option(help="A recipe YAML instead of export_recipes/<model>.yaml.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Artifact folder (default artifacts/<model>).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing artifact folder.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Export even when the folder is up to date.")] = False,
) -> None:
    """Export a zoo model, check parity against PyTorch, and write an artifact folder."""
    from mobileseg.export.pipeline import ExportRequest, export_model

    try:
        request = ExportRequest(
            model=model, targets=target or None, precisions=precision or None, weights=weights,
            random_weights=random_weights, input_size=parse_size(input_size), input_format=input_format,
            dynamic_batch=dynamic_batch, opset=opset, coreml_input=coreml_input, keep_nchw=keep_nchw,
            int8_io=int8_io, calibration=calibration, out=out_dir, force=force, use_cache=not no_cache, recipe=recipe,
        )  # fmt: skip
        with err.status(f"exporting {model}") as status:
            result = export_model(request, progress=lambda msg: status.update(msg))
    except MobilesegError as exc:
        raise fail(str(exc)) from None
    render_report(result.report, f"{model} → {result.folder}" + (" (up to date, not re-exported)" if result.cached else ""))
    for note in result.manifest.get("notes", []):
        out.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    out.print(f"artifact: {result.folder} (manifest.json, parity.json, parity.md)")
    if not result.report.passed:
        raise typer.Exit(1)


@app.command()
def verify(
    artifact: Annotated[Path, typer.Argument(help="An artifact folder written by `mobileseg export`.")],
    weights: Annotated[Optional[Path], typer.Option(help="The checkpoint, if it moved since export (same sha256).")] = None,
    runtime: Annotated[list[str], typer.Option("--runtime", "-r", help="Only these runtimes (repeatable).")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Also write the parity report as JSON here.")] = None,
) -> None:
    """Re-check an artifact folder against PyTorch; exit 0 on pass, 1 on failure (a CI gate)."""
    from mobileseg.verify.artifact import verify_artifact
    from mobileseg.verify.parity import get_runtime_names

    try:
        with err.status(f"verifying {artifact}"):
            result = verify_artifact(artifact, weights=weights, runtimes=get_runtime_names(runtime or None))
    except MobilesegError as exc:
        raise fail(str(exc)) from None
    render_report(result, f"parity of {artifact}")
    if report:
        report.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    if not result.passed:
        raise typer.Exit(1)


def render_rows(title: str, header: list[str], rows: list[list[str]], caption: str | None = None) -> None:
    table = Table(title=title, caption=caption)
    for column in header:
        table.add_column(column, justify="right" if column.endswith(("ms", "cv", "n", "MMACs", "RF", "rate")) or "ms (" in column else "left")
    for row in rows:
        table.add_row(*row)
    out.print(table)


def render_latency(result: dict, plot: Optional[Path] = None) -> None:
    from mobileseg.bench.report import plot_sweep, profile_rows, sweep_rows

    if result["fallback"]:
        out.print(f"[yellow]fallback:[/yellow] measured on the host CPU, not {result['device']['name']}: {result['fallback_reason']}", highlight=False)
    if result["kind"] == "profile":
        header, rows = profile_rows(result)
        p = result["protocol"]
        render_rows(f"latency of {result['model'] or result['artifact']['path']}", header, rows,
                    f"protocol: {p['warmup']} warm-up, {p['iterations']} runs, {p['wait_s']:g} s wait, threads {p['threads']}, input {p['input']}")
    else:
        header, rows = sweep_rows(result)
        sweep = result["sweep"]
        render_rows(f"latency vs dilation: {sweep['block']} on {'x'.join(map(str, sweep['input']))}", header, rows,
                    "iPhone XS column: quoted from the dissertation (Table 4.4), not measured here")
        if plot:
            out.print(f"plot: {plot_sweep(result, plot)}")


@app.command()
def devices(as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False) -> None:
    """List the device profiles (devices/*.yaml) and whether each is reachable now."""
    from mobileseg.bench.devices import device_names, load_device

    rows = []
    for name in device_names():
        device = load_device(name)
        reachable, why = device.reachability()
        p = device.protocol
        rows.append({"name": name, "runtime": device.runtime, "transport": device.transport, "reachable": reachable, "why": why,
                     "protocol": f"{p.iterations} runs, {p.wait_s:g} s wait, {p.warmup} warm-up, threads {p.threads}",
                     "description": device.description})  # fmt: skip
    if as_json:
        out.print_json(json.dumps(rows))
        return
    render_rows("device profiles", ["device", "runtime", "transport", "reachable", "protocol", "why"],
                [[r["name"], r["runtime"], r["transport"], "[green]yes[/green]" if r["reachable"] else "[yellow]no → CPU fallback[/yellow]",
                  r["protocol"], r["why"]] for r in rows])  # fmt: skip


@app.command()
def profile(
    target: Annotated[str, typer.Argument(help="A zoo model name, an artifact folder, or one artifact file.")],
    device: Annotated[str, typer.Option("--device", "-d", help="Device profile: iphone-xs | android | macos | cpu | a YAML path.")] = "cpu",
    runtime: Annotated[Optional[str], typer.Option("--runtime", "-r", help="Host runtime (onnxruntime, litert, tflite-runtime, torch, ...).")] = None,
    precision: Annotated[Optional[str], typer.Option("--precision", "-p", help="Which precision of the artifact folder.")] = None,
    iterations: Annotated[Optional[int], typer.Option("--iterations", "-n", help="Measured runs (default: the device's protocol).")] = None,
    warmup: Annotated[Optional[int], typer.Option(help="Warm-up runs.")] = None,
    wait: Annotated[Optional[float], typer.Option(help="Seconds to wait between runs.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="Runtime threads.")] = None,
    min_time: Annotated[Optional[float], typer.Option("--min-time", help="Keep measuring until this many seconds of runs.")] = None,
    image: Annotated[Optional[str], typer.Option("--input", help="random (seeded) or a bundled photo name, e.g. astronaut.")] = None,
    no_fallback: Annotated[bool, typer.Option("--no-fallback", help="Fail when the device is unreachable instead of using the host CPU.")] = False,
    benchmark_model: Annotated[Optional[str], typer.Option("--benchmark-model", help="Path of TFLite's benchmark_model binary (android).")] = None,
    compute_units: Annotated[Optional[str], typer.Option("--compute-units", help="Core ML: ALL | CPU_ONLY | CPU_AND_GPU | CPU_AND_NE.")] = None,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Write the result JSON here.")] = None,
) -> None:
    """Measure latency with a device's protocol (CPU fallback when the device is not reachable)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from mobileseg.bench.profile import ProfileRequest
    from mobileseg.bench.profile import profile as run_profile
    from mobileseg.bench.report import write_result

    request = ProfileRequest(target, device, runtime, precision, iterations, warmup, wait, threads, min_time, image,
                             not no_fallback, benchmark_model, compute_units)  # fmt: skip
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=err, transient=True) as bar:  # fmt: skip
            task = bar.add_task(f"profiling {target}", total=None)
            result = run_profile(
                request, progress=lambda msg: bar.update(task, description=msg),
                on_iteration=lambda i, n: bar.update(task, completed=i, total=max(i, n)),
            )  # fmt: skip
        if out_file:
            write_result(result, out_file)
    except (MobilesegError, ValueError) as exc:
        raise fail(str(exc)) from None
    render_latency(result)
    if out_file:
        out.print(f"result: {out_file}")


sweep_app = typer.Typer(help="Latency sweeps.", no_args_is_help=True)
app.add_typer(sweep_app, name="sweep")


@sweep_app.command("dilation")
def sweep_dilation(
    rates: Annotated[str, typer.Option(help="Comma-separated dilation rates.")] = "2,6,12,18",
    channels: Annotated[int, typer.Option(help="Channels of the block.")] = 128,
    size: Annotated[str, typer.Option(help="HxW of the input.")] = "120x120",
    block: Annotated[str, typer.Option(help="dwsep | dw | c3 | s2 (s2: pooling at equal receptive field).")] = "dwsep",
    target: Annotated[list[str], typer.Option("--target", "-t", help="onnx | tflite (repeatable).")] = None,
    device: Annotated[str, typer.Option("--device", "-d", help="Device profile whose protocol to use.")] = "cpu",
    iterations: Annotated[Optional[int], typer.Option("--iterations", "-n", help="Measured runs per rate.")] = None,
    warmup: Annotated[Optional[int], typer.Option(help="Warm-up runs.")] = None,
    wait: Annotated[Optional[float], typer.Option(help="Seconds to wait between runs.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="Runtime threads.")] = None,
    out_file: Annotated[Path, typer.Option("--out", help="Result JSON.")] = Path("results/sweep-dilation.json"),
    plot: Annotated[Optional[Path], typer.Option(help="PNG plot (default: beside --out).")] = None,
) -> None:
    """Latency per dilation rate (default: the dissertation's Table 4.4 setup), with the graph facts per rate."""
    from mobileseg.bench.devices import load_device
    from mobileseg.bench.report import write_result
    from mobileseg.bench.sweep import SweepRequest, run_sweep

    try:
        try:
            rate_values = tuple(int(v) for v in rates.split(","))
        except ValueError:
            raise MobilesegError(f"--rates {rates!r} is not a comma-separated list of integers") from None
        height_width = parse_size(size)
        protocol = load_device(device).protocol.with_overrides(iterations=iterations, warmup=warmup, wait_s=wait, threads=threads)
        request = SweepRequest(rate_values, channels, height_width, block, tuple(target or ("onnx", "tflite")), device, protocol)
        with err.status("sweeping") as status:
            result = run_sweep(request, progress=lambda msg: status.update(msg))
        write_result(result, out_file)
    except (MobilesegError, ValueError) as exc:
        raise fail(str(exc)) from None
    render_latency(result, plot or out_file.with_suffix(".png"))
    out.print(f"result: {out_file}")


@app.command()
def report(
    results: Annotated[Path, typer.Argument(help="A result JSON written by `mobileseg profile` or `mobileseg sweep`.")],
    plot: Annotated[Optional[Path], typer.Option(help="Also draw a sweep's plot here.")] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table instead.")] = False,
) -> None:
    """Re-render a saved latency result as a table (and a sweep as a plot) without re-running."""
    from mobileseg.bench.report import load_result, plot_sweep, profile_rows, sweep_rows
    from mobileseg.bench.report import to_markdown as rows_markdown

    try:
        result = load_result(results)
    except MobilesegError as exc:
        raise fail(str(exc)) from None
    if markdown:
        header, rows = profile_rows(result) if result["kind"] == "profile" else sweep_rows(result)
        print(rows_markdown(header, rows), end="")
        if plot and result["kind"] == "sweep":
            plot_sweep(result, plot)
        return
    render_latency(result, plot if result["kind"] == "sweep" else None)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
