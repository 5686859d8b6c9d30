"""Backends for ``VOSSession``: PyTorch eager on the subgraph modules, or an exported artifact folder whose
subgraph files run on any runtime of the runner interface (onnxruntime, LiteRT, tflite-runtime, Core ML /
the MIL reference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mobileseg.errors import ArtifactError
from mobileseg.artifact import graph_name
from mobileseg.runtimes.torch_runtime import torch_threads
from mobileseg.vos.model import SUBGRAPH_NAMES, ReuseGateVOS, subgraphs


class TorchBackend:
    """PyTorch eager: the reference every exported backend is compared with."""

    def __init__(self, model: ReuseGateVOS, input_size: tuple[int, int], threads: int | None = None):
        self.name = "torch"
        self.runtime = "torch"
        self.input_size = tuple(input_size)
        self.threads = threads
        self.graphs = {g.name: g for g in subgraphs(model.eval(), *input_size)}
        self.change_cue = model.change_cue

    def run(self, subgraph: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        graph = self.graphs[subgraph]
        args = [torch.from_numpy(np.ascontiguousarray(inputs[name], dtype=np.float32)) for name in graph.input_names]
        with torch_threads(self.threads), torch.inference_mode():
            out = graph.module(*args)
        out = out if isinstance(out, tuple) else (out,)
        return {name: value.numpy() for name, value in zip(graph.output_names, out)}


class ArtifactBackend:
    """One runtime over every subgraph file of a ``mobileseg vos export`` folder."""

    def __init__(self, folder: Path, manifest: dict, target: str, precision: str, runtime: str, threads: int | None = 1):
        from mobileseg.runtimes import get_runtime

        self.runtime = runtime
        self.name = f"{target}-{precision}/{runtime}"
        self.input_size = tuple(manifest["input_size"])
        runner = get_runtime(runtime)
        if runner.target != target:
            raise ArtifactError(f"runtime {runtime} runs {runner.target} artifacts, not {target}")
        runner.require()
        entries = {(graph_name(e), e["target"], e["precision"]): e for e in manifest["artifacts"]}
        self.sessions, self.io = {}, {}
        for name in SUBGRAPH_NAMES:
            entry = entries.get((name, target, precision))
            if entry is None:
                raise ArtifactError(f"{folder} has no {target} {precision} file for subgraph {name}")
            path = Path(folder) / entry["file"]
            if not path.exists():
                raise ArtifactError(f"{folder} is missing {entry['file']} (subgraph {name}); re-export the folder")
            self.sessions[name] = runner.load(path, threads=threads, io=entry.get("io"))
            self.io[name] = entry.get("io", {})
        self.change_cue = "f8_prev" in self.io["matching"]["inputs"]

    def run(self, subgraph: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.sessions[subgraph]
        feeds = {name: np.ascontiguousarray(inputs[name], dtype=np.float32) for name in self.io[subgraph]["inputs"]}
        outputs = session.run(feeds)
        return {name: np.asarray(outputs[name], dtype=np.float32) for name in self.io[subgraph]["outputs"]}
