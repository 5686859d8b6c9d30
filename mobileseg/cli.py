"""The ``mobileseg`` command line: parse, call the library, render with rich. Nothing imports this module.

Exit codes (`main`): 0 success; 1 a parity check failed (the CI gate); 2 a user error, one red line on
stderr and nothing written; 3 an internal error, one line naming a log file with the traceback (``--debug``
prints it instead); 130 interrupted. Arguments are checked before PyTorch or a converter loads.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer._click.exceptions import NoArgsIsHelpError, UsageError  # typer 0.29 vendors click (pinned)
from typer.core import TyperGroup

from mobileseg.errors import InputSizeError, MobilesegError

EXIT_OK, EXIT_PARITY_FAILED, EXIT_USER_ERROR, EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
LOG_DIR_ENV = "MOBILESEG_LOG_DIR"


def _crash_log(exc: BaseException, argv: list[str]) -> Path | None:
    """Write the traceback of an internal error to a log file (``$MOBILESEG_LOG_DIR``, else the user's cache
    folder, else TMPDIR); its path, or None when nothing could be written."""
    import platform
    import tempfile

    from mobileseg import __version__

    text = (f"mobileseg {__version__}, Python {platform.python_version()}, {platform.platform()}\n"
            f"command: mobileseg {' '.join(argv)}\n\n" + "".join(traceback.format_exception(exc)))  # fmt: skip
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mobileseg" / "logs"
    for folder in [Path(p) for p in (os.environ.get(LOG_DIR_ENV),) if p] + [cache, Path(tempfile.gettempdir())]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"mobileseg-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
            path.write_text(text)
            return path
        except OSError:
            continue
    return None


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and any(s in str(exc) for s in ("can't allocate memory", "not enough memory"))
    )


class GuardedGroup(TyperGroup):
    """The app's top-level command: every outcome of a run is one of the documented exit codes (module
    notes), never an uncaught traceback, whoever invokes it (the console script, ``python -m``, a test)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        code = self.guarded_run(list(sys.argv[1:] if args is None else args), prog_name or "mobileseg", extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def guarded_run(self, argv: list[str], prog_name: str, extra: dict) -> int:
        debug = "--debug" in argv or os.environ.get("MOBILESEG_DEBUG") == "1"
        args = [a for a in argv if a != "--debug"]  # accepted anywhere, not only before the command
        try:
            code = super().main(args=args, prog_name=prog_name, standalone_mode=False, **extra)
            return code if isinstance(code, int) else EXIT_OK
        except NoArgsIsHelpError as exc:
            out.print(exc.format_message(), highlight=False, markup=False)
            return EXIT_OK
        except UsageError as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            fail(" ".join(exc.format_message().split()) + where)
            return EXIT_USER_ERROR
        except MobilesegError as exc:
            fail(" ".join(str(exc).split("\n")))
            return EXIT_USER_ERROR
        except (KeyboardInterrupt, typer.Abort):
            err.print("[bold red]interrupted[/bold red]")
            return EXIT_INTERRUPTED
        except Exception as exc:  # noqa: BLE001 (the one place every unexpected error ends)
            if _out_of_memory(exc):
                fail("not enough memory for this run (a smaller --input-size or fewer targets needs less)")
                return EXIT_USER_ERROR
            summary = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            if debug:
                traceback.print_exception(exc)
                fail(f"internal error: {summary}")
                return EXIT_INTERNAL_ERROR
            log = _crash_log(exc, argv)
            where = f"the traceback is in {log}" if log else "rerun with --debug for the traceback"
            fail(f"internal error (a bug in mobileseg): {summary}; {where}")
            return EXIT_INTERNAL_ERROR


app = typer.Typer(
    name="mobileseg",
    cls=GuardedGroup,
    help="Efficient segmentation networks from PyTorch to on-device runtimes, with proof of parity.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
# Piped output (CI logs) gets wide tables instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 160, emoji=False)  # ":x" in a path is not an emoji
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160, emoji=False)


def fail(message: str) -> None:
    """Print ``message`` as one red line on stderr, as it is (brackets are not markup)."""
    err.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)


def parse_size(value: Optional[str], option: str = "--input-size") -> Optional[tuple[int, int]]:
    """``"HxW"`` → (H, W); `InputSizeError` naming ``option`` for anything else."""
    if value is None:
        return None
    parts = value.strip().lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise InputSizeError(f"{option} {value!r} is not HxW with two positive whole numbers (e.g. 224x224)")
    height, width = (int(p) for p in parts)
    if height <= 0 or width <= 0:
        raise InputSizeError(f"{option} {value!r}: height and width must be positive")
    return height, width


