"""Every zoo model exports to TFLite and Core ML (fp32) at sizes its rule accepts, other than its recipe's,
with parity passing on every interpreter: squares, non-square both ways, the smallest size, and sizes where
a channel count equals a spatial size at some stage (onnx2tf cannot tell the layout there)."""

import pytest

from conftest import official_weights
from mobileseg import zoo
from mobileseg.export.pipeline import ExportRequest, export_model

# (model, height, width, the onnx2tf conversions tried in order, what the size exercises). "symbolic":
# the graph with symbolic height and width, converted first where a channel count equals a spatial size.
GRID = [
    ("sinet", 64, 64, "symbolic", "16 channels at 16×16; its channel shuffles as gathers"),
    ("sinet", 96, 96, "symbolic", "16 ambiguous tensors; the static graph needed strict mode"),
    ("sinet", 64, 128, "symbolic", "16 channels at 16×32: the static graph is wrong in both onnx2tf modes"),
    ("sinet", 128, 64, "symbolic", "non-square, the other way"),
    ("extremec3net", 4, 4, "static failed, symbolic", "the smallest size: 1×1 maps"),
    ("extremec3net", 12, 20, "symbolic", "non-square, not a power of two"),
    ("extremec3net", 20, 12, "symbolic", "non-square, the other way"),
    ("c3net", 8, 8, "static failed, symbolic", "the smallest size: 1×1 maps"),
    ("c3net", 16, 32, "symbolic", "non-square"),
    ("c3netv2", 8, 8, "static failed, symbolic", "the smallest size"),
    ("c3netv2", 24, 16, "static", "non-square, the other way"),
    ("sinet-cityscapes", 128, 128, "static", "the smallest size"),
    ("sinet-cityscapes", 128, 256, "static, symbolic", "non-square; onnx2tf misreads a PReLU on its 1×2 maps (max rel 0.2), caught"),
    ("sinet-cityscapes", 256, 128, "static", "non-square, the other way"),
]

@pytest.mark.parametrize("name,height,width,conversions,why", GRID, ids=[f"{n}-{h}x{w}" for n, h, w, *_ in GRID])
def test_exports_with_parity_at_a_size_its_rule_accepts(tmp_path, name, height, width, conversions, why):
    zoo.spec(name).check_input_size(height, width)
    result = export_model(ExportRequest(
        name, targets=["tflite", "coreml"], precisions=["fp32"], input_size=(height, width),
        weights=official_weights(name), out=tmp_path / name,
    ))  # fmt: skip
    ran = {(r.target, r.runtime): r.status for r in result.report.results if r.status != "skipped"}
    assert ("coreml", "mil-reference") in ran and ("tflite", "litert") in ran
    assert result.report.passed, [f"{r.target} {r.runtime}: {r.reason}" for r in result.report.results if r.status != "pass"]
    (tflite,) = [a for a in result.manifest["artifacts"] if a["target"] == "tflite"]
    assert tflite["io"]["input"]["shape"] == [1, height, width, 3]
    check = tflite["onnx2tf_check"]
    assert check["sample_max_rel"] <= 1e-3, check
    tried = ", ".join(a["shapes"] + (" failed" if "failed" in a else "") for a in check["attempts"])
    assert tried == conversions and tflite["onnx2tf_shapes"] == conversions.split(", ")[-1], check

