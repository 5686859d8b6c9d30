"""Checks of coremltools' op tests whose failure is not the executor's, each with its reason.

A case matches when its test id contains ``test``, ``config`` and one of ``params`` (any, when empty),
on one of ``routes``, with an outcome in ``outcomes``. Keep the list short and every reason checkable:
`run.py` reports the cases no check of a run matched (stale, or outside the modules it ran).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Known:
    test: str  # part of the pytest node id: "TestConv::test_builder_to_backend_stress"
    routes: tuple[str, ...]
    outcomes: tuple[str, ...]
    reason: str
    params: tuple[str, ...] = ()  # parts of the parameter id, any of which must occur
    config: str = ""  # the backend config, e.g. "precision='fp32'"

    def covers(self, record: dict) -> bool:
        test_id = record["test"]
        return (
            self.test in test_id
            and record["route"] in self.routes
            and record["outcome"] in self.outcomes
            and (not self.params or any(p in test_id for p in self.params))
            and self.config in test_id
        )


FP16_PROGRAM_IN_FP32_CONFIG = (
    "the test builds an fp16 program (fp16 inputs and parameters) and, in its fp32 config, judges it with "
    "fp32 tolerances (atol 1e-4) against values computed in float32: the gaps (1e-4 to 4e-3) are fp16 "
    "rounding; Apple's own CI does not run fp32 configs"
)
UNREADABLE = (
    "coremltools' milproto reader cannot load the package its own converter wrote (it re-validates "
    "every op while rebuilding the program); the executor never gets a program"
)

KNOWN: list[Known] = [
    Known("::test_", ("package-fp32", "memory"), ("mismatch",), FP16_PROGRAM_IN_FP32_CONFIG,
          params=("float16",), config="precision='fp32'"),  # fmt: skip
    Known("TestNormalizationBatchNorm::test_builder_to_backend_smoke", ("package-fp32",), ("unreadable",),
          UNREADABLE + ": batch_norm's fp16 variance beside its fp32 epsilon"),  # fmt: skip
    Known("TestFill::test_builder_to_backend_symbolic", ("package-fp16", "package-fp32"), ("unreadable",),
          UNREADABLE + ": a symbolic output shape ('Variadic dimensions not yet implemented')"),  # fmt: skip
    Known("TestCropResize::test_builder_to_backend_ios1", ("package-fp32", "memory"), ("mismatch",),
          "the expected value 7.899 is written by hand where bilinear sampling gives 7.9 (1 + 4 x 1.5 + 0.9); "
          "it passes only under the fp16 tolerance", config="precision='fp32'"),  # fmt: skip
    Known("TestScatter::test_builder_to_backend_programmatic", ("package-fp16",), ("mismatch",),
          "repeated divisions take the expected value to 1.08e6, beyond float16's range (65,504): an fp16 "
          "program holds inf there", params=("accumulate_mode=div",)),  # fmt: skip
    Known("::test_ios17_invalid_indices", ("memory", "package-fp16", "package-fp32"), ("error", "mismatch"),
          "the test feeds out-of-range indices and expects Core ML to fail at run time or return undefined "
          "values; the executor stops with 'index … is out of range' naming the op"),  # fmt: skip
]
