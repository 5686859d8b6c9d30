"""``mobileseg profile``: the latency of one artifact on one device profile, with a CPU fallback.

A profile run resolves what to time (a zoo model name → its artifact folder, exported first when it
lacks a suitable file; an artifact folder; or one artifact file), picks the device's runtime, and measures
with the device's protocol (overridable). When the device cannot be reached (Core ML on Linux, no adb
device), the same protocol runs on the host CPU with the closest artifact of the same model, and the
result says ``fallback: true`` with the reason; ``fallback=False`` makes that an error instead.
"""

from __future__ import annotations

import hashlib
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mobileseg import targets
from mobileseg.bench.devices import Device, DeviceError, load_device
from mobileseg.bench.latency import Protocol, measure
from mobileseg.errors import ArtifactError, MobilesegError
from mobileseg.artifact import GRAPHS_KIND, graph_name, read_manifest

SCHEMA = "mobileseg.latency/1"
# What the host measures instead of a device's runtime, closest first: (target, precision).
FALLBACK_ORDER = {
    "coreml": [("tflite", "fp16"), ("tflite", "fp32"), ("onnx", "fp32")],
    "tflite": [("tflite", None), ("onnx", "fp32")],
}


@dataclass(frozen=True)
class Artifact:
    """One file to time, with its manifest entry (I/O layouts and formats) when there is one."""

    path: Path
    target: str
    precision: str | None
    entry: dict
    model: str | None = None
    digest: str | None = None  # given for the PyTorch reference (its checkpoint's sha256)

    def sha256(self) -> str:
        if self.digest is not None:
            return self.digest
        digest = hashlib.sha256()
        files = sorted(p for p in self.path.rglob("*") if p.is_file()) if self.path.is_dir() else [self.path]
        for file in files:
            digest.update(file.read_bytes())
        return digest.hexdigest()


@dataclass
class ProfileRequest:
    target: str  # zoo model name, artifact folder, or artifact file
    device: str = "cpu"
    runtime: str | None = None
    precision: str | None = None
    iterations: int | None = None
    warmup: int | None = None
    wait_s: float | None = None
    threads: int | None = None
    min_time_s: float | None = None
    input: str | None = None
    fallback: bool = True
    benchmark_model: str | None = None
    compute_units: str | None = None
    ops: bool = False  # also where the time goes, by op type (bench/op_costs.py)


def protocol_for(device: Device, request: ProfileRequest) -> Protocol:
    overrides = {k: getattr(request, k) for k in ("iterations", "warmup", "wait_s", "threads", "min_time_s", "input")}
    try:
        return device.protocol.with_overrides(**overrides)
    except ValueError as exc:
        raise MobilesegError(str(exc)) from None


def folder_artifacts(folder: Path) -> list[Artifact]:
    manifest = read_manifest(folder)
    model = manifest["model"].get("name") if isinstance(manifest.get("model"), dict) else None
    if manifest.get("kind") is not None:  # named graphs: a user's model, the VOS subgraphs
        specs = {g["name"]: g["inputs"] for g in manifest.get("graphs", [])}
        specs |= {g["name"]: [{"name": n, "shape": s} for n, s in g["inputs"].items()] for g in manifest.get("subgraphs", [])}
        return [Artifact(folder / a["file"], a["target"], a.get("precision"),
                         {**a, "input_specs": specs.get(graph_name(a), [])}, graph_name(a))
                for a in manifest["artifacts"]]  # fmt: skip
    return [Artifact(folder / a["file"], a["target"], a.get("precision"), a, model) for a in manifest["artifacts"]]


def file_artifact(path: Path) -> Artifact:
    target = targets.for_suffix(path.suffix)
    if target is None:
        raise ArtifactError(f"{path}: not an artifact mobileseg can time (.onnx, .tflite or .mlpackage)")
    if (path.parent / "manifest.json").is_file():
        for artifact in folder_artifacts(path.parent):
            if artifact.path.name == path.name:
                return artifact
    return Artifact(path, target.name, None, {}, None)


