"""Runtimes behind one interface (`Runtime.load(path) -> Session`, `Session.run(inputs) -> outputs`)."""

from __future__ import annotations

from mobileseg.errors import MobilesegError
from mobileseg.runtimes.base import Runtime, Session, SessionInfo
from mobileseg.runtimes.coreml import CoreMLRuntime
from mobileseg.runtimes.mil_reference import MilReferenceRuntime
from mobileseg.runtimes.onnxruntime import OnnxRuntime
from mobileseg.runtimes.tflite import TFLITE_RUNTIMES
from mobileseg.runtimes.torch_runtime import TorchRuntime

__all__ = ["Runtime", "Session", "SessionInfo", "RUNTIMES", "get_runtime", "runtimes_for", "check_runtime_names"]

RUNTIMES: dict[str, Runtime] = {
    r.name: r for r in (TorchRuntime(), OnnxRuntime(), CoreMLRuntime(), MilReferenceRuntime(), *TFLITE_RUNTIMES)
}


def get_runtime(name: str) -> Runtime:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise MobilesegError(f"unknown runtime {name!r}; known runtimes: {', '.join(RUNTIMES)}") from None


def runtimes_for(target: str) -> list[Runtime]:
    """Every runtime that executes artifacts of ``target`` kind, available or not."""
    return [r for r in RUNTIMES.values() if r.target == target]


def check_runtime_names(names: list[str] | None) -> list[str] | None:
    """``names`` as given, once each is known (an unknown one is one clear error)."""
    for name in names or []:
        get_runtime(name)
    return names
