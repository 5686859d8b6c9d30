"""What a target is: a kind of file mobileseg writes (ONNX, Core ML, TFLite), with its precisions, its typed
options and the runtimes that run it. A target exports one `Graph` at a time; the pipeline
(`export/graphs.py`) calls it once per graph. No PyTorch or converter is imported here.

Recipe keys come from the fields of the target's options dataclass (a field with ``metadata={"recipe":
False}`` is set by the pipeline, not by recipes) plus ``extra_recipe_keys``; their types decide how a
recipe value is checked. ``--set TARGET.KEY=VALUE`` on the CLI reaches the same keys.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mobileseg.errors import MissingDependencyError, RecipeError

if TYPE_CHECKING:
    import numpy as np

    from mobileseg.core import Graph

# Parity bounds a recipe that does not name this target gets (recipes state their own for onnx, coreml, tflite)
DEFAULT_TOLERANCES = {
    "fp32": {"max_rel": 1e-4, "min_cosine": 0.99999, "min_psnr_db": 75, "min_argmax_agreement": 0.999},
    "fp16": {"min_cosine": 0.999, "min_argmax_agreement": 0.99, "judged_on": "photos"},
    "dynamic": {"min_cosine": 0.99, "min_argmax_agreement": 0.97, "judged_on": "photos"},
    "int8": {"min_cosine": 0.98, "min_argmax_agreement": 0.97, "judged_on": "photos"},
    "a16w8": {"min_cosine": 0.99, "min_argmax_agreement": 0.97, "judged_on": "photos"},
}
# How an options field's annotation reads as a recipe value kind
_KINDS = {"bool": "switch", "int": "number", "float": "number", "str": "text", "tuple[str, ...]": "names"}


class Target(ABC):
    name: str
    suffix: str  # file suffix, with the dot
    precisions: tuple[str, ...]  # every precision it has, in order
    graph_precisions: tuple[str, ...]  # those it exports for any graph (beyond the zoo's one-picture graphs)
    options_type: type  # frozen dataclass with a validate method
    runtime: str  # the runtime that runs its files on a device or host
    reference_runtime: str | None = None  # checks parity where ``runtime`` cannot run here
    packages: tuple[str, ...] = ()  # import names the conversion needs (pip extra: the target's name)
    extra_recipe_keys: dict[str, str] = {}  # recipe keys outside the options dataclass: key → kind
    default_tolerances: dict[str, dict] = DEFAULT_TOLERANCES  # precision → bounds, where a recipe gives none

    # ---- options ------------------------------------------------------------------------------------

    def option_kinds(self) -> dict[str, str]:
        """Recipe key → value kind (switch, number, text, names)."""
        kinds = {f.name: _KINDS.get(str(f.type), "text") for f in dataclasses.fields(self.options_type)
                 if f.metadata.get("recipe", True)}  # fmt: skip
        return {**kinds, **self.extra_recipe_keys}

    def check_recipe_options(self, values: dict[str, Any], where: str) -> None:
        """`RecipeError` naming any unknown key or a value of the wrong kind."""
        kinds = self.option_kinds()
        unknown = sorted(set(values) - set(kinds))
        if unknown:
            raise RecipeError(f"{where}: unknown {self.name} option(s): {', '.join(unknown)}")
        wrong = {"switch": [], "number": [], "text": []}
        for key, value in values.items():
            kind = kinds[key]
            if kind == "switch" and not isinstance(value, bool):
                wrong[kind].append(key)
            elif kind == "number" and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
                wrong[kind].append(key)
            elif kind == "text" and not isinstance(value, str):
                wrong[kind].append(key)
            elif kind == "names" and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
                raise RecipeError(f"{where}: {self.name} {key} must be a list of names such as [fp32, fp16], not {value!r}")
        for kind, say in (("switch", "must be true or false"), ("number", "must be numbers (finite)"), ("text", "must be strings")):
            if wrong[kind]:
                raise RecipeError(f"{where}: {self.name} option(s) {', '.join(sorted(wrong[kind]))} {say}")

    def chosen_precisions(self, values: dict[str, Any]) -> list[str]:
        """The precisions a recipe's options export: its ``precisions`` key, else every precision."""
        return [str(p) for p in values.get("precisions", self.precisions)]

    def options(self, values: dict[str, Any], **fixed: Any):
        """The typed options from recipe values (already checked) and the pipeline's ``fixed`` fields."""
        given = {}
        for f in dataclasses.fields(self.options_type):
            if f.name in fixed:
                given[f.name] = fixed[f.name]
            elif f.name in values and f.metadata.get("recipe", True):
                value = values[f.name]
                kind = _KINDS.get(str(f.type))
                given[f.name] = (tuple(value) if kind == "names" else bool(value) if kind == "switch"
                                 else int(value) if str(f.type) == "int" else float(value) if str(f.type) == "float"
                                 else str(value))  # fmt: skip
        if "precisions" in {f.name for f in dataclasses.fields(self.options_type)} and "precisions" not in given:
            given["precisions"] = tuple(self.precisions)
        return self.options_type(**given)

    # ---- availability -----------------------------------------------------------------------------------

    def require_packages(self) -> None:
        for package in self.packages:
            if importlib.util.find_spec(package) is None:
                raise MissingDependencyError(f"the {self.name} target", package, self.name)

    def parity_runtime(self) -> str:
        """The runtime that checks this target's files here: its own, else its reference runtime."""
        from mobileseg.runtimes import get_runtime

        if self.reference_runtime and get_runtime(self.runtime).unavailable_reason():
            return self.reference_runtime
        return self.runtime

    def file_name(self, graph: str, precision: str, folder: str = "") -> str:
        return f"{folder}{graph}_{precision}{self.suffix}"

    def check_picture_options(self, options: Any, recipe: Any, values: dict[str, Any]) -> None:
        """`MobilesegError` for options a zoo export (``recipe``) cannot honour; ``values`` are the raw ones."""
        options.validate(recipe.input_format)

    def calibration_count(self, options: Any) -> int:
        """How many calibration pictures a zoo export of this target uses (0: none)."""
        return 0

    # ---- export -----------------------------------------------------------------------------------------

    def export_picture_model(self, job: PictureJob) -> list[dict]:
        """Export a zoo network (one picture in, ``logits`` out; ``job``) with the recipe's options; returns
        one manifest entry per written file. Targets without it export only named graphs."""
        from mobileseg.errors import ExportError

        raise ExportError(f"the {self.name} target does not export the zoo's picture models")

    @abstractmethod
    def export_graph(
        self, graph: Graph, examples: dict[str, np.ndarray], expected: dict[str, np.ndarray],
        files: dict[str, Path], options: Any, label: str, metadata: dict[str, str] | None = None,
        description: str = "", onnx_file: Path | None = None,
    ) -> dict[str, dict]:  # fmt: skip
        """Write ``files[precision]`` for ``graph`` (traced on ``examples``; ``expected`` are PyTorch's outputs
        on them, for converters that must find their tensors again). ``label`` names the graph in messages
        (``deployable/graph``); ``metadata`` and ``description`` go into the file where the format keeps
        them; ``onnx_file`` is the graph's ONNX export when already written. Returns each file's manifest
        details (``io`` at least)."""