def version_callback(value: bool) -> None:
    if value:
        from mobileseg import __version__

        out.print(f"mobileseg {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Show the version.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="On an internal error, print the traceback (exit code 3) "
                                        "instead of writing it to a log file.")] = False,
) -> None:
    """mobileseg: export SINet, ExtremeC3Net and C3 networks to ONNX and prove they compute the same thing."""


@app.command()
def models(as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False) -> None:
    """List the zoo: parameters, MACs at the default input, input size, classes."""
    import torch

    from mobileseg import zoo
    from mobileseg.export.pipeline import DEFAULT_ARTIFACTS_DIR
    from mobileseg.zoo.macs import count_macs

    rows = []
    for name in zoo.names():
        spec = zoo.spec(name)
        with torch.device("meta"):  # shapes only: MACs do not depend on the weights
            macs = count_macs(spec.builder(), spec.default_input_shape)
        rows.append({
            "name": name, "params": spec.params, "gmacs": round(macs / 1e9, 4),
            "weights": "structure only" if spec.structure_only else "authors'",
            "input": "x".join(map(str, spec.default_input_shape)), "size_multiple": spec.size_multiple,
            "classes": spec.num_classes, "output": spec.output_kind, "description": spec.description,
            "layout_ops": exported_layout_ops(DEFAULT_ARTIFACTS_DIR / name),
        })  # fmt: skip
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="mobileseg zoo (MACs: Conv/ConvTranspose/Linear multiply-accumulates, as the dissertation)")
    for column in ("model", "params", "GMACs", "input (NCHW)", "multiple of", "classes", "output", "weights", "layout ops"):
        table.add_column(column, justify="right" if column in ("params", "GMACs", "classes", "multiple of") else "left", no_wrap=True)
    for r in rows:
        layout = ", ".join(f"{file} {count}" for file, count in r["layout_ops"].items()) or "-"
        table.add_row(r["name"], f"{r['params']:,}", f"{r['gmacs']:.4f}", r["input"], str(r["size_multiple"]),
                      str(r["classes"]), r["output"], r["weights"], layout)  # fmt: skip
    out.print(table)
    out.print("layout ops: transpose/reshape/gather/… per file of the model's artifact folder (artifacts/<model>), "
              "when it has been exported", highlight=False)  # fmt: skip


