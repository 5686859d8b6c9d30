"""Your own PyTorch model as a deployable: where it comes from (``--model``), what its recipe declares
(``--recipe``), and the checks that turn a user's mistake into one line.

``--model`` takes ``path/to/file.py:factory``, ``package.module:factory`` (a callable returning an
``nn.Module``) or ``program.pt2`` (``torch.export.save``). The recipe declares the graph's inputs and
outputs, the parity inputs and the tolerances::

    name: mynet
    inputs:
      - {name: image, shape: [1, 3, 224, 224], format: rgb01}   # a picture: parity feeds photos
      - {name: prior, shape: [1, 1, 224, 224]}                 # a plain tensor: seeded random values
    outputs:
      - {name: logits, kind: logits}          # logits | probabilities | mask | tensor
      - {name: depth}
    parity: {photos: [astronaut, coffee], random: 2, seed: 0}  # or images: a folder of your pictures
    targets: {onnx: {}, coreml: {precisions: [fp32, fp16]}, tflite: {precisions: [fp32]}}
    tolerances: {fp32: {max_rel: 1.0e-4}, fp16: {min_cosine: 0.999}}

Parsing imports no PyTorch; loading and checking the module does.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mobileseg import targets as target_registry
from mobileseg.core import DTYPES, Graph, TensorSpec
from mobileseg.errors import ExportError, RecipeError
from mobileseg.images import PHOTOS
from mobileseg.verify.metrics import TOLERANCE_KEYS

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

USER_KINDS = ("logits", "probabilities", "mask", "tensor")
PICTURE_FORMATS = ("rgb01", "uint8", "normalized")
DEFAULT_TOLERANCES = {"fp32": {"max_rel": 1e-4, "min_cosine": 0.99999}, "fp16": {"min_cosine": 0.999}}
MAX_INPUT_VALUES = 1 << 28  # 1 GB of float32 per input: beyond it an export only exhausts memory
_MODULE_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def is_model_source(text: str) -> bool:
    """Whether ``text`` names a user's model (``file.py:factory``, ``package.module:factory``, ``x.pt2``)
    rather than a zoo model (zoo names hold neither ``:`` nor a suffix)."""
    return ":" in text or text.endswith(".pt2") or text.endswith(".py")


@dataclass(frozen=True)
class ModelSource:
    """Where a user's model comes from: ``kind`` is "file" (a .py file), "module" (an importable module)
    or "program" (a saved ``torch.export`` program)."""

    text: str
    kind: str
    location: str  # file path or module name
    factory: str | None = None

    @property
    def name(self) -> str:
        return self.factory or Path(self.location).stem

    def to_dict(self) -> dict:
        return {"model": self.text, "kind": self.kind, "location": self.location, "factory": self.factory}


def parse_model_source(text: str) -> ModelSource:
    """Check ``--model`` without importing anything; `RecipeError` names what is wrong."""
    if text.endswith(".pt2"):
        if not Path(text).is_file():
            raise RecipeError(f"--model {text}: no such file (a program saved with torch.export.save)")
        return ModelSource(text, "program", text)
    location, sep, factory = text.rpartition(":")
    if not sep or not factory or not location:
        raise RecipeError(f"--model {text}: give path/to/file.py:factory, package.module:factory or program.pt2")
    if not factory.isidentifier():
        raise RecipeError(f"--model {text}: {factory!r} is not a Python name")
    if location.endswith(".py") or "/" in location or "\\" in location:
        if not Path(location).is_file():
            raise RecipeError(f"--model {text}: no such file {location}")
        return ModelSource(text, "file", location, factory)
    if not _MODULE_PATH.match(location):
        raise RecipeError(f"--model {text}: {location!r} is neither a .py file nor a module name")
    return ModelSource(text, "module", location, factory)


@dataclass(frozen=True)
class UserRecipe:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parity_photos: tuple[str, ...]
    parity_images: str | None
    parity_random: int
    seed: int
    targets: dict[str, dict[str, Any]]
    tolerances: dict[str, dict[str, float]]
    source: str = "<recipe>"
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # input name → uniform random range

    def precisions(self, target: str) -> list[str]:
        options = self.targets.get(target, {})
        return [str(p) for p in options.get("precisions", target_registry.get(target).graph_precisions)]

    def tolerance(self, precision: str) -> dict[str, float]:
        return dict(self.tolerances.get(precision, DEFAULT_TOLERANCES.get(precision, DEFAULT_TOLERANCES["fp16"])))

    def to_dict(self) -> dict:
        def tensor(spec: TensorSpec) -> dict:
            record = {"name": spec.name, "shape": list(spec.shape), "dtype": spec.dtype, "kind": spec.kind}
            if spec.pixel_format:
                record["format"] = spec.pixel_format
            if spec.normalization:
                record["normalization"] = {k: list(v) for k, v in spec.normalization.items()}
            if spec.name in self.ranges:
                record["range"] = list(self.ranges[spec.name])
            return record

        return {
            "name": self.name,
            "inputs": [{k: v for k, v in tensor(s).items() if k != "kind"} for s in self.inputs],
            "outputs": [{"name": s.name, "kind": s.kind} for s in self.outputs],
            "parity": {"photos": list(self.parity_photos), "images": self.parity_images, "random": self.parity_random,
                       "seed": self.seed},  # fmt: skip
            "targets": {k: dict(v) for k, v in self.targets.items()},
            "tolerances": {k: dict(v) for k, v in self.tolerances.items()},
        }


def _fail(where: str, message: str) -> RecipeError:
    return RecipeError(f"{where}: {message}")


def _tensor_specs(items: Any, where: str, section: str) -> tuple[list[dict], list[str]]:
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        raise _fail(where, f"'{section}' must be a non-empty list of mappings (name, shape, ...)")
    names = [i.get("name") for i in items]
    if not all(isinstance(n, str) and n.isidentifier() for n in names):
        raise _fail(where, f"every entry of '{section}' needs a 'name' (letters, digits, _)")
    if len(set(names)) != len(names):
        raise _fail(where, f"'{section}' names must differ ({', '.join(names)})")
    return items, names


def parse_user_recipe(data: Any, where: str, default_name: str = "model") -> UserRecipe:
    """A `UserRecipe` from parsed YAML; every field checked, a wrong one is one `RecipeError` naming it."""
    if not isinstance(data, dict):
        raise _fail(where, "a recipe must be a YAML mapping")
    unknown = set(data) - {"name", "inputs", "outputs", "parity", "targets", "tolerances"}
    if unknown:
        raise _fail(where, f"unknown key(s): {', '.join(sorted(map(str, unknown)))} (a recipe for --model declares "
                    "name, inputs, outputs, parity, targets, tolerances)")  # fmt: skip
    name = data.get("name", default_name)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][\w.-]*", name):
        raise _fail(where, f"name must be letters, digits, '.', '_' or '-', not {name!r}")
    items, _ = _tensor_specs(data.get("inputs"), where, "inputs")
    inputs, ranges = [], {}
    for item in items:
        label = f"inputs.{item['name']}"
        extra = set(item) - {"name", "shape", "dtype", "format", "normalization", "range"}
        if extra:
            raise _fail(where, f"{label}: unknown key(s) {', '.join(sorted(map(str, extra)))}")
        shape = item.get("shape")
        if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
            raise _fail(where, f"{label}.shape must be a list of positive whole numbers, not {shape!r}")
        if math.prod(shape) > MAX_INPUT_VALUES:
            raise _fail(where, f"{label}.shape {shape} holds {math.prod(shape):,} values; mobileseg exports up to {MAX_INPUT_VALUES:,}")
        dtype = item.get("dtype", "float32")
        if dtype not in DTYPES:
            raise _fail(where, f"{label}.dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        fmt = item.get("format")
        normalization = None
        if fmt is not None:
            if fmt not in PICTURE_FORMATS:
                raise _fail(where, f"{label}.format {fmt!r} is not one of {', '.join(PICTURE_FORMATS)}")
            if len(shape) != 4 or shape[1] != 3:
                raise _fail(where, f"{label}: a picture input (format) is NCHW with 3 channels, not {shape}")
            normalization = item.get("normalization")
            if fmt == "normalized" and normalization is None:
                raise _fail(where, f"{label}: format normalized needs normalization: {{mean: [3 numbers], std: [3 numbers]}}")
            if normalization is not None:
                if not isinstance(normalization, dict) or set(normalization) != {"mean", "std"} or not all(
                    isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                               and math.isfinite(x) for x in v) for v in normalization.values()
                ) or not all(normalization["std"]):  # fmt: skip
                    raise _fail(where, f"{label}.normalization must be {{mean: [3 numbers], std: [3 non-zero numbers]}} in [0, 1] space")
                normalization = {k: tuple(float(x) for x in v) for k, v in normalization.items()}
        elif "normalization" in item:
            raise _fail(where, f"{label}: normalization applies to picture inputs (give format)")
        if "range" in item:
            low_high = item["range"]
            if not isinstance(low_high, list) or len(low_high) != 2 or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in low_high
            ) or low_high[0] >= low_high[1]:  # fmt: skip
                raise _fail(where, f"{label}.range must be [low, high] with low < high, not {low_high!r}")
            ranges[item["name"]] = (float(low_high[0]), float(low_high[1]))
        inputs.append(TensorSpec(item["name"], tuple(shape), dtype, "NCHW" if fmt else None, fmt, normalization))
    items, _ = _tensor_specs(data.get("outputs"), where, "outputs")
    outputs = []
    for item in items:
        extra = set(item) - {"name", "kind"}
        if extra:
            raise _fail(where, f"outputs.{item['name']}: unknown key(s) {', '.join(sorted(map(str, extra)))} (outputs "
                        "take name and kind; shapes come from the model)")  # fmt: skip
        kind = item.get("kind", "tensor")
        if kind not in USER_KINDS:
            raise _fail(where, f"outputs.{item['name']}.kind {kind!r} is not one of {', '.join(USER_KINDS)}")
        outputs.append(TensorSpec(item["name"], (), kind=kind))
    clash = {s.name for s in inputs} & {s.name for s in outputs}
    if clash:
        raise _fail(where, f"an input and an output share the name {', '.join(sorted(clash))}")
    parity = data.get("parity", {}) or {}
    if not isinstance(parity, dict) or set(parity) - {"photos", "images", "random", "seed"}:
        raise _fail(where, "parity takes photos (bundled names), images (a folder), random (a count) and seed")
    has_picture = any(s.pixel_format for s in inputs)
    photos = parity.get("photos", ["astronaut", "coffee"] if has_picture else [])
    if not isinstance(photos, list) or not all(isinstance(p, str) and p in PHOTOS for p in photos):
        raise _fail(where, f"parity.photos must be a list of bundled photos ({', '.join(PHOTOS)}), not {photos!r}")
    images = parity.get("images")
    if images is not None and (not isinstance(images, str) or not Path(images).is_dir()):
        raise _fail(where, f"parity.images must be a folder of pictures, not {images!r}")
    images = str(Path(images).resolve()) if images else None
    if (photos or images) and not has_picture:
        raise _fail(where, "parity photos and images feed picture inputs; declare one with format: rgb01 | uint8 | normalized")
    random = parity.get("random", 2)
    seed = parity.get("seed", 0)
    for key, value, high in (("random", random, 32), ("seed", seed, 2**32 - 1)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
            raise _fail(where, f"parity.{key} must be a whole number between 0 and {high}, not {value!r}")
    if not (photos or images or random):
        raise _fail(where, "parity needs at least one photo, image folder or random input")
    targets = data.get("targets", {"onnx": {}}) or {"onnx": {}}
    if not isinstance(targets, dict):
        raise _fail(where, "targets must map target names to their options")
    for target, options in targets.items():
        if target not in target_registry.names():
            raise _fail(where, f"unknown target {target!r}; known targets: {', '.join(target_registry.names())}")
        if options is None:
            targets[target] = options = {}
        if not isinstance(options, dict):
            raise _fail(where, f"targets.{target} must be a mapping of options")
        target_registry.get(target).check_recipe_options(options, where)
        supported = target_registry.get(target).graph_precisions
        bad = [p for p in options.get("precisions", []) if p not in supported]
        if bad:
            raise _fail(where, f"{target} exports your model as {', '.join(supported)}, not {', '.join(bad)}")
    tolerances = data.get("tolerances", {}) or {}
    if not isinstance(tolerances, dict):
        raise _fail(where, "tolerances must map precisions (fp32, fp16) to bounds")
    for precision, bounds in tolerances.items():
        if precision not in ("fp32", "fp16") or not isinstance(bounds, dict):
            raise _fail(where, f"tolerances.{precision}: give fp32 or fp16 with a mapping of bounds")
        bad = sorted(set(bounds) - set(TOLERANCE_KEYS))
        if bad:
            raise _fail(where, f"tolerances.{precision}: unknown bound(s) {', '.join(bad)}; known: {', '.join(TOLERANCE_KEYS)}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bounds.values()):
            raise _fail(where, f"tolerances.{precision}: bounds must be finite numbers")
    return UserRecipe(
        name=name, inputs=tuple(inputs), outputs=tuple(outputs), parity_photos=tuple(photos), parity_images=images,
        parity_random=random, seed=seed, targets={str(k): dict(v) for k, v in targets.items()},
        tolerances={p: {k: float(v) for k, v in b.items()} for p, b in tolerances.items()}, source=where, ranges=ranges,
    )  # fmt: skip


def load_user_recipe(path: str | Path | None, default_name: str) -> UserRecipe:
    if path is None:
        raise RecipeError("--model needs --recipe my.yaml declaring its inputs and outputs (see README: your own model)")
    from mobileseg.recipes import read_yaml

    return parse_user_recipe(read_yaml(Path(path)), str(path), default_name)


# ---- the module (PyTorch from here on) ---------------------------------------------------------------


def load_module(source: ModelSource) -> nn.Module:
    """The user's module in eval mode; `ExportError` (one line) when the factory is missing, fails or
    returns something that is not an ``nn.Module``."""
    import hashlib
    import importlib
    import importlib.util
    import sys

    import torch

    if source.kind == "program":
        try:
            return load_program(source.location)
        except Exception as exc:
            raise ExportError(f"--model {source.text}: not a program saved with torch.export.save ({_first_line(exc)})") from None
    try:
        if source.kind == "file":
            # a stable module name: it is recorded in the saved program (hash() of a string is per process)
            where = str(Path(source.location).resolve()).encode()
            name = f"mobileseg_user_{Path(source.location).stem}_{hashlib.sha256(where).hexdigest()[:8]}"
            spec = importlib.util.spec_from_file_location(name, source.location)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(source.location)
    except Exception as exc:
        raise ExportError(f"--model {source.text}: importing {source.location} failed: {type(exc).__name__}: {_first_line(exc)}") from None
    factory = getattr(module, source.factory, None)
    if factory is None:
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))[:8]
        raise ExportError(f"--model {source.text}: {source.location} has no {source.factory!r} (it has {', '.join(found) or 'nothing callable'})")
    if isinstance(factory, torch.nn.Module):
        network = factory
    elif callable(factory):
        try:
            network = factory()
        except Exception as exc:
            raise ExportError(f"--model {source.text}: {source.factory}() raised {type(exc).__name__}: {_first_line(exc)}") from None
    else:
        raise ExportError(f"--model {source.text}: {source.factory} is not callable")
    if not isinstance(network, torch.nn.Module):
        raise ExportError(f"--model {source.text}: {source.factory}() returned {type(network).__name__}, not a torch.nn.Module")
    return network.eval()


def program_module(program) -> nn.Module:
    """A loaded ``torch.export`` program as a plain module: its graph module refuses ``train()``/``eval()``,
    which tracers and converters call, so it is held outside the module tree (its weights trace as constants)."""
    from torch import nn

    class _Program(nn.Module):
        def __init__(self, graph_module):
            super().__init__()
            for parameter in graph_module.parameters():
                parameter.requires_grad_(False)
            object.__setattr__(self, "program", graph_module)

        def forward(self, *args):
            return self.program(*args)

    return _Program(program)


def load_program(path: str | Path) -> nn.Module:
    """A program saved with ``torch.export.save`` as a module (`program_module`)."""
    import torch

    return program_module(torch.export.load(str(path)).module())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def parity_inputs(recipe: UserRecipe) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(label, name → array) per parity case: photos (or the images folder) in every picture input, seeded
    random values elsewhere and in the random cases."""
    import numpy as np

    from mobileseg.images import folder_images, photo, random_image, resize_rgb01

    pictures = [(f"photo:{name}", photo(name)) for name in recipe.parity_photos]
    if recipe.parity_images:
        pictures += [(f"image:{i}", image) for i, image in enumerate(folder_images(recipe.parity_images))]
    cases = []
    count = len(pictures) + recipe.parity_random
    for index in range(count):
        rng = np.random.default_rng(recipe.seed + index)
        label = pictures[index][0] if index < len(pictures) else f"random:seed={recipe.seed + index}"
        feeds = {}
        for spec in recipe.inputs:
            if spec.pixel_format:
                batch, _, height, width = spec.shape
                if index < len(pictures):
                    rgb01 = resize_rgb01(pictures[index][1], height, width)
                else:
                    rgb01 = random_image(recipe.seed + index, height, width)
                value = np.repeat(rgb01.transpose(2, 0, 1)[None], batch, axis=0).astype(np.float32)
                feeds[spec.name] = picture_tensor(value, spec)
            else:
                feeds[spec.name] = random_tensor(rng, spec, recipe.ranges.get(spec.name))
        cases.append((label, feeds))
    return cases


