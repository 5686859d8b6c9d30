"""What the Core ML exporter and both Core ML runners share: a quiet coremltools import and the input contract.

Input contract of a Core ML artifact (``io["input"]`` in its manifest entry):

* ``kind: tensor``: an NCHW float32 array in the recipe's input format (as for ONNX);
* ``kind: image``: NCHW RGB pixel values 0..255 (what a ``CVPixelBuffer`` holds), uint8 or float. The
  model declares ``color_layout`` (RGB or BGR); Core ML reorders the channels itself, and so does the
  MIL reference here, before the program's own ``scale``/``bias`` preprocessing ops.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
from collections.abc import Iterator
from types import ModuleType

import numpy as np

from mobileseg.errors import MissingDependencyError

_notes: list[str] = []


class _Collect(logging.Handler):
    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def coremltools_log(level: int = logging.WARNING) -> Iterator[list[str]]:
    """Collect coremltools' log messages of ``level`` and above instead of printing them; yields the list."""
    handler = _Collect(level)
    logger = logging.getLogger("coremltools")
    logger.addHandler(handler)
    previous_propagate = logger.propagate
    logger.propagate = False
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = previous_propagate


def import_coremltools() -> ModuleType:
    """Import coremltools once, keeping its import-time warnings out of the user's terminal.

    The "torch version … has not been tested" warning is kept (once) in `coremltools_notes`; the
    "Failed to load _MLModelProxy" lines only say that Apple's runtime is absent, which off macOS is
    expected. coremltools also imports TensorFlow at import time to offer its TF frontend, which
    mobileseg does not use; when TensorFlow is not loaded yet it is hidden for that import (seconds saved).
    """
    if sys.modules.get("coremltools") is not None:
        return sys.modules["coremltools"]
    hide_tf = "tensorflow" not in sys.modules
    if hide_tf:
        sys.modules["tensorflow"] = None  # type: ignore[assignment]  # makes `import tensorflow` fail fast
    try:
        with coremltools_log() as messages:
            module = importlib.import_module("coremltools")
    except ImportError as exc:
        raise MissingDependencyError("the coreml target", "coremltools", "coreml") from exc
    finally:
        if hide_tf:
            del sys.modules["tensorflow"]
    for message in messages:
        if "has not been tested with coremltools" in message:
            _notes.append(f"coremltools {module.__version__}: {message.split('. ')[0]}")
    return module


def coremltools_notes() -> list[str]:
    """Warnings worth telling the user once (e.g. an untested torch version)."""
    return list(_notes)


def coreml_input_array(array: np.ndarray, spec: dict) -> np.ndarray:
    """The array the program's input receives, for an input spec of the manifest (see module docstring)."""
    if spec.get("kind") == "image":
        pixels = np.asarray(array, dtype=np.float32)
        if spec.get("color_layout", "RGB") == "BGR":
            pixels = pixels[:, ::-1]
        return np.ascontiguousarray(pixels)
    return np.ascontiguousarray(array, dtype=np.float32) if np.asarray(array).dtype.kind == "f" else np.asarray(array)