def exported_layout_ops(folder: Path) -> dict[str, int]:
    """File → layout-op count from ``folder``'s manifest; empty when there is none (or it cannot be read)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        return {e["file"]: int(e["layout_ops"]) for e in manifest.get("artifacts", []) if "layout_ops" in e}
    except (OSError, ValueError, TypeError, KeyError):
        return {}


def parse_settings(settings: list[str] | None) -> dict[str, dict]:
    """``--set TARGET.KEY=VALUE`` flags as target → key → value (VALUE read as YAML: true, 32, 0.5, text)."""
    import yaml

    options: dict[str, dict] = {}
    for setting in settings or []:
        key, sep, value = setting.partition("=")
        target, dot, name = key.partition(".")
        if not sep or not dot or not target or not name:
            raise MobilesegError(f"--set {setting}: write TARGET.KEY=VALUE, e.g. tflite.calibration_samples=32")
        try:
            parsed = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            parsed = value
        options.setdefault(target.strip(), {})[name.strip()] = parsed
    return options


def render_report(report, title: str) -> None:
    from mobileseg.verify.report import HEADERS, report_rows

    table = Table(title=title)
    for header in HEADERS:
        table.add_column(header, justify="left" if header in HEADERS[:4] else "right", no_wrap=header != "status")
    for row in report_rows(report):
        style = "green" if row[3] == "PASS" else ("yellow" if row[3].startswith("SKIPPED") else "red")
        table.add_row(*row[:3], f"[{style}]{row[3]}[/{style}]", *row[4:])
    out.print(table)
    reference = report.reference.get("kind") if isinstance(report.reference, dict) else None
    out.print(f"inputs: {', '.join(report.inputs)}; worst value over the inputs each precision is judged on; "
              f"reference: {reference or 'PyTorch eager fp32'}", highlight=False, markup=False)  # fmt: skip
    for result in report.results:
        if result.status == "fail":
            out.print(f"[red]FAIL[/red] {result.target} {result.precision} on {result.runtime}: {result.reason}")
    out.print("[bold green]parity: PASS[/bold green]" if report.passed else "[bold red]parity: FAIL[/bold red]")


@app.command()
def export(
    model: Annotated[Optional[str], typer.Argument(help="Zoo model name (see `mobileseg models`).")] = None,
    own_model: Annotated[Optional[str], typer.Option("--model", help="Your own model: path/to/file.py:factory, package.module:factory or program.pt2 (with --recipe).")] = None,
    target: Annotated[list[str], typer.Option("--target", "-t", help="onnx | coreml | tflite | all (repeatable); default: the recipe's.")] = None,
    precision: Annotated[list[str], typer.Option("--precision", "-p", help="Only these precisions: fp32 fp16 dynamic int8 a16w8 (repeatable).")] = None,
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
    float_fallback: Annotated[Optional[bool], typer.Option("--float-fallback/--no-float-fallback", help="Core ML fp16, TFLite fp16/dynamic: keep in float32 the ops reduced precision wrecks (default on).")] = None,
    bias_correction: Annotated[Optional[bool], typer.Option("--bias-correction/--no-bias-correction", help="TFLite int8: take each convolution's mean output shift on the calibration crops out of its bias (default on).")] = None,
    lean: Annotated[bool, typer.Option("--lean/--plain", help="Float files without denormal constants, with dead channels frozen and exact rewrites that drop layout ops, proven against the plain network (default); --plain converts the network as it is.")] = True,
    recipe: Annotated[Optional[Path], typer.Option(help="A recipe YAML instead of export_recipes/<model>.yaml.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Artifact folder (default artifacts/<model>).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing artifact folder.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Export even when the folder is up to date.")] = False,
    settings: Annotated[list[str], typer.Option("--set", help="Any target option of the recipe: TARGET.KEY=VALUE, e.g. tflite.calibration_samples=32 (repeatable).")] = None,
) -> None:
    """Export a zoo model or your own, check parity against PyTorch, and write an artifact folder."""
    from mobileseg.export.pipeline import ExportRequest, export_model
    from mobileseg.memory import retain_freed_memory
    from mobileseg.user_model import is_model_source

    if (model is None) == (own_model is None):
        raise MobilesegError("give a zoo model name (mobileseg export sinet) or --model path/to/file.py:factory --recipe my.yaml, not "
             + ("both" if model else "neither"))
    if model is not None and is_model_source(model):
        raise MobilesegError(f"{model} looks like your own model: pass it as --model {model} --recipe my.yaml")
    model = model or own_model
    retain_freed_memory()
    request = ExportRequest(
        model=model, targets=target or None, precisions=precision or None, weights=weights,
        random_weights=random_weights, input_size=parse_size(input_size), input_format=input_format,
        dynamic_batch=dynamic_batch, opset=opset, coreml_input=coreml_input, keep_nchw=keep_nchw,
        int8_io=int8_io, calibration=calibration, float_fallback=float_fallback, bias_correction=bias_correction,
        out=out_dir, force=force, use_cache=not no_cache, recipe=recipe, options=parse_settings(settings), lean=lean,
    )  # fmt: skip
    with err.status(f"exporting {model}") as status:
        result = export_model(request, progress=lambda msg: status.update(msg))
    render_report(result.report, f"{model} → {result.folder}" + (" (up to date, not re-exported)" if result.cached else ""))
    for note in result.manifest.get("notes", []):
        out.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    counted = [e for e in result.manifest.get("artifacts", []) if "layout_ops" in e]
    if counted:
        out.print("ops (layout ops: transpose, reshape, gather, …): "
                  + ", ".join(f"{e['file']} {sum(e['ops'].values())} ({e['layout_ops']})" for e in counted), highlight=False)  # fmt: skip
    if result.timings:
        out.print(f"took {sum(result.timings.values()):.1f} s ({', '.join(f'{k} {v:.1f} s' for k, v in result.timings.items())})")
    out.print(f"artifact: {result.folder} (manifest.json, parity.json, parity.md)")
    if not result.report.passed:
        raise typer.Exit(EXIT_PARITY_FAILED)


@app.command()
def verify(
    artifact: Annotated[Path, typer.Argument(help="An artifact folder written by `mobileseg export`, or any .onnx/.tflite/.mlpackage with --reference.")],
    weights: Annotated[Optional[Path], typer.Option(help="The checkpoint, if it moved since export (same sha256).")] = None,
    runtime: Annotated[list[str], typer.Option("--runtime", "-r", help="Only these runtimes (repeatable).")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Also write the parity report as JSON here.")] = None,
    reference: Annotated[Optional[str], typer.Option(help="For a file made elsewhere: the PyTorch model it should compute (a zoo name, file.py:factory, module:factory or .pt2).")] = None,
    recipe: Annotated[Optional[Path], typer.Option(help="With --reference to your own model: the recipe declaring its inputs and outputs.")] = None,
    precision: Annotated[str, typer.Option(help="With --reference: the precision whose tolerances judge the file (fp32, fp16).")] = "fp32",
) -> None:
    """Re-check an artifact folder (or a file, with --reference) against PyTorch; exit 0 on pass, 1 on failure (a CI gate)."""
    from mobileseg.outputs import check_replaceable_file, write_json_file
    from mobileseg.runtimes import check_runtime_names
    from mobileseg.verify.artifact import verify_artifact, verify_file

    if report:
        check_replaceable_file(report)
    runtimes = check_runtime_names(runtime or None)
    if artifact.is_dir() and (reference or recipe):
        raise MobilesegError(f"{artifact} is an artifact folder: it keeps its reference; --reference and --recipe are for a single file")
    if not artifact.is_dir() and artifact.suffix in (".onnx", ".tflite", ".mlpackage"):
        if not reference:
            raise MobilesegError(f"{artifact} is a single file: say what it should compute with --reference MODEL (and --recipe for your own model)")
        with err.status(f"verifying {artifact}"):
            result = verify_file(artifact, reference, recipe, precision, weights, runtimes)
    else:
        with err.status(f"verifying {artifact}"):
            result = verify_artifact(artifact, weights=weights, runtimes=runtimes)
    render_report(result, f"parity of {artifact}")
    if report:
        write_json_file(report, result.to_dict())
    if not result.passed:
        raise typer.Exit(EXIT_PARITY_FAILED)


@app.command()
def explain(
    artifact: Annotated[Path, typer.Argument(help="An artifact folder written by `mobileseg export`, or a file in one.")],
    target: Annotated[Optional[str], typer.Option(help="Which file of the folder: its target (onnx, coreml, tflite).")] = None,
    precision: Annotated[Optional[str], typer.Option(help="Which file of the folder: its precision.")] = None,
    runtime: Annotated[Optional[str], typer.Option(help="The runtime to trace (the target's reference kernels: onnxruntime, litert-noxnn, mil-reference).")] = None,
    input: Annotated[Optional[str], typer.Option("--input", help="A bundled photo (default: the recipe's first parity photo).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Write OUT.json and OUT.png (default: explain-<model>-<target>-<precision>-<photo> here).")] = None,
    top: Annotated[int, typer.Option(help="Rows of the table: the layers that add most.")] = 15,
) -> None:
    """Where a file departs from PyTorch, layer by layer: each layer's local and accumulated error, ranked."""
    from mobileseg.images import PHOTOS
    from mobileseg.outputs import check_replaceable_file, save_figure, write_json_file
    from mobileseg.explain import TRACED_RUNTIMES, error_plot, explain_artifact

    if target is not None and target not in TRACED_RUNTIMES:
        raise MobilesegError(f"unknown target {target!r}; choose from {', '.join(TRACED_RUNTIMES)}")
    if runtime is not None and runtime not in TRACED_RUNTIMES.values():
        raise MobilesegError(
            f"explain traces each target with the runtime that keeps every intermediate tensor: "
            f"{', '.join(f'{t}: {r}' for t, r in TRACED_RUNTIMES.items())}; not {runtime!r}"
        )  # fmt: skip
    if runtime is not None and target is not None and TRACED_RUNTIMES[target] != runtime:
        raise MobilesegError(f"{target} files are traced with {TRACED_RUNTIMES[target]}, not {runtime}")
    if input is not None and input not in PHOTOS:
        raise MobilesegError(f"unknown photo {input!r}; bundled photos: {', '.join(PHOTOS)}")
    if top < 1:
        raise MobilesegError("--top must be at least 1")
    if not artifact.exists():
        raise MobilesegError(f"{artifact} does not exist")
    if runtime is not None and target is None:
        target = next(t for t, r in TRACED_RUNTIMES.items() if r == runtime)
    if out is not None:
        for suffix in (".json", ".png"):
            check_replaceable_file(Path(f"{out}{suffix}"))
    with err.status(f"explaining {artifact}"):
        result = explain_artifact(artifact, target, precision, input)
    stem = out or Path(f"explain-{Path(artifact).resolve().name if Path(artifact).is_dir() else Path(artifact).resolve().parent.name}"
                       f"-{result.target}-{result.precision}-{result.input.removeprefix('photo:')}")  # fmt: skip
    for suffix in (".json", ".png"):
        check_replaceable_file(Path(f"{stem}{suffix}"))
    rows = [
        [str(rank), layer.module or "(network)", layer.module_type, layer.op, fmt_error(layer.local), fmt_error(layer.accumulated)]
        for rank, layer in enumerate(result.ranked()[:top], 1)
    ]  # fmt: skip
    render_rows(f"where {result.file} ({result.target} {result.precision}) departs, on {result.input}",
                ["rank", "module", "type", "op", "local", "accumulated"], rows,
                f"{len(result.layers)} layers matched ({result.unmatched_modules} modules without a tensor of their own); "
                f"error: RMS / reference spread; reference: {result.reference}; traced with {result.runtime}")  # fmt: skip
    write_json_file(Path(f"{stem}.json"), result.to_dict())
    save_figure(error_plot(result), Path(f"{stem}.png"), dpi=110)
    err.print(f"wrote {stem}.json and {stem}.png", highlight=False)


