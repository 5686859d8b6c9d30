"""onnxruntime (CPU execution provider) for ``.onnx`` artifacts."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mobileseg.errors import ArtifactError
from mobileseg.runtimes.base import Runtime, Session, SessionInfo


class OnnxRuntimeSession(Session):
    def __init__(self, path: Path, threads: int | None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Not "session.set_denormal_as_zero": it can leave FTZ/DAZ set on the calling thread for the rest of the
        # process (measured: it did when this session was made), changing every later float computation, PyTorch's
        # reference included. The profile measures both ways instead (runtimes/denormals.py).
        start = time.perf_counter()
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ArtifactError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0]}") from exc
        load_seconds = time.perf_counter() - start
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.info = SessionInfo(
            "onnxruntime", ort.__version__, str(path), load_seconds, threads,
            {"providers": self.session.get_providers()},
        )  # fmt: skip

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {name: np.ascontiguousarray(inputs[name]) for name in self.input_names}
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))


class OnnxRuntime(Runtime):
    name = "onnxruntime"
    target = "onnx"
    package = "onnxruntime"

    def load(self, path: Path, threads: int | None = 1, io: dict | None = None) -> Session:
        self.require()
        return OnnxRuntimeSession(Path(path), threads)
