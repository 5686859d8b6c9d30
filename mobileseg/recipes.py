"""Export recipes: one YAML per zoo model in ``export_recipes/``, the defaults that CLI flags override.

A recipe names the model and its official weights, the input spec (size, format, batch,
normalisation), the parity inputs, the targets with their options, and the parity tolerances per
target × precision. Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from mobileseg import targets, zoo
from mobileseg.errors import CheckpointError, RecipeError
from mobileseg.images import PHOTOS
from mobileseg.verify.metrics import JUDGED_ON_KEY, TOLERANCE_KEYS

# export_recipes/ sits at the top of the repository; mobileseg/export_recipes links to it, so that an installed
# wheel carries the recipes inside the package (pyproject.toml: package-data)
RECIPES_DIR = Path(__file__).parent / "export_recipes"
INPUT_FORMATS = ("rgb01", "uint8", "normalized")


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
        """The recipe's bounds for ``target`` at ``precision``, else the target's own defaults."""
        bounds = self.tolerances.get(target, {}).get(precision)
        if bounds is None and target in targets.names():
            bounds = targets.get(target).default_tolerances.get(precision)
        if bounds is None:
            raise RecipeError(f"recipe {self.source} has no tolerances for {target} {precision}")
        return bounds

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


# Bounds a recipe's numbers must keep: beyond them an export would only exhaust memory or time.
MAX_BATCH = 64
MAX_PARITY_RANDOM = 32
MAX_SEED = 2**32 - 1


def _whole(value: Any, where: str, name: str, low: int | None = None, high: int | None = None) -> int:
    """``value`` as a whole number within [low, high]; a `RecipeError` naming the field otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecipeError(f"{where}: {name} must be a whole number, not {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        raise RecipeError(f"{where}: {name} must be {bounds}, not {value}")
    return value


def _numbers(value: Any, where: str, name: str, count: int) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != count or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    ):
        raise RecipeError(f"{where}: {name} must be a list of {count} finite numbers, not {value!r}")
    return tuple(float(v) for v in value)


def _text(value: Any, where: str, name: str) -> str:
    if not isinstance(value, str):
        raise RecipeError(f"{where}: {name} must be a string, not {value!r}")
    return value


def _switch(value: Any, where: str, name: str) -> bool:
    if not isinstance(value, bool):
        raise RecipeError(f"{where}: {name} must be true or false, not {value!r}")
    return value


def _normalization(data: dict, default: zoo.Normalization, where: str) -> zoo.Normalization:
    """``mean_255``/``std_255``: the authors' statistics in 0..255 space; the network input is
    ``(255·x − mean_255) / std_255 / 255 = (x − mean_255/255) / std_255``. ``mean``/``std``: in [0, 1] space."""
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: input.normalization must be a mapping")
    unknown = set(data) - {"mean_255", "std_255", "mean", "std", "channel_order"}
    if unknown or ("mean" in data and "mean_255" in data) or ("std" in data and "std_255" in data):
        raise RecipeError(f"{where}: input.normalization takes mean_255/std_255 or mean/std, and channel_order")
    if "mean_255" in data:
        mean = tuple(v / 255 for v in _numbers(data["mean_255"], where, "input.normalization.mean_255", 3))
    else:
        mean = _numbers(data.get("mean", default.mean), where, "input.normalization.mean", 3)
    key = "std_255" if "std_255" in data else "std"
    std = _numbers(data.get(key, default.std), where, f"input.normalization.{key}", 3)
    order = _text(data.get("channel_order", default.channel_order), where, "input.normalization.channel_order")
    return zoo.Normalization(mean, std, order)