def fmt_error(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def render_rows(title: str, header: list[str], rows: list[list[str]], caption: str | None = None) -> None:
    table = Table(title=title, caption=caption)
    for column in header:
        table.add_column(column, justify="right" if column.endswith(("ms", "cv", "n", "MMACs", "RF", "rate")) or "ms (" in column else "left")
    for row in rows:
        table.add_row(*row)
    out.print(table)


def render_latency(result: dict, plot: Optional[Path] = None) -> None:
    from mobileseg.bench.report import op_rows, plot_sweep, profile_rows, sweep_rows

    if result["fallback"]:
        out.print(f"[yellow]fallback:[/yellow] measured on the host CPU, not {result['device']['name']}: {result['fallback_reason']}", highlight=False)
    if result["kind"] == "profile":
        header, rows = profile_rows(result)
        p = result["protocol"]
        render_rows(f"latency of {result['model'] or result['artifact']['path']}", header, rows,
                    f"protocol: {p['warmup']} warm-up, {p['iterations']} runs, {p['wait_s']:g} s wait, threads {p['threads']}, input {p['input']}")
        header, rows = op_rows(result)
        if rows:
            render_rows("where the time goes, by op type", header, rows, f"method: {result['ops']['method']}")
        elif "unsupported" in (result.get("ops") or {}):
            out.print(f"ops: {result['ops']['unsupported']}", highlight=False)
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
    ops: Annotated[bool, typer.Option("--ops", help="Also where the time goes by op type: onnxruntime's profiler, or LiteRT timed op by op.")] = False,
) -> None:
    """Measure latency with a device's protocol (CPU fallback when the device is not reachable)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from mobileseg.bench.profile import ProfileRequest
    from mobileseg.bench.profile import profile as run_profile
    from mobileseg.bench.report import write_result
    from mobileseg.outputs import check_replaceable_file

    if out_file:
        check_replaceable_file(out_file)
    request = ProfileRequest(target, device, runtime, precision, iterations, warmup, wait, threads, min_time, image,
                             not no_fallback, benchmark_model, compute_units, ops)  # fmt: skip
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True) as bar:  # fmt: skip
        task = bar.add_task(f"profiling {target}", total=None)
        result = run_profile(
            request, progress=lambda msg: bar.update(task, description=msg),
            on_iteration=lambda i, n: bar.update(task, completed=i, total=max(i, n)),
        )  # fmt: skip
    if out_file:
        write_result(result, out_file)
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
    block: Annotated[str, typer.Option(help="dwsep | dw | c3 | s2 (s2: pooling at equal receptive field) | mobilenet | fire (the thesis' atrous blocks).")] = "dwsep",
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
    from mobileseg.outputs import check_replaceable_file

    try:
        rate_values = tuple(int(v) for v in rates.split(","))
    except ValueError:
        raise MobilesegError(f"--rates {rates!r} is not a comma-separated list of integers") from None
    height_width = parse_size(size, "--size")
    protocol = load_device(device).protocol.with_overrides(iterations=iterations, warmup=warmup, wait_s=wait, threads=threads)
    plot = plot or out_file.with_suffix(".png")
    for path in (out_file, plot):
        check_replaceable_file(path)
    from mobileseg.bench.report import write_result
    from mobileseg.bench.sweep import SweepRequest, run_sweep

    request = SweepRequest(rate_values, channels, height_width, block, tuple(target or ("onnx", "tflite")), device, protocol)
    request.validate()
    with err.status("sweeping") as status:
        result = run_sweep(request, progress=lambda msg: status.update(msg))
    write_result(result, out_file)
    render_latency(result, plot)
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
    from mobileseg.outputs import check_replaceable_file

    result = load_result(results)
    if plot:
        check_replaceable_file(plot)
    if markdown:
        header, rows = profile_rows(result) if result["kind"] == "profile" else sweep_rows(result)
        print(rows_markdown(header, rows), end="")
        if plot and result["kind"] == "sweep":
            plot_sweep(result, plot)
        return
    render_latency(result, plot if result["kind"] == "sweep" else None)


@app.command()
def matrix(
    precision: Annotated[list[str], typer.Option("--precision", "-p", help="Precisions beyond the recipes' defaults, e.g. int8 (repeatable).")] = None,
    models: Annotated[list[str], typer.Option("--model", "-m", help="Only these zoo models (repeatable).")] = None,
    jobs: Annotated[int, typer.Option(help="Models exported at once, one process each.")] = 1,
    artifacts: Annotated[Path, typer.Option(help="Folder of the models' artifact folders.")] = Path("artifacts"),
    out_file: Annotated[Path, typer.Option("--out", help="Matrix JSON.")] = Path("results/parity.json"),
    markdown: Annotated[Path, typer.Option(help="Matrix as a Markdown table.")] = Path("results/parity.md"),
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Export even the folders that are up to date.")] = False,
    folders: Annotated[list[Path], typer.Option("--folder", help="Also re-check this artifact folder, of any model (repeatable; alone, no zoo export).")] = None,
) -> None:
    """The parity matrix: every model × target × precision × runtime with its metrics; the zoo's (`make parity`)
    and any artifact folders'."""
    from mobileseg import zoo
    from mobileseg.outputs import check_replaceable_file

    if jobs < 1:
        raise MobilesegError("--jobs must be 1 or more")
    for name in models or []:
        zoo.spec(name)
    from mobileseg.artifact import read_manifest

    for folder in folders or []:
        if read_manifest(folder).get("kind") not in (None, "graphs"):
            raise MobilesegError(f"{folder} is a VOS folder: `mobileseg vos verify` checks it")
    for path in (out_file, markdown):
        check_replaceable_file(path)
    from mobileseg.export.matrix import run_matrix, write_matrix

    def finished(name: str, entry: dict) -> None:
        done = "re-checked" if entry.get("rechecked") else "up to date" if entry["cached"] else "exported"
        out.print(f"{name}: {done} in {entry['seconds']:.1f} s, "
                  f"parity {'PASS' if entry['report']['passed'] else 'FAIL'}", highlight=False)  # fmt: skip

    document = run_matrix(models or None, precision or [], artifacts, jobs, not no_cache, finished, folders or None)
    write_matrix(document, out_file, markdown)
    failed = [r for r in document["rows"] if r["status"] != "pass"]
    out.print(f"{len(document['rows'])} rows, {len(failed)} not passing; wrote {out_file} and {markdown}")
    for row in failed:
        out.print(f"  {row['status'].upper()} {row['model']} {row['target']} {row['precision']} {row['runtime']}: {row['reason']}",
                  highlight=False, markup=False)  # fmt: skip