def resolve_artifacts(target: str, wanted: str, progress: Callable[[str], None]) -> list[Artifact]:
    """The artifacts a profile can choose from. A zoo model name uses ``artifacts/<name>``, exported (with
    the recipe's defaults, to ``wanted`` and onnx) when the folder lacks a ``wanted`` or onnx file."""
    path = Path(target)
    if path.is_file() or targets.for_suffix(path.suffix):
        if not path.exists():
            raise ArtifactError(f"artifact not found: {path}")
        return [file_artifact(path)]
    if path.is_dir():
        return folder_artifacts(path)
    from mobileseg import zoo

    if target not in zoo.names():
        raise MobilesegError(f"{target!r} is neither an artifact (file or folder) nor a zoo model ({', '.join(zoo.names())})")
    from mobileseg.export.pipeline import DEFAULT_ARTIFACTS_DIR, ExportRequest, export_model

    folder = DEFAULT_ARTIFACTS_DIR / target
    existing = folder_artifacts(folder) if (folder / "manifest.json").is_file() else []
    if not any(a.target in (wanted, "onnx") for a in existing):
        needed = sorted({"onnx", wanted} - {"torch"})
        progress(f"exporting {target} to {', '.join(needed)} for profiling")
        export_model(ExportRequest(target, targets=needed, out=folder, force=True))
        existing = folder_artifacts(folder)
    return existing


def choose(artifacts: list[Artifact], target: str, precision: str | None) -> Artifact | None:
    for artifact in artifacts:
        if artifact.target == target and (precision is None or artifact.precision == precision):
            return artifact
    return None


def _input(artifact: Artifact, protocol: Protocol) -> np.ndarray:
    """The input to time with: NCHW in the artifact's input format (the runners convert layouts)."""
    from mobileseg.images import photo, random_image, resize_rgb01
    from mobileseg.recipes import load_recipe

    io = artifact.entry.get("io", {})
    fmt = io.get("input", {}).get("format", "rgb01")
    shape = io.get("input", {}).get("shape")
    layout = io.get("input", {}).get("layout", "NCHW")
    if shape is None:
        shape = _shape_from_file(artifact)
    height, width = (shape[1], shape[2]) if layout == "NHWC" else (shape[2], shape[3])
    rgb01 = random_image(protocol.seed, height, width) if protocol.input == "random" else resize_rgb01(photo(protocol.input), height, width)
    nchw = np.ascontiguousarray(rgb01.transpose(2, 0, 1)[None]).astype(np.float32)
    if fmt == "rgb01" or artifact.model is None:
        return nchw
    from mobileseg.preprocess import format_input

    normalization = load_recipe(artifact.model).normalization
    return format_input(nchw, fmt, normalization)


def _feeds(artifact: Artifact, protocol: Protocol, session) -> dict[str, np.ndarray]:
    """Every input of the session: the zoo's one picture as before; a user's model by its declared inputs; a
    bare file by the shapes and dtypes it holds (3-channel float pictures get the protocol's photo)."""
    if (artifact.target == "torch" and "input_specs" not in artifact.entry) or "input" in artifact.entry.get("io", {}) or (
        artifact.model is not None and "input_specs" not in artifact.entry
    ):  # fmt: skip
        return {session.input_names[0]: _input(artifact, protocol)}
    specs = artifact.entry.get("input_specs") or file_inputs(artifact.path, artifact.target)
    by_name = {spec["name"]: spec for spec in specs}
    return {name: _tensor_for(by_name.get(name) or specs[index], protocol, index) for index, name in enumerate(session.input_names)}


def _tensor_for(spec: dict, protocol: Protocol, index: int) -> np.ndarray:
    """The protocol's picture for a 3-channel input (NCHW or NHWC), else seeded values of its dtype."""
    from mobileseg.core import TensorSpec
    from mobileseg.images import photo, random_image, resize_rgb01
    from mobileseg.user_model import picture_tensor, random_tensor

    shape, dtype = tuple(int(d) for d in spec["shape"]), np.dtype(spec.get("dtype", "float32"))
    channels_first = len(shape) == 4 and shape[1] == 3
    channels_last = len(shape) == 4 and shape[3] == 3 and not channels_first
    if not (channels_first or channels_last):
        value_range = spec.get("range") if np.issubdtype(dtype, np.integer) else None
        return random_tensor(np.random.default_rng(protocol.seed + index), TensorSpec(spec["name"], shape, dtype.name), value_range)
    height, width = (shape[2], shape[3]) if channels_first else (shape[1], shape[2])
    rgb01 = random_image(protocol.seed, height, width) if protocol.input == "random" else resize_rgb01(photo(protocol.input), height, width)
    picture = np.repeat((rgb01.transpose(2, 0, 1) if channels_first else rgb01)[None], shape[0], axis=0)
    pixel_format = spec.get("format") or ("uint8" if np.issubdtype(dtype, np.integer) else "rgb01")
    if pixel_format == "normalized" and not spec.get("normalization"):
        pixel_format = "rgb01"
    return np.ascontiguousarray(picture_tensor(picture, TensorSpec(spec["name"], shape, dtype.name, pixel_format=pixel_format,
                                                                   normalization=spec.get("normalization"))))  # fmt: skip


