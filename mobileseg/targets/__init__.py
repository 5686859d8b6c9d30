"""The export targets, one module each; adding a target is its module and one `register` line here.

>>> from mobileseg import targets
>>> targets.names()
['onnx', 'coreml', 'tflite']
>>> targets.get("coreml").suffix
'.mlpackage'
"""

from __future__ import annotations

from mobileseg.errors import DuplicateRegistrationError, RecipeError
from mobileseg.targets.base import Target
from mobileseg.targets.coreml import CoreMLTarget
from mobileseg.targets.onnx import OnnxTarget
from mobileseg.targets.tflite import TfliteTarget

__all__ = ["Target", "register", "get", "names", "select", "for_suffix"]

_TARGETS: dict[str, Target] = {}


def register(target: Target) -> Target:
    if target.name in _TARGETS:
        raise DuplicateRegistrationError(f"target {target.name!r} is already registered")
    _TARGETS[target.name] = target
    return target


def get(name: str) -> Target:
    try:
        return _TARGETS[name]
    except KeyError:
        raise RecipeError(f"unknown target {name!r}; known targets: {', '.join(_TARGETS)}") from None


def names() -> list[str]:
    return list(_TARGETS)


def select(requested: list[str] | None, default: list[str]) -> list[str]:
    """The targets asked for (``requested``, else ``default``), each once; "all" is every registered target."""
    chosen = list(dict.fromkeys(requested or default))
    if "all" in chosen:
        chosen = names()
    unknown = [t for t in chosen if t not in _TARGETS]
    if unknown:
        raise RecipeError(f"unknown target(s) {', '.join(unknown)}; known targets: {', '.join(_TARGETS)}, all")
    return chosen


def for_suffix(suffix: str) -> Target | None:
    """The target whose files end in ``suffix`` (``.onnx``, ``.mlpackage``, ``.tflite``), if any."""
    return next((t for t in _TARGETS.values() if t.suffix == suffix), None)


register(OnnxTarget())
register(CoreMLTarget())
register(TfliteTarget())