@app.command("bench-suite")
def bench_suite(
    out_file: Annotated[Path, typer.Option("--out", help="Result JSON (the sweep and VOS results beside it).")] = Path("results/bench.json"),
    artifacts: Annotated[Path, typer.Option(help="Scratch folder for the zoo export.")] = Path("results/bench-artifacts"),
    only: Annotated[list[str], typer.Option("--only", help="Run only these benchmarks (repeatable): cli, sinet_onnx_vs_torch, peer, export_zoo, harness_overhead, dilation_sweep, vos_tau, thesis_semantic, unpooling.")] = None,
) -> None:
    """The project's speed targets, measured in one run (`make bench`)."""
    from mobileseg.outputs import check_replaceable_file

    check_replaceable_file(out_file)
    from mobileseg.bench.suite import SUITE, run_suite, summary

    unknown = [name for name in only or [] if name not in SUITE]
    if unknown:
        raise MobilesegError(f"--only {', '.join(unknown)}: not a benchmark; choose from {', '.join(SUITE)}")
    results = run_suite(out_file, os.environ.get("MOBILESEG_WEIGHTS_DIR"), artifacts, os.environ.get("MOBILESEG_PEERS_DIR"),
                        tuple(only) if only else SUITE)  # fmt: skip
    for line in summary(results):
        out.print(line, highlight=False, markup=False)
    out.print(f"wrote {out_file}")


