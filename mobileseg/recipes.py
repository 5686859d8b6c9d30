"""Export recipes: one YAML per zoo model in ``export_recipes/``, the defaults that CLI flags override.

A recipe names the model and its official weights, the input spec (size, format, batch,
normalisation), the parity inputs, the targets with their options, and the parity tolerances per
target × precision. Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from mobileseg import zoo
from mobileseg.errors import RecipeError
from mobileseg.images import PHOTOS
from mobileseg.verify.metrics import JUDGED_ON_KEY, TOLERANCE_KEYS

RECIPES_DIR = Path(__file__).resolve().parent.parent / "export_recipes"
INPUT_FORMATS = ("rgb01", "uint8", "normalized")
KNOWN_TARGETS = ("onnx", "coreml", "tflite")
TARGET_PRECISIONS = {"onnx": ("fp32",), "coreml": ("fp16", "fp32"), "tflite": ("fp32", "fp16", "dynamic", "int8")}
TARGET_OPTIONS = {
    "onnx": {"precisions", "opset", "exporter", "simplify"},
    "coreml": {"precisions", "input_type", "minimum_deployment_target", "source", "float_fallback"},
    "tflite": {"precisions", "keep_nchw", "int8_io", "calibration", "calibration_samples", "activation_ranges", "float_fallback", "bias_correction", "channel_equalization"},
}
# Options that are switches: a YAML string such as "no" must not read as true.
SWITCH_OPTIONS = {"simplify", "keep_nchw", "int8_io", "float_fallback", "bias_correction"}
# Options that are numbers (YAML ints or floats; a string is a recipe error, not a traceback later).
NUMBER_OPTIONS = {"opset", "calibration_samples", "channel_equalization"}


@dataclass(frozen=True)
class Recipe:
    model: str
    weights: str | None  # the official checkpoint's file name
    input_size: tuple[int, int]
    input_format: str
    batch: int
    dynamic_batch: bool
    normalization: zoo.Normalization
    parity_photos: tuple[str, ...]
    parity_random: int
    seed: int
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    tolerances: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    source: str = "<defaults>"

    def with_overrides(self, **overrides: Any) -> Recipe:
        """A copy with every non-None override applied (CLI flags left unset keep the recipe's values)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def tolerance(self, target: str, precision: str) -> dict[str, float]:
        try:
            return self.tolerances[target][precision]
        except KeyError:
            raise RecipeError(f"recipe {self.source} has no tolerances for {target} {precision}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "weights": self.weights,
            "input": {
                "size": list(self.input_size),
                "format": self.input_format,
                "batch": self.batch,
                "dynamic_batch": self.dynamic_batch,
                "normalization": self.normalization.to_dict(),
            },
            "parity": {"photos": list(self.parity_photos), "random": self.parity_random, "seed": self.seed},
            "targets": copy.deepcopy(self.targets),
            "tolerances": copy.deepcopy(self.tolerances),
        }


def _section(data: dict, key: str, allowed: set[str], where: str) -> dict:
    value = data.get(key, {}) or {}
    if not isinstance(value, dict):
        raise RecipeError(f"{where}: '{key}' must be a mapping")
    unknown = set(value) - allowed
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) in '{key}': {', '.join(sorted(unknown))}")
    return value


def _normalization(data: dict, default: zoo.Normalization, where: str) -> zoo.Normalization:
    """``mean_255``/``std_255``: the authors' statistics in 0..255 space; the network input is
    ``(255·x − mean_255) / std_255 / 255 = (x − mean_255/255) / std_255``. ``mean``/``std``: in [0, 1] space."""
    unknown = set(data) - {"mean_255", "std_255", "mean", "std", "channel_order"}
    if unknown or ("mean" in data and "mean_255" in data) or ("std" in data and "std_255" in data):
        raise RecipeError(f"{where}: input.normalization takes mean_255/std_255 or mean/std, and channel_order")
    mean = [float(v) / 255 for v in data["mean_255"]] if "mean_255" in data else data.get("mean", default.mean)
    std = data["std_255"] if "std_255" in data else data.get("std", default.std)
    return zoo.Normalization(
        tuple(float(v) for v in mean), tuple(float(v) for v in std), str(data.get("channel_order", default.channel_order))
    )


