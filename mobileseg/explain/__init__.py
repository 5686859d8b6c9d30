"""Where an exported file departs from PyTorch, layer by layer (`mobileseg explain`).

Every PyTorch module's output on one picture is the reference. Each tensor the file computes is mapped to
the module that computes it: by name for ONNX (the exporter scopes node names by module path), by value
for TFLite and Core ML (onnx2tf and the Core ML converter keep no module names): the tensor of the same
shape, in order, closest to the module's output. A BN folded into the convolution before it has no tensor
of its own; the convolution's tensor is then compared with the BN's output.

Per matched layer:

* ``accumulated``: the file's tensor against the module's output, on the picture, everything before it
  included;
* ``local``: the op that computes the tensor run alone on the float model's values of its inputs (inputs
  that match no module are taken from the file's own run);

both as the RMS error relative to the reference's spread (RMS around each channel's mean: a constant
carries no signal). Layers are ranked by their local error. For int8 and a16w8 files, the float model is
the network rewritten to quantise well that the file was converted from (quantize/int8.py), rebuilt from
the manifest, so that each tensor has the scale it was quantised at.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

MATCH_LIMIT = 0.5  # a value match further than this (relative RMS, on a subsample) is no match
MATCH_WINDOW = 64  # candidate tensors looked at past the last match
SUBSAMPLE = 4096


@dataclass
class ArtifactTensor:
    """One tensor of the file, as its trace gives it: NCHW float values (dequantized), the op that wrote it."""

    name: str
    op: str
    value: np.ndarray
    scope: str | None = None  # the PyTorch module path its name gives (ONNX), else None
    as_stored: np.ndarray | None = None  # a 4-D tensor's values as the file stores them, when ``value`` moved its axes

    def view(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """The values in ``shape``: ``value``, else the stored values (a file that kept this tensor NCHW)."""
        if self.value.shape == shape:
            return self.value
        if self.as_stored is not None and self.as_stored.shape == shape:
            return self.as_stored
        return None


@dataclass
class Layer:
    module: str  # PyTorch module path ("" is the whole network)
    module_type: str
    tensor: str  # name of the file's tensor (ONNX tensor, TFLite tensor, MIL variable)
    op: str
    accumulated: float
    local: float | None = None
    shape: list[int] = field(default_factory=list)


@dataclass
class Explanation:
    file: str
    target: str
    precision: str
    runtime: str
    input: str
    layers: list[Layer]
    unmatched_modules: int
    reference: str  # what the float model is

    def ranked(self) -> list[Layer]:
        """Layers by what they add: local error (accumulated where it was not measured), largest first."""
        return sorted(self.layers, key=lambda layer: -(layer.local if layer.local is not None else layer.accumulated))

    def to_dict(self) -> dict:
        def finite(value):
            return value if value is None or np.isfinite(value) else str(value)

        layers = [{**asdict(layer), "accumulated": finite(layer.accumulated), "local": finite(layer.local)} for layer in self.layers]
        return {
            "schema": "mobileseg.explain/1", "file": self.file, "target": self.target, "precision": self.precision,
            "runtime": self.runtime, "input": self.input, "reference": self.reference,
            "metric": "RMS error / RMS of the reference around each channel's mean",
            "unmatched_modules": self.unmatched_modules,
            "layers": layers,
            "ranked": [layer.module for layer in self.ranked()],
        }  # fmt: skip


def relative_error(reference: np.ndarray, value: np.ndarray) -> float:
    """RMS(value − reference) / RMS(reference − its per-channel mean) (axis 1 of 4-D tensors with more than
    one pixel; else the mean of all values)."""
    reference = reference.astype(np.float64)
    per_channel = reference.ndim == 4 and reference.shape[2] * reference.shape[3] > 1  # not (N, C, 1, 1)
    centred = reference - (reference.mean(axis=(0, 2, 3), keepdims=True) if per_channel else reference.mean())
    spread = float(np.sqrt(np.mean(centred**2)))
    error = float(np.sqrt(np.mean((value.astype(np.float64) - reference) ** 2)))
    return error / spread if spread > 0 else (0.0 if error == 0 else float("inf"))


def module_outputs(module, image: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
    """(path, type, output) of every module of ``module`` whose output is one new tensor (not a child's
    returned again), in the order they finish (children before their parent), on ``image``."""
    import torch

    records: list[tuple[str, str, np.ndarray]] = []
    seen: list[torch.Tensor] = []  # kept alive so that no later tensor reuses an identity
    handles = []
    for path, child in module.named_modules():
        def hook(_module, _inputs, output, path=path):
            # a parent that returns its child's tensor is that child's layer (the root is kept: the file's output)
            if isinstance(output, torch.Tensor) and output.is_floating_point() and (path == "" or not any(output is t for t in seen)):
                seen.append(output)
                records.append((path, type(_module).__name__, output.detach().numpy().copy()))

        handles.append(child.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(torch.from_numpy(np.ascontiguousarray(image)))
    finally:
        for handle in handles:
            handle.remove()
    return records


def _folded_targets(outputs: list[tuple[str, str, np.ndarray]], scoped: Callable[[str], bool]) -> dict[str, np.ndarray]:
    """Per module path, the reference a file's tensor for it is compared with: its own output, or, for a
    leaf followed by leaves the file has no tensor for (a BN folded into a conv), the last of those."""
    targets = {path: value for path, _, value in outputs}
    paths = [path for path, _, _ in outputs]
    leaves = [(path, value) for path, _, value in outputs if path and not any(p.startswith(path + ".") for p in paths)]
    for index, (path, value) in enumerate(leaves):
        if not scoped(path):
            continue
        for later, later_value in leaves[index + 1:]:
            if scoped(later) or later_value.shape != value.shape:
                break
            targets[path] = later_value
    return targets


def match_by_scope(outputs, tensors: list[ArtifactTensor]) -> list[tuple[str, str, np.ndarray, ArtifactTensor]]:
    """(path, type, reference, tensor) pairs where the tensor's name scopes it to the module or one of its
    children: of the tensors there of the module's output size, the closest to its output (a parent whose
    closest tensor a child already took is left out); the whole network takes the file's last tensor."""
    scopes = {t.scope for t in tensors if t.scope is not None}

    def scoped(path: str) -> bool:
        return any(s == path or s.startswith(path + ".") for s in scopes)

    targets = _folded_targets(outputs, scoped)
    within: dict[str, list[int]] = {}
    for index, tensor in enumerate(tensors):
        if tensor.scope is None:
            continue
        parts = tensor.scope.split(".")
        for depth in range(len(parts), 0, -1):
            within.setdefault(".".join(parts[:depth]), []).append(index)
    pairs, used = [], set()
    for path, kind, _ in outputs:
        reference = targets[path]
        candidates = [len(tensors) - 1] if path == "" and tensors else within.get(path, [])
        candidates = [i for i in candidates if tensors[i].value.size == reference.size]
        if not candidates:
            continue
        best = min(reversed(candidates), key=lambda i: _sampled_error(reference, tensors[i].value))
        if best in used:
            continue
        used.add(best)
        pairs.append((path, kind, reference, tensors[best]))
    return pairs