vos_app = typer.Typer(help="Reuse-gated video object segmentation: train the gate, export subgraphs, track, verify, bench.",
                      no_args_is_help=True)  # fmt: skip
app.add_typer(vos_app, name="vos")
DEFAULT_VOS_WEIGHTS = Path("artifacts/vos-weights.pt")


def parse_taus(value: str) -> tuple[float, ...]:
    try:
        taus = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise MobilesegError(f"--taus {value!r} is not a comma-separated list of numbers") from None
    from mobileseg.vos.session import validate_tau

    return tuple(validate_tau(t) for t in taus)


@vos_app.command("train-gate")
def vos_train_gate(
    out_file: Annotated[Path, typer.Option("--out", help="Weights file to write.")] = DEFAULT_VOS_WEIGHTS,
    seed: Annotated[int, typer.Option(help="Seed of the model, the sequences and the training.")] = 0,
    size: Annotated[str, typer.Option(help="HxW of the training frames (multiples of 32).")] = "128x224",
    gate_steps: Annotated[int, typer.Option(help="Optimiser steps of the gate phase.")] = 1500,
    segmentation_steps: Annotated[int, typer.Option(help="Optimiser steps of the segmentation-head phase.")] = 150,
    gate_sequences: Annotated[int, typer.Option(help="Generated sequences the gate trains on.")] = 24,
    backbone_steps: Annotated[int, typer.Option(help="Object-vs-scene steps for the backbone's low stages (0: random).")] = 1200,
    paper_gate: Annotated[bool, typer.Option("--paper-gate", help="The paper's gate inputs only, without mobileseg's "
                                             "change cue (docs/vos.md).")] = False,
) -> None:
    """Train the template, gate and delta generator (and the segmentation head) on generated sequences; report
    the Spearman correlation of P_reuse with the true IoU on held-out sequences."""
    from mobileseg.outputs import check_replaceable_file

    height, width = parse_size(size, "--size")
    check_replaceable_file(out_file)
    from mobileseg.vos.train import TrainConfig, save_weights, train_gate

    config = TrainConfig(seed=seed, height=height, width=width, gate_steps=gate_steps,
                         segmentation_steps=segmentation_steps, gate_sequences=gate_sequences,
                         backbone_steps=backbone_steps, change_cue=not paper_gate)  # fmt: skip
    config.validate()
    with err.status("training") as status:
        model, report = train_gate(config, lambda phase, step, steps, loss: status.update(
            f"{phase}: step {step}/{steps}, loss {loss:.4f}"))  # fmt: skip
    save_weights(model, out_file, report)
    held = report["heldout"]
    out.print(f"trained in {report['train_seconds']} s; held-out: Spearman(P_reuse, IoU) = {held['spearman_p_reuse_vs_iou']}, "
              f"reuse ratio {held['reuse_ratio']} at tau {held['tau']}, mask IoU {held['mean_mask_iou']} ({held['frames']} frames)")
    out.print(f"weights: {out_file}")