def parity_cases(module: nn.Module, recipe: UserRecipe, where: str,
                 inputs: list[tuple[str, dict[str, np.ndarray]]] | None = None) -> list[tuple[str, dict, dict]]:  # fmt: skip
    """(label, inputs, ``module``'s outputs) per parity input of ``recipe`` (made here unless given)."""
    return [(label, feeds, run_declared(module, recipe, feeds, where)) for label, feeds in inputs or parity_inputs(recipe)]


def picture_tensor(rgb01: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """RGB pictures in [0, 1] (NCHW; NHWC for rgb01 and uint8) as ``spec``'s pixel format and dtype."""
    import numpy as np

    if spec.pixel_format == "uint8":
        return np.round(rgb01 * 255).astype(spec.dtype)
    if spec.pixel_format == "normalized":
        mean = np.asarray(spec.normalization["mean"], np.float32)[None, :, None, None]
        std = np.asarray(spec.normalization["std"], np.float32)[None, :, None, None]
        return ((rgb01 - mean) / std).astype(spec.dtype)
    return rgb01.astype(spec.dtype)


def random_tensor(rng, spec: TensorSpec, value_range: tuple[float, float] | None) -> np.ndarray:
    """Seeded values of ``spec``'s shape and dtype: booleans, integers in ``value_range`` (default 0..1), floats
    uniform in it or standard normal."""
    if spec.dtype == "bool":
        return rng.integers(0, 2, spec.shape).astype(bool)
    if spec.dtype.startswith(("int", "uint")):
        low, high = value_range or (0, 2)
        return rng.integers(int(low), int(high), spec.shape).astype(spec.dtype)
    if value_range:
        return rng.uniform(*value_range, spec.shape).astype(spec.dtype)
    return rng.standard_normal(spec.shape).astype(spec.dtype)


def run_declared(module: nn.Module, recipe: UserRecipe, feeds: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """The module's outputs on ``feeds``, by the recipe's output names; `ExportError` when the module
    rejects the declared inputs or returns another number of outputs than the recipe declares."""
    import numpy as np
    import torch

    args = [torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in recipe.inputs]
    try:
        with torch.no_grad():
            result = module(*args)
    except Exception as exc:
        shapes = ", ".join(f"{s.name} {list(s.shape)}" for s in recipe.inputs)
        raise ExportError(f"{where} rejects the declared inputs ({shapes}): {type(exc).__name__}: {_first_line(exc)}") from None
    values = list(result.values()) if isinstance(result, dict) else list(result) if isinstance(result, (tuple, list)) else [result]
    if len(values) != len(recipe.outputs) or not all(isinstance(v, torch.Tensor) for v in values):
        kinds = ", ".join(type(v).__name__ for v in values)
        raise ExportError(f"{where} returns {len(values)} output(s) ({kinds}); the recipe declares {len(recipe.outputs)} "
                          f"({', '.join(s.name for s in recipe.outputs)})")  # fmt: skip
    return {spec.name: value.detach().numpy() for spec, value in zip(recipe.outputs, values)}


def as_tuple_module(module: nn.Module) -> nn.Module:
    """The module with its outputs as a tuple of tensors in order (dict values in insertion order)."""
    from torch import nn

    class TupleOutputs(nn.Module):
        def __init__(self, inner: nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            result = self.inner(*args)
            if isinstance(result, dict):
                return tuple(result.values())
            if isinstance(result, (list, tuple)):
                return tuple(result)
            return result

    return TupleOutputs(module).eval()


def save_program(module: nn.Module, examples: dict[str, np.ndarray], recipe: UserRecipe, path: Path, where: str) -> None:
    """``torch.export`` the module on ``examples`` and save it at ``path``: the reference a folder keeps so
    that `mobileseg verify` rebuilds it alone. A module that does not export is one line naming the op
    and the source line that made it."""
    import torch

    import os

    from mobileseg.quiet import captured_output

    args = tuple(torch.from_numpy(examples[s.name]) for s in recipe.inputs)
    try:
        with captured_output(os.devnull):  # torch logs each failed guard with its graph to stderr
            program = torch.export.export(module, args, strict=False)
    except Exception as exc:
        raise ExportError(f"{where} does not trace with torch.export: {_trace_failure(exc)}") from None
    torch.export.save(program, str(path))


def _trace_failure(exc: BaseException) -> str:
    """The first line of a tracing error and, where its text gives one, the user's source line."""
    text = str(exc)
    where = re.findall(r'File "([^"]+)", line (\d+), in (\w+)', text)
    user = [w for w in where if "site-packages" not in w[0] and "/torch/" not in w[0]]
    located = f" (at {Path(user[-1][0]).name}:{user[-1][1]} in {user[-1][2]})" if user else ""
    return f"{type(exc).__name__}: {_first_line(exc)}{located}"


def graph_of(module: nn.Module, recipe: UserRecipe, expected: dict[str, np.ndarray]) -> Graph:
    """The user's model as one `Graph`, its output shapes taken from a run."""
    outputs = tuple(TensorSpec(s.name, tuple(expected[s.name].shape), str(expected[s.name].dtype),
                               "NCHW" if expected[s.name].ndim == 4 else None, kind=s.kind) for s in recipe.outputs)  # fmt: skip
    return Graph(recipe.name, as_tuple_module(module), recipe.inputs, outputs)


def zoo_as_user_recipe(recipe, target: str) -> UserRecipe:
    """A zoo `Recipe` read as a user recipe (one picture in, ``logits`` out; the ``target``'s tolerances):
    how a file made by another tool is judged against a zoo model."""
    from mobileseg import zoo

    if recipe.input_format == "normalized":
        raise RecipeError(f"{recipe.source}: verify a file against {recipe.model} with input format rgb01 or uint8")
    height, width = recipe.input_size
    dtype = "uint8" if recipe.input_format == "uint8" else "float32"
    image = TensorSpec("image", (recipe.batch, 3, height, width), dtype, "NCHW", recipe.input_format)
    logits = TensorSpec("logits", (), kind=zoo.spec(recipe.model).output_kind)
    return UserRecipe(
        name=recipe.model, inputs=(image,), outputs=(logits,), parity_photos=recipe.parity_photos, parity_images=None,
        parity_random=recipe.parity_random, seed=recipe.seed, targets={target: {}},
        tolerances={p: {k: v for k, v in bounds.items() if k != "judged_on"} for p, bounds in recipe.tolerances.get(target, {}).items()},
        source=recipe.source,
    )  # fmt: skip
