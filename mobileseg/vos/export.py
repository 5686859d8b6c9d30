"""``mobileseg vos export``: the eight subgraphs of the reuse-gated VOS model as one artifact folder.

The folder holds one file per subgraph × target × precision, and a manifest that describes the state
machine (which subgraph runs when, the state tensors and their shapes, the host-side arithmetic), so that
an app developer can re-implement the loop in Swift or Kotlin. Each file is checked against PyTorch at
export on real intermediate tensors (recorded while PyTorch tracks a generated sequence), on the default
runtime of its target; ``mobileseg vos verify`` runs every runtime.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobileseg import targets as target_registry
from mobileseg.core import Deployable, ParityCases
from mobileseg.errors import ExportError
from mobileseg.artifact import tool_versions, write_json, write_manifest
from mobileseg.export.graphs import export_graphs
from mobileseg.outputs import staging_folder
from mobileseg.vos.backends import TorchBackend
from mobileseg.vos.data import generate_sequence
from mobileseg.vos.model import SUBGRAPH_NAMES, ReuseGateVOS, subgraphs, validate_size
from mobileseg.vos.session import VOSSession

VOS_KIND = "vos-reuse-gate"
REFERENCE_WEIGHTS = "torch/weights.pt"  # the PyTorch reference, so that a folder verifies on its own
PRECISIONS = {"onnx": ("fp32",), "coreml": ("fp32", "fp16"), "tflite": ("fp32", "fp16")}
# Per subgraph output, judged on real intermediate tensors. fp32: relative error; fp16: cosine.
TOLERANCE = {"fp32": {"max_rel": 1e-4}, "fp16": {"min_cosine": 0.999}}


@dataclass
class VOSExportRequest:
    model: ReuseGateVOS
    out: Path
    targets: tuple[str, ...] = ("onnx",)
    input_size: tuple[int, int] = (128, 224)
    force: bool = False
    weights_record: dict = field(default_factory=dict)
    seed: int = 0


class RecordingBackend:
    """Wraps a backend and keeps the first inputs (and outputs) each subgraph saw after frame 0."""

    def __init__(self, inner):
        self.inner, self.name, self.input_size, self.change_cue = inner, inner.name, inner.input_size, inner.change_cue
        self.seen: dict[str, tuple[dict, dict]] = {}
        self.recording = False

    def run(self, subgraph: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.inner.run(subgraph, inputs)
        if subgraph not in self.seen and (self.recording or subgraph == "template"):
            self.seen[subgraph] = ({k: v.copy() for k, v in inputs.items()}, outputs)
        return outputs


def record_subgraph_io(model: ReuseGateVOS, input_size: tuple[int, int], seed: int = 0) -> dict[str, tuple[dict, dict]]:
    """Real inputs and PyTorch outputs of every subgraph, from tracking a generated sequence (both paths)."""
    height, width = input_size
    sequence = generate_sequence(20_000 + seed, height, width, length=12)
    backend = RecordingBackend(TorchBackend(model, input_size))
    session = VOSSession(backend, tau=1.0)
    session.start(sequence.frames[0], sequence.masks[0])
    backend.recording = True
    session.step(sequence.frames[1])  # full path
    session.step(sequence.frames[2], force={1: "reuse"})  # reuse path (teacher forced)
    missing = [g for g in SUBGRAPH_NAMES if g not in backend.seen]
    if missing:
        raise ExportError(f"internal: subgraphs never ran while recording: {', '.join(missing)}")
    return backend.seen


def recorded_cases(recorded: dict[str, tuple[dict, dict]]) -> ParityCases:
    """The recorded subgraph I/O as parity cases (one per subgraph)."""
    return {name: [("recorded sequence", inputs, outputs)] for name, (inputs, outputs) in recorded.items()}


def deployable(model: ReuseGateVOS, input_size: tuple[int, int], recorded: dict[str, tuple[dict, dict]],
               weights_record: dict) -> Deployable:  # fmt: skip
    """The VOS model as a deployable: eight graphs, judged on the recorded subgraph I/O."""
    return Deployable(
        name="vos", graphs=subgraphs(model, *input_size), parity_cases=lambda: recorded_cases(recorded),
        tolerances=TOLERANCE, provenance={"weights": weights_record}, description="reuse-gated VOS (G-FRTM-fast)",
        host_program=VOSSession(TorchBackend(model, input_size)).describe(),
    )  # fmt: skip


def export_vos(request: VOSExportRequest, progress: Callable[[str], None] | None = None) -> dict:
    """Export every subgraph for every requested target into ``request.out``; returns the manifest."""
    height, width = request.input_size
    validate_size(height, width)
    unknown = [t for t in request.targets if t not in PRECISIONS]
    if unknown:
        raise ExportError(f"unknown VOS target {', '.join(unknown)}; choose from {', '.join(PRECISIONS)} or all")
    say = progress or (lambda _: None)
    model = request.model.eval()
    graphs = subgraphs(model, height, width)
    say("recording real subgraph inputs (PyTorch on a generated sequence)")
    recorded = record_subgraph_io(model, (height, width), request.seed)
    started = time.perf_counter()
    vos = deployable(model, (height, width), recorded, request.weights_record)
    descriptions = {g.name: f"mobileseg reuse-gated VOS subgraph {g.name} ({g.runs})" for g in graphs}
    with staging_folder(Path(request.out), request.force) as staging:
        from mobileseg.vos.train import save_weights

        save_weights(model, staging / REFERENCE_WEIGHTS, request.weights_record)
        entries, parity = export_graphs(
            vos, vos.parity_cases(), {t: list(PRECISIONS[t]) for t in request.targets},
            {t: target_registry.get(t).options({}) for t in request.targets}, staging,
            metadata=lambda name: {"mobileseg.subgraph": name, "mobileseg.kind": VOS_KIND},
            description=descriptions.__getitem__, say=say,
        )  # fmt: skip
        failed = [p for p in parity if not p["passed"]]
        manifest = {
            "kind": VOS_KIND,
            "model": "g-frtm-fast (ResNet-18), mobileseg re-implementation",
            "input_size": [height, width],
            "input": {"name": "pixels", "shape": [1, 3, height, width], "format": "RGB float32 in [0, 255], NCHW; "
                      "normalised in backbone_low (ImageNet mean/std)"},  # fmt: skip
            "weights": request.weights_record,
            "subgraphs": [{"name": g.name, "runs": g.runs, "inputs": g.io_record()["inputs"],
                           "outputs": g.io_record()["outputs"]} for g in graphs],  # fmt: skip
            **vos.host_program,
            "artifacts": entries,
            "parity": {"reference": "torch", "inputs": "real subgraph inputs recorded on a generated sequence",
                       "results": parity, "passed": not failed},  # fmt: skip
            "tools": tool_versions(),
        }
        write_json(staging / "parity.json", manifest["parity"])
        manifest = write_manifest(staging, manifest)
    # the time goes to the caller, not into the folder: the same inputs give the same manifest
    return {**manifest, "export_seconds": round(time.perf_counter() - started, 1)}