def get_target(name: str) -> Target:
    from mobileseg import targets

    return targets.get(name)


@dataclass
class PictureJob:
    """One zoo export in progress, as the targets see it: a network with its preprocessing (one picture in,
    ``logits`` out) and what the targets share, made on first use: the ONNX file (TFLite converts it) and
    the calibration pictures kept apart from parity (int8 ranges, the float fallbacks' op choices)."""

    recipe: Any  # recipes.Recipe
    reference: Any  # nn.Module: the network wrapped with the recipe's preprocessing (int8 starts from it)
    exported: Any  # nn.Module the float files convert: the reference, lean (`export/lean.py`) unless asked not to
    staging: Path
    scratch: Path
    options: dict[str, Any]  # target name → its typed options
    onnx_options: Any  # OnnxOptions of the ONNX file every target that needs one shares
    make_onnx: Callable[..., Any]  # (path, unpooling form or None) → writes the ONNX file, returns its OnnxExportInfo
    make_calibration: Callable[[int], Any]  # count → NCHW RGB [0, 1] pictures (the first ones whatever the count)
    say: Callable[[str], None]
    precisions: dict[str, list[str]] = field(default_factory=dict)  # target name → the precisions it exports
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    _onnx: tuple[Path, Any] | None = None
    _portable_onnx: tuple[Path, Any] | None = None
    _calibration: Any = None

    def onnx_file(self, portable: bool = False) -> tuple[Path, Any]:
        """(path, info) of the network's ONNX file: in the artifact when onnx is exported, else in scratch.
        ``portable``: builtin ops only (what onnx2tf converts): where the artifact's file keeps ONNX's own
        MaxUnpool, a second file with the unpooling lowering (`zoo.unpooling`) is written to scratch."""
        from mobileseg.zoo.unpooling import has_unpooling

        if portable and self.onnx_options.unpooling != "portable" and has_unpooling(self.exported):
            if self._portable_onnx is None:
                path = self.scratch / "model_portable.onnx"
                self._portable_onnx = (path, self.make_onnx(path, "portable"))
            return self._portable_onnx
        if self._onnx is None:
            self.say("exporting ONNX")
            started = time.perf_counter()
            path = (self.staging if "onnx" in self.options else self.scratch) / "model.onnx"
            self._onnx = (path, self.make_onnx(path))
            self.timings["onnx"] = time.perf_counter() - started
        return self._onnx

    def calibration(self, count: int):
        """The first ``count`` calibration pictures; all targets' counts are made at once, on first use."""
        if self._calibration is None or len(self._calibration) < count:
            wanted = max(get_target(name).calibration_count(options) for name, options in self.options.items())
            self._calibration = self.make_calibration(max(wanted, count))
        return self._calibration[:count]