@vos_app.command("export")
def vos_export(
    weights: Annotated[Path, typer.Option(help="Weights from `mobileseg vos train-gate`.")] = DEFAULT_VOS_WEIGHTS,
    target: Annotated[list[str], typer.Option("--target", "-t", help="onnx | coreml | tflite | all (repeatable).")] = None,
    input_size: Annotated[str, typer.Option(help="HxW the subgraphs are fixed to (multiples of 32).")] = "128x224",
    out_dir: Annotated[Path, typer.Option("--out", help="Artifact folder.")] = Path("artifacts/vos"),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing folder.")] = False,
) -> None:
    """Export the eight subgraphs and the state-machine manifest; check each file against PyTorch."""
    from mobileseg.outputs import check_destination

    size = parse_size(input_size)
    check_destination(out_dir, force)
    if not weights.is_file():
        raise MobilesegError(f"VOS weights not found: {weights} (make them with `mobileseg vos train-gate --out {weights}`)")
    from mobileseg import targets as target_registry
    from mobileseg.vos.export import VOSExportRequest, export_vos
    from mobileseg.vos.train import load_weights

    targets = tuple(target_registry.select(target or None, ["onnx"]))
    model, report = load_weights(weights)
    record = {"file": str(weights), "seed": report.get("config", {}).get("seed", 0), "training": report}
    with err.status("exporting") as status:
        manifest = export_vos(VOSExportRequest(model, out_dir, targets, size, force, record, record["seed"]),
                              progress=lambda msg: status.update(msg))  # fmt: skip
    rows = [[r["graph"], r["target"], r["precision"], r["runtime"],
             "; ".join(f"{k} {v['max_rel']:.1e}/{v['cosine']:.6f}" for k, v in r.get("metrics", {}).items()) or r.get("error", ""),
             "[green]pass[/green]" if r["passed"] else "[red]FAIL[/red]"] for r in manifest["parity"]["results"]]  # fmt: skip
    render_rows(f"VOS export {out_dir} ({manifest['export_seconds']} s)", ["subgraph", "target", "precision", "runtime",
                "max_rel / cosine per output", "parity"], rows)  # fmt: skip
    if not manifest["parity"]["passed"]:
        raise typer.Exit(1)


@vos_app.command("run")
def vos_run(
    artifact: Annotated[Path, typer.Argument(help="Folder from `mobileseg vos export`.")],
    video: Annotated[Path, typer.Option(help="A folder of frames or an animated GIF/TIFF.")],
    mask: Annotated[Path, typer.Option(help="First frame's mask: binary or palette PNG.")],
    tau: Annotated[float, typer.Option(help="Reuse threshold: reuse when P_reuse > tau; 1 never reuses.")] = 0.7,
    runtime: Annotated[str, typer.Option(help="onnxruntime | litert | mil-reference | coreml | torch ...")] = "onnxruntime",
    precision: Annotated[Optional[str], typer.Option(help="fp32 | fp16 (default fp32 when exported).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where masks/ and log.json go.")] = Path("results/vos-run"),
) -> None:
    """Track the objects of the first mask through a video; write one mask per frame and a per-frame log."""
    from mobileseg.vos.api import run_video

    with err.status("tracking") as status:
        summary = run_video(artifact, video, mask, tau, runtime, out_dir, precision,
                            progress=lambda t, n: status.update(f"frame {t}/{n}"))  # fmt: skip
    out.print(f"{summary['frames']} frames, {len(summary['objects'])} object(s), reuse ratio {summary['reuse_ratio']}, "
              f"mean {summary['mean_frame_ms']} ms/frame on {summary['backend']}; masks and log.json in {out_dir}")