def file_inputs(path: Path, target: str) -> list[dict]:
    """Name, shape and dtype of every input a bare artifact file declares (symbolic dimensions read as 1)."""
    try:
        if target == "onnx":
            import onnx
            from onnx.helper import tensor_dtype_to_np_dtype

            model = onnx.load(str(path), load_external_data=False)
            constants = {i.name for i in model.graph.initializer}
            return [{"name": i.name, "shape": [d.dim_value or 1 for d in i.type.tensor_type.shape.dim],
                     "dtype": np.dtype(tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)).name}
                    for i in model.graph.input if i.name not in constants]  # fmt: skip
        if target == "tflite":
            from ai_edge_litert.interpreter import Interpreter

            from mobileseg.quiet import captured_output

            with captured_output(os.devnull):
                details = Interpreter(model_path=str(path)).get_input_details()
            return [{"name": d["name"], "shape": [int(x) for x in d["shape"]], "dtype": np.dtype(d["dtype"]).name} for d in details]
        if target == "coreml":
            from coremltools.models.utils import load_spec

            inputs = []
            for feature in load_spec(str(path)).description.input:
                kind = feature.type.WhichOneof("Type")
                if kind == "multiArrayType":
                    array = feature.type.multiArrayType
                    dtype = {65600: "float32", 65568: "float32", 65552: "float16", 131104: "int32"}.get(array.dataType, "float32")
                    inputs.append({"name": feature.name, "shape": list(array.shape), "dtype": dtype})
                elif kind == "imageType":
                    image = feature.type.imageType
                    inputs.append({"name": feature.name, "shape": [1, 3, image.height, image.width], "dtype": "uint8", "format": "uint8"})
            return inputs
    except Exception as exc:
        raise ArtifactError(f"{path}: cannot read its inputs: {str(exc).strip().splitlines()[0]}") from exc
    raise ArtifactError(f"{path}: not an artifact mobileseg can time (.onnx, .tflite or .mlpackage)")


