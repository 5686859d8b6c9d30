"""Lean float graphs: the module a float export converts, without the numbers that slow CPUs down.

Denormal floats (0 < |x| < 1.18e-38) take a slow microcode path on x86 unless flush-to-zero and
denormals-are-zero are set on the computing thread (on an Intel Xeon, SINet on onnxruntime at one thread:
3.3× slower). The authors' checkpoints hold them in two ways:

* denormal constants: 3,444 of SINet's weights and buffers, 11,018 of ExtremeC3Net's. They change no
  output bit when set to zero.
* dead channels: batch norms whose running variance is ~1e-16 turn their ~1e-13 input into a channel that
  is constant on every picture, often a constant of ~1e-40 that the layers after it keep denormal.
  `freeze_dead_channels` makes such a channel exactly constant and sets a negligible constant to zero.

* tiny weights: normal numbers such as a PReLU slope of -7.9e-36, whose products are denormal.

`lean_module` does all three on a copy (dead channels first, as freezing can write denormal means), with
the exact graph rewrites of `export.rewrites` between freezing and zeroing (folding multiplies constants),
and the export proves the result on real photos against the plain module (`proof`), or exports the plain one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32
DEAD_CHANNEL_TOLERANCE = 1e-6  # a channel's std over the samples, relative to its tensor's peak |x|
NEGLIGIBLE_CONSTANT = 1e-12  # a frozen channel's constant, relative to its tensor's peak, set to zero
# A weight this small is normal but makes denormals of any activation below ~1e-8 (SINet's stem: a PReLU
# slope of -7.9e-36 on a frozen channel of -6.6e-4); what it adds to a sum is under float32's resolution.
TINY_WEIGHT = 1e-30


@dataclass
class LeanRecord:
    """What `lean_module` changed, and the proof: the lean module against the plain one on real inputs."""

    denormal_constants: int = 0
    tiny_constants: int = 0  # normal, but below TINY_WEIGHT
    dead_channels: int = 0
    rewrites: dict = field(default_factory=dict)  # rewrite name → places changed (export.rewrites)
    graph_ops: dict = field(default_factory=dict)  # "plain" / "lean" → ONNX op type → count
    proof: dict = field(default_factory=dict)  # input label → metrics (verify.metrics.compare)
    applied: bool = True
    reason: str = ""

    def to_dict(self) -> dict:
        from mobileseg.verify.results import json_safe

        record = {"applied": self.applied, "denormal_constants_zeroed": self.denormal_constants,
                  "tiny_constants_zeroed": self.tiny_constants, "dead_channels_frozen": self.dead_channels,
                  "rewrites": self.rewrites, "proof": {label: json_safe(m) for label, m in self.proof.items()}}  # fmt: skip
        if self.graph_ops:
            record["graph_ops"] = self.graph_ops
        if self.reason:
            record["reason"] = self.reason
        return record


def denormal_constants(module: nn.Module) -> int:
    """How many values of ``module``'s float parameters and buffers are denormal."""
    return sum(int(((t != 0) & (t.abs() < FLOAT32_TINY)).sum()) for t in _float_tensors(module))


@torch.no_grad()
def zero_tiny_constants(module: nn.Module, below: float = FLOAT32_TINY) -> int:
    """Set every value of ``module``'s float parameters and buffers with 0 < |x| < ``below`` to zero, in place
    (the default: the denormal ones); returns how many."""
    count = 0
    for tensor in _float_tensors(module):
        tiny = (tensor != 0) & (tensor.abs() < below)
        if tiny.any():
            tensor[tiny] = 0.0
            count += int(tiny.sum())
    return count


def _float_tensors(module: nn.Module) -> list[torch.Tensor]:
    return [t for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()]


@torch.no_grad()
def lean_module(module: nn.Module, samples, rewrite: bool = True) -> tuple[nn.Module, LeanRecord]:
    """A copy of ``module`` with dead channels frozen (judged on ``samples``: an (N, ...) batch of its one
    input, or a list of argument tuples), the exact rewrites applied (unless not ``rewrite``), then its
    denormal constants and those below ``TINY_WEIGHT`` set to zero."""
    from mobileseg.export.rewrites import apply_rewrites
    from mobileseg.quantize.rewrites import freeze_dead_channels

    lean = copy.deepcopy(module).eval()
    dead = freeze_dead_channels(lean, samples, DEAD_CHANNEL_TOLERANCE, zero_below=NEGLIGIBLE_CONSTANT)
    rewrites = apply_rewrites(lean) if rewrite else {}
    denormal = zero_tiny_constants(lean)
    return lean, LeanRecord(denormal, zero_tiny_constants(lean, TINY_WEIGHT), dead, rewrites)


def prove(record: LeanRecord, plain: dict[str, np.ndarray], lean: dict[str, np.ndarray], tolerance: dict,
          kind: str | None = None) -> bool:  # fmt: skip
    """Record the lean outputs' metrics against the plain ones (label → output, the same real inputs) and
    whether they meet the fp32 ``tolerance``; a lean module that misses it is not applied."""
    from mobileseg.verify.metrics import check, compare

    failures = []
    for label, reference in plain.items():
        metrics = compare(reference, lean[label], kind)
        record.proof[label] = metrics
        failures += [f"{label}: {f}" for f in check(metrics, tolerance)]  # check skips judged_on
    if failures:
        record.applied, record.reason = False, "lean graph misses the fp32 tolerance against the plain one: " + "; ".join(failures)
    return record.applied


def file_denormals(path) -> int:
    """How many float32 constants of an exported ``.onnx`` or ``.tflite`` file are denormal."""
    from pathlib import Path

    path = Path(path)
    arrays: list[np.ndarray] = []
    if path.suffix == ".onnx":
        import onnx
        from onnx import numpy_helper

        graph = onnx.load(str(path)).graph
        arrays += [numpy_helper.to_array(t) for t in graph.initializer]
        arrays += [numpy_helper.to_array(a.t) for node in graph.node if node.op_type == "Constant" for a in node.attribute if a.name == "value"]
    elif path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
        for detail in interpreter.get_tensor_details():
            if detail["dtype"] == np.float32:
                try:
                    arrays.append(interpreter.get_tensor(detail["index"]))
                except ValueError:  # not a constant: no data before a run
                    continue
    else:
        raise ValueError(f"{path}: not an .onnx or .tflite file")
    return sum(int(((a != 0) & (np.abs(a) < FLOAT32_TINY)).sum()) for a in arrays if a.dtype == np.float32)
