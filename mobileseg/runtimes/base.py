"""The runner interface shared by every runtime: load once, then ``run(inputs) -> outputs``.

Loading (session creation) is kept apart from running, so parity checks and latency benchmarks
time only what they mean to. Inputs and outputs are always named NCHW numpy arrays as the manifest
describes them; a runner that needs another layout converts inside ``run``.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobileseg.errors import RuntimeUnavailableError


@dataclass
class SessionInfo:
    runtime: str
    version: str
    file: str
    load_seconds: float
    threads: int | None
    details: dict = field(default_factory=dict)


class Session(ABC):
    """A loaded model, ready to run."""

    info: SessionInfo
    input_names: list[str]
    output_names: list[str]

    @abstractmethod
    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; ``inputs`` maps every input name to an array; returns every output by name."""


class Runtime(ABC):
    """A way to execute one kind of artifact (``target``) on this host."""

    name: str  # e.g. "onnxruntime"
    target: str  # artifact kind it runs: "torch", "onnx", "tflite", "coreml"
    package: str  # import name whose presence makes it available
    extra: str | None = None  # pip extra that installs it

    def is_available(self) -> bool:
        return importlib.util.find_spec(self.package) is not None

    def unavailable_reason(self) -> str | None:
        return None if self.is_available() else f"Python package {self.package!r} is not installed"

    def require(self) -> None:
        reason = self.unavailable_reason()
        if reason:
            raise RuntimeUnavailableError(f"runtime {self.name} is not available here: {reason}")

    @abstractmethod
    def load(self, path: Path, threads: int | None = 1, io: dict | None = None) -> Session:
        """Load the artifact at ``path``; ``threads`` None means the runtime's default; ``io`` is the
        artifact's manifest entry (input kind, layouts), for runners that convert to or from NCHW."""
