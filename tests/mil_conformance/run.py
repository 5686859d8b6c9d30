"""Run coremltools' installed MIL op tests through the MIL reference executor and count the outcomes.

    python tests/mil_conformance/run.py            # the CI selection (about 80 s)
    python tests/mil_conformance/run.py --full     # every op module the executor is meant for (~40 min)
    python tests/mil_conformance/run.py --full --out results/mil_conformance.json

Each check is one comparison of the executor against a test's expected outputs on one route
(``package-fp16``, ``package-fp32``: the converted, saved package; ``memory``: the unconverted program);
see `coremltools_plugin.py`. Outcomes: match, mismatch, refused (a one-line refusal naming the op),
unreadable (coremltools cannot read back its own package), error (an unclear failure), skipped, and
``known``: a failure listed in `known.py` with its reason.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from known import KNOWN  # noqa: E402

# Op modules of the opsets mobileseg converts to (iOS14 … iOS17). Left out: recurrent (lstm, gru, rnn),
# random (no reference values), control_flow (cond / while: nested blocks), constexpr and quantization
# (compressed-weight ops): the executor refuses those ops with a one-line error wherever they occur.
FULL = [
    f"{opset}/test_{name}.py"
    for opset, names in {
        "iOS14": ["activation", "conv", "elementwise_binary", "elementwise_unary", "image_resizing", "linear",
                  "normalization", "pool", "reduction", "scatter_gather", "tensor_operation", "tensor_transformation"],
        "iOS15": ["elementwise_unary", "image_resizing", "tensor_transformation"],
        "iOS16": ["conv", "image_resizing", "scatter_gather", "tensor_operation", "tensor_transformation"],
        "iOS17": ["activation", "conv", "elementwise_unary", "image_resizing", "linear", "normalization",
                  "reduction", "scatter_gather", "tensor_operation", "tensor_transformation"],
    }.items()
    for name in names
]  # fmt: skip

# What CI runs, in its fp16 configs (what ships; Apple's CI runs these too): the ops segmentation and
# detection networks produce and the semantics that differ by opset (iOS17 reshape zeros, argmax dtypes,
# small-int casts around gather and slice), about 80 s on two cores.
CI = [
    "iOS14/test_conv.py", "iOS14/test_pool.py", "iOS14/test_image_resizing.py", "iOS14/test_elementwise_binary.py",
    "iOS14/test_tensor_operation.py", "iOS17/test_image_resizing.py", "iOS17/test_reduction.py",
    "iOS17/test_linear.py", "iOS17/test_tensor_transformation.py", "iOS17/test_scatter_gather.py",
]  # fmt: skip
CI_KEYWORD = (
    "(TestConv or TestPool or TestUpsample or TestResize or TestCrop or TestElementwiseBinary or TestPad "
    "or TestReduction or TestLinear or TestMatMul or TestReshape or TestSliceByIndex or (TestGather and uint16)) "
    "and not TestGatherNd and not TestGatherAlongAxis and not TestReshapeLike"
)


def ops_tests_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("coremltools")
    return Path(spec.origin).parent / "converters" / "mil" / "mil" / "ops" / "tests"


def run(modules: list[str], keyword: str | None = None, fp32: bool = True, timeout: float = 3600) -> list[dict]:
    """The checks of ``modules`` (relative to coremltools' ops tests), one record per check; ``fp32``
    adds the tests' fp32 configs to their fp16 ones."""
    root = ops_tests_dir()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "checks.jsonl"
        env = dict(os.environ, MOBILESEG_MIL_CONFORMANCE_OUT=str(out), PYMIL_TEST_TARGETS="mlprogram",
                   INCLUDE_MIL_FP32_UNIT_TESTS="1" if fp32 else "0", PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
                   TMPDIR=tmp)  # fmt: skip
        command = [sys.executable, "-m", "pytest", "-c", os.devnull, "--rootdir", str(root), "-p", "coremltools_plugin",
                   "-p", "no:cacheprovider", "-p", "no:warnings", "--import-mode=importlib", "-q", "--no-header",
                   *(["-k", keyword] if keyword else []), *[str(root / m) for m in modules]]  # fmt: skip
        subprocess.run(command, env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)
        return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def classify(records: list[dict]) -> list[dict]:
    """Records with ``known`` (the reason) where a listed case explains a failure."""
    for record in records:
        if record["outcome"] not in ("match", "refused", "skipped"):
            reason = next((k.reason for k in KNOWN if k.covers(record)), None)
            if reason is not None:
                record["known"] = reason
    return records


def refused_op(detail: str) -> str:
    match = re.match(r"the MIL reference executor cannot run op (\w+)", detail)
    return match.group(1) if match else "?"


def summarise(records: list[dict]) -> dict:
    outcomes = collections.Counter("known" if "known" in r else r["outcome"] for r in records)
    return {
        "checks": len(records),
        "outcomes": dict(outcomes),
        "known": dict(collections.Counter(r["known"] for r in records if "known" in r)),
        "refused_ops": dict(collections.Counter(refused_op(r["detail"]) for r in records if r["outcome"] == "refused").most_common()),
        "by_route": {route: dict(collections.Counter("known" if "known" in r else r["outcome"] for r in records if r["route"] == route))
                     for route in sorted({r["route"] for r in records})},  # fmt: skip
        "failures": [r for r in records if r["outcome"] in ("mismatch", "error", "unreadable") and "known" not in r],
        "unused_known": [k.reason for k in KNOWN if not any(k.covers(r) for r in records)],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="every module the executor is meant for")
    parser.add_argument("--out", type=Path, help="write the summary and every check as JSON")
    args = parser.parse_args()
    records = classify(run(FULL) if args.full else run(CI, CI_KEYWORD, fp32=False))
    summary = summarise(records)
    print(f"{summary['checks']} checks: " + ", ".join(f"{n} {k}" for k, n in sorted(summary["outcomes"].items())))
    for route, counts in summary["by_route"].items():
        print(f"  {route}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    print("refused ops: " + ", ".join(f"{op} {n}" for op, n in summary["refused_ops"].items()))
    for reason, n in summary["known"].items():
        print(f"known, not ours ({n}): {reason}")
    for reason in summary["unused_known"]:
        print(f"listed as known but not seen in this run: {reason}")
    for failure in summary["failures"]:
        print(f"{failure['outcome']}: {failure['route']} {failure['test']}: {failure['detail'][:200]}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        temporary = args.out.with_suffix(".tmp")
        temporary.write_text(json.dumps({"summary": summary, "checks": records}, indent=1))
        temporary.replace(args.out)
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