def parse_recipe(data: dict, source: str) -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping")
    unknown = set(data) - {"model", "weights", "input", "parity", "targets", "tolerances"}
    if unknown:
        raise RecipeError(f"{source}: unknown key(s): {', '.join(sorted(unknown))}")
    if "model" not in data:
        raise RecipeError(f"{source}: missing 'model'")
    spec = zoo.spec(str(data["model"]))
    inp = _section(data, "input", {"size", "format", "batch", "dynamic_batch", "normalization"}, source)
    parity = _section(data, "parity", {"photos", "random", "seed"}, source)
    norm = inp.get("normalization") or {}
    try:
        normalization = _normalization(norm, spec.normalization, source)
        recipe = Recipe(
            model=spec.name,
            weights=data.get("weights", spec.checkpoint.filename),
            input_size=tuple(int(v) for v in inp.get("size", spec.input_size)),
            input_format=str(inp.get("format", "rgb01")),
            batch=int(inp.get("batch", 1)),
            dynamic_batch=bool(inp.get("dynamic_batch", False)),
            normalization=normalization,
            parity_photos=tuple(parity.get("photos", ("astronaut",))),
            parity_random=int(parity.get("random", 2)),
            seed=int(parity.get("seed", 0)),
            targets={str(k): dict(v or {}) for k, v in (data.get("targets") or {"onnx": {}}).items()},
            tolerances={
                str(t): {str(p): {str(k): (str(v) if k == JUDGED_ON_KEY else float(v)) for k, v in bounds.items()} for p, bounds in per.items()}
                for t, per in (data.get("tolerances") or {}).items()
            },
            source=source,
        )
    except (TypeError, ValueError, AttributeError) as exc:
        raise RecipeError(f"{source}: malformed recipe: {exc}") from exc
    validate(recipe)
    return recipe


def validate(recipe: Recipe) -> None:
    """Raise `RecipeError` for any value the export could not honour."""
    where = recipe.source
    if len(recipe.input_size) != 2:
        raise RecipeError(f"{where}: input.size must be [height, width]")
    if recipe.input_format not in INPUT_FORMATS:
        raise RecipeError(f"{where}: input.format {recipe.input_format!r} is not one of {', '.join(INPUT_FORMATS)}")
    if recipe.batch < 1:
        raise RecipeError(f"{where}: input.batch must be >= 1")
    if recipe.normalization.channel_order not in ("rgb", "bgr") or any(s == 0 for s in recipe.normalization.std):
        raise RecipeError(f"{where}: input.normalization needs channel_order rgb|bgr and non-zero std")
    bad_photos = [p for p in recipe.parity_photos if p not in PHOTOS]
    if bad_photos:
        raise RecipeError(f"{where}: unknown parity photo(s) {', '.join(bad_photos)}; bundled: {', '.join(PHOTOS)}")
    if recipe.parity_random < 0 or not (recipe.parity_photos or recipe.parity_random):
        raise RecipeError(f"{where}: parity needs at least one photo or random image")
    for target, options in recipe.targets.items():
        if target not in KNOWN_TARGETS:
            raise RecipeError(f"{where}: unknown target {target!r}; known targets: {', '.join(KNOWN_TARGETS)}")
        unknown_options = set(options) - TARGET_OPTIONS[target]
        if unknown_options:
            raise RecipeError(f"{where}: unknown {target} option(s): {', '.join(sorted(unknown_options))}")
        not_switches = sorted(k for k in SWITCH_OPTIONS & set(options) if not isinstance(options[k], bool))
        if not_switches:
            raise RecipeError(f"{where}: {target} option(s) {', '.join(not_switches)} must be true or false")
        not_numbers = sorted(
            k for k in NUMBER_OPTIONS & set(options) if isinstance(options[k], bool) or not isinstance(options[k], (int, float))
        )  # fmt: skip
        if not_numbers:
            raise RecipeError(f"{where}: {target} option(s) {', '.join(not_numbers)} must be numbers")
        for precision in precisions(target, options):
            if precision not in TARGET_PRECISIONS[target]:
                raise RecipeError(f"{where}: {target} has no precision {precision!r}")
            bounds = recipe.tolerances.get(target, {}).get(precision)
            if bounds is None:
                raise RecipeError(f"{where}: no tolerances for {target} {precision}")
            unknown = set(bounds) - set(TOLERANCE_KEYS) - {JUDGED_ON_KEY}
            if unknown:
                raise RecipeError(f"{where}: unknown tolerance key(s) {', '.join(sorted(unknown))}")
            if bounds.get(JUDGED_ON_KEY, "all") not in ("all", "photos"):
                raise RecipeError(f"{where}: {target} {precision} {JUDGED_ON_KEY} must be all or photos")


def precisions(target: str, options: dict) -> list[str]:
    """The precisions a target exports: its ``precisions`` option, else every precision it has."""
    return [str(p) for p in options.get("precisions", TARGET_PRECISIONS[target])]


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Load a recipe by zoo model name (``export_recipes/<name>.yaml``) or by file path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        zoo.spec(str(name_or_path))  # unknown model → UnknownModelError
        path = RECIPES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise RecipeError(f"recipe not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from exc
    return parse_recipe(data, str(path))