def _shape_from_file(artifact: Artifact) -> list[int]:
    if artifact.target == "onnx":
        import onnx

        model = onnx.load(str(artifact.path), load_external_data=False)
        return [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    raise ArtifactError(f"{artifact.path}: no manifest beside it to tell its input shape; profile its artifact folder")


def host_info() -> dict:
    """The measuring host; ``processor`` is the CPU model where the system says it (what is free on an AMD EPYC
    can cost 3× on an Intel Xeon), else ``platform.processor()``."""
    return {
        "system": platform.system(), "machine": platform.machine(), "processor": _cpu_model() or platform.processor() or None,
        "cpu_count": os.cpu_count(), "python": platform.python_version(), "node": platform.node(),
    }  # fmt: skip


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def profile(request: ProfileRequest, progress: Callable[[str], None] | None = None,
            on_iteration: Callable[[int, int], None] | None = None) -> dict:  # fmt: skip
    """Measure and return the result (schema ``mobileseg.latency/1``, see docs/latency.md). An artifact
    folder is read under its lock: no export replaces it while it is measured."""
    from mobileseg.outputs import reading

    folder = Path(request.target)
    if folder.is_dir():
        with reading(folder):
            return _profile(request, progress, on_iteration)
    return _profile(request, progress, on_iteration)


def _profile(request: ProfileRequest, progress: Callable[[str], None] | None = None,
             on_iteration: Callable[[int, int], None] | None = None) -> dict:  # fmt: skip
    from mobileseg.runtimes import get_runtime

    say = progress or (lambda _msg: None)
    device = load_device(request.device)
    protocol = protocol_for(device, request)
    reachable, why = device.reachability(request.benchmark_model)
    if not reachable and not request.fallback:
        raise DeviceError(f"device {device.name} is not reachable: {why} (--no-fallback)")
    device_target = device.runtime if device.runtime in ("coreml", "tflite") else None
    runtime_name = request.runtime or (None if device_target else device.runtime)
    wanted = device_target or (get_runtime(runtime_name).target if runtime_name else "onnx")
    artifacts = resolve_artifacts(request.target, wanted, say)
    kinds = {a.target for a in artifacts}
    if not request.runtime and not device_target and len(kinds) == 1 and wanted not in kinds:
        # a file (or folder) of one target on the host: that target's own runtime
        wanted = kinds.pop()
        runtime_name = targets.get(wanted).runtime

    fallback_reason = None if reachable else why
    if reachable and device.transport == "adb":
        artifact = choose(artifacts, "tflite", request.precision) or _missing(artifacts, "tflite", request)
        from mobileseg.bench.android import run_benchmark_model

        return _result(device, protocol, artifact, run_benchmark_model(device, artifact, protocol, request.benchmark_model), None)
    if reachable and device_target == "coreml":
        artifact = choose(artifacts, "coreml", request.precision) or _missing(artifacts, "coreml", request)
        runtime = get_runtime("coreml")
        request = replace(request, compute_units=request.compute_units or device.compute_units)
    elif device_target:  # unreachable device: the host CPU with the closest artifact
        artifact = None
        if request.runtime:
            runtime = get_runtime(request.runtime)
            artifact = choose(artifacts, runtime.target, request.precision)
        else:
            for target, precision in FALLBACK_ORDER[device_target]:
                artifact = choose(artifacts, target, request.precision or precision)
                if artifact:
                    break
            runtime = get_runtime(targets.get(artifact.target).runtime) if artifact else None
        if artifact is None:
            raise ArtifactError(f"no artifact the host can run in place of {device.name}: export an onnx or tflite target")
        say(f"{device.name} is not reachable ({why}); measuring on the host CPU with {runtime.name} on {artifact.path.name}")
    else:
        runtime = get_runtime(runtime_name or targets.get(wanted).runtime)
        artifact = choose(artifacts, runtime.target, request.precision) or (
            _torch_reference(artifacts) if runtime.name == "torch" else None
        )
        if artifact is None:
            kinds = ", ".join(sorted({f"{a.target} {a.precision or ''}".strip() for a in artifacts})) or "none"
            if request.precision and any(a.target == runtime.target for a in artifacts):
                raise ArtifactError(f"{request.target} has no {request.precision} artifact for {runtime.name} (it has {kinds})")
            raise ArtifactError(f"runtime {runtime.name} runs {runtime.target} artifacts; {request.target} has {kinds}")
    runtime.require()
    measurement = _measure_host(runtime, artifact, protocol, request, on_iteration)
    return _result(device, protocol, artifact, measurement, fallback_reason)


def _torch_reference(artifacts: list[Artifact]) -> Artifact | None:
    """PyTorch eager on the model of an artifact folder (its recipe and checkpoint, as `verify` builds it)."""
    folders = [p for a in artifacts for p in (a.path.parent, a.path.parent.parent) if (p / "manifest.json").is_file()]
    if not folders:
        return None
    folder = folders[0]
    if read_manifest(folder).get("kind") == GRAPHS_KIND:  # a user's model: its kept torch.export program
        return _program_reference(folder)
    from mobileseg.verify.artifact import reference_for

    manifest, recipe, reference = reference_for(folder)
    shape = [recipe.batch, 3, *recipe.input_size]
    io = {"input": {"name": "image", "format": recipe.input_format, "layout": "NCHW", "shape": shape}}
    weights = manifest["model"]["weights"].get("sha256") or "random-weights"
    return Artifact(folder, "torch", "fp32", {"io": io, "module": reference}, recipe.model, weights)


def _program_reference(folder: Path) -> Artifact:
    from mobileseg.artifact import REFERENCE_PROGRAM
    from mobileseg.user_model import load_program

    manifest = read_manifest(folder)
    graph = manifest["graphs"][0]
    module = load_program(folder / REFERENCE_PROGRAM)
    entry = {"module": module, "input_specs": graph["inputs"], "output_names": [o["name"] for o in graph["outputs"]]}
    return Artifact(folder, "torch", "fp32", entry, manifest["model"]["name"], manifest["model"]["reference"]["sha256"])


def _missing(artifacts: list[Artifact], target: str, request: ProfileRequest):
    raise ArtifactError(f"{request.target} has no {target} artifact{f' at {request.precision}' if request.precision else ''}; export it first")


def _measure_host(runtime, artifact: Artifact, protocol: Protocol, request: ProfileRequest,
                  on_iteration: Callable[[int, int], None] | None) -> dict:  # fmt: skip
    if runtime.name == "coreml":
        from mobileseg.runtimes.coreml import CoreMLRuntime

        runtime = CoreMLRuntime(request.compute_units or "ALL")
    try:
        if artifact.target == "torch":
            specs = artifact.entry.get("input_specs")
            inputs = [spec["name"] for spec in specs] if specs else ["image"]
            session = runtime.from_module(artifact.entry["module"], inputs, artifact.entry.get("output_names", ["logits"]), protocol.threads)
        else:
            session = runtime.load(artifact.path, threads=protocol.threads, io=artifact.entry.get("io"))
    except MobilesegError:
        raise
    except Exception as exc:
        raise ArtifactError(f"{runtime.name} cannot load {artifact.path}: {str(exc).strip().splitlines()[0]}") from exc
    feed = _feeds(artifact, protocol, session)
    started = time.perf_counter()
    stats = measure(
        lambda: session.run(feed), protocol.iterations, protocol.warmup, protocol.wait_s, protocol.min_time_s,
        (lambda i: on_iteration(i, protocol.iterations)) if on_iteration else None,
    )  # fmt: skip
    from mobileseg.runtimes.denormals import denormal_probe

    denormals = denormal_probe(lambda: session.run(feed), runs=min(protocol.iterations, 10))
    ops = _op_costs(runtime, artifact, feed, protocol) if request.ops else None
    return {
        "runtime": {"name": runtime.name, "version": session.info.version, "threads": protocol.threads,
                    "details": session.info.details},
        "load_ms": session.info.load_seconds * 1e3,
        "first_ms": stats.first_ms,
        "stats_ms": stats.summary_ms(),
        "samples_ms": stats.samples_ms,
        "wall_s": time.perf_counter() - started,
        "measured_on": "host",
        "denormals": denormals,
        **({"ops": ops} if ops is not None else {}),
    }  # fmt: skip


def _op_costs(runtime, artifact: Artifact, feed: dict[str, np.ndarray], protocol: Protocol) -> dict:
    """Where the time goes by op type, from the runtime's own profiler where it has one (bench/op_costs.py)."""
    from mobileseg.bench.op_costs import onnxruntime_op_costs, tflite_op_costs

    if runtime.name == "onnxruntime":
        return onnxruntime_op_costs(artifact.path, feed, protocol.threads)
    if artifact.target == "tflite" and getattr(runtime, "xnnpack", False):
        (picture,) = feed.values() if len(feed) == 1 else (None,)
        if picture is not None and picture.ndim == 4:
            picture = picture.transpose(0, 2, 3, 1)  # the picture in the file's NHWC layout (NCHW ones get a random tensor)
        return tflite_op_costs(artifact.path, picture, runtime.module, protocol.threads or 1)
    return {"unsupported": f"no op breakdown for {runtime.name} (onnxruntime, litert and tflite-runtime have one)"}


def _result(device: Device, protocol: Protocol, artifact: Artifact, measurement: dict, fallback_reason: str | None) -> dict:
    from mobileseg import __version__

    return {
        "schema": SCHEMA,
        "kind": "profile",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mobileseg": __version__,
        "model": artifact.model,
        "artifact": {"path": str(artifact.path), "target": artifact.target, "precision": artifact.precision,
                     "sha256": artifact.sha256()},
        "device": {"name": device.name, "description": device.description, "runtime": device.runtime,
                   "transport": device.transport, "compute_units": device.compute_units, "report": list(device.report)},
        "fallback": fallback_reason is not None,
        "fallback_reason": fallback_reason,
        "measured_on": measurement["measured_on"],
        "host": host_info(),
        "runtime": measurement["runtime"],
        "protocol": protocol.to_dict(),
        "load_ms": measurement["load_ms"],
        "first_ms": measurement["first_ms"],
        "stats_ms": measurement["stats_ms"],
        "samples_ms": measurement["samples_ms"],
        "wall_s": measurement["wall_s"],
        **({"denormals": measurement["denormals"]} if "denormals" in measurement else {}),
        **({"ops": measurement["ops"]} if "ops" in measurement else {}),
    }  # fmt: skip
