"""Apple's Core ML runtime through ``coremltools.models.MLModel.predict`` (macOS only).

Off macOS this runtime is unavailable and parity falls back to the MIL reference executor
(`mobileseg.runtimes.mil_reference`), which checks the converted graph rather than Apple's kernels.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mobileseg.errors import ArtifactError
from mobileseg.runtimes.base import Runtime, Session, SessionInfo
from mobileseg.runtimes.coreml_support import coreml_input_array, import_coremltools

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")


class CoreMLSession(Session):
    def __init__(self, path: Path, compute_units: str, io: dict | None):
        ct = import_coremltools()
        start = time.perf_counter()
        try:
            self.model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units))
        except Exception as exc:
            raise ArtifactError(f"Core ML cannot load {path}: {str(exc).splitlines()[0]}") from exc
        load_seconds = time.perf_counter() - start
        self.io = io or {}
        description = self.model.get_spec().description
        self.input_names = [i.name for i in description.input]
        self.output_names = [o.name for o in description.output]
        self.info = SessionInfo(
            "coreml", f"coremltools {ct.__version__}, macOS {platform.mac_ver()[0]}", str(path), load_seconds, None,
            {"compute_units": compute_units},
        )  # fmt: skip

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from PIL import Image

        spec = self.io.get("input", {})
        feeds = {}
        for name in self.input_names:
            if spec.get("kind") == "image":  # Core ML takes the RGB picture and applies the colour layout itself
                pixels = np.clip(np.round(np.asarray(inputs[name], dtype=np.float32)), 0, 255).astype(np.uint8)
                feeds[name] = Image.fromarray(pixels[0].transpose(1, 2, 0), mode="RGB")
            else:
                feeds[name] = coreml_input_array(inputs[name], spec)
        outputs = self.model.predict(feeds)
        return {name: np.asarray(outputs[name], dtype=np.float32) for name in self.output_names}


class CoreMLRuntime(Runtime):
    name = "coreml"
    target = "coreml"
    package = "coremltools"

    def __init__(self, compute_units: str = "ALL"):
        self.compute_units = compute_units

    def unavailable_reason(self) -> str | None:
        if platform.system() != "Darwin":
            return "Apple's Core ML runtime needs macOS; mil-reference checks the converted graph instead"
        return super().unavailable_reason()

    def load(self, path: Path, threads: int | None = 1, io: dict | None = None) -> Session:
        self.require()
        return CoreMLSession(Path(path), self.compute_units, io)
