"""Float fallback for fp16 Core ML programs: find the ops that fp16 arithmetic wrecks and keep them in fp32.

An fp16 ML program stores weights *and* activations in float16. The authors' Cityscapes checkpoints have
channels that carry a signal of ~1e-2 on top of a constant of ~100 (a branch whose batch-norm scale
trained to ~0, re-amplified ~600× by the next batch norm; see `tflite_fallback`). TFLite's fp16 files
keep float32 activations, so only those weights need float32 there; in Core ML the activation itself
cannot hold the signal (fp16 steps of 0.06 at 100), so the ops around it must compute in fp32.
coremltools supports exactly that: `FP16ComputePrecision(op_selector=…)` casts only the selected ops.

The ops are chosen on the float32 program, run in the MIL reference executor (`runtimes/mil_reference`),
which can emulate any subset of its ops in fp16 without converting again:

1. every op that coremltools would cast is run once more on the float32 run's exact inputs with
   fp16 rounding, and its local error measured per channel (`fallback.ChannelErrors`), and the largest
   magnitude among its inputs and outputs recorded;
2. ops within `PEAK_LIMIT` of fp16's range stay fp32; if the label agreement with the float32 program on
   calibration pictures then misses the goal, the ops past the local limit, then the shortest
   network-order prefix of the rest that reaches it (`fallback.keep_enough`).

The written program is then converted once with that selection and its agreement measured again, on
the saved package, by the same executor.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mobileseg.quantize.fallback import ChannelErrors, Fallback, keep_enough, label_map
from mobileseg.quantize.fallback import label_agreement as pooled_agreement
from mobileseg.runtimes.mil_reference import MilProgram, to_fp16

GOAL = 0.995  # label agreement with the float32 program (as TFLite's fp16 fallback)
LOCAL_LIMIT = 0.01  # an op's fp16 error above 1 % of a channel's spread is fp32 at once
SAMPLES = 2
PEAK_LIMIT = 65504 / 16  # fp16's largest value with a 16x margin (noise drives C3Net-v2 2x beyond photos)


def mil_name(name: str) -> str:
    """An op name as the ML program stores it (coremltools' backend sanitises names after the fp16 pass
    has seen them): characters outside ``[A-Za-z0-9_]`` become ``_``, a leading digit gets ``op_``."""
    sanitized = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return f"op_{sanitized}" if re.match(r"[^A-Za-z_]", sanitized) else sanitized


def fp16_candidates(program: MilProgram) -> list[str]:
    """Names, in program order, of the ops of a float32 program that an fp16 conversion would cast: float
    outputs, not a cast, no constant beyond fp16's range (coremltools keeps those fp32 by itself)."""
    from coremltools.converters.mil.mil import types
    from coremltools.converters.mil.mil.passes.defs.quantization import FP16ComputePrecision

    checker = FP16ComputePrecision()
    return [
        op.name for op in program.function.operations
        if op.op_type != "const" and op.outputs and op.outputs[0].dtype is types.fp32 and checker.is_valid_op(op)
    ]  # fmt: skip


@dataclass
class FloatRun:
    """What one float32 run of a program over the calibration feeds tells the fallback, per candidate op."""

    errors: dict[str, float]  # fp16 local error: worst channel's RMS error / its spread
    peaks: dict[str, float]  # largest magnitude among the op's float inputs and outputs
    expected: list[np.ndarray]  # the label map of the program's first output on each feed


def float_run(program: MilProgram, feeds: Sequence[dict], candidates: Collection[str]) -> FloatRun:
    """Run the float32 ``program`` on ``feeds``, measuring each candidate op's fp16 local error and peak."""
    stats, names, peaks = ChannelErrors(), set(candidates), {}

    def observe(op, arguments: dict, results: tuple) -> None:
        if op.name not in names:
            return
        produced = program.kernels[op](**{key: to_fp16(value) for key, value in arguments.items()})
        produced = to_fp16(produced[0] if isinstance(produced, tuple) else produced)
        reference = results[0]
        stats.add(op.name, reference.numpy(), produced.numpy(), 1 if reference.dim() == 4 else None)
        tensors = [v for v in (*arguments.values(), *results) if isinstance(v, torch.Tensor) and v.is_floating_point()]
        peak = max(float(t.abs().max()) for t in tensors if t.numel())
        peaks[op.name] = max(peak, peaks.get(op.name, 0.0))

    output = program.output_names[0]
    expected = [label_map(program.run(feed, observe=observe)[output]) for feed in feeds]
    return FloatRun(stats.relative(), peaks, expected)


def label_agreement(program: MilProgram, feeds: Sequence[dict], expected: Sequence[np.ndarray], half: Collection[str] = ()) -> float:
    """`fallback.label_agreement` of ``program`` with ``expected`` (label maps) on ``feeds``, with the ops
    in ``half`` emulated in fp16."""
    output = program.output_names[0]
    return pooled_agreement((program.run(feed, half=half)[output], reference) for feed, reference in zip(feeds, expected))


def choose_fp32_ops(
    program: MilProgram, feeds: Sequence[dict], goal: float = GOAL, local_limit: float = LOCAL_LIMIT
) -> tuple[Fallback, list[np.ndarray]]:
    """The fp32 ops (by MIL name) an fp16 conversion of the float32 ``program`` needs to agree with it on
    ``feeds`` to ``goal``, as a `Fallback` whose agreements are the emulated ones; and the float32 label maps."""
    candidates = fp16_candidates(program)
    run = float_run(program, feeds, candidates)

    def agreement_keeping(fp32_ops: Collection[str]) -> float:
        return label_agreement(program, feeds, run.expected, {n for n in candidates if n not in fp32_ops})

    # Ops that come near fp16's range on photos overflow on harsher pictures: fp32 whatever the agreement.
    keep = {n for n in candidates if run.peaks.get(n, 0.0) > PEAK_LIMIT}
    before = agreement_keeping(())
    keep, agreement = keep_enough(
        candidates, agreement_keeping, goal, keep, agreement_keeping(keep) if keep else before, lambda: run.errors, local_limit
    )  # fmt: skip
    return Fallback(goal, before, agreement, tuple(sorted(keep)), len(candidates)), run.expected