def _mapping(value: Any, where: str, name: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecipeError(f"{where}: {name} must be a mapping, not {value!r}")
    return value


def _tolerances(data: Any, where: str) -> dict[str, dict[str, dict[str, float | str]]]:
    tolerances = {}
    for target, per in _mapping(data, where, "tolerances").items():
        tolerances[str(target)] = {}
        for precision, bounds in _mapping(per, where, f"tolerances.{target}").items():
            name = f"tolerances.{target}.{precision}"
            values = {}
            for key, value in _mapping(bounds, where, name).items():
                if key == JUDGED_ON_KEY:
                    values[key] = _text(value, where, f"{name}.{key}")
                elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise RecipeError(f"{where}: {name}.{key} must be a finite number, not {value!r}")
                else:
                    values[str(key)] = float(value)
            tolerances[str(target)][str(precision)] = values
    return tolerances


def parse_recipe(data: dict, source: str) -> Recipe:
    """A `Recipe` from parsed YAML (or a manifest's copy); every field's type and range is checked, and a
    wrong one is one `RecipeError` naming it."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping")
    unknown = set(data) - {"model", "weights", "input", "parity", "targets", "tolerances"}
    if unknown:
        raise RecipeError(f"{source}: unknown key(s): {', '.join(sorted(map(str, unknown)))}")
    if "model" not in data:
        raise RecipeError(f"{source}: missing 'model'")
    spec = zoo.spec(_text(data["model"], source, "model"))
    inp = _section(data, "input", {"size", "format", "batch", "dynamic_batch", "normalization"}, source)
    parity = _section(data, "parity", {"photos", "random", "seed"}, source)
    size = inp.get("size", list(spec.input_size))
    if not isinstance(size, (list, tuple)) or len(size) != 2:
        raise RecipeError(f"{source}: input.size must be [height, width], not {size!r}")
    photos = parity.get("photos", ["astronaut"])
    if not isinstance(photos, (list, tuple)) or not all(isinstance(p, str) for p in photos):
        raise RecipeError(f"{source}: parity.photos must be a list of photo names, not {photos!r}")
    weights = data.get("weights", spec.checkpoint.filename if spec.checkpoint else None)
    targets = _mapping(data.get("targets") if "targets" in data else {"onnx": {}}, source, "targets")
    recipe = Recipe(
        model=spec.name,
        weights=None if weights is None else _text(weights, source, "weights"),
        input_size=tuple(_whole(v, source, "input.size", 1) for v in size),
        input_format=_text(inp.get("format", "rgb01"), source, "input.format"),
        batch=_whole(inp.get("batch", 1), source, "input.batch", 1, MAX_BATCH),
        dynamic_batch=_switch(inp.get("dynamic_batch", False), source, "input.dynamic_batch"),
        normalization=_normalization(inp.get("normalization") or {}, spec.normalization, source),
        parity_photos=tuple(photos),
        parity_random=_whole(parity.get("random", 2), source, "parity.random", 0, MAX_PARITY_RANDOM),
        seed=_whole(parity.get("seed", 0), source, "parity.seed", 0, MAX_SEED),
        targets={str(k): dict(_mapping(v, source, f"targets.{k}")) for k, v in (targets or {"onnx": {}}).items()},
        tolerances=_tolerances(data.get("tolerances"), source),
        source=source,
    )
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
    if recipe.parity_random < 0:
        raise RecipeError(f"{where}: parity.random (the number of seeded random images) must be >= 0, not {recipe.parity_random}")
    if not (recipe.parity_photos or recipe.parity_random):
        raise RecipeError(f"{where}: parity needs at least one photo or random image")
    for target, options in recipe.targets.items():
        if target not in targets.names():
            raise RecipeError(f"{where}: unknown target {target!r}; known targets: {', '.join(targets.names())}")
        targets.get(target).check_recipe_options(options, where)
        for precision in precisions(target, options):
            if precision not in targets.get(target).precisions:
                raise RecipeError(f"{where}: {target} has no precision {precision!r}")
            bounds = recipe.tolerances.get(target, {}).get(precision) or targets.get(target).default_tolerances.get(precision)
            if bounds is None:
                raise RecipeError(f"{where}: no tolerances for {target} {precision}")
            unknown = set(bounds) - set(TOLERANCE_KEYS) - {JUDGED_ON_KEY}
            if unknown:
                raise RecipeError(f"{where}: unknown tolerance key(s) {', '.join(sorted(unknown))}")
            if bounds.get(JUDGED_ON_KEY, "all") not in ("all", "photos"):
                raise RecipeError(f"{where}: {target} {precision} {JUDGED_ON_KEY} must be all or photos")


def precisions(target: str, options: dict) -> list[str]:
    """The precisions a target exports: its ``precisions`` option, else every precision it has."""
    return targets.get(target).chosen_precisions(options)


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Load a recipe by zoo model name (``export_recipes/<name>.yaml``) or by file path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        zoo.spec(str(name_or_path))  # unknown model → UnknownModelError
        path = RECIPES_DIR / f"{name_or_path}.yaml"
    return parse_recipe(read_yaml(path), str(path))


def read_yaml(path: Path) -> Any:
    """A recipe file's YAML; `RecipeError` (one line) when it is missing, unreadable, not UTF-8 or not YAML."""
    if not path.is_file():
        raise RecipeError(f"recipe not found: {path}")
    try:
        return yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path} is not UTF-8 text (byte {exc.start}); a recipe is a YAML file") from None
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from exc


WEIGHTS_DIR_ENV = "MOBILESEG_WEIGHTS_DIR"


def resolve_weights(recipe: Recipe, explicit: Path | None, random_weights: bool) -> Path | None:
    """The checkpoint to load: ``--weights``, else the official file in $MOBILESEG_WEIGHTS_DIR; None = random init."""
    if explicit is not None:
        if random_weights:
            raise CheckpointError("--weights and --random-weights contradict each other")
        if not Path(explicit).is_file():
            raise CheckpointError(f"checkpoint not found: {explicit}")
        return Path(explicit)
    spec = zoo.spec(recipe.model)
    if random_weights or (spec.structure_only and not recipe.weights):
        return None
    directory = os.environ.get(WEIGHTS_DIR_ENV)
    if directory and recipe.weights and (Path(directory) / recipe.weights).is_file():
        return Path(directory) / recipe.weights
    raise CheckpointError(
        f"no weights for {recipe.model}: pass --weights PATH to the authors' checkpoint "
        f"({spec.checkpoint.filename} from {spec.checkpoint.source.split('@')[0]}), set {WEIGHTS_DIR_ENV} "
        f"to the folder holding it, or pass --random-weights for a structural export"
    )