@vos_app.command("verify")
def vos_verify(
    artifact: Annotated[Path, typer.Argument(help="Folder from `mobileseg vos export`.")],
    runtime: Annotated[list[str], typer.Option("--runtime", "-r", help="Runtimes to check (default: every available).")] = None,
    taus: Annotated[str, typer.Option(help="Comma-separated tau values for the sequence checks.")] = "1.0,0.7",
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Write the report JSON here.")] = None,
) -> None:
    """Subgraph parity on every runtime, then teacher-forced and free-running sequence parity against PyTorch."""
    from mobileseg.outputs import check_replaceable_file, write_json_file
    from mobileseg.runtimes import check_runtime_names
    from mobileseg.vos.api import verify_artifact

    tau_values = parse_taus(taus)
    if out_file:
        check_replaceable_file(out_file)
    with err.status("verifying") as status:
        report = verify_artifact(artifact, check_runtime_names(runtime or None), tau_values, progress=lambda m: status.update(m))
    if out_file:
        write_json_file(out_file, report)
    failed = [r for r in report["subgraphs"] if not r["passed"]]
    out.print(f"subgraphs: {len(report['subgraphs']) - len(failed)}/{len(report['subgraphs'])} pass")
    for r in failed:
        out.print(f"  [red]FAIL[/red] {r['graph']} {r['target']} {r['precision']} on {r['runtime']}: "
                  f"{r.get('error') or '; '.join(r['failures'])}", highlight=False)  # fmt: skip
    rows = []
    for r in report["sequences"]:
        if "skipped" in r:
            rows.append([r["runtime"], f"{r['target']} {r['precision']}", "-", "-", "-", "-", "-", r["skipped"]])
            continue
        tf, fr = r["teacher_forced"], r["free_running"]
        rows.append([r["runtime"], f"{r['target']} {r['precision']}", r["sequence"], str(r["tau"]), f"{tf['min_mask_iou']:.4f}",
                     f"{fr['decision_agreement']:.3f}", f"{fr['mean_mask_iou']:.4f}",
                     "[green]pass[/green]" if tf["passed"] else "[red]FAIL[/red]"])  # fmt: skip
    render_rows("VOS sequence parity vs PyTorch", ["runtime", "artifact", "sequence", "tau", "teacher-forced min IoU",
                "free-running decision agreement", "free-running mean IoU", "result"], rows)  # fmt: skip
    if not report["passed"]:
        raise typer.Exit(1)


@vos_app.command("bench")
def vos_bench(
    artifact: Annotated[Path, typer.Argument(help="Folder from `mobileseg vos export`.")],
    runtime: Annotated[list[str], typer.Option("--runtime", "-r", help="Runtimes (repeatable).")] = None,
    taus: Annotated[str, typer.Option(help="Comma-separated tau values.")] = "1.0,0.9,0.7,0.5,0.3",
    length: Annotated[int, typer.Option(help="Frames of the generated sequence.")] = 48,
    seed: Annotated[int, typer.Option(help="Seed of the generated sequence.")] = 40_000,
    threads: Annotated[int, typer.Option(help="Runtime threads.")] = 1,
    out_file: Annotated[Path, typer.Option("--out", help="Result JSON (a PNG of FPS vs reuse ratio beside it).")] = Path(
        "results/vos-bench.json"
    ),
) -> None:
    """Per-frame latency, FPS and reuse ratio for several tau on one generated sequence."""
    from mobileseg.outputs import check_replaceable_file
    from mobileseg.runtimes import check_runtime_names
    from mobileseg.vos.api import bench_artifact

    tau_values = parse_taus(taus)
    for path in (out_file, out_file.with_suffix(".png")):
        check_replaceable_file(path)
    with err.status("benchmarking") as status:
        result = bench_artifact(artifact, check_runtime_names(runtime or ["onnxruntime"]), tau_values, length, seed, threads,
                                out_file, progress=lambda m: status.update(m))  # fmt: skip
    rows = [[r["runtime"], str(row["tau"]), f"{row['reuse_ratio']:.3f}", f"{row['mean_ms']:.1f}", f"{row['fps']:.1f}",
             f"{row['latency_vs_tau1']:.3f}" if row["latency_vs_tau1"] else "-"]
            for r in result["runs"] for row in r["rows"]]  # fmt: skip
    render_rows(f"VOS speed vs tau ({result['frames']} frames, {threads} thread(s))",
                ["runtime", "tau", "reuse ratio", "mean ms/frame", "FPS", "latency vs tau=1"], rows)  # fmt: skip
    out.print(f"result: {out_file}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
