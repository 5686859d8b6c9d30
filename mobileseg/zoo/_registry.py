"""The model registry: one `ModelSpec` per zoo name (registered in `zoo.specs`). Imports no PyTorch."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mobileseg.errors import DuplicateRegistrationError, InputSizeError, UnknownModelError

if TYPE_CHECKING:
    import torch
    from torch import nn

# The largest input a zoo model is exported at: 8192×8192 pixels (sides up to 16384). Beyond it the
# activations alone take tens of GB; a typo such as 100000x100000 is refused at once instead.
MAX_INPUT_PIXELS = 8192 * 8192
MAX_INPUT_SIDE = 16384
# SegNet's max-unpooling: PyTorch's pair (ONNX MaxUnpool) or the builtin-only lowering (zoo/unpooling.py)
UNPOOLING_FORMS = ("native", "portable")


@dataclass(frozen=True)
class Normalization:
    """How an RGB image in [0, 1] becomes the network input: ``(x[order] − mean) / std`` per channel.

    ``mean`` and ``std`` are given in the network's channel order. The authors standardise in 0..255
    space and then divide by 255, i.e. ``(255·x − m)/s/255 = (x − m/255)/s``: so ``mean = m/255`` and
    ``std = s`` (not divided by 255).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str = "rgb"  # "rgb" or "bgr": the order the network was trained on

    def apply(self, rgb01: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [0, 1] → the network's normalised input."""
        import torch

        x = rgb01.flip(1) if self.channel_order == "bgr" else rgb01
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "channel_order": self.channel_order}


@dataclass(frozen=True)
class Checkpoint:
    """The authors' official checkpoint of a zoo model."""

    filename: str
    sha256: str
    source: str  # repository @ commit : path
    license: str = "MIT"


@dataclass(frozen=True)
class ModelSpec:
    """Everything a user or tool needs to know about a zoo model, without building it."""

    name: str
    description: str
    num_classes: int
    input_size: tuple[int, int]  # default (H, W)
    size_multiple: int  # H and W must be multiples of this
    size_rule: str  # why, in words
    output_stride: int  # output is (H / output_stride, W / output_stride)
    output_kind: str  # "softmax_logits" (argmax over classes) or "sigmoid_logit" (foreground where > 0)
    normalization: Normalization
    params: int  # the authors' parameter count, which ours must equal (counted as ``params_counted``)
    checkpoint: Checkpoint | None  # None: no trained weights exist here ("structure only", `zoo.structure_only`)
    paper: str
    class_names: tuple[str, ...]
    network: str = field(repr=False)  # "module:callable" that builds the network (imported when built)
    network_args: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)
    key_rules_ref: str = field(repr=False, default="")  # "module:NAME" of the checkpoint key renames
    # "parameters" (trainable tensors) or "variables" (also BN's running mean and variance, as TensorFlow counts)
    params_counted: str = "parameters"
    calibration_size: tuple[int, int] | None = None  # structure only: (H, W) of the photos BN is calibrated on

    @property
    def structure_only(self) -> bool:
        """No trained weights: seeded initialisation with photo-calibrated statistics unless a checkpoint is given."""
        return self.checkpoint is None

    def builder(self) -> nn.Module:
        """A new network (random initialisation, train mode)."""
        return _resolve(self.network)(**self.network_args)

    @property
    def key_rules(self) -> Sequence[tuple[str, str]]:
        """The ordered regex renames from the authors' checkpoint keys to ours (see `zoo.checkpoint`)."""
        return _resolve(self.key_rules_ref) if self.key_rules_ref else ()

    @property
    def default_input_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, *self.input_size)

    def output_shape(self, height: int, width: int, batch: int = 1) -> tuple[int, int, int, int]:
        return (batch, self.num_classes, height // self.output_stride, width // self.output_stride)

    def check_input_size(self, height: int, width: int) -> None:
        """Raise `InputSizeError` with the rule when (height, width) would break the network's shape round trip."""
        if height * width > MAX_INPUT_PIXELS or max(height, width) > MAX_INPUT_SIDE:
            raise InputSizeError(
                f"input size {height}x{width} is larger than mobileseg exports ({MAX_INPUT_SIDE} pixels a side "
                f"and {MAX_INPUT_PIXELS // 1_000_000} megapixels at most)"
            )
        if height <= 0 or width <= 0 or height % self.size_multiple or width % self.size_multiple:
            m = self.size_multiple
            nearest = f"{max(m, round(height / m) * m)}x{max(m, round(width / m) * m)}"
            raise InputSizeError(
                f"input size {height}x{width} does not fit {self.name}: height and width must be positive "
                f"multiples of {m} ({self.size_rule}); nearest valid size: {nearest}"
            )


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise DuplicateRegistrationError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def names() -> list[str]:
    """Registered model names, in registration order."""
    return list(_REGISTRY)


def trained_names() -> list[str]:
    """The models whose authors' trained checkpoints mobileseg loads (the others are structure only)."""
    return [name for name, spec in _REGISTRY.items() if spec.checkpoint is not None]


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(name, names()) from None


def _resolve(reference: str) -> Any:
    """The object named by ``"package.module:attribute"``."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)
