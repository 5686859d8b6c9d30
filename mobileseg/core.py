"""mobileseg's vocabulary: what is exported, whatever its source (a zoo network, a user's model, the VOS
subgraphs). No PyTorch here; modules are held as opaque objects until a target exports them.

* `TensorSpec`: one named input or output (shape, dtype, layout; for pictures the pixel format and
  normalisation; for outputs what the values mean).
* `Graph`: one module with named inputs and outputs, in call order.
* `Deployable`: the graphs that ship together, the host program that drives them (if any), the inputs
  parity is judged on, the tolerances and where it came from.
* `HostProgram`: the loop an app runs around the graphs (``start``/``step``/``describe``), e.g. the VOS
  session's state machine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

DTYPES = ("float32", "float16", "int64", "int32", "uint8", "int8", "bool")
OUTPUT_KINDS = ("logits", "probabilities", "mask", "tensor", "softmax_logits", "sigmoid_logit")
PIXEL_FORMATS = ("rgb01", "uint8", "normalized")


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of a graph.

    ``layout`` names the axes ("NCHW", "NHWC") or is None for a plain tensor. A picture input has a
    ``pixel_format`` (rgb01: RGB in [0, 1]; uint8: 0..255; normalized: already ``(x − mean)/std``) and,
    unless normalized, the ``normalization`` the graph applies itself. ``kind`` says what an output's values
    mean (logits, probabilities, mask, tensor) and so how parity judges it.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    layout: str | None = None
    pixel_format: str | None = None
    normalization: Mapping[str, Any] | None = None
    kind: str = "tensor"

    def to_dict(self) -> dict:
        record = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "layout": self.layout, "kind": self.kind}
        if self.pixel_format:
            record["format"] = self.pixel_format
        if self.normalization:
            record["normalization"] = dict(self.normalization)
        return record

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        return cls(
            name=str(data["name"]), shape=tuple(int(d) for d in data["shape"]), dtype=str(data.get("dtype", "float32")),
            layout=data.get("layout"), pixel_format=data.get("format"), normalization=data.get("normalization"),
            kind=str(data.get("kind", "tensor")),
        )  # fmt: skip


@dataclass(frozen=True)
class Graph:
    """A module (``torch.nn.Module``) whose positional inputs are ``inputs`` and whose outputs (a tensor or
    a tuple of tensors) are ``outputs``, in order. ``runs`` says when a host program runs it."""

    name: str
    module: Any = field(repr=False, compare=False)
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    runs: str = "once per input"

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def io_record(self) -> dict:
        """Name → shape of the inputs and outputs, as manifests and runners read them."""
        return {"inputs": {t.name: list(t.shape) for t in self.inputs},
                "outputs": {t.name: list(t.shape) for t in self.outputs}, "layout": "NCHW"}  # fmt: skip


@runtime_checkable
class HostProgram(Protocol):
    """The loop an app runs around a deployable's graphs, over any backend that runs them by name."""

    def start(self, *args: Any, **kwargs: Any) -> Any: ...

    def step(self, *args: Any, **kwargs: Any) -> Any: ...

    def describe(self) -> dict: ...


# Real inputs of each graph and PyTorch's outputs on them: graph name → [(inputs, outputs), ...] by label.
ParityCases = dict[str, list[tuple[str, dict, dict]]]


@dataclass
class Deployable:
    """What one artifact folder ships: graphs, the host program's description, and how to judge them.

    ``parity_cases`` makes, on demand, the real inputs of every graph and the reference outputs
    (``ParityCases``); ``tolerances`` maps precision → bounds (metric keys of `verify.metrics`).
    ``provenance`` is recorded in the manifest as it is (source, weights, seeds).
    """

    name: str
    graphs: list[Graph]
    parity_cases: Callable[[], ParityCases]
    tolerances: Mapping[str, Mapping[str, float]]
    provenance: dict = field(default_factory=dict)
    host_program: dict | None = None  # a HostProgram's describe(): the loop, the state, host-side arithmetic
    description: str = ""

    def graph(self, name: str) -> Graph:
        for graph in self.graphs:
            if graph.name == name:
                return graph
        raise KeyError(name)