def _sampled_error(reference: np.ndarray, value: np.ndarray) -> float:
    """`relative_error` on a fixed subsample of at most `SUBSAMPLE` values (flattened; sizes must agree)."""
    flat, other = reference.reshape(-1), value.reshape(-1)
    if flat.size > SUBSAMPLE:
        picked = np.random.default_rng(flat.size).choice(flat.size, SUBSAMPLE, replace=False)
        flat, other = flat[picked], other[picked]
    return relative_error(flat, other)


def match_by_value(outputs, tensors: list[ArtifactTensor]) -> list[tuple[str, str, np.ndarray, ArtifactTensor]]:
    """(path, type, reference, tensor) pairs by value: for each module in order, the closest tensor of its
    output's shape among the next `MATCH_WINDOW` tensors past the last match, if within `MATCH_LIMIT`."""
    rng = np.random.default_rng(0)
    samples: dict[tuple[int, ...], np.ndarray] = {}
    pairs, position, used = [], 0, set()
    for path, kind, reference in outputs:
        shape = reference.shape
        if shape not in samples:
            samples[shape] = rng.choice(reference.size, min(SUBSAMPLE, reference.size), replace=False)
        picked = samples[shape]
        best, best_error = None, MATCH_LIMIT
        for index in range(position, min(len(tensors), position + MATCH_WINDOW)):
            tensor = tensors[index]
            value = tensor.view(shape)
            if index in used or value is None:
                continue
            error = relative_error(reference.reshape(-1)[picked], value.reshape(-1)[picked])
            if error < best_error:
                best, best_error = index, error
        if best is not None:
            used.add(best)
            position = max(position, best - MATCH_WINDOW // 4)
            tensor = tensors[best]
            if tensor.value.shape != shape:  # the file keeps it NCHW: compare as stored
                tensor = ArtifactTensor(tensor.name, tensor.op, tensor.as_stored, tensor.scope)
            pairs.append((path, kind, reference, tensor))
    return pairs


def explain(
    module, image: np.ndarray, trace, label: str, entry: dict, runtime: str, reference_note: str, computes=None,
) -> Explanation:  # fmt: skip
    """Layer-by-layer errors of the file traced by ``trace`` (a `Trace`: its tensors on ``image``, and a way
    to run one op on given inputs) against ``module`` on ``image`` (NCHW, the model's input format).

    ``computes`` is the network the file was made from, when that is not ``module`` (same module paths):
    tensors are matched by value to its outputs, which the file reproduces to its precision, and judged
    against ``module``'s (a file made from a perturbed copy departs from ``module`` after the perturbation)."""
    outputs = module_outputs(module, image)
    tensors = trace.tensors(image)
    if any(t.scope for t in tensors):
        pairs = match_by_scope(outputs, tensors)
    else:
        judged_by = {path: (kind, value) for path, kind, value in outputs}
        pairs = [
            (path, kind, judged_by[path][1], tensor)
            for path, kind, _, tensor in match_by_value(module_outputs(computes, image) if computes is not None else outputs, tensors)
            if path in judged_by and judged_by[path][1].shape == tensor.value.shape
        ]  # fmt: skip
    # the references in the layout the file stores each tensor (a view that moved axes moves them back)
    references = {tensor.name: _stored(reference, tensor) for _, _, reference, tensor in pairs}
    layers = []
    for path, kind, reference, tensor in pairs:
        local_value = trace.local(tensor.name, references)
        if local_value is not None and tensor.as_stored is not None:
            local_value = local_value.transpose(0, 3, 1, 2)
        local_value = None if local_value is None or local_value.size != reference.size else local_value.reshape(reference.shape)
        layers.append(Layer(
            path, kind, tensor.name, tensor.op, relative_error(reference, tensor.value),
            None if local_value is None else relative_error(reference, local_value), list(reference.shape),
        ))  # fmt: skip
    matched = {path for path, *_ in pairs}
    _name_folded_convs(layers, outputs, matched)
    return Explanation(
        entry["file"], entry["target"], entry["precision"], runtime, label, layers,
        sum(1 for path, _, _ in outputs if path not in matched), reference_note,
    )  # fmt: skip


def _stored(reference: np.ndarray, tensor: ArtifactTensor) -> np.ndarray:
    """A module's NCHW output in the layout the file stores ``tensor`` (channels last where the trace moved
    the axes of a 4-D TFLite tensor to compare it)."""
    return reference.transpose(0, 2, 3, 1) if tensor.as_stored is not None else reference


def _name_folded_convs(layers: list[Layer], outputs, matched: set[str]) -> None:
    """A BN matched where the convolution before it was not (its tensor is the fused conv + BN, found by
    value) is reported under the convolution's path: that is the layer the file computes."""
    previous: dict[str, tuple[str, str, tuple]] = {}
    last = None
    for path, kind, value in outputs:
        if last is not None:
            previous[path] = last
        last = (path, kind, value.shape)
    for layer in layers:
        before = previous.get(layer.module)
        if layer.module_type.startswith("BatchNorm") and before and before[0] not in matched and before[1].startswith("Conv") \
                and list(before[2]) == layer.shape:  # fmt: skip
            layer.module, layer.module_type = before[0], f"{before[1]}+{layer.module_type}"


def error_plot(explanation: Explanation, top: int = 5):
    """A figure of accumulated and local error along the network (log scale), the ``top`` layers named
    (save it with `outputs.save_figure`)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    layers = explanation.layers
    x = np.arange(len(layers))
    floor = 1e-9
    figure, axes = plt.subplots(figsize=(12, 5))
    axes.plot(x, [min(max(layer.accumulated, floor), 1e6) for layer in layers], label="accumulated", color="tab:blue")
    local = [(i, max(layer.local, floor)) for i, layer in enumerate(layers) if layer.local is not None]
    if local:
        axes.scatter([i for i, _ in local], [v for _, v in local], s=8, label="local (op alone)", color="tab:orange")
    index = {id(layer): i for i, layer in enumerate(layers)}
    names = []
    for rank, layer in enumerate(explanation.ranked()[:top], 1):  # rank numbers on the points, names below
        value = layer.local if layer.local is not None else layer.accumulated
        axes.annotate(str(rank), (index[id(layer)], max(value, floor)), fontsize=8, xytext=(3, 3), textcoords="offset points")
        names.append(f"{rank}: {layer.module or '(network)'}")
    axes.set_yscale("log")
    lines = ["   ".join(names[i:i + 3]) for i in range(0, len(names), 3)]
    axes.set_xlabel("\n".join(["layer (execution order)", *lines]), fontsize=8)
    axes.set_ylabel("RMS error / reference spread")
    axes.set_title(f"{explanation.file} ({explanation.precision}, {explanation.runtime}) on {explanation.input}")
    axes.legend()
    return figure


TRACED_RUNTIMES = {"onnx": "onnxruntime", "tflite": "litert-noxnn", "coreml": "mil-reference"}


def _select_entry(manifest: dict, target: str | None, precision: str | None, file: str | None) -> dict:
    from mobileseg.errors import MobilesegError

    entries = [
        e for e in manifest["artifacts"]
        if (file is None or e["file"] == file) and (target is None or e["target"] == target)
        and (precision is None or e["precision"] == precision)
    ]  # fmt: skip
    if len(entries) == 1:
        return entries[0]
    have = ", ".join(f"{e['target']} {e['precision']} ({e['file']})" for e in manifest["artifacts"])
    if not entries:
        raise MobilesegError(f"no file of this artifact is {' '.join(filter(None, [target, precision, file]))}; it has {have}")
    raise MobilesegError(f"say which file with --target and --precision; this artifact has {have}")


def float_model(reference, recipe, manifest: dict, entry: dict):
    """The float network ``entry``'s file was converted from, and how to say it: the lean network for float
    files exported lean, the network rewritten to quantise (quantize/int8.py) for int8 and a16w8 files,
    rebuilt from the recipe's calibration pictures as the export made them; else ``reference``."""
    from mobileseg.images import calibration_images
    from mobileseg.preprocess import format_input

    def calibration(count: int, folder=None):
        pictures = calibration_images(count, *recipe.input_size, exclude=recipe.parity_photos, seed=recipe.seed, folder=folder)
        return format_input(pictures.transpose(0, 3, 1, 2), recipe.input_format, recipe.normalization)

    if "int8_rewrites" in entry:
        from mobileseg.quantize.int8 import A16W8_CHANNEL_EQUALIZATION, int8_module

        options = entry.get("options", {})
        if entry["target"] == "onnx":
            from mobileseg.targets.onnx import A16W8_SAMPLES

            count = A16W8_SAMPLES
        else:
            count = options.get("calibration_samples", 16)
        equalization = options.get("channel_equalization", 0.75) if entry["precision"] == "int8" else A16W8_CHANNEL_EQUALIZATION
        module, _ = int8_module(reference, calibration(count, manifest["recipe"].get("targets", {}).get("tflite", {}).get("calibration")), equalization)
        return module, "the network rewritten to quantise well that this file was converted from (quantize/int8.py)"
    if (manifest.get("lean") or {}).get("applied"):
        import torch

        from mobileseg.export.lean import lean_module
        from mobileseg.export.pipeline import LEAN_SAMPLES

        module, _ = lean_module(reference, torch.from_numpy(calibration(LEAN_SAMPLES)))
        return module, "the lean float network this file was converted from (export/lean.py)"
    return reference, "the PyTorch network"


def trace_for(folder: Path, entry: dict):
    """The trace (explain/traces.py) of ``entry``'s file."""
    from mobileseg.explain.traces import MilTrace, OnnxTrace, TfliteTrace

    path = Path(folder) / entry["file"]
    if entry["target"] == "onnx":
        return OnnxTrace(path)
    if entry["target"] == "tflite":
        return TfliteTrace(path, entry.get("io", {}))
    return MilTrace(path, entry.get("io", {}))


def explain_artifact(
    artifact: Path, target: str | None = None, precision: str | None = None, photo_name: str | None = None,
    module=None,
) -> Explanation:  # fmt: skip
    """`explain` for a file of an artifact folder: ``artifact`` is the folder (``target`` / ``precision``
    pick the file) or a file in it; the picture is bundled photo ``photo_name`` (default: the recipe's first
    parity photo) at the recipe's size. ``module`` replaces the float network the errors are measured
    against (e.g. the unperturbed network of a perturbed copy; the file's own network still maps its tensors)."""
    from mobileseg.errors import MobilesegError
    from mobileseg.images import PHOTOS, photo, quantize_pixels, resize_rgb01
    from mobileseg.outputs import reading
    from mobileseg.preprocess import format_input
    from mobileseg.verify.artifact import reference_for

    artifact = Path(artifact)
    folder, file = (artifact, None) if artifact.is_dir() else (artifact.parent, artifact.name)
    if photo_name is not None and photo_name not in PHOTOS:
        raise MobilesegError(f"unknown photo {photo_name!r}; choose from {', '.join(PHOTOS)}")
    with reading(folder):
        manifest, recipe, reference = reference_for(folder)
        entry = _select_entry(manifest, target, precision, file)
        name = photo_name or (recipe.parity_photos[0] if recipe.parity_photos else "astronaut")
        rgb01 = quantize_pixels(resize_rgb01(photo(name), *recipe.input_size)).transpose(2, 0, 1)[None]
        image = format_input(np.repeat(rgb01, recipe.batch, axis=0), entry.get("io", {}).get("input", {}).get("format", recipe.input_format),
                             recipe.normalization)  # fmt: skip
        computes, note = float_model(reference, recipe, manifest, entry)
        if module is None:
            module, computes = computes, None
        else:
            note = "the given network"
        import os

        from mobileseg.quiet import captured_output

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with captured_output(os.devnull):  # TensorFlow's and the converters' import-time log lines
            trace = trace_for(folder, entry)
            return explain(module, image, trace, f"photo:{name}", entry, TRACED_RUNTIMES[entry["target"]], note, computes)
